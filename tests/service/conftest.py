"""Fixtures for the service: real databases (a fresh PostgreSQL database per test run, a SQLite file per test),
applications built by the composition root, and real uvicorn servers listening on loopback."""

from __future__ import annotations

import copy
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn

from settlement.api.app import create_app
from settlement.bootstrap import Application, build, prepare
from settlement.config import Settings
from settlement.domain.idcard import check_character
from tests.factories import TARIFFS

# A strong key, made for this test run: the service refuses weak ones (a placeholder, a short or repetitive key).
TEST_SECRET_KEY = secrets.token_urlsafe(48)
PG_ADMIN = os.environ.get("SETTLEMENT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, dropped at the end. In CI its absence is a failure."""
    if not _pg_available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN}; CI must run the PostgreSQL tests")
        pytest.skip("PostgreSQL is not running here (CI starts it)")
    yield from scratch_database(f"settlement_test_{os.getpid()}_{secrets.token_hex(4)}")


def scratch_database(name: str) -> Iterator[str]:
    """A new PostgreSQL database's URL, dropped afterwards."""
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fresh_pg_url(pg_url: str) -> Iterator[str]:
    """A PostgreSQL database of this test's own: for tests whose tariff versions must not reach other tests
    (the tariffs in force live in the database)."""
    yield from scratch_database(f"{pg_url.rsplit('/', 1)[1]}_{secrets.token_hex(4)}")


def _url_of(request: pytest.FixtureRequest, tmp_path: Path, postgres_fixture: str) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'settlement.sqlite3'}"
    url: str = request.getfixturevalue(postgres_fixture)
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def own_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Like database_url, but the PostgreSQL database is the test's own."""
    return _url_of(request, tmp_path, "fresh_pg_url")


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _url_of(request, tmp_path, "pg_url")


