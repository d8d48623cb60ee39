"""Revocation and rotation reach every worker within a second (issue 15, item 6).

The service runs as `settlement serve --workers 2` on a PostgreSQL database of its own. Keep-alive connections are
opened until both workers hold some (the worker that accepted a connection is found through /proc: the server
side's socket inode, and which worker holds it), and each worker caches a hospital's REST key, a finance officer's
key and the hospital's SOAP password by using them. Then the hospital's key is rotated (a command's use case), the
finance key is revoked by SQL (an operator by hand), and the SOAP password is issued anew. Every request any worker
answers from one second after each change on must refuse the old credential and accept the new one.

Planted-fault control: the same run against a service whose workers never see the credentials generation move
(tests/service/naive_credentials, put into every worker by PYTHONPATH), i.e. the 30-second caches as they were:
the old key is still accepted, and the new SOAP password refused, after the second.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from settlement.services import admin
from settlement.services.soap_access import bind_dialects, issue_password
from tests.factories import TARIFFS
from tests.service.conftest import TEST_SECRET_KEY, Service, free_port, new_id_number, running_service
from tests.service.test_worker_kill import Served
from tests.soap.conftest import soap_envelope, wsse_header
from tests.soap.test_wsse import eligibility_xml

NAIVE = Path(__file__).parent / "naive_credentials"
WITHIN = 1.0  # seconds from a change's commit to every worker's answers following it
POLL_FOR = 1.6


@contextmanager
def served_workers(service: Service, tmp_path: Path, *, naive: bool = False) -> Iterator[Served]:
    """`settlement serve --workers 2` on the service's database, with its credentials key (the SOAP passwords this
    process issues must decrypt in the workers)."""
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("SETTLEMENT_")}
    env.update({"SETTLEMENT_DATABASE_URL": service.app.settings.database_url, "SETTLEMENT_TARIFFS": str(TARIFFS),
                "SETTLEMENT_SECRET_KEY": TEST_SECRET_KEY, "SETTLEMENT_DATA_DIR": str(tmp_path / "served"),
                "SETTLEMENT_CREDENTIALS_KEY": (service.app.settings.data_dir / "credentials.key").read_text().strip(),
                "SETTLEMENT_DB_POOL_SIZE": "4"})
    if naive:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(NAIVE), env.get("PYTHONPATH")]))
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen([str(Path(sys.executable).parent / "settlement"), "serve", "--port", str(port),
                                "--workers", "2"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    served = Served(f"http://127.0.0.1:{port}", process)
    try:
        served.wait_for_workers(2)
        yield served
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:  # pragma: no cover - only when shutdown hangs
            process.kill()
            process.wait()
        log.close()


def socket_owner(workers: list[int], server_port: int, client_port: int) -> int | None:
    """The worker holding the server's side of the connection from `client_port` (None if it cannot be told)."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1].split(":")[1], fields[2].split(":")[1]
        if int(local, 16) == server_port and int(remote, 16) == client_port and fields[9] != "0":
            inode = fields[9]
            break
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in workers:
        try:
            descriptors = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for descriptor in descriptors:
            try:
                if os.readlink(f"/proc/{pid}/fd/{descriptor}") == target:
                    return pid
            except OSError:
                continue
    return None


@dataclass
class Line:
    """A keep-alive connection to the served service; each answer is tagged with the worker that gave it."""

    served: Served
    workers: list[int]
    connection: http.client.HTTPConnection = field(init=False)

    def __post_init__(self) -> None:
        port = int(self.served.url.rsplit(":", 1)[1])
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def call(self, method: str, path: str, headers: dict[str, str], body: bytes | None = None
             ) -> tuple[int | None, int]:
        """(the worker that answered, the HTTP status)."""
        self.connection.request(method, path, body=body, headers=headers)
        reply = self.connection.getresponse()
        sock = self.connection.sock
        worker = socket_owner(self.workers, self.port, sock.getsockname()[1]) if sock is not None else None
        reply.read()
        return worker, reply.status

    def close(self) -> None:
        self.connection.close()


Probe = Callable[[Line], tuple[int | None, bool]]  # (the worker that answered, whether it accepted)


@dataclass
class Credentials:
    code: str
    hospital_key: str
    hospital_key_id: int
    finance_key: str
    password: str


def seeded(service: Service) -> Credentials:
    code, hospital_key = service.hospital()
    known = set(service.app.dialects.dialects)
    bind_dialects(service.app.context, code, ["standard"], known, "test")
    password = issue_password(service.app.context, service.app.cipher, code, "test")
    finance_key = service.staff("finance")
    key_id = next(key["id"] for key in admin.list_keys(service.app.context, kind="hospital") if key["name"] == code)
    return Credentials(code, hospital_key, key_id, finance_key, password)


def rest(line: Line, key: str) -> tuple[int | None, bool]:
    worker, status = line.call("GET", "/v1/settlements?from=2024-06-01&to=2024-06-01",
                               {"Authorization": f"Bearer {key}"})
    assert status in (200, 401), status
    return worker, status == 200


