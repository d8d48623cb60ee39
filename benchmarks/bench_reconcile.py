"""Reconciliation benchmark: one business day of N settlements against a payer's statement of N rows, on PostgreSQL.

Set-up (not timed, figures printed): its own database, the schema by the real command (`settlement db upgrade`),
the shipped tariffs and a few hospitals through the service, then one business day (2024-06-15, Asia/Shanghai)
of N settlements with one ledger entry each for fund 390100, generated in SQL (INSERT ... SELECT FROM
generate_series), and analysed as autovacuum would have done overnight. The payer's statement is the ledger read
back as StatementLine objects, with 10 rows dropped, 10 amounts changed and 10 extra rows, spread over the
hospitals (so every fund and hospital group differs and the details run over the whole day).

Timed: Reconciler.run for payer `basic` (fund 390100), with a fetch that returns the prepared lines; its phases
come from the run's progress messages and from timing each SQL statement on the engine:
- (a) the whole run: claiming the run and the fetch handing the lines over, storing the statement,
  reconciling, recording; against the 60 s target;
- (b) storing the statement: the delete of an earlier attempt's rows, the binary COPY (in its own transaction,
  committed; the statement's totals and key check are counted in Python as its rows pass), and ANALYZE after the
  commit (which also sets the new rows' hint bits). Beside it a COPY floor: the same rows sent the same way into
  a temporary table without key or index, nothing counted;
- (c) the reconciliation proper, everything after the statement is stored: the ledger's totals, the details,
  the timing statements, recording the run and its audit row, the commit, reading the result back. This is
  what the baseline stands for (it joins two tables already stored), so its ratio to the baseline is the one
  held against the 1.5x target; the whole run's ratio to the baseline is printed too.
Baseline, in the same run and on the same rows: a bare full outer join of the day's ledger entries with the
run's statement rows on the settlement key and fund, counting the rows that differ. The ledger knows a
settlement by its internal id and the statement by its public id, so the baseline includes the join to
settlements that translates one into the other (the least any comparison must do); it does not group, join
hospitals or write anything; it runs with the server's settings (JIT as configured), best of 2 executions
after the run. Each round is a first run (the previous round's run record, statement rows and discrepancies are
removed between rounds). Targets: the reconciliation within 1.5x of the baseline and the run under 60 s for
1,000,000 rows.

Run: `.venv/bin/python -m benchmarks.bench_reconcile [--rows 1000000 --rounds 2 --explain]`. It creates and drops
its own database on the PostgreSQL server named by SETTLEMENT_BENCH_PG (default
postgresql://postgres@127.0.0.1:5432/postgres). `--explain` prints EXPLAIN (ANALYZE, BUFFERS) of the totals and
details statements exactly as the last run sent them (in a transaction that is rolled back, JIT off as in the
service) and of the baseline; `--statements` lists every SQL statement of each run with when it started and how long
it took. Experiments: `--before-compare SQL` (repeatable) runs SQL inside the comparison's transaction, after the
statement is stored and just before the ledger's totals (e.g. `SET LOCAL work_mem = '64MB'`), standing for that
change in the service; `--keep` leaves the database, and `--reuse URL` runs against it again without seeding (after
`db upgrade`, so a new migration applies; schema changes can also be tried by hand with psql).
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, event

from benchmarks.bench_service import PG_ADMIN, ROOT
from settlement.bootstrap import Application, build
from settlement.config import Settings
from settlement.insurers.config import PayerConfig, StatementSource
from settlement.insurers.statements import StatementLine
from settlement.services import admin, tariffs
from settlement.services.reconciliation import Reconciler, day_bounds

DAY = date(2024, 6, 15)
FUND = "390100"
PAYER = PayerConfig(code="basic", name="基本医疗保险（基准测试）", funds=[FUND],
                    statement=StatementSource(source="file"))
HOSPITALS = (
    ("H61100200011", "商州区人民医院", "county", "611002"),
    ("H61100200012", "商州区中医医院", "county", "611002"),
    ("H61100000001", "商洛市中心医院", "city", "611000"),
    ("H61100000002", "商洛市中医医院", "city", "611000"),
    ("H61102100001", "洛南县医院", "county", "611021"),
    ("H61102100021", "洛南县城关镇卫生院", "township", "611021"),
    ("H61000000001", "陕西省人民医院", "provincial", "610000"),
    ("H61090000001", "安康市中心医院", "city", "610900"),
)
INJECTED = 10  # of each kind: dropped (engine only), amount changed, extra (payer only)
TARGET_RATIO = 1.5
TARGET_SECONDS = 60.0

# One business day of settlements, the n-th committed at n/N of the day (Asia/Shanghai). Public ids look like the
# service's (ST, the date, 12 hex digits) and are scattered like its random ones: n times an odd constant, modulo
# 2^48, is a bijection. Large JSON columns are kept small (in the service they are TOASTed, out of the heap).
SEED_SETTLEMENTS = """
    INSERT INTO settlements (public_id, hospital_id, transaction_id, id_number, insurance_year, visit_id,
        visit_type, settled_at, created_at, tariff_version_id, tariff_sha256, total_fen, out_of_catalogue_fen,
        over_price_limit_fen, pre_self_pay_fen, in_scope_fen, patient_fen, admissions, categories,
        accumulators_before, claim, result)
    SELECT 'ST20240615' || upper(lpad(to_hex((g * 181273593741) %% 281474976710656), 12, '0')),
           (%(hospitals)s::int[])[(1 + g %% %(hospital_count)s)::int],
           'TX' || lpad(g::text, 10, '0'),
           '6110021960' || lpad((g %% 100000000)::text, 8, '0'),
           2024,
           'V' || g,
           CASE WHEN g %% 5 = 0 THEN 'inpatient' ELSE 'outpatient' END,
           at - interval '2 minutes', at, %(tariff_id)s, %(tariff_sha)s,
           total, total / 20, total / 50, total / 10, total - total / 20 - total / 50 - total / 10,
           total - (total * 6) / 10, CASE WHEN g %% 5 = 0 THEN 1 ELSE 0 END,
           '[]', '{}', '{}', '{}'
    FROM (SELECT g, timestamptz '2024-06-15 00:00:00+08' + (g - 1) * (86400.0 / %(rows)s) * interval '1 second' AS at,
                 (2000 + (g * 7919) %% 2000000)::bigint AS total
          FROM generate_series(1::bigint, %(rows)s) AS g) AS day
