"""The planted fault of tests/service/test_credentials_workers.py, put into every process of a served service by
PYTHONPATH: the workers never see the credentials generation move, so what they cached of keys and SOAP passwords
is kept for its full 30 seconds, as before the generation existed (a revoked key accepted, a new password refused).
"""

from settlement.services.auth import CredentialsWatch


def _never_moves(_: CredentialsWatch) -> int:
    return 0


CredentialsWatch.fresh = _never_moves  # type: ignore[method-assign, assignment]
CredentialsWatch.current = _never_moves  # type: ignore[method-assign, assignment]
