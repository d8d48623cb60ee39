"""Building a ledger for the reconciliation tests, a fake payer (statements given by the test, no network), a
checksum of everything money-bearing, and a naive comparison kept as a planted-fault control.

On PostgreSQL the tests of a run share one database, so a business day's ledger may hold other tests' entries:
every test reconciles a payer code of its own, builds its statements from `engine_lines` (the ledger's side of
the day, other tests' entries included) and damages only rows of its own settlements, so every expectation stays
exact."""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, text

from settlement.insurers.config import PayerConfig, StatementSource
from settlement.insurers.statements import StatementLine
from settlement.services.auth import Caller, authenticate
from settlement.services.finance import Filters, list_discrepancies
from settlement.services.reconciliation import Reconciler, engine_lines
from settlement.services.settlements import SettlementService
from settlement.wire.requests import ReverseRequest, SettleRequest
from tests.service.conftest import Service, claim_body, new_id_number

SHANGHAI = ZoneInfo("Asia/Shanghai")
NATIONAL = {"payer_only": 1, "engine_only": 2, "amount_differs": 3}  # detail reconciliation 3202 (domain.md)
BASIC_FUNDS = ["390100", "310100"]
FINANCE = Caller(0, "finance", "test-finance", None)


def at(day: date, hour: int, minute: int = 0, second: int = 0) -> datetime:
    """An instant of a business day, Shanghai time."""
    return datetime.combine(day, dt_time(hour, minute, second), SHANGHAI)


def fen(amount: Decimal | str) -> int:
    return int(Decimal(amount) * 100)


@dataclass
class Desk:
    """A hospital's cashier settling through the service (no HTTP: fast enough for a thousand settlements)."""

    service: Service
    code: str
    key: str
    caller: Caller
    settlements: SettlementService

    def settle(self, when: datetime, *, amount: str = "1000.00", person: str | None = None,
               transaction_id: str | None = None) -> str:
        """A settlement recorded at `when` (the service clock); its public id."""
        self.service.clock.now = when.astimezone(UTC)
        body = claim_body(self.code, "county", person or new_id_number(), amount=amount,
                          settled_at=when.isoformat(), discharge=when.date().isoformat())
        reply = self.settlements.settle(self.caller, SettleRequest.model_validate(
            {"transaction_id": transaction_id or f"T-{secrets.token_hex(8)}", "claim": body}))
        assert reply.status == 201, reply.body
        settlement_id: str = reply.json()["settlement_id"]
        return settlement_id

    def reverse(self, when: datetime, settlement_id: str) -> None:
        self.service.clock.now = when.astimezone(UTC)
        reply = self.settlements.reverse(self.caller, settlement_id, ReverseRequest(
            transaction_id=f"R-{secrets.token_hex(8)}", reason="test"))
        assert reply.status == 201, reply.body


def desk(service: Service) -> Desk:
    code, key = service.hospital()
    with service.app.context.uow() as tx:
        caller = authenticate(tx.repo, key)
    return Desk(service, code, key, caller, SettlementService(service.app.context))


@dataclass(frozen=True)
class Seeded:
    settlement_id: str
    hospital_code: str
    when: datetime


def seed_day(service: Service, day: date, count: int, *, hospitals: int = 4, patients: int = 100,
             last: dt_time = dt_time(22, 0)) -> tuple[list[Desk], list[Seeded]]:
    """`count` settlements on one business day, from 08:00 to `last` (Shanghai), spread over a few hospitals and
    patients, with amounts (800.00 to 1,799.99) above every deductible, so that basic insurance pays each."""
    desks = [desk(service) for _ in range(hospitals)]
    people = [new_id_number() for _ in range(patients)]
    start = at(day, 8)
    span = (datetime.combine(day, last, SHANGHAI) - start).total_seconds()
    seeded = []
    for n in range(count):
        cashier = desks[n % hospitals]
        when = start + timedelta(seconds=int(span * n / max(count, 1)))
        amount = f"{800 + (n * 37) % 1000}.{(n * 53) % 100:02d}"
        seeded.append(Seeded(cashier.settle(when, amount=amount, person=people[n % patients]), cashier.code, when))
    return desks, seeded


