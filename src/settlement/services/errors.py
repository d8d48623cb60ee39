"""Stable codes of the service's expected failures (the domain's own codes are in settlement.domain.errors)."""

from __future__ import annotations

import logging
import sqlite3
from enum import StrEnum

from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from settlement.domain.errors import Problem

log = logging.getLogger("settlement.database")
DISCONNECTED = frozenset({"57P01", "57P02", "57P03", "57P04"})  # admin or crash shutdown, cannot connect now


class ServiceCode(StrEnum):
    AUTH_REQUIRED = "AUTH_REQUIRED"
    AUTH_INVALID = "AUTH_INVALID"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    REQUEST_MALFORMED = "REQUEST_MALFORMED"
    REQUEST_UNREADABLE = "REQUEST_UNREADABLE"  # a body the framework cannot parse (e.g. multipart without a boundary)
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    BODY_TOO_LARGE = "BODY_TOO_LARGE"
    HOSPITAL_MISMATCH = "HOSPITAL_MISMATCH"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    SETTLEMENT_ALREADY_REVERSED = "SETTLEMENT_ALREADY_REVERSED"
    QUOTE_INVALID = "QUOTE_INVALID"
    QUOTE_EXPIRED = "QUOTE_EXPIRED"
    QUOTE_CLAIM_MISMATCH = "QUOTE_CLAIM_MISMATCH"
    QUOTE_TARIFF_CHANGED = "QUOTE_TARIFF_CHANGED"
    QUOTE_ACCUMULATORS_CHANGED = "QUOTE_ACCUMULATORS_CHANGED"
    QUOTE_CATEGORIES_CHANGED = "QUOTE_CATEGORIES_CHANGED"
    ROSTER_INVALID = "ROSTER_INVALID"
    HOSPITALS_INVALID = "HOSPITALS_INVALID"  # a hospital register file that cannot be read as one
    DATABASE_BUSY = "DATABASE_BUSY"
    DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"  # readiness: this worker does not reach its database
    TRANSACTION_CANCELLED = "TRANSACTION_CANCELLED"
    DISCREPANCY_CLOSED = "DISCREPANCY_CLOSED"
    REVERSAL_REFUSED = "REVERSAL_REFUSED"
    # Keys and hospitals
    PRINCIPAL_EXISTS = "PRINCIPAL_EXISTS"  # the person already holds an active key of that role: rotate it
    KEY_REVOKED = "KEY_REVOKED"  # the key is revoked already
    HOSPITAL_DISABLED = "HOSPITAL_DISABLED"  # its keys and SOAP password are refused until it is enabled
    # Tariff administration
    TARIFF_REJECTED = "TARIFF_REJECTED"  # the document or catalogue has problems (listed)
    TARIFF_VERSION_EXISTS = "TARIFF_VERSION_EXISTS"
    TARIFF_STATE = "TARIFF_STATE"  # the step does not apply to the version's status
    TARIFF_SELF_APPROVAL = "TARIFF_SELF_APPROVAL"
    TARIFF_RETROACTIVE = "TARIFF_RETROACTIVE"  # would change the tariff of a date already settled or begun
    TARIFF_CONFLICT = "TARIFF_CONFLICT"  # overlaps, or does not resolve with, the versions in force
    # SOAP/XML: the envelope, its encoding and its authentication
    XML_MALFORMED = "XML_MALFORMED"
    XML_FORBIDDEN = "XML_FORBIDDEN"
    XML_TOO_LARGE = "XML_TOO_LARGE"
    XML_TOO_DEEP = "XML_TOO_DEEP"
    ENCODING_INVALID = "ENCODING_INVALID"
    ENCODING_MISMATCH = "ENCODING_MISMATCH"
    ENCODING_UNSUPPORTED = "ENCODING_UNSUPPORTED"
    SOAP_INVALID = "SOAP_INVALID"
    SOAP_VERSION_MISMATCH = "SOAP_VERSION_MISMATCH"
    DIALECT_UNKNOWN = "DIALECT_UNKNOWN"
    DIALECT_NOT_BOUND = "DIALECT_NOT_BOUND"
    OPERATION_UNKNOWN = "OPERATION_UNKNOWN"
    MESSAGE_INVALID = "MESSAGE_INVALID"
    AUTH_EXPIRED = "AUTH_EXPIRED"
    AUTH_NONCE_REPLAYED = "AUTH_NONCE_REPLAYED"


class ServiceError(Exception):
    def __init__(self, code: ServiceCode, message: str, problems: list[Problem] | None = None) -> None:
        self.code = code
        self.message = message
        self.problems = problems or []
        super().__init__(f"{code}: {message}")


# What every 503 tells the caller. The database may have recorded the request before its answer was lost (a commit
# whose reply never came back, a connection cut after COMMIT): a 503 never means that nothing was recorded. The
# same request under the same key answers as the first did, or does it now; a new key could pay a bill twice.
OUTCOME_UNKNOWN = "the outcome is unknown (it may have been recorded): resend the same request with the same key"


def database_problem(error: Exception) -> ServiceError:
    """What an OperationalError (or a full pool) tells the caller: an error the server answered with (a lock
    timeout, a deadlock, SQLite's "database is locked") or a full pool is DATABASE_BUSY; no answer at all (the
    connection refused or lost) is DATABASE_UNAVAILABLE. Both are 503 with Retry-After and an unknown outcome
    (OUTCOME_UNKNOWN); only the type is logged."""
    original = getattr(error, "orig", None)
    sqlstate = getattr(original, "sqlstate", None)
    # A connection ended by the server (terminated, shut down, crashed: 57P01-57P04, or class 08) may bring its
    # FATAL message before the socket closes, or not: either way the server is gone, not busy.
    gone = sqlstate is not None and (sqlstate.startswith("08") or sqlstate in DISCONNECTED)
    answered = (sqlstate is not None and not gone) or isinstance(original, sqlite3.Error)
    if isinstance(error, PoolTimeoutError) or answered:
        log.warning("the database is busy (%s)", type(original or error).__name__)
        return ServiceError(ServiceCode.DATABASE_BUSY, f"the database is busy; {OUTCOME_UNKNOWN}")
    log.warning("the database does not answer (%s)", type(original or error).__name__)
    return ServiceError(ServiceCode.DATABASE_UNAVAILABLE, f"the database does not answer; {OUTCOME_UNKNOWN}")
