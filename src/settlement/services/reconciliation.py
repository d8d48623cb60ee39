"""Reconciling a business day (Asia/Shanghai) of the ledger with a payer's statement, and the finance workflow.

A run is one record per (payer, business date). Claiming it is one conditional UPDATE, so of two runs started at
once exactly one works and the other reports the run in progress; running it again recomputes into the same record
(no duplicate discrepancies). The process working a run holds it by a lease (settlement.services.leases): it
renews the record's heartbeat every few seconds, and a run whose holder stopped renewing is taken over at once by
the next start; each of the run's writes first checks the lease is still its own.

The payer's statement is stored first, in a transaction of its own (binary COPY on PostgreSQL), and counted as its
rows pass: its totals per fund and hospital and whether any key repeats. The
comparison is then set-based SQL over the whole day: totals per fund and hospital first (the ledger's from the
ledger alone; the statement's as counted, or summed per key in SQL when a key repeats), then, only where totals
differ, one full outer join of the ledger's entries with the statement's rows on (settlement, entry, fund), the
statement's rows read as stored when its keys are distinct. Discrepancy kinds follow the national detail
reconciliation (3202): 1 payer only, 2 engine only, 3 amounts differ; a row whose other side sits on the adjacent
business day is flagged as a cross-midnight timing difference, and a pair of such rows (late on one side, next day
on the other) is resolved as timing automatically.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, bindparam, text
from sqlalchemy.exc import IntegrityError

from settlement.db.models import Timestamp
from settlement.domain.claim import SHANGHAI
from settlement.domain.money import fmt, from_fen
from settlement.insurers import statements
from settlement.insurers.config import PayerConfig
from settlement.insurers.statements import StatementError, StatementLine
from settlement.services.context import Context
from settlement.services.errors import ServiceCode, ServiceError
from settlement.services.leases import DEFAULT_LEASE, Heartbeat, renewal_interval, this_process

log = logging.getLogger("settlement.reconciliation")
KIND_CODES = {"payer_only": 1, "engine_only": 2, "amount_differs": 3}
Fetch = Callable[[PayerConfig, date, str, Path], list[StatementLine]]
Progress = Callable[[str], None]

# The engine's side of a day: what the ledger paid per (settlement, entry, fund), paid amounts only, with the
# ledger's hospital id (its code is looked up only for the rows that need it). A settlement or a reversal has
# one entry per fund, so those need no grouping; corrections of one settlement and fund on one day are reported
# as their sum. The correction branch is left out on a day without corrections (most days: finding that out is
# one probe of their partial index, revision 0005), so that the day's entries reach the join as a plain join of
# two tables, without the cost of an append over two branches.
_ENGINE_ENTRIES = """
    SELECT s.public_id AS settlement_id,
           CASE WHEN l.reversal_id IS NOT NULL THEN 'reversal' ELSE 'settlement' END AS entry_kind,
           l.fund AS fund, l.hospital_id AS hospital_id, l.paid_fen AS amount_fen, l.created_at AS occurred_at
    FROM ledger_entries l JOIN settlements s ON s.id = l.settlement_id
    WHERE l.created_at >= :low AND l.created_at < :high AND l.fund IN :funds
      AND l.correction_id IS NULL AND l.paid_fen <> 0
"""
# (the sum stays an integer, so that the join compares integers, not numerics)
_ENGINE_CORRECTIONS = """
    SELECT s.public_id, 'correction', c.fund, c.hospital_id, c.amount_fen, c.occurred_at
    FROM (
        SELECT l.settlement_id AS settlement_id, l.fund AS fund, l.hospital_id AS hospital_id,
               CAST(SUM(l.paid_fen) AS BIGINT) AS amount_fen, MIN(l.created_at) AS occurred_at
        FROM ledger_entries l
        WHERE l.created_at >= :low AND l.created_at < :high AND l.fund IN :funds AND l.correction_id IS NOT NULL
        GROUP BY l.settlement_id, l.fund, l.hospital_id
        HAVING SUM(l.paid_fen) <> 0
    ) c JOIN settlements s ON s.id = c.settlement_id