@dataclass
class Clock:
    """A settable clock: tests move time instead of sleeping."""

    now: datetime = field(default_factory=lambda: datetime(2024, 6, 15, 2, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Service:
    app: Application
    clock: Clock
    tmp: Path

    def hospital(self, level: str = "county", region: str = "611002", code: str | None = None) -> tuple[str, str]:
        """A new hospital with a unique code; returns (code, API key)."""
        from settlement.services.admin import add_hospital

        code = code or f"H{secrets.token_hex(5).upper()}"
        return code, add_hospital(self.app.context, code, f"医院{code}", level, region, "test")

    def staff(self, kind: str) -> str:
        from settlement.services.admin import add_staff

        return add_staff(self.app.context, kind, f"{kind}-{secrets.token_hex(3)}", "test")


def settings_for(url: str, tmp: Path, **overrides: Any) -> Settings:
    fields: dict[str, Any] = {"database_url": url, "tariffs_dir": TARIFFS, "secret_key": TEST_SECRET_KEY,
                              "data_dir": tmp, "demo": False, "inbox_dir": tmp / "inbox",
                              "reports_dir": tmp / "reports",
                              # Servers in tests listen on a free loopback port: their WSDLs follow it.
                              "allowed_hosts": "127.0.0.1", **overrides}
    return Settings(**fields)


@contextmanager
def running_service(url: str, tmp: Path, **overrides: Any) -> Iterator[Service]:
    """An application built by the composition root on `url` (settings as `settings_for`), on a settable clock,
    prepared as `serve` prepares it."""
    application = build(settings_for(url, tmp, **overrides))
    clock = Clock()
    application.context.clock = clock
    prepare(application)
    try:
        yield Service(application, clock, tmp)
    finally:
        application.dispose()


@pytest.fixture
def service(database_url: str, tmp_path: Path) -> Iterator[Service]:
    with running_service(database_url, tmp_path) as running:
        yield running


@pytest.fixture
def pg_service(fresh_pg_url: str, tmp_path: Path) -> Iterator[Service]:
    """A service on a PostgreSQL database of its own, for what only PostgreSQL has (or what a test may break)."""
    with running_service(fresh_pg_url, tmp_path) as running:
        yield running


@pytest.fixture
def own_service(own_database_url: str, tmp_path: Path) -> Iterator[Service]:
    """A service on a database of its own: for tests that put tariff versions in force."""
    with running_service(own_database_url, tmp_path) as running:
        yield running


def shipped_document(region: str = "611000", version: str = "2024-01-01") -> dict[str, Any]:
    """A shipped version's document, catalogue inline: the starting point of a test's new version."""
    from settlement.tariffstore.store import read_version_file

    problems: list[Any] = []
    read = read_version_file(TARIFFS / region / f"{version}.yaml", problems)
    assert read is not None and not problems, problems
    return copy.deepcopy(read.raw)


def put_in_force(service: Service, document: dict[str, Any], *, author: str = "admin:alice",
                 approver: str = "admin:bob") -> int:
    """Import, approve (by a second administrator) and activate a version; its id."""
    from settlement.services import tariffs

    outcome = tariffs.import_document(service.app.context, document, "test", author)
    version_id = int(outcome["version"]["id"])
    tariffs.approve(service.app.context, str(version_id), approver)
    tariffs.activate(service.app.context, str(version_id), approver)
    return version_id


def point_cli_at(service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Service:
    """The command line's environment set to the service's database."""
    monkeypatch.setenv("SETTLEMENT_DATABASE_URL", service.app.settings.database_url)
    monkeypatch.setenv("SETTLEMENT_TARIFFS", str(TARIFFS))
    monkeypatch.setenv("SETTLEMENT_DATA_DIR", str(tmp_path / "cli-data"))
    monkeypatch.setenv("SETTLEMENT_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.delenv("SETTLEMENT_DEMO", raising=False)
    monkeypatch.delenv("SETTLEMENT_KEY", raising=False)  # each test says whose key acts
    return service


def act_as(service: Service, monkeypatch: pytest.MonkeyPatch, kind: str = "admin") -> str:
    """A new person's key of `kind`, set as SETTLEMENT_KEY for the commands the test runs; the person's audit
    name (`admin:NAME`)."""
    from settlement.services.auth import authenticate

    key = service.staff(kind)
    monkeypatch.setenv("SETTLEMENT_KEY", key)
    with service.app.context.uow() as tx:
        return authenticate(tx.repo, key).actor


@pytest.fixture
def cli_env(service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Service:
    """The command line pointed at the test's database."""
    return point_cli_at(service, tmp_path, monkeypatch)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LiveServer:
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        kwargs.setdefault("timeout", 30)
        return httpx.Client(base_url=self.url, headers=headers, **kwargs)


def serve_on_loopback(app: Any, what: str, **config: Any) -> tuple[str, uvicorn.Server, threading.Thread]:
    """An ASGI app in a uvicorn server on a free loopback port, in this process: (url, server, thread)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.01)
    return f"http://127.0.0.1:{port}", server, thread


def start_server(application: Application) -> LiveServer:
    """The app in a uvicorn server on a loopback port, in this process (so tests can set its clock)."""
    return LiveServer(*serve_on_loopback(create_app(application), "the test server", limit_concurrency=1000,
                                         backlog=2048))


@contextmanager
def serving(application: Application) -> Iterator[LiveServer]:
    """`start_server`, stopped when the block ends."""
    server = start_server(application)
    try:
        yield server
    finally:
        server.server.should_exit = True
        server.thread.join(timeout=10)


@pytest.fixture
def live(service: Service) -> Iterator[LiveServer]:
    with serving(service.app) as running:
        yield running


@pytest.fixture
def pg_live(pg_service: Service) -> Iterator[LiveServer]:
    with serving(pg_service.app) as running:
        yield running


def new_id_number(region: str = "611002", birth: str | None = None) -> str:
    """A valid, unused-looking ID number: tests share one PostgreSQL database per run, so persons must not
    collide (a random birth date and sequence give some 24 million of them)."""
    if birth is None:
        day = date(1940, 1, 1) + timedelta(days=secrets.randbelow(365 * 65))
        birth = f"{day:%Y%m%d}"
    body = f"{region}{birth}{secrets.randbelow(1000):03d}"
    return body + check_character(body)


def claim_body(hospital_code: str, level: str, id_number: str, *, amount: str = "1000.00", code: str = "A1X",
               region: str = "611002", visit_type: str = "inpatient", settled_at: str = "2024-06-15T10:00:00+08:00",
               discharge: str = "2024-06-15", lines: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """A valid service claim; by default one 1,000.00 line of an item not in the catalogue is replaced by a
    class A bed-day of the shipped catalogue so that money flows."""
    if lines is None:
        lines = [{"id": "1", "code": "001109000010001", "name": "床位费", "quantity": "1", "unit_price": amount,
                  "amount": amount}]
        # The bed-day is capped at 30.00 a day: use a class A item without a cap instead.
        lines = [{"id": "1", "code": "XJ01CAA010A001010101107", "name": "阿莫西林胶囊", "quantity": "1",
                  "unit_price": amount, "amount": amount}]
    return {
        "hospital": {"code": hospital_code, "level": level},
        "visit": {"id": f"ZY{secrets.token_hex(4)}", "type": visit_type, "admission_date": discharge,
                  "discharge_date": discharge, "settled_at": settled_at},
        "patient": {"id_number": id_number, "name": "王喆", "scheme": "resident", "region": region},
        "lines": lines,
    }


def roster_csv(rows: list[tuple[str, str, str, str]], region: str = "611002") -> bytes:
    """rows of (id_number, category, valid_from, valid_to) for residents of `region` (the roster's region is the
    one a claim for the person must name)."""
    text = "id_number,name,scheme,region,category,valid_from,valid_to\n"
    text += "".join(f"{i},测试,resident,{region},{c},{f},{t}\n" for i, c, f, t in rows)
    return text.encode("utf-8")


def import_roster_rows(service: Service, rows: list[tuple[str, str, str, str]], region: str = "611002") -> None:
    from settlement.bootstrap import SYSTEM
    from settlement.services.roster import import_roster

    import_roster(service.app.context, SYSTEM, "test.csv", roster_csv(rows, region))


Factory = Callable[..., Any]