"""
SEED_LEDGER = """
    INSERT INTO ledger_entries (settlement_id, hospital_id, id_number, insurance_year, fund, paid_fen,
        deductible_fen, cumulative_fen, created_at)
    SELECT id, hospital_id, id_number, insurance_year, %(fund)s, (total_fen * 6) / 10, 0, (total_fen * 6) / 10,
           created_at
    FROM settlements ORDER BY id
"""
LEDGER_SIDE = """
    SELECT s.public_id, h.code, l.paid_fen, l.created_at
    FROM ledger_entries l JOIN settlements s ON s.id = l.settlement_id JOIN hospitals h ON h.id = l.hospital_id
    ORDER BY l.id
"""
# The baseline: a bare full outer join of the day's ledger (its public ids through settlements) with the run's
# statement rows on the settlement key and fund, counting the rows that differ.
BASELINE = """
    SELECT count(*)
    FROM (SELECT s.public_id, l.fund, l.paid_fen FROM ledger_entries l JOIN settlements s ON s.id = l.settlement_id
          WHERE l.created_at >= %(low)s AND l.created_at < %(high)s AND l.fund = ANY(%(funds)s)) AS e
    FULL OUTER JOIN (SELECT settlement_id, fund, amount_fen FROM statement_rows WHERE run_id = %(run)s) AS r
      ON r.settlement_id = e.public_id AND r.fund = e.fund
    WHERE e.public_id IS NULL OR r.settlement_id IS NULL OR e.paid_fen <> r.amount_fen