"""
_ENGINE_KEYED = _ENGINE_ENTRIES + "    UNION ALL" + _ENGINE_CORRECTIONS
_ENGINE = f"""
    SELECT keyed.settlement_id AS settlement_id, keyed.entry_kind AS entry_kind, keyed.fund AS fund,
           h.code AS hospital_code, keyed.amount_fen AS amount_fen, keyed.occurred_at AS occurred_at
    FROM ({_ENGINE_KEYED}) keyed JOIN hospitals h ON h.id = keyed.hospital_id
"""  # noqa: S608 - composed of constant SQL only

_HAS_CORRECTIONS = text("""
    SELECT COUNT(*) FROM (
        SELECT 1 FROM ledger_entries l
        WHERE l.created_at >= :low AND l.created_at < :high AND l.fund IN :funds AND l.correction_id IS NOT NULL
        LIMIT 1
    ) found
""").bindparams(bindparam("funds", expanding=True), bindparam("low", type_=Timestamp),
                bindparam("high", type_=Timestamp))

# The engine's totals per fund and hospital, counted over the same keys as the details (settlement, entry, fund),
# so that a statement equal to the ledger's side agrees in every count as well as every sum. The ledger alone:
# no public ids are needed to count.
_ENGINE_TOTALS_SQL = """
    /* reconciliation: engine totals */
    SELECT per_hospital.fund, h.code, per_hospital.entries, per_hospital.paid FROM (
        SELECT keyed.fund AS fund, keyed.hospital_id AS hospital_id, COUNT(*) AS entries, SUM(keyed.paid) AS paid
        FROM (
            SELECT l.fund AS fund, l.hospital_id AS hospital_id, l.paid_fen AS paid
            FROM ledger_entries l
            WHERE l.created_at >= :low AND l.created_at < :high AND l.fund IN :funds
              AND l.correction_id IS NULL AND l.paid_fen <> 0
            {corrections}
        ) keyed
        GROUP BY keyed.fund, keyed.hospital_id
    ) per_hospital JOIN hospitals h ON h.id = per_hospital.hospital_id
"""
_ENGINE_TOTALS_CORRECTIONS = """
            UNION ALL
            SELECT l.fund, l.hospital_id, CAST(SUM(l.paid_fen) AS BIGINT)
            FROM ledger_entries l
            WHERE l.created_at >= :low AND l.created_at < :high AND l.fund IN :funds AND l.correction_id IS NOT NULL
            GROUP BY l.settlement_id, l.fund, l.hospital_id
            HAVING SUM(l.paid_fen) <> 0
"""
_ENGINE_TOTALS = {
    corrections: text(_ENGINE_TOTALS_SQL.format(corrections=_ENGINE_TOTALS_CORRECTIONS if corrections else ""))
    .bindparams(bindparam("funds", expanding=True), bindparam("low", type_=Timestamp),
                bindparam("high", type_=Timestamp))
    for corrections in (False, True)}

# The payer's side of the run, one row per (settlement, entry, fund). A statement whose keys are all distinct
# (checked while it is stored) is read as stored; one that repeats a key is summed per key first, and its
# totals are then counted here over the summed rows (as the details see them).
_PAYER_AS_STORED = """
    SELECT settlement_id, entry_kind, fund, hospital_code, amount_fen FROM statement_rows WHERE run_id = :run
"""
_PAYER_SUMMED = """
    SELECT settlement_id, entry_kind, fund, MIN(hospital_code) AS hospital_code,
           CAST(SUM(amount_fen) AS BIGINT) AS amount_fen
    FROM statement_rows WHERE run_id = :run GROUP BY settlement_id, entry_kind, fund
"""
_PAYER_TOTALS_SUMMED = text(f"""
    /* reconciliation: payer totals */
    SELECT payer_rows.fund, payer_rows.hospital_code, COUNT(*), SUM(payer_rows.amount_fen)
    FROM ({_PAYER_SUMMED}) payer_rows GROUP BY payer_rows.fund, payer_rows.hospital_code