def new_payer(funds: list[str] | None = None) -> PayerConfig:
    """A payer under a code of its own: a run is one record per (payer, business date), and on PostgreSQL the
    tests share one database."""
    return PayerConfig(code=f"p{secrets.token_hex(5)}", name="基本医疗保险（测试）", funds=funds or BASIC_FUNDS,
                       statement=StatementSource(source="file", format="csv"))


@dataclass
class FakePayer:
    """The fetch of a Reconciler: answers the statement the test prepared for the day, and counts the calls."""

    statements: dict[date, list[StatementLine]] = field(default_factory=dict)
    calls: list[tuple[str, date, str]] = field(default_factory=list)
    pause: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, payer: PayerConfig, day: date, request_id: str, inbox: Path) -> list[StatementLine]:
        with self.lock:
            self.calls.append((payer.code, day, request_id))
        if self.pause:
            threading.Event().wait(self.pause)
        return list(self.statements.get(day, []))


def reconciler(service: Service, payer: PayerConfig, fetch: FakePayer, *payers: PayerConfig) -> Reconciler:
    return Reconciler(service.app.context, {p.code: p for p in (payer, *payers)}, service.tmp / "inbox",
                      timedelta(minutes=10), fetch=fetch)


# The faults a payer's statement may carry

def drop(lines: list[StatementLine], settlement_ids: Iterable[str]) -> list[StatementLine]:
    gone = set(settlement_ids)
    return [line for line in lines if line.settlement_id not in gone]


def change(lines: list[StatementLine], deltas: dict[str, Decimal]) -> list[StatementLine]:
    return [replace(line, amount=line.amount + deltas[line.settlement_id]) if line.settlement_id in deltas
            and line.entry_kind == "settlement" else line for line in lines]


def phantom(day: date, hospital_code: str, amount: str, fund: str = "390100") -> StatementLine:
    """A row the payer has and the engine never made (an id of the engine's shape that no settlement has)."""
    return StatementLine(f"ST{day:%Y%m%d}{secrets.token_hex(6).upper()}", "settlement", fund, hospital_code,
                         Decimal(amount), at(day, 12))


def mine(lines: list[StatementLine], settlement_ids: Iterable[str]) -> dict[str, StatementLine]:
    """The settlement rows of the given settlements, by settlement id."""
    wanted = set(settlement_ids)
    return {line.settlement_id: line for line in lines
            if line.settlement_id in wanted and line.entry_kind == "settlement"}


# What was found

Key = tuple[str, str, str]  # settlement, entry, fund
Item = tuple[str, int, bool, str, str, str, str, int | None, int | None]


def item_of(kind: str, timing: bool, line: StatementLine, engine_fen: int | None, payer_fen: int | None) -> Item:
    """(kind, national code, timing, settlement, entry, fund, hospital, engine fen, payer fen)."""
    return (kind, NATIONAL[kind], timing, line.settlement_id, line.entry_kind, line.fund, line.hospital_code,
            engine_fen, payer_fen)


def listed(service: Service, payer: str, day: date | None = None, status: str = "all") -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = list_discrepancies(service.app.context, FINANCE, Filters(
        payer=payer, business_date=day, status=status), limit=100_000)["items"]
    return items


def as_items(found: Iterable[dict[str, Any]]) -> list[Item]:
    return sorted((item["kind"], item["code"], item["timing"], item["settlement_id"], item["entry_kind"],
                   item["fund"], item["hospital_code"],
                   fen(item["engine_amount"]) if item["engine_amount"] is not None else None,
                   fen(item["payer_amount"]) if item["payer_amount"] is not None else None) for item in found)


def check_found(found: list[Item], expected: list[Item]) -> None:
    """Exactly the expected discrepancies: no more, no fewer, kinds, codes, timing flags and amounts."""
    assert len(found) == len(set(found)), "duplicate discrepancies"
    assert sorted(found) == sorted(expected)