def staff(line: Line, key: str) -> tuple[int | None, bool]:
    worker, status = line.call("GET", "/v1/finance/discrepancies?limit=1", {"Authorization": f"Bearer {key}"})
    assert status in (200, 401), status
    return worker, status == 200


def soap(line: Line, code: str, password: str) -> tuple[int | None, bool]:
    envelope = soap_envelope(eligibility_xml(new_id_number()), wsse_header(code, password, datetime.now(UTC)))
    worker, status = line.call("POST", "/soap", {"Content-Type": "text/xml; charset=utf-8"}, envelope)
    assert status in (200, 401), status
    return worker, status == 200


def lines_to_every_worker(served: Served, per_worker: int = 2, within: float = 60) -> list[Line]:
    """Keep-alive connections until each worker holds `per_worker` of them. The kernel decides who accepts: the
    connections are all held meanwhile (or the worker that just closed one takes most of the next), and a worker
    still starting up takes none until it is ready."""
    workers = served.workers()
    assert len(workers) == 2, workers
    kept: dict[int, list[Line]] = {worker: [] for worker in workers}
    spare: list[Line] = []
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            if len(spare) > 20:  # one worker is not accepting yet: give it time
                time.sleep(0.5)
            line = Line(served, workers)
            worker, status = line.call("GET", "/health", {})
            assert status == 200
            (kept[worker] if worker is not None and len(kept[worker]) < per_worker else spare).append(line)
            if all(len(held) == per_worker for held in kept.values()):
                return [line for held in kept.values() for line in held]
    finally:
        for line in spare:
            line.close()
    raise AssertionError(f"the connections did not reach both workers: {[len(v) for v in kept.values()]}")


def check_changes_reach_every_worker(service: Service, served: Served) -> None:
    old = seeded(service)
    lines = lines_to_every_worker(served)
    try:
        # Every worker caches the three credentials by using them.
        warm: set[int | None] = set()
        for _ in range(2):
            for line in lines:
                for worker, accepted in (rest(line, old.hospital_key), staff(line, old.finance_key),
                                         soap(line, old.code, old.password)):
                    assert accepted, worker
                    warm.add(worker)
        assert {worker for worker in warm if worker is not None} == set(served.workers())

        # The changes: a rotation (the use case behind `keys rotate`), a revocation by SQL, a new SOAP password.
        changed_at: dict[str, float] = {}
        _, new_key = admin.rotate_key(service.app.context, old.hospital_key_id, "admin:test")
        changed_at["rotated key"] = time.monotonic()
        with service.app.engine.begin() as connection:
            connection.execute(text("UPDATE principals SET revoked_at = :now WHERE key_prefix = :prefix"),
                               {"now": datetime.now(UTC), "prefix": old.finance_key.split("_")[1]})
        changed_at["key revoked by SQL"] = time.monotonic()
        new_password = issue_password(service.app.context, service.app.cipher, old.code, "admin:test")
        changed_at["SOAP password"] = time.monotonic()

        checks: dict[str, tuple[str, Probe, bool]] = {
            "old hospital key refused": ("rotated key", lambda line: rest(line, old.hospital_key), False),
            "new hospital key accepted": ("rotated key", lambda line: rest(line, new_key), True),
            "revoked finance key refused": ("key revoked by SQL", lambda line: staff(line, old.finance_key), False),
            "old SOAP password refused": ("SOAP password", lambda line: soap(line, old.code, old.password), False),
            "new SOAP password accepted": ("SOAP password", lambda line: soap(line, old.code, new_password), True),
        }
        late: list[str] = []  # answers given more than WITHIN seconds after the change that were still the old
        checked: dict[str, set[int]] = {name: set() for name in checks}
        until = max(changed_at.values()) + POLL_FOR
        while time.monotonic() < until:
            for line in lines:
                for name, (change, probe, wanted) in checks.items():
                    started = time.monotonic()
                    worker, accepted = probe(line)
                    if worker is None or started - changed_at[change] <= WITHIN:
                        continue
                    checked[name].add(worker)
                    if accepted != wanted:
                        late.append(f"{name}: worker {worker} still answered the old way "
                                    f"{started - changed_at[change]:.2f} s after the change")
            time.sleep(0.02)
        assert late == [], "\n".join(late[:10])
        for name, workers in checked.items():
            assert workers == set(served.workers()), f"{name}: not every worker was asked after {WITHIN} s"
    finally:
        for line in lines:
            line.close()


def test_revocation_and_rotation_reach_every_worker_within_a_second(fresh_pg_url: str, tmp_path: Path) -> None:
    with running_service(fresh_pg_url, tmp_path) as service, served_workers(service, tmp_path) as served:
        check_changes_reach_every_worker(service, served)


def test_control_the_30_second_caches_keep_old_credentials(fresh_pg_url: str, tmp_path: Path) -> None:
    with (running_service(fresh_pg_url, tmp_path) as service, served_workers(service, tmp_path, naive=True) as served,
          pytest.raises(AssertionError, match="still answered the old way")):
        check_changes_reach_every_worker(service, served)
