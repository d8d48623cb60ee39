"""The composition root: the one place that reads settings and wires the database, tariffs and services."""

from __future__ import annotations

import logging
import math
import secrets
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.fernet import Fernet
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from settlement.config import Settings
from settlement.db.engine import make_bookkeeping_engine, make_engine
from settlement.db.migrate import upgrade
from settlement.db.settling import settling_for
from settlement.files import private_dir, write_private
from settlement.paths import demo_roster_file
from settlement.services import admin, tariffs
from settlement.services.auth import Caller
from settlement.services.context import Context
from settlement.services.errors import ServiceCode, ServiceError
from settlement.services.roster import import_roster
from settlement.services.soap_access import bind_dialects, cipher_for, issue_password, new_credentials_key
from settlement.services.tariff_schedule import TariffSchedule
from settlement.services.uow import UnitOfWorkFactory
from settlement.soap.dialects import Registry, load_registry

log = logging.getLogger("settlement")
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


# A secret key holding one of these (case and separators aside) is an example left in place, whatever its length.
PLACEHOLDER_SECRETS = ("changeme", "replaceme", "placeholder", "example", "yoursecret", "testsecret", "insecure")
MIN_SECRET_CHARACTERS = 32
MIN_SECRET_BITS_PER_CHARACTER = 3.0  # Shannon entropy of its characters: "aaaa..." or "abab..." is not a key


def weak_secret(value: str) -> str | None:
    """Why `value` is too weak to sign quote ids, or None. A generated key (48 random url-safe bytes) passes."""
    letters = "".join(character for character in value.lower() if character.isalnum())
    if any(placeholder in letters for placeholder in PLACEHOLDER_SECRETS):
        return "it is a placeholder"
    if len(value) < MIN_SECRET_CHARACTERS:
        return f"it has {len(value)} characters, fewer than {MIN_SECRET_CHARACTERS}"
    counts = Counter(value)
    entropy = -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())
    if entropy < MIN_SECRET_BITS_PER_CHARACTER:
        return f"its characters repeat too much ({entropy:.1f} bits each, fewer than " \
               f"{MIN_SECRET_BITS_PER_CHARACTER:.0f})"
    return None


def secret_key(settings: Settings) -> bytes:
    """The key that signs quote ids: SETTLEMENT_SECRET_KEY, else data_dir/secret.key (generated on first start).
    A weak one is refused at start, as a credentials key that is not a Fernet key is."""
    if settings.secret_key:
        value, origin = settings.secret_key, "SETTLEMENT_SECRET_KEY"
    else:
        path = settings.data_dir / "secret.key"
        if not path.exists():
            private_dir(path.parent)
            write_private(path, secrets.token_urlsafe(48))
        value, origin = path.read_text(encoding="utf-8").strip(), str(path)
    reason = weak_secret(value)
    if reason is not None:
        raise ServiceError(ServiceCode.REQUEST_MALFORMED,
                           f"{origin} is too weak to sign quote ids: {reason}. Use at least "
                           f"{MIN_SECRET_CHARACTERS} random characters, e.g. python3 -c 'import secrets; "
                           "print(secrets.token_urlsafe(48))' (or leave it unset: one is generated)")
    return value.encode("utf-8")


def credentials_cipher(settings: Settings) -> Fernet:
    if settings.credentials_key:
        return cipher_for(settings.credentials_key)
    path = settings.data_dir / "credentials.key"
    if not path.exists():
        private_dir(path.parent)
        write_private(path, new_credentials_key())
    return cipher_for(path.read_text(encoding="ascii").strip())


def build(settings: Settings, *, migrate: bool = True) -> Application:
    secret = secret_key(settings)  # a weak key is refused before the database is touched
    engine = make_engine(settings.database_url, pool_size=settings.db_pool_size,
                         lock_timeout_ms=settings.lock_timeout_ms,
                         connect_timeout_seconds=settings.db_connect_timeout_seconds,
                         statement_timeout_ms=settings.statement_timeout_ms)
    if migrate:
        upgrade(engine)
    # No autoflush: the use cases flush where they need ids, which keeps round trips to the database few.
    units_of_work = UnitOfWorkFactory(sessionmaker(engine, expire_on_commit=False, autoflush=False))
    context = Context(
        uow=units_of_work,
        tariffs=TariffSchedule(),
        settling=settling_for(engine, units_of_work),
        secret=secret,
        clock=utc_now,
        quote_ttl_seconds=settings.quote_ttl_seconds,
        claim_clock_skew_seconds=settings.claim_clock_skew_seconds,
    )
    bookkeeping = make_bookkeeping_engine(settings.database_url, pool_size=max(2, settings.db_pool_size // 2),
                                          connect_timeout_seconds=settings.db_connect_timeout_seconds,
                                          statement_timeout_ms=settings.statement_timeout_ms)
    context.bookkeeping = bookkeeping
    return Application(settings, engine, context, load_registry(settings.adapters_dir), credentials_cipher(settings),
                       bookkeeping)


def missing_data(settings: Settings) -> list[str]:
    """What the service cannot run without and its settings point at nothing: no dialect, no tariff version, no
    payers file. Checked before `serve` and `scheduler` start (they refuse on any), so that an incomplete install
    stops with a clear message instead of serving without SOAP or reconciliation; empty when all is there."""
    problems = []
    adapters = settings.adapters_dir
    if not adapters.is_dir():
        problems.append(f"SETTLEMENT_ADAPTERS_DIR {adapters}: no such folder")
    elif not any(adapters.glob("*/manifest.yaml")):
        problems.append(f"SETTLEMENT_ADAPTERS_DIR {adapters}: no dialect in it (a folder with a manifest.yaml)")
    tariffs_dir = settings.tariffs_dir
    if not tariffs_dir.is_dir():
        problems.append(f"SETTLEMENT_TARIFFS {tariffs_dir}: no such folder")
    elif not any(path.parent.name.isascii() and path.parent.name.isdigit() for path in tariffs_dir.glob("*/*.yaml")):
        problems.append(f"SETTLEMENT_TARIFFS {tariffs_dir}: no tariff version in it (<region>/<version>.yaml)")
    if not settings.payers_file.is_file():
        problems.append(f"SETTLEMENT_PAYERS_FILE {settings.payers_file}: no such file")
    return problems


SYSTEM = Caller(0, "admin", "system", None)


def prepare(app: Application) -> list[str]:
    """On a database without tariff versions, record the shipped ones as in force; on an empty database with demo
    on, seed a demo hospital, keys (two administrators: one records a tariff draft, the other approves it) and
    roster.

    Returns lines to print for the operator: the demo keys when they are made (once), afterwards only where they
    are kept (data_dir/demo-keys.txt, readable by its owner only).
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
        roster = demo_roster_file()
        report = import_roster(app.context, SYSTEM, roster.name, roster.read_bytes())
        bind_dialects(app.context, code, sorted(app.dialects.dialects), set(app.dialects.dialects), "system")
        soap_password = issue_password(app.context, app.cipher, code, "system")
        private_dir(keys_file.parent)
        write_private(keys_file, f"hospital {code} {hospital_key}\nadmin {admin_key}\n"
                                 f"approver {second_admin_key}\nfinance {finance_key}\n"
                                 f"soap {code} {soap_password}\n")
        lines.append(f"demo roster: {report.accepted} rows from {roster.name}")
        lines.append(f"demo keys (shown this once; kept in {keys_file}):")
        lines.extend(f"  {line}" for line in keys_file.read_text(encoding="utf-8").splitlines())
    elif keys_file.exists():
        lines.append(f"demo keys: kept in {keys_file} (readable by you only)")
    return lines