def naive_compare(engine: list[StatementLine], payer: list[StatementLine]) -> list[Item]:
    """The comparison a hurried implementation writes: a Python loop over both sides, one day at a time. It finds
    the one-sided rows and the amounts that differ, but knows nothing of the adjacent days (no timing flag)."""
    ours = {(line.settlement_id, line.entry_kind, line.fund): line for line in engine}
    theirs = {(line.settlement_id, line.entry_kind, line.fund): line for line in payer}
    found: list[Item] = []
    for key, line in ours.items():
        other = theirs.get(key)
        if other is None:
            found.append(item_of("engine_only", False, line, line.amount_fen, None))
        elif other.amount_fen != line.amount_fen:
            found.append(item_of("amount_differs", False, line, line.amount_fen, other.amount_fen))
    for key, line in theirs.items():
        if key not in ours:
            found.append(item_of("payer_only", False, line, None, line.amount_fen))
    return sorted(found)


class NaiveStore:
    """A rerun done naively: every run appends what it finds (no run record, no conflict key)."""

    def __init__(self) -> None:
        self.rows: list[Item] = []

    def run(self, engine: list[StatementLine], payer: list[StatementLine]) -> None:
        self.rows.extend(naive_compare(engine, payer))


# The ledger, untouched

MONEY_TABLES = ("settlements", "ledger_entries", "reversals", "corrections", "fund_years")


def checksum(service: Service, tables: tuple[str, ...] = MONEY_TABLES) -> str:
    """A digest of every row of the money-bearing tables, in id order (key order for fund_years)."""
    digest = hashlib.sha256()
    with service.app.engine.connect() as connection:
        for table in tables:
            order = "id_number, year, fund" if table == "fund_years" else "id"
            for row in connection.execute(text(f"SELECT * FROM {table} ORDER BY {order}")):
                digest.update(repr(tuple(row)).encode())
            digest.update(b"|")
    return digest.hexdigest()


def scalar(service: Service, sql: str, **params: Any) -> Any:
    with service.app.engine.connect() as connection:
        return connection.execute(text(sql), params).scalar()


def rows(service: Service, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with service.app.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql), params)]


def run_records(service: Service, payer: str) -> list[tuple[Any, ...]]:
    return rows(service, "SELECT id, business_date, status, attempts FROM reconciliation_runs WHERE payer = :payer",
                payer=payer)


def day_lines(service: Service, payer: PayerConfig, day: date) -> list[StatementLine]:
    return engine_lines(service.app.context, payer, day)


def year_mismatches(service: Service, settlement_ids: Iterable[str], *,
                    ignore_corrections: bool = False) -> list[tuple[Any, ...]]:
    """(person, year, fund, figure, ledger sum) wherever the person's year figure is not the sum of the ledger,
    for the persons of the given settlements. `ignore_corrections` is the planted fault of the controls: a sum
    that leaves the correction entries out."""
    wanted = sorted(set(settlement_ids))
    skip = " AND l.correction_id IS NULL" if ignore_corrections else ""
    found = []
    with service.app.engine.connect() as connection:
        people = {(str(a), int(b)) for a, b in connection.execute(text(
            "SELECT id_number, insurance_year FROM settlements WHERE public_id IN :ids").bindparams(
                bindparam("ids", expanding=True)), {"ids": wanted})}
        for person, year in sorted(people):
            figures: dict[str, int] = dict(connection.execute(text(
                "SELECT fund, paid_fen FROM fund_years WHERE id_number = :p AND year = :y"), {"p": person, "y": year})
                .all())
            ledger: dict[str, int] = dict(connection.execute(text(
                "SELECT l.fund, SUM(l.paid_fen) FROM ledger_entries l WHERE l.id_number = :p "
                f"AND l.insurance_year = :y{skip} GROUP BY l.fund"), {"p": person, "y": year}).all())
            for fund in sorted(set(figures) | set(ledger)):
                if int(figures.get(fund) or 0) != int(ledger.get(fund) or 0):
                    found.append((person, year, fund, figures.get(fund), ledger.get(fund)))
    return found
