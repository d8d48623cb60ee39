"""The composition root: the one place that reads settings and wires the database, tariffs and services."""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.fernet import Fernet
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from settlement.config import Settings
from settlement.db.engine import make_bookkeeping_engine, make_engine
from settlement.db.migrate import upgrade
from settlement.db.settling import settling_for
from settlement.services import admin, tariffs
from settlement.services.auth import Caller
from settlement.services.context import Context
from settlement.services.roster import import_roster
from settlement.services.soap_access import bind_dialects, cipher_for, issue_password, new_credentials_key
from settlement.services.tariff_schedule import TariffSchedule
from settlement.services.uow import UnitOfWorkFactory
from settlement.soap.dialects import Registry, load_registry

log = logging.getLogger("settlement")
DEMO_ROSTER = Path(__file__).resolve().parents[2] / "examples" / "roster" / "demo-roster.csv"
DEMO_HOSPITAL = ("H61100200011", "商州区人民医院", "county", "611002")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Application:
    settings: Settings
    engine: Engine
    context: Context
    dialects: Registry
    cipher: Fernet
    bookkeeping_engine: Engine | None = None

    def dispose(self) -> None:
        self.engine.dispose()
        if self.bookkeeping_engine is not None:
            self.bookkeeping_engine.dispose()


def write_private(path: Path, text: str) -> None:
    """A secret file created readable by its owner only (never briefly world-readable)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)
    path.chmod(0o600)  # an existing file keeps its old mode through O_CREAT


def secret_key(settings: Settings) -> bytes:
    if settings.secret_key:
        return settings.secret_key.encode("utf-8")
    path = settings.data_dir / "secret.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(path, secrets.token_urlsafe(48))
    return path.read_text(encoding="ascii").strip().encode("ascii")


def credentials_cipher(settings: Settings) -> Fernet:
    if settings.credentials_key:
        return cipher_for(settings.credentials_key)
    path = settings.data_dir / "credentials.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(path, new_credentials_key())
    return cipher_for(path.read_text(encoding="ascii").strip())


def build(settings: Settings, *, migrate: bool = True) -> Application:
    engine = make_engine(settings.database_url, pool_size=settings.db_pool_size,
                         lock_timeout_ms=settings.lock_timeout_ms)
    if migrate:
        upgrade(engine)
    # No autoflush: the use cases flush where they need ids, which keeps round trips to the database few.
    units_of_work = UnitOfWorkFactory(sessionmaker(engine, expire_on_commit=False, autoflush=False))
    context = Context(
        uow=units_of_work,
        tariffs=TariffSchedule(),
        settling=settling_for(engine, units_of_work),
        secret=secret_key(settings),
        clock=utc_now,
        quote_ttl_seconds=settings.quote_ttl_seconds,
    )
    bookkeeping = make_bookkeeping_engine(settings.database_url, pool_size=max(2, settings.db_pool_size // 2))
    context.bookkeeping = bookkeeping
    return Application(settings, engine, context, load_registry(settings.adapters_dir), credentials_cipher(settings),
                       bookkeeping)


SYSTEM = Caller(0, "admin", "system", None)


def prepare(app: Application) -> list[str]:
    """On a database without tariff versions, record the shipped ones as in force; on an empty database with demo
    on, seed a demo hospital, keys (two administrators: one records a tariff draft, the other approves it) and
    roster.

    Returns lines to print for the operator (the demo keys are shown once and kept in data_dir/demo-keys.txt).
    """
    added = tariffs.seed(app.context, app.settings.tariffs_dir)
    lines = [f"tariff versions recorded as in force: {', '.join(added)}"] if added else []
    waiting = tariffs.unrecorded_files(app.context, app.settings.tariffs_dir)
    if waiting:
        lines.append(f"tariff files not in the database: {', '.join(waiting)} (settlement tariffs import "
                     f"{app.settings.tariffs_dir}, then approve and activate)")
    if not app.settings.demo:
        return lines
    with app.context.uow() as tx:
        seeded = tx.repo.hospital_by_code(DEMO_HOSPITAL[0]) is not None
    keys_file = app.settings.data_dir / "demo-keys.txt"
    if not seeded:
        code, name, level, region = DEMO_HOSPITAL
        hospital_key = admin.add_hospital(app.context, code, name, level, region, "system")
        admin_key = admin.add_staff(app.context, "admin", "demo-admin", "system")
        second_admin_key = admin.add_staff(app.context, "admin", "demo-approver", "system")
        finance_key = admin.add_staff(app.context, "finance", "demo-finance", "system")
        report = import_roster(app.context, SYSTEM, DEMO_ROSTER.name, DEMO_ROSTER.read_bytes())
        bind_dialects(app.context, code, sorted(app.dialects.dialects), set(app.dialects.dialects), "system")
        soap_password = issue_password(app.context, app.cipher, code, "system")
        keys_file.parent.mkdir(parents=True, exist_ok=True)
        write_private(keys_file, f"hospital {code} {hospital_key}\nadmin {admin_key}\n"
                                 f"approver {second_admin_key}\nfinance {finance_key}\n"
                                 f"soap {code} {soap_password}\n")
        lines.append(f"demo roster: {report.accepted} rows from {DEMO_ROSTER.name}")
    if keys_file.exists():
        lines.append(f"demo keys (kept in {keys_file}):")
        lines.extend(f"  {line}" for line in keys_file.read_text(encoding="utf-8").splitlines())
    return lines