""")  # noqa: S608 - composed of constant SQL only

# The details: one full outer join of the two sides, keeping the rows that differ; only then are their hospital
# codes looked up and their groups checked against those whose totals differ.
_DETAILS_SQL = """
    WITH engine AS ({engine}),
    payer AS ({payer})
    INSERT INTO discrepancies (run_id, payer, business_date, kind, timing, settlement_id, entry_kind, fund,
                               hospital_code, engine_fen, payer_fen, created_at, status)
    SELECT :run, :payer, :day,
           CASE WHEN d.engine_id IS NULL THEN 'payer_only' WHEN d.payer_id IS NULL THEN 'engine_only'
                ELSE 'amount_differs' END,
           CASE WHEN d.payer_id IS NULL THEN d.occurred_at >= :late ELSE false END,
           COALESCE(d.engine_id, d.payer_id), d.entry_kind, d.fund, COALESCE(h.code, d.payer_hospital),
           d.engine_fen, d.payer_fen, :now, 'open'
    FROM (
        SELECT e.settlement_id AS engine_id, p.settlement_id AS payer_id,
               COALESCE(e.entry_kind, p.entry_kind) AS entry_kind, COALESCE(e.fund, p.fund) AS fund,
               e.hospital_id AS hospital_id, p.hospital_code AS payer_hospital, e.amount_fen AS engine_fen,
               p.amount_fen AS payer_fen, e.occurred_at AS occurred_at
        FROM engine e FULL OUTER JOIN payer p
          ON e.settlement_id = p.settlement_id AND e.entry_kind = p.entry_kind AND e.fund = p.fund
        WHERE e.settlement_id IS NULL OR p.settlement_id IS NULL OR e.amount_fen <> p.amount_fen
    ) d LEFT JOIN hospitals h ON h.id = d.hospital_id
    WHERE (d.fund || '/' || COALESCE(h.code, d.payer_hospital)) IN :groups
    ON CONFLICT (run_id, settlement_id, entry_kind, fund) DO UPDATE SET
        status = CASE WHEN discrepancies.status = 'cleared' THEN 'open'
                      WHEN discrepancies.engine_fen IS DISTINCT FROM excluded.engine_fen
                        OR discrepancies.payer_fen IS DISTINCT FROM excluded.payer_fen THEN 'open'
                      ELSE discrepancies.status END,
        kind = excluded.kind, timing = excluded.timing, engine_fen = excluded.engine_fen,
        payer_fen = excluded.payer_fen
"""


# The details statement for (a statement whose keys are distinct, a day with corrections).
_DETAILS = {
    (distinct, corrections): text(_DETAILS_SQL.format(
        engine=_ENGINE_KEYED if corrections else _ENGINE_ENTRIES,
        payer=_PAYER_AS_STORED if distinct else _PAYER_SUMMED)).bindparams(
            bindparam("funds", expanding=True), bindparam("groups", expanding=True),
            *(bindparam(name, type_=Timestamp) for name in ("low", "high", "late", "now")))
    for distinct in (False, True) for corrections in (False, True)}

# Timing, for the few rows found: a payer-only row the ledger has on an adjacent day (found through the
# settlement's public id, by index), and an engine-only row the payer reported on an adjacent day.
_TIMING_PAYER_ONLY = text("""
    UPDATE discrepancies SET timing = true
    WHERE run_id = :run AND kind = 'payer_only' AND timing = false AND EXISTS (
        SELECT 1 FROM settlements s JOIN ledger_entries l ON l.settlement_id = s.id
        WHERE s.public_id = discrepancies.settlement_id AND l.fund = discrepancies.fund
          AND (CASE WHEN l.correction_id IS NOT NULL THEN 'correction'
                    WHEN l.reversal_id IS NOT NULL THEN 'reversal' ELSE 'settlement' END) = discrepancies.entry_kind
          AND l.created_at >= :near_low AND l.created_at < :near_high
          AND (l.created_at < :low OR l.created_at >= :high))
""").bindparams(*(bindparam(name, type_=Timestamp) for name in ("low", "high", "near_low", "near_high")))

_TIMING_ENGINE_ONLY = text("""
    UPDATE discrepancies SET timing = true
    WHERE run_id = :run AND kind = 'engine_only' AND timing = false AND EXISTS (
        SELECT 1 FROM statement_rows sr JOIN reconciliation_runs r ON r.id = sr.run_id
        WHERE r.payer = :payer AND r.business_date IN (:previous_day, :next_day)
          AND sr.settlement_id = discrepancies.settlement_id AND sr.entry_kind = discrepancies.entry_kind
          AND sr.fund = discrepancies.fund)