"""


def statement_label(statement: str) -> str:
    if "INSERT INTO discrepancies" in statement:
        return "details"
    if "reconciliation: engine totals" in statement:
        return "engine totals"
    if "reconciliation: payer totals" in statement:
        return "payer totals"
    if "SET timing = true" in statement or "action = 'timing'" in statement or \
            "business_date IN (:previous_day, :next_day)" in statement:
        return "timing"
    if "DELETE FROM statement_rows" in statement:
        return "delete statement"
    if statement.startswith("ANALYZE statement_rows"):
        return "analyze"
    if "SET status = 'cleared'" in statement:
        return "clear"
    return "other"


@dataclass
class Trace:
    """What one Reconciler.run did, when: its progress messages and each SQL statement on the engine."""

    started: float = 0.0
    marks: list[tuple[float, str]] = field(default_factory=list)
    statements: list[tuple[str, float, str, Any]] = field(default_factory=list)  # label, seconds, SQL, parameters
    starts: list[float] = field(default_factory=list)  # when each statement started (perf_counter)
    before_compare: tuple[str, ...] = ()  # experiments: SQL run in the run's transaction just before the totals

    def say(self, message: str) -> None:
        self.marks.append((time.perf_counter(), message))

    def mark(self, prefix: str, default: float) -> float:
        """When the progress message starting with `prefix` came (`default` if it never did: the service's
        messages changed, and the phases printed are then wrong; the run's total stays right)."""
        return next((at for at, message in self.marks if message.startswith(prefix)), default)

    def seconds(self, label: str) -> float:
        return sum(seconds for name, seconds, _, _ in self.statements if name == label)

    def last(self, label: str) -> tuple[str, Any] | None:
        found = next((item for item in reversed(self.statements) if item[0] == label), None)
        return (found[2], found[3]) if found is not None else None


def instrument(engine: Engine, traces: list[Trace]) -> None:
    """Time every statement on the engine into the current trace (traces[-1])."""

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        trace = traces[-1] if traces else None
        if trace is not None and trace.before_compare and statement_label(statement) == "engine totals":
            for extra in trace.before_compare:
                started = time.perf_counter()
                conn.connection.driver_connection.execute(extra)
                trace.statements.append(("before compare", time.perf_counter() - started, extra, None))
        conn.info.setdefault("bench_started", []).append(time.perf_counter())

    def after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        started = conn.info["bench_started"].pop()
        seconds = time.perf_counter() - started
        if traces:
            traces[-1].starts.append(started)
            traces[-1].statements.append((statement_label(statement), seconds, statement, parameters))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)


@dataclass(frozen=True)
class Prepared:
    lines: list[StatementLine]
    expected: set[tuple[str, str, str, str, int | None, int | None]]  # id, hospital, fund, kind, engine, payer
    read_seconds: float
    build_seconds: float


def prepare_statement(database_url: str, rows: int) -> Prepared:
    """The ledger read back as the payer's statement lines, with the injected mismatches."""
    started = time.perf_counter()
    with psycopg.connect(database_url) as connection:
        connection.execute("SET TIME ZONE 'UTC'")
        ledger = connection.execute(LEDGER_SIDE).fetchall()
    read = time.perf_counter() - started
    started = time.perf_counter()
    lines = [StatementLine(public_id, "settlement", FUND, code, Decimal(paid).scaleb(-2), created)
             for public_id, code, paid, created in ledger]
    expected: set[tuple[str, str, str, str, int | None, int | None]] = set()
    spread = rows // (3 * INJECTED + 1)
    hospitals = len(HOSPITALS)
    # Positions spread over the day (none in its last ten minutes, which would count as a timing case) and over
    # the hospitals (settlement n is at hospital n mod H); removed from the end first so positions stay valid.
    positions = [(k + 1) * spread - (k + 1) * spread % hospitals + k % hospitals for k in range(3 * INJECTED)]
    for k, position in sorted(enumerate(positions), key=lambda item: -item[1]):
        line = lines[position]
        fen = line.amount_fen
        if k % 3 == 0:  # dropped by the payer
            del lines[position]
            expected.add((line.settlement_id, line.hospital_code, FUND, "engine_only", fen, None))
        elif k % 3 == 1:  # the payer's amount differs
            lines[position] = StatementLine(line.settlement_id, line.entry_kind, line.fund, line.hospital_code,
                                            line.amount + Decimal("0.37"), line.occurred_at)
            expected.add((line.settlement_id, line.hospital_code, FUND, "amount_differs", fen, fen + 37))
        else:  # a row the ledger does not have
            extra = StatementLine(f"ST20240615X{k:011d}", "settlement", FUND, HOSPITALS[k % hospitals][0],
                                  Decimal("123.45"), line.occurred_at)
            lines.insert(position + 1, extra)
            expected.add((extra.settlement_id, extra.hospital_code, FUND, "payer_only", None, 12345))
    return Prepared(lines, expected, read, time.perf_counter() - started)


