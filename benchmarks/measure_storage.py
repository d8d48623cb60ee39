"""What a settlement costs on disk (docs/scaling.md): bytes per settlement in each table and its indexes, measured on
a PostgreSQL database of its own.

Settles `--count` bills of one kind for `--persons` persons of the roster through the service's use case (the
pipelined transaction the REST service uses), reconciles the day with the basic insurance payer (its statement as
the ledger's own lines), runs VACUUM ANALYZE, and prints per table the heap, TOAST and index bytes divided by the
number of settlements. Kinds: `inpatient` (the shipped 24-line example bill, a 低保 patient) and `outpatient` (a
two-line outpatient bill).

Run: `.venv/bin/python -m benchmarks.measure_storage --kind inpatient --count 5000` (about a minute). It creates and
drops its database on SETTLEMENT_BENCH_PG (default postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import secrets
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg
from tests.service.conftest import new_id_number, roster_csv

from settlement.bootstrap import SYSTEM, build, prepare
from settlement.config import Settings
from settlement.insurers.config import PayerConfig, StatementSource
from settlement.services.admin import add_hospital
from settlement.services.auth import authenticate
from settlement.services.reconciliation import Reconciler, engine_lines
from settlement.services.roster import import_roster
from settlement.services.settlements import SettlementService
from settlement.wire.requests import SettleRequest

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("SETTLEMENT_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
DAY = date(2024, 6, 15)
TABLES = ("settlements", "ledger_entries", "idempotency_records", "audit_log", "person_years", "fund_years",
          "statement_rows", "soap_exchanges")


def claim(kind: str, person: str, number: int) -> dict[str, Any]:
    example = json.loads((ROOT / "examples" / "requests" / "settle-dibao-county.json").read_text(encoding="utf-8"))
    body = copy.deepcopy(example["claim"])
    body["patient"]["id_number"] = person
    body["visit"] = {"id": f"V{number:09d}", "type": kind, "admission_date": "2024-06-15",
                     "discharge_date": "2024-06-15", "settled_at": "2024-06-15T10:15:00+08:00"}
    if kind == "outpatient":
        body["lines"] = body["lines"][:2]
    body.pop("total", None)
    return dict(body)


def measure(kind: str, count: int, persons: int) -> None:
    name = f"settlement_storage_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            application = build(Settings(database_url=url, tariffs_dir=ROOT / "tariffs",
                                         secret_key=secrets.token_urlsafe(48), data_dir=Path(tmp)))
            application.context.clock = lambda: datetime(2024, 6, 15, 2, 0, tzinfo=UTC)
            try:
                prepare(application)
                key = add_hospital(application.context, "H61100200011", "商州区人民医院", "county", "611002", "m")
                people = [new_id_number() for _ in range(persons)]
                import_roster(application.context, SYSTEM, "storage.csv",
                              roster_csv([(person, "dibao_rural_a", "2024-01-01", "") for person in people]))
                with application.context.uow() as tx:
                    caller = authenticate(tx.repo, key)
                service = SettlementService(application.context)
                started = time.monotonic()
                for number in range(count):
                    reply = service.settle(caller, SettleRequest.model_validate({
                        "transaction_id": f"T{number:09d}", "claim": claim(kind, people[number % persons], number)}))
                    assert reply.status == 201, reply.body
                settled = time.monotonic() - started
                payer = PayerConfig(code="basic", name="basic", funds=["390100", "310100"],
                                    statement=StatementSource(source="file", format="csv"))
                Reconciler(application.context, {"basic": payer}, Path(tmp),
                           fetch=lambda p, d, r, i: engine_lines(application.context, p, d)).run("basic", DAY)
            finally:
                application.dispose()
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("VACUUM ANALYZE")
            rows = {table: connection.execute(
                "SELECT pg_relation_size(c.oid), COALESCE(pg_total_relation_size(c.reltoastrelid), 0), "
                "pg_indexes_size(c.oid), (SELECT count(*) FROM " + table + ") FROM pg_class c "
                "WHERE c.relname = %s", (table,)).fetchone() for table in TABLES}
            ledger = connection.execute("SELECT count(*) FROM ledger_entries").fetchone()
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"{count} {kind} settlements for {persons} persons in {settled:.1f} s; "
          f"{ledger[0] if ledger else 0} ledger entries ({(ledger[0] if ledger else 0) / count:.2f} a settlement)")
    print(f"{'table':22} {'rows':>8} {'heap B/st':>10} {'toast B/st':>10} {'index B/st':>10} {'total B/st':>10}")
    total = 0.0
    for table, row in rows.items():
        if row is None:
            continue
        heap, toast, index, number = (int(value) for value in row)
        per = (heap + toast + index) / count
        total += per
        print(f"{table:22} {number:8} {heap / count:10.0f} {toast / count:10.0f} {index / count:10.0f} {per:10.0f}")
    print(f"{'all':22} {'':8} {'':10} {'':10} {'':10} {total:10.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=["inpatient", "outpatient"], default="inpatient")
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--persons", type=int, default=1000)
    arguments = parser.parse_args()
    measure(arguments.kind, arguments.count, arguments.persons)


if __name__ == "__main__":
    main()