""")

# A timing pair: one side's row on one business day, the other side's on the adjacent day, same key and amount.
# Whichever day is run last pairs them (the other day's row need not have been recognised as timing).
_TIMING_PAIRS = text("""
    UPDATE discrepancies SET status = 'resolved', action = 'timing', timing = true, resolved_by = 'reconciliation',
           resolved_at = :now,
           note = 'cross-midnight: the engine and the payer booked this on adjacent business days'
    WHERE status = 'open' AND payer = :payer AND business_date IN (:day, :previous_day, :next_day)
      AND kind IN ('payer_only', 'engine_only')
      AND EXISTS (
        SELECT 1 FROM discrepancies other
        WHERE other.payer = discrepancies.payer AND other.status IN ('open', 'resolved')
          AND other.business_date IN (:day, :previous_day, :next_day)
          AND other.business_date <> discrepancies.business_date
          AND other.settlement_id = discrepancies.settlement_id AND other.entry_kind = discrepancies.entry_kind
          AND other.fund = discrepancies.fund
          AND other.kind <> discrepancies.kind AND other.kind IN ('payer_only', 'engine_only')
          AND COALESCE(other.engine_fen, other.payer_fen) = COALESCE(discrepancies.engine_fen, discrepancies.payer_fen))
""").bindparams(bindparam("now", type_=Timestamp))


@dataclass
class RunResult:
    run_id: int
    payer: str
    business_date: date
    status: str
    engine_count: int = 0
    engine_total: str = "0.00"
    payer_count: int = 0
    payer_total: str = "0.00"
    discrepancies: dict[str, int] = field(default_factory=dict)
    totals: list[dict[str, Any]] = field(default_factory=list)
    already_running: bool = False
    error: str | None = None
    held_by: str | None = None  # the process holding the run's lease, when it is running
    renewed_at: datetime | None = None  # when that process last renewed it

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "payer": self.payer, "business_date": self.business_date.isoformat(),
                "status": self.status, "engine_count": self.engine_count, "engine_total": self.engine_total,
                "payer_count": self.payer_count, "payer_total": self.payer_total,
                "discrepancies": self.discrepancies, "totals": self.totals, "already_running": self.already_running,
                "error": self.error, "held_by": self.held_by,
                "renewed_at": self.renewed_at.isoformat() if self.renewed_at else None}


class LeaseLost(Exception):
    """Another process took the run over (this one stopped renewing its lease for too long): what this one found
    is not recorded."""


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """A business day in Asia/Shanghai as the instants that bound it."""
    if not date(2000, 1, 2) <= day <= date(2099, 12, 30):
        raise ServiceError(ServiceCode.REQUEST_MALFORMED, "the business date must be within 2000-2099")
    return datetime.combine(day, time.min, SHANGHAI), datetime.combine(day + timedelta(days=1), time.min, SHANGHAI)


class Reconciler:
    def __init__(self, context: Context, payers: dict[str, PayerConfig], inbox: Path,
                 timing_window: timedelta = timedelta(minutes=10), fetch: Fetch = statements.fetch,
                 lease: timedelta = DEFAULT_LEASE) -> None:
        self.context = context
        self.payers = payers
        self.inbox = inbox
        self.timing_window = timing_window
        self.fetch = fetch
        self.lease = lease
        # Who holds the runs this reconciler works: the process, and this reconciler in it.
        self.holder = f"{this_process()}/{secrets.token_hex(2)}"

    def payer(self, code: str) -> PayerConfig:
        found = self.payers.get(code)
        if found is None:
            raise ServiceError(ServiceCode.NOT_FOUND, f"no payer {code!r}; configured: {', '.join(self.payers)}")
        return found

    # Claiming the run

    def _claim(self, payer: PayerConfig, day: date) -> tuple[int, str] | None:
        """(run id, request id) when this process may work the run; None when another holds its lease. A run
        pending or running under a lease not renewed within its length was abandoned: it is taken over."""
        now = self.context.clock()
        for _ in range(2):
            try:
                with self.context.uow() as tx:
                    connection = tx.session.connection()
                    run_id = connection.execute(text(
                        "SELECT id FROM reconciliation_runs WHERE payer = :payer AND business_date = :day"),
                        {"payer": payer.code, "day": day}).scalar()
                    if run_id is None:
                        connection.execute(text(
                            "INSERT INTO reconciliation_runs (payer, business_date, status, request_id, attempts, "
                            "engine_count, engine_total_fen, payer_count, payer_total_fen, discrepancies, totals) "
                            "VALUES (:payer, :day, 'pending', '', 0, 0, 0, 0, 0, 0, '[]')"),
                            {"payer": payer.code, "day": day})
                    # A new request asks the payer for a fresh statement; after a failed or abandoned attempt the
                    # payer may have done the work, so it is asked again under the same request id.
                    request_id = f"{payer.code}-{day:%Y%m%d}-{secrets.token_hex(4)}"
                    claimed = connection.execute(text(
                        "UPDATE reconciliation_runs SET status = 'running', attempts = attempts + 1, "
                        "started_at = :now, error = NULL, holder = :holder, heartbeat_at = :now, "
                        "request_id = CASE WHEN status IN ('failed', 'running') "
                        "AND request_id <> '' THEN request_id ELSE :request_id END "
                        "WHERE payer = :payer AND business_date = :day "
                        "AND (status NOT IN ('pending', 'running') OR holder = :holder OR heartbeat_at IS NULL "
                        "OR heartbeat_at < :expired) RETURNING id, request_id").bindparams(
                            bindparam("now", type_=Timestamp), bindparam("expired", type_=Timestamp)),
                        {"now": now, "expired": now - self.lease, "request_id": request_id, "payer": payer.code,
                         "day": day, "holder": self.holder}).first()
                    tx.commit()
                    return (int(claimed[0]), str(claimed[1])) if claimed is not None else None
            except IntegrityError:
                continue  # a concurrent start inserted the record first: claim it (or find it running)
        return None  # pragma: no cover - the second attempt finds the record

    # The run

    def run(self, payer_code: str, day: date, progress: Progress | None = None) -> RunResult:
        payer = self.payer(payer_code)
        day_bounds(day)  # refuses dates outside the engine's range before anything is recorded
        say = progress or (lambda _: None)
        claimed = self._claim(payer, day)
        if claimed is None:
            return self._held_elsewhere(payer.code, day)
        run_id, request_id = claimed
        with Heartbeat(lambda: self._renew(run_id), renewal_interval(self.lease),
                       f"the reconciliation of {payer.code} for {day}"):
            try:
                self._work(run_id, request_id, payer, day, say)
            except LeaseLost:
                log.warning("reconciliation of %s for %s: taken over by another process while this one worked; "
                            "its findings are not recorded", payer.code, day)
                return self._held_elsewhere(payer.code, day)
        return self.result(payer.code, day)

    def _work(self, run_id: int, request_id: str, payer: PayerConfig, day: date, say: Progress) -> None:
        say(f"fetching the statement of {payer.code} for {day} (request {request_id})")
        try:
            lines = self.fetch(payer, day, request_id, self.inbox)
        except StatementError as error:
            self._fail(run_id, str(error))
            return
        except Exception as error:
            self._fail(run_id, f"unexpected {type(error).__name__}")
            raise
        say(f"comparing {len(lines)} statement rows with the ledger")
        try:
            self._compare(run_id, payer, day, lines, say)
        except LeaseLost:
            raise
        except Exception as error:
            self._fail(run_id, f"unexpected {type(error).__name__}")
            raise

    def _held_elsewhere(self, payer_code: str, day: date) -> RunResult:
        result = self.result(payer_code, day)
        result.already_running = True
        with self.context.uow() as tx:
            row = tx.session.connection().execute(text(
                "SELECT holder, heartbeat_at FROM reconciliation_runs WHERE id = :run"), {"run": result.run_id}).first()
        if row is not None:
            result.held_by, result.renewed_at = row[0], _instant(row[1])
        return result

    def _renew(self, run_id: int) -> bool:
        """The run's lease renewed; False when another process holds it now."""
        with self.context.uow() as tx:
            renewed = self._fence(tx.session.connection(), run_id)
            tx.commit()
        return renewed

    def _fence(self, connection: Connection, run_id: int) -> bool:
        """Renew the lease within a transaction that writes the run's results: True when it is still this
        reconciler's. On PostgreSQL the record stays locked until the transaction ends, so no takeover slips in
        between."""
        return connection.execute(text(
            "UPDATE reconciliation_runs SET heartbeat_at = :now WHERE id = :run AND holder = :holder "
            "AND status = 'running'").bindparams(bindparam("now", type_=Timestamp)),
            {"now": self.context.clock(), "run": run_id, "holder": self.holder}).rowcount == 1

    def _fail(self, run_id: int, reason: str) -> None:
        with self.context.uow() as tx:
            if not self._fence(tx.session.connection(), run_id):
                raise LeaseLost
            tx.session.connection().execute(text(
                "UPDATE reconciliation_runs SET status = 'failed', error = :error, finished_at = :now "
                "WHERE id = :run").bindparams(bindparam("now", type_=Timestamp)),
                {"error": reason[:2000], "now": self.context.clock(), "run": run_id})
            tx.repo.audit(self.context.clock(), "reconciliation", "reconciliation.fail", "reconciliation_run",
                          str(run_id), json.dumps({"error": reason[:500]}, ensure_ascii=False))
            tx.commit()

    def _compare(self, run_id: int, payer: PayerConfig, day: date, lines: list[StatementLine],
                 say: Progress) -> None:
        low, high = day_bounds(day)
        now = self.context.clock()
        funds = list(payer.funds)
        # The statement as received is stored in a transaction of its own, durable before it is compared (a run
        # that fails later keeps it, and a rerun replaces it); its totals are counted on the way.
        with self.context.uow() as tx:
            connection = tx.session.connection()
            if not self._fence(connection, run_id):
                raise LeaseLost
            connection.execute(text("DELETE FROM statement_rows WHERE run_id = :run"), {"run": run_id})
            tally = _insert_statement(connection, run_id, lines)
            postgres = connection.dialect.name == "postgresql"
            tx.commit()
        if postgres:
            # Fresh statistics, or the planner takes a million fresh rows for a few thousand and spills. After the
            # commit, so that reading every page of the new rows also sets their hint bits once (else the first
            # statement to read them does it, and writes each page again).
            with self.context.uow() as tx:
                tx.session.connection().execute(text("ANALYZE statement_rows"))
                tx.commit()
        say("totals per fund and hospital")
        with self.context.uow() as tx:
            connection = tx.session.connection()
            if not self._fence(connection, run_id):
                raise LeaseLost
            if connection.dialect.name == "postgresql":
                # JIT compiling the day's big statements costs more than it saves at this size.
                connection.execute(text("SET LOCAL jit = off"))
            params = {"low": low, "high": high, "funds": funds, "run": run_id}
            corrections = bool(connection.execute(_HAS_CORRECTIONS, params).scalar_one())
            engine_totals = _sums(connection.execute(_ENGINE_TOTALS[corrections], params))
            # The payer's totals were counted while its rows were stored, unless the statement repeats a key.
            distinct = tally.distinct_keys()
            payer_totals = tally.totals() if distinct else _sums(connection.execute(_PAYER_TOTALS_SUMMED, params))
            totals: list[dict[str, Any]] = []
            for fund, hospital in sorted(engine_totals.keys() | payer_totals.keys()):
                engine_count, engine_fen = engine_totals.get((fund, hospital), (0, 0))
                payer_count, payer_fen = payer_totals.get((fund, hospital), (0, 0))
                totals.append({"fund": fund, "hospital_code": hospital, "engine_count": engine_count,
                               "engine_fen": engine_fen, "payer_count": payer_count, "payer_fen": payer_fen})
            differing = [f"{row['fund']}/{row['hospital_code']}" for row in totals
                         if (row["engine_count"], row["engine_fen"]) != (row["payer_count"], row["payer_fen"])]
            # Discrepancies that a rerun no longer finds are cleared; those it finds again are reopened as they
            # were (resolved ones stay resolved).
            connection.execute(text("UPDATE discrepancies SET status = 'cleared' WHERE run_id = :run "
                                    "AND status = 'open'"), {"run": run_id})
            if differing:
                say(f"details for {len(differing)} fund and hospital groups whose totals differ")
                connection.execute(_DETAILS[(distinct, corrections)], {
                    "run": run_id, "payer": payer.code, "day": day, "low": low, "high": high,
                    "late": high - self.timing_window, "funds": funds, "groups": differing, "now": now})
                connection.execute(_TIMING_PAYER_ONLY, {
                    "run": run_id, "low": low, "high": high, "near_low": low - timedelta(days=1),
                    "near_high": high + timedelta(days=1)})
                adjacent = connection.execute(text(
                    "SELECT COUNT(*) FROM reconciliation_runs WHERE payer = :payer "
                    "AND business_date IN (:previous_day, :next_day)"),
                    {"payer": payer.code, "previous_day": day - timedelta(days=1),
                     "next_day": day + timedelta(days=1)}).scalar_one()
                if adjacent:  # the adjacent days' statements are read only when there are any
                    connection.execute(_TIMING_ENGINE_ONLY, {
                        "run": run_id, "payer": payer.code, "previous_day": day - timedelta(days=1),
                        "next_day": day + timedelta(days=1)})
                connection.execute(_TIMING_PAIRS, {"now": now, "payer": payer.code, "day": day,
                                                   "previous_day": day - timedelta(days=1),
                                                   "next_day": day + timedelta(days=1)})
            count = connection.execute(text("SELECT COUNT(*) FROM discrepancies WHERE run_id = :run "
                                            "AND status <> 'cleared'"), {"run": run_id}).scalar_one()
            connection.execute(text(
                "UPDATE reconciliation_runs SET status = 'done', finished_at = :now, engine_count = :ec, "
                "engine_total_fen = :ef, payer_count = :pc, payer_total_fen = :pf, discrepancies = :dc, "
                "totals = :totals WHERE id = :run").bindparams(bindparam("now", type_=Timestamp)), {
                    "now": self.context.clock(), "ec": sum(row["engine_count"] for row in totals),
                    "ef": sum(row["engine_fen"] for row in totals), "pc": sum(row["payer_count"] for row in totals),
                    "pf": sum(row["payer_fen"] for row in totals), "dc": count, "totals": json.dumps(totals),
                    "run": run_id})
            tx.repo.audit(now, "reconciliation", "reconciliation.run", "reconciliation_run", str(run_id),
                          json.dumps({"payer": payer.code, "business_date": day.isoformat(), "statement_rows":
                                      len(lines), "discrepancies": count}))
            tx.commit()

    # Reading

    def result(self, payer_code: str, day: date) -> RunResult:
        with self.context.uow() as tx:
            connection = tx.session.connection()
            row = connection.execute(text(
                "SELECT id, status, engine_count, engine_total_fen, payer_count, payer_total_fen, totals, error "
                "FROM reconciliation_runs WHERE payer = :payer AND business_date = :day"),
                {"payer": payer_code, "day": day}).first()
            if row is None:
                raise ServiceError(ServiceCode.NOT_FOUND, f"no reconciliation of {payer_code} for {day}")
            kinds: dict[Any, Any] = dict(connection.execute(text(
                "SELECT kind, COUNT(*) FROM discrepancies WHERE run_id = :run AND status <> 'cleared' "
                "GROUP BY kind"), {"run": row[0]}).all())
        totals = [{**item, "engine_total": fmt(from_fen(item["engine_fen"])),
                   "payer_total": fmt(from_fen(item["payer_fen"]))} for item in json.loads(row[6])]
        return RunResult(int(row[0]), payer_code, day, row[1], int(row[2]), fmt(from_fen(int(row[3]))), int(row[4]),
                         fmt(from_fen(int(row[5]))), {str(k): int(v) for k, v in kinds.items()}, totals,
                         error=row[7])