def seed(app: Application, database_url: str, rows: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    started = time.perf_counter()
    tariffs.seed(app.context, app.settings.tariffs_dir)
    for code, name, level, region in HOSPITALS:
        admin.add_hospital(app.context, code, name, level, region, "bench")
    figures["tariffs and hospitals"] = time.perf_counter() - started
    with psycopg.connect(database_url) as connection:
        try:  # the rows are consistent by construction: skip the per-row foreign key checks where allowed
            connection.execute("SET session_replication_role = replica")
        except psycopg.Error:
            connection.rollback()
        hospital_ids = [row[0] for row in connection.execute("SELECT id FROM hospitals ORDER BY id")]
        tariff_id, tariff_sha = connection.execute(
            "SELECT id, sha256 FROM tariff_versions ORDER BY id LIMIT 1").fetchone() or (None, None)
        assert tariff_id is not None, "no tariff version was loaded"
        started = time.perf_counter()
        connection.execute(SEED_SETTLEMENTS, {"hospitals": hospital_ids, "hospital_count": len(hospital_ids),
                                              "tariff_id": tariff_id, "tariff_sha": tariff_sha, "rows": rows})
        figures["settlements"] = time.perf_counter() - started
        started = time.perf_counter()
        connection.execute(SEED_LEDGER, {"fund": FUND})
        figures["ledger entries"] = time.perf_counter() - started
    with psycopg.connect(database_url, autocommit=True) as connection:
        started = time.perf_counter()
        for table in ("settlements", "ledger_entries", "hospitals"):
            connection.execute(f"VACUUM ANALYZE {table}")
        figures["vacuum analyze"] = time.perf_counter() - started
    return figures


def baseline(database_url: str, run_id: int, repeats: int = 2) -> tuple[float, int]:
    """The best of `repeats` executions of the bare join (the first also sets the new rows' hint bits)."""
    low, high = day_bounds(DAY)
    best, found = float("inf"), -1
    with psycopg.connect(database_url) as connection:
        connection.execute("SET TIME ZONE 'UTC'")
        for _ in range(repeats):
            started = time.perf_counter()
            row = connection.execute(BASELINE, {"low": low, "high": high, "funds": [FUND], "run": run_id}).fetchone()
            best = min(best, time.perf_counter() - started)
            found = int(row[0]) if row else -1
            connection.rollback()
    return best, found


def copy_floor(database_url: str, lines: list[StatementLine]) -> float:
    """The same rows sent the way the service sends them (binary COPY, write_row, with their line numbers), into
    a temporary table with no index, key or constraint, and nothing counted on the way: what loading the
    statement costs before the table's key and the service's counting."""
    with psycopg.connect(database_url) as connection:
        connection.execute("CREATE TEMPORARY TABLE bench_floor (LIKE statement_rows INCLUDING DEFAULTS)")
        started = time.perf_counter()
        with connection.cursor() as cursor, cursor.copy(
                "COPY bench_floor (run_id, line, settlement_id, entry_kind, fund, hospital_code, amount_fen, "
                "occurred_at) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["bigint", "integer", "text", "text", "text", "text", "bigint", "timestamptz"])
            for number, line in enumerate(lines, 1):
                copy.write_row((0, number, line.settlement_id, line.entry_kind, line.fund, line.hospital_code,
                                line.amount_fen, line.occurred_at))
        seconds = time.perf_counter() - started
        connection.rollback()
    return seconds


def check(database_url: str, run_id: int, prepared: Prepared) -> str:
    with psycopg.connect(database_url) as connection:
        found = connection.execute(
            "SELECT settlement_id, hospital_code, fund, kind, engine_fen, payer_fen, entry_kind, timing, status "
            "FROM discrepancies WHERE run_id = %s", (run_id,)).fetchall()
    got = {tuple(row[:6]) for row in found}
    problems = []
    if got != prepared.expected or len(found) != len(prepared.expected):
        problems.append(f"missing {sorted(prepared.expected - got)[:5]}, unexpected "
                        f"{sorted(got - prepared.expected)[:5]}")
    if any(row[6] != "settlement" or row[7] or row[8] != "open" for row in found):
        problems.append("some discrepancy is not an open, non-timing settlement entry")
    if problems:
        raise SystemExit("DISCREPANCIES WRONG: " + "; ".join(problems))
    kinds = Counter(row[3] for row in found)
    return (f"discrepancies: exactly the {len(found)} injected ones ("
            + ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
            + f"), over {len({row[1] for row in found})} hospitals, none timing, all open")


def reset(database_url: str) -> None:
    """Remove the benchmark payer's run of the day (record, statement rows, discrepancies), so that the next
    round is a first run again, and leave the tables vacuumed and the checkpoint behind."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        with connection.transaction():
            runs = "SELECT id FROM reconciliation_runs WHERE payer = %(payer)s AND business_date = %(day)s"
            where = {"payer": PAYER.code, "day": DAY}
            connection.execute(f"DELETE FROM discrepancies WHERE run_id IN ({runs})", where)
            connection.execute(f"DELETE FROM statement_rows WHERE run_id IN ({runs})", where)
            connection.execute("DELETE FROM reconciliation_runs WHERE payer = %(payer)s AND business_date = %(day)s",
                               where)
        for table in ("statement_rows", "discrepancies", "reconciliation_runs"):
            connection.execute(f"VACUUM {table}")
        connection.execute("CHECKPOINT")


def explain(app: Application, trace: Trace, database_url: str, run_id: int) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of the run's totals and details statements as sent (after the same experiment
    statements, if any), rolled back; then of the baseline."""
    for label in ("engine totals", "payer totals", "details"):
        sent = trace.last(label)
        if sent is None:
            print(f"\n--- no {label} statement was sent in the run ---")
            continue
        statement, parameters = sent
        with app.engine.connect() as connection:
            connection.exec_driver_sql("SET LOCAL jit = off")  # as the service runs it
            for extra in trace.before_compare:
                connection.exec_driver_sql(extra)
            plan = connection.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters).all()
            connection.rollback()
        print(f"\n--- EXPLAIN (ANALYZE, BUFFERS) {label} ---")
        print("\n".join(row[0] for row in plan))
    low, high = day_bounds(DAY)
    with psycopg.connect(database_url) as connection:
        connection.execute("SET TIME ZONE 'UTC'")
        lines = [row[0] for row in connection.execute("EXPLAIN (ANALYZE, BUFFERS) " + BASELINE, {
            "low": low, "high": high, "funds": [FUND], "run": run_id})]
        connection.rollback()
    print("\n--- EXPLAIN (ANALYZE, BUFFERS) baseline (as measured: the server's settings, JIT included) ---")
    print("\n".join(lines))


def one_round(reconciler: Reconciler, traces: list[Trace], database_url: str, prepared: Prepared,
              before_compare: tuple[str, ...]) -> dict[str, Any]:
    trace = Trace(before_compare=before_compare)
    traces.append(trace)
    load_before = os.getloadavg()[0]
    trace.started = time.perf_counter()
    result = reconciler.run(PAYER.code, DAY, trace.say)
    ended = time.perf_counter()
    if result.status != "done":
        raise SystemExit(f"the run ended {result.status}: {result.error}")
    storing_at = trace.mark("comparing", trace.started)
    compare_at = trace.mark("totals", storing_at)
    figures: dict[str, Any] = {
        "run_id": result.run_id, "trace": trace, "run": ended - trace.started,
        "claim and fetch": storing_at - trace.started, "storing": compare_at - storing_at,
        "compare": ended - compare_at, "before compare": trace.seconds("before compare"),
        "delete": trace.seconds("delete statement"), "analyze": trace.seconds("analyze"),
        "engine totals": trace.seconds("engine totals"), "payer totals": trace.seconds("payer totals"),
        "details": trace.seconds("details"), "timing": trace.seconds("timing"),
        "engine_count": result.engine_count, "payer_count": result.payer_count,
    }
    # The COPY goes through the driver's own cursor (not the engine's events): the storing phase less the
    # statements around it (opening the transaction, SET LOCAL jit, the delete and ANALYZE).
    figures["copy"] = figures["storing"] - figures["delete"] - figures["analyze"]
    figures["finish"] = figures["compare"] - sum(figures[name] for name in (
        "before compare", "engine totals", "payer totals", "details", "timing"))
    figures["baseline"], figures["baseline_found"] = baseline(database_url, result.run_id)
    figures["load"] = (load_before, os.getloadavg()[0])  # the machine's 1-minute load, before the run and after it
    figures["copy floor"] = copy_floor(database_url, prepared.lines)
    figures["check"] = check(database_url, result.run_id, prepared)
    return figures


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def report(number: int, rows: int, figures: dict[str, Any]) -> None:
    run, storing, compare, base = figures["run"], figures["storing"], figures["compare"], figures["baseline"]
    extra = f"experiment {figures['before compare']:.2f} + " if figures["trace"].before_compare else ""
    payer_totals = f" + payer totals {figures['payer totals']:.2f}" if figures["payer totals"] else ""
    print(f"round {number}: rows {rows:,}; load average (1 min) {figures['load'][0]:.2f} before the run, "
          f"{figures['load'][1]:.2f} after the baseline (anything else running on the machine shows here)")
    print(f"  (a) whole run {run:.2f} s, target under {TARGET_SECONDS:.0f} s: {verdict(run < TARGET_SECONDS)}; "
          f"= claim and fetch handed over {figures['claim and fetch']:.2f} + storing the statement {storing:.2f} "
          f"+ reconciliation {compare:.2f}")
    print(f"  (b) storing the statement {storing:.2f} s = delete {figures['delete']:.2f} + COPY "
          f"{figures['copy']:.2f} (the statement's totals and key check counted as its rows go) + ANALYZE "
          f"{figures['analyze']:.2f}; COPY floor (the same rows into a temporary table, no key, nothing counted) "
          f"{figures['copy floor']:.2f} s")
    print(f"  (c) reconciliation (everything after the statement is stored: totals, details, timing, recording) "
          f"{compare:.2f} s beside the baseline {base:.2f} s: ratio {compare / base:.2f}, target "
          f"{TARGET_RATIO}x: {verdict(compare / base <= TARGET_RATIO)}")
    print(f"      = {extra}engine totals {figures['engine totals']:.2f}{payer_totals} + details "
          f"{figures['details']:.2f} + timing {figures['timing']:.2f} + clear, count, record, commit, read the "
          f"result {figures['finish']:.2f}")
    print(f"  whole run / baseline {run / base:.2f} (the baseline joins two tables already stored; the run "
          f"receives and stores one of them first)")
    print(f"  engine {figures['engine_count']:,} entries, payer {figures['payer_count']:,} rows; baseline counted "
          f"{figures['baseline_found']} differing rows")
    print("  " + figures["check"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="settlements in the day (and statement rows)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--explain", action="store_true", help="print the plans of the slow statements")
    parser.add_argument("--before-compare", action="append", default=[], metavar="SQL",
                        help="experiment: SQL run in the comparison's transaction just before the ledger's totals "
                             "(repeatable), e.g. \"SET LOCAL work_mem = '64MB'\"")
    parser.add_argument("--statements", action="store_true",
                        help="print every SQL statement of the run with its time (first line of its text)")
    parser.add_argument("--keep", action="store_true", help="do not drop the database at the end")
    parser.add_argument("--reuse", metavar="URL", help="a database left by --keep: upgrade it with `db upgrade` "
                        "(new migrations apply), skip the seeding and use its rows (not dropped at the end)")
    args = parser.parse_args()
    if args.rows < 3 * INJECTED * len(HOSPITALS):
        parser.error(f"--rows must be at least {3 * INJECTED * len(HOSPITALS)}")

    if args.reuse:
        name, database_url = None, args.reuse
    else:
        name = f"settlement_bench_{secrets.token_hex(4)}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin_connection:
            admin_connection.execute(f'CREATE DATABASE "{name}"')
        database_url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    data_dir = ROOT / "var" / "bench"
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)  # the service refuses a weak key
    env = {**os.environ, "SETTLEMENT_DATABASE_URL": database_url, "SETTLEMENT_SECRET_KEY": secret,
           "SETTLEMENT_DATA_DIR": str(data_dir)}
    app: Application | None = None
    try:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "settlement.cli.main", "db", "upgrade"], env=env, check=True,
                       capture_output=True)
        setup = {"schema (db upgrade)": time.perf_counter() - started}
        app = build(Settings(database_url=database_url, secret_key=secret, data_dir=data_dir, db_pool_size=2),
                    migrate=False)
        if args.reuse:
            reset(database_url)
            with psycopg.connect(database_url) as connection:
                counted = connection.execute("SELECT count(*) FROM settlements").fetchone()
            rows = int(counted[0]) if counted else 0
        else:
            rows = args.rows
            setup.update(seed(app, database_url, rows))
        prepared = prepare_statement(database_url, rows)
        print(f"rows: {rows:,} settlements with one {FUND} ledger entry each on {DAY} (Asia/Shanghai), "
              f"{len(HOSPITALS)} hospitals; statement {len(prepared.lines):,} rows with {INJECTED} dropped, "
              f"{INJECTED} amounts changed and {INJECTED} extra" + (" (reused database)" if args.reuse else ""))
        print("set-up: " + ", ".join(f"{label} {seconds:.1f} s" for label, seconds in setup.items())
              + f"; statement lines: read {prepared.read_seconds:.1f} s, built {prepared.build_seconds:.1f} s "
              f"({len(prepared.lines):,} StatementLine objects, not timed)")

        def fetch(payer: PayerConfig, day: date, request_id: str, inbox: Path) -> list[StatementLine]:
            return prepared.lines

        reconciler = Reconciler(app.context, {PAYER.code: PAYER}, data_dir / "inbox", fetch=fetch)
        traces: list[Trace] = []
        instrument(app.engine, traces)
        with psycopg.connect(database_url, autocommit=True) as connection:
            connection.execute("CHECKPOINT")
        print("baseline: a bare full outer join of the day's ledger entries (public ids through the join to "
              "settlements) with the run's statement rows on (settlement id, fund), counting the differing rows; "
              "best of 2 executions after the run, on its committed rows")
        before_compare = tuple(args.before_compare)
        if before_compare:
            print("experiment, in the run's transaction before the totals: " + "; ".join(before_compare))
        rounds = []
        for number in range(1, args.rounds + 1):
            figures = one_round(reconciler, traces, database_url, prepared, before_compare)
            rounds.append(figures)
            report(number, rows, figures)
            if args.statements:
                trace = figures["trace"]
                print("    at (s)  took (s)  statement")
                for at, (label, seconds, statement, _) in zip(trace.starts, trace.statements, strict=False):
                    first = " ".join(statement.split())[:90]
                    print(f"    {at - trace.started:6.3f}  {seconds:7.3f}  {label:16}  {first}")
                print(f"    {figures['run']:6.3f}  (the run returns)")
            if args.explain and number == args.rounds:
                explain(app, figures["trace"], database_url, figures["run_id"])
            if number < args.rounds:
                reset(database_url)
        worst_ratio = max(figures["compare"] / figures["baseline"] for figures in rounds)
        worst_whole = max(figures["run"] / figures["baseline"] for figures in rounds)
        worst_run = max(figures["run"] for figures in rounds)
        print(f"target reconciliation within {TARGET_RATIO}x of the baseline: {verdict(worst_ratio <= TARGET_RATIO)} "
              f"(worst ratio {worst_ratio:.2f}; whole run, statement stored included, worst {worst_whole:.2f}); "
              f"target under {TARGET_SECONDS:.0f} s: {verdict(worst_run < TARGET_SECONDS)} "
              f"(slowest run {worst_run:.2f} s)")
    finally:
        if app is not None:
            app.dispose()
        if name is None or args.keep:
            print(f"database kept: {database_url}")
        else:
            with psycopg.connect(PG_ADMIN, autocommit=True) as admin_connection:
                admin_connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