class StatementTally:
    """What the statement's rows add up to, counted while they are stored (they pass through Python anyway): per
    (fund, hospital, entry kind) the rows and their sum, and whether any (settlement, entry kind, fund) repeats,
    under one hospital or two; when none repeats, the payer's totals need no query."""

    def __init__(self) -> None:
        self.groups: dict[tuple[str, str, str], _Group] = {}
        self.distinct = True

    def rows(self, run_id: int, lines: list[StatementLine]) -> Iterator[tuple[Any, ...]]:
        """The rows to store (run, line number from 1, the line's fields), counted as they go."""
        groups = self.groups
        ids: dict[tuple[str, str], set[str]] = {}  # the settlement ids seen per (fund, entry kind)
        for number, line in enumerate(lines, 1):
            fen = line.amount_fen
            key = (line.fund, line.hospital_code, line.entry_kind)
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Group(ids.setdefault((line.fund, line.entry_kind), set()))
            group.count += 1
            group.fen += fen
            group.ids.add(line.settlement_id)
            yield (run_id, number, line.settlement_id, line.entry_kind, line.fund, line.hospital_code, fen,
                   line.occurred_at)
        rows: dict[tuple[str, str], int] = {}
        for (fund, _, kind), group in groups.items():
            rows[(fund, kind)] = rows.get((fund, kind), 0) + group.count
            group.ids = set()  # done with: a million-entry set is traversed by every garbage collection
        self.distinct = all(len(ids[key]) == count for key, count in rows.items())

    def distinct_keys(self) -> bool:
        """Whether no (settlement, entry kind, fund) occurs twice in the statement (once its rows are stored)."""
        return self.distinct

    def totals(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(rows, fen) per (fund, hospital): the payer's totals when its keys are distinct."""
        found: dict[tuple[str, str], tuple[int, int]] = {}
        for (fund, hospital, _), group in self.groups.items():
            count, fen = found.get((fund, hospital), (0, 0))
            found[(fund, hospital)] = (count + group.count, fen + group.fen)
        return found


def _sums(rows: Iterable[Any]) -> dict[tuple[str, str], tuple[int, int]]:
    """(count, fen) per (fund, hospital) from rows of (fund, hospital, count, sum)."""
    return {(str(fund), str(hospital)): (int(count), int(fen or 0)) for fund, hospital, count, fen in rows}


class _Group:
    __slots__ = ("count", "fen", "ids")

    def __init__(self, ids: set[str]) -> None:
        self.count = 0
        self.fen = 0
        self.ids = ids  # shared by the groups of one (fund, entry kind) while the rows are counted


_STATEMENT_COLUMNS = ("run_id", "line", "settlement_id", "entry_kind", "fund", "hospital_code", "amount_fen",
                      "occurred_at")


def _insert_statement(connection: Connection, run_id: int, lines: list[StatementLine]) -> StatementTally:
    """The statement's rows, counted as they are stored (binary COPY on PostgreSQL: a million rows in about a
    second; batches elsewhere)."""
    tally = StatementTally()
    if not lines:
        return tally
    if connection.dialect.name == "postgresql":
        raw = connection.connection.driver_connection
        assert raw is not None
        with raw.cursor() as cursor, cursor.copy(
                f"COPY statement_rows ({', '.join(_STATEMENT_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["bigint", "integer", "text", "text", "text", "text", "bigint", "timestamptz"])
            write = copy.write_row
            for row in tally.rows(run_id, lines):
                write(row)
        return tally
    statement = text(f"INSERT INTO statement_rows ({', '.join(_STATEMENT_COLUMNS)}) VALUES "  # noqa: S608
                     f"({', '.join(':' + name for name in _STATEMENT_COLUMNS)})").bindparams(
                         bindparam("occurred_at", type_=Timestamp))
    batch: list[dict[str, Any]] = []
    for row in tally.rows(run_id, lines):
        batch.append(dict(zip(_STATEMENT_COLUMNS, row, strict=True)))
        if len(batch) == 5000:
            connection.execute(statement, batch)
            batch = []
    if batch:
        connection.execute(statement, batch)
    return tally


_ENGINE_LINES = text(_ENGINE + " ORDER BY 1, 2, 3").bindparams(
    bindparam("funds", expanding=True), bindparam("low", type_=Timestamp), bindparam("high", type_=Timestamp))


def engine_lines(context: Context, payer: PayerConfig, day: date) -> list[StatementLine]:
    """The ledger's side of a business day for a payer, as statement rows: what a payer that agrees with the
    engine would send (the payer simulator starts from it)."""
    from decimal import Decimal

    low, high = day_bounds(day)
    with context.uow() as tx:
        rows = tx.session.connection().execute(_ENGINE_LINES, {"low": low, "high": high, "funds": list(payer.funds)})
        return [StatementLine(settlement_id, entry_kind, fund, hospital, Decimal(int(amount)).scaleb(-2),
                              _instant(occurred))
                for settlement_id, entry_kind, fund, hospital, amount, occurred in rows]


def _instant(value: object) -> datetime | None:
    """An aggregate's instant: PostgreSQL gives it aware; SQLite gives the stored UTC clock time as text."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
