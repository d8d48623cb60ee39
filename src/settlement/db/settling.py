"""A settlement's own transaction: lock the person's year, read what the computation needs, write what it made.

Both implementations keep the same promises (docs/reliability.md): the schedule's shared lock and the person's
year lock are taken before anything is read, so the figures, the roster categories (with the person's roster
region and scheme), the tariff generation and the key's stored answer are those left by the last settlement of
that person to commit; everything written commits together or not at all.

- `PipelinedSettling` (PostgreSQL) runs on one pooled connection in pipeline mode, in two round trips:
  [BEGIN, lock, read] and [write, COMMIT]. The lock and the read are two statements sent together: the read's
  snapshot is taken when it starts, after the lock was granted (READ COMMITTED), so it sees what the previous
  holder committed. Everything the settlement writes (the settlement, its ledger entries, the year figures, the
  key's record, the audit row) is one statement with data-modifying CTEs. The key's record points at the
  settlement's stored reply instead of holding a second copy of it.
- `SessionSettling` (SQLite, and any other engine) runs the same steps statement by statement on the unit of
  work's session; SQLite's BEGIN IMMEDIATE holds the whole database from the first statement.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any, NamedTuple, Protocol, cast

import psycopg
from psycopg_pool import PoolClosed, PoolTimeout
from sqlalchemy import Engine, Table
from sqlalchemy.exc import DBAPIError, StatementError

from settlement.db.aiopool import AsyncPool
from settlement.db.models import IdempotencyRecord, LedgerEntry, LimitEntry, Settlement
from settlement.db.repositories import (
    LEVELS,
    TARIFF_SCHEDULE_LOCK,
    CategorySpan,
    RosterPerson,
    RosterView,
    StoredAnswer,
    VersionRow,
    YearFigures,
    levels_of,
)

SETTLEMENTS = cast(Table, Settlement.__table__)
LEDGER = cast(Table, LedgerEntry.__table__)
LIMIT_ENTRIES = cast(Table, LimitEntry.__table__)
IDEMPOTENCY = cast(Table, IdempotencyRecord.__table__)
# The use cases' unit of work (settlement.services.uow): a context manager whose `repo` and `commit()` are used.
UnitOfWorks = Callable[[], AbstractContextManager[Any]]


class SettlementKey(NamedTuple):
    """What a settlement's transaction locks and reads before anything is computed."""

    hospital_id: int
    transaction_id: str
    id_number: str
    insurance_year: int
    # The roster is read for these days (the claim's first and last date): the tariff, resolved after the read,
    # says which of the claim's dates decides its categories.
    roster_from: date
    roster_to: date


class Opened(NamedTuple):
    generation: int  # the tariff schedule's, under its shared lock
    figures: YearFigures  # the person's year, under its lock
    roster: RosterView  # the roster's record of the person and categories, for the claim's dates
    answer: StoredAnswer | None  # what the key already answered, if it was used


@dataclass(frozen=True)
class SettlementRows:
    """Everything a settlement records, as values: written by one statement (PostgreSQL) or several."""

    settlement: dict[str, Any]  # the settlements row, column by column (its `result` is the key's answer)
    movements: dict[str, tuple[int, int, int]]  # per fund: (paid, deductible used, cumulative base) in fen
    request_hash: str
    actor: str
    audit_details: str  # JSON, personal data masked
    limits: dict[tuple[str, str], int] = field(default_factory=dict)  # (fund, limit) -> paid against it, in fen
    level: str = ""  # the hospital's level: the stay it adds to the year counts there too


class SettlementTransaction(Protocol):
    opened: Opened

    def active_versions(self) -> Sequence[VersionRow]:
        """The tariff versions in force, read in this transaction (when the generation moved)."""

    def record(self, rows: SettlementRows) -> None: ...

    def commit(self) -> None:
        """Commit when the block ends; a failure of any write is raised from the block instead of a reply."""


class Settling(Protocol):
    def begin(self, key: SettlementKey) -> AbstractContextManager[SettlementTransaction]: ...


# Statement by statement, on the unit of work's session


class _SessionTransaction:
    def __init__(self, unit: Any, opened: Opened) -> None:
        self.unit = unit
        self.opened = opened

    def active_versions(self) -> Sequence[VersionRow]:
        rows: Sequence[VersionRow] = self.unit.repo.active_version_rows()
        return rows

    def record(self, rows: SettlementRows) -> None:
        repo = self.unit.repo
        values = rows.settlement
        settlement_id = repo.insert_returning_id(SETTLEMENTS, values)
        common = {"settlement_id": settlement_id, "hospital_id": values["hospital_id"],
                  "id_number": values["id_number"], "insurance_year": values["insurance_year"],
                  "created_at": values["created_at"]}
        repo.insert_many(LEDGER, [
            {**common, "fund": fund, "paid_fen": paid, "deductible_fen": deductible, "cumulative_fen": cumulative}
            for fund, (paid, deductible, cumulative) in rows.movements.items()])
        repo.insert_many(LIMIT_ENTRIES, [{**common, "fund": fund, "name": name, "paid_fen": paid}
                                         for (fund, name), paid in rows.limits.items()])
        repo.move_year(values["id_number"], values["insurance_year"], values["admissions"], rows.movements,
                       rows.level, rows.limits)
        repo.insert_many(IDEMPOTENCY, [{
            "hospital_id": values["hospital_id"], "key": values["transaction_id"], "operation": "settle",
            "request_hash": rows.request_hash, "status_code": 201, "response": "",
            "created_at": values["created_at"]}])
        repo.audit(values["created_at"], rows.actor, "settlement.create", "settlement", values["public_id"],
                   rows.audit_details)

    def commit(self) -> None:
        self.unit.commit()


class SessionSettling:
    def __init__(self, uow: UnitOfWorks) -> None:
        self.uow = uow

    @contextmanager
    def begin(self, key: SettlementKey) -> Iterator[_SessionTransaction]:
        with self.uow() as unit:
            repo = unit.repo
            generation = repo.tariff_generation(shared_lock=True)
            figures = repo.lock_year(key.id_number, key.insurance_year)
            roster = repo.roster_between(key.id_number, key.roster_from, key.roster_to)
            answer = repo.idempotency_record(key.hospital_id, key.transaction_id)
            yield _SessionTransaction(unit, Opened(generation, figures, roster, answer))


# PostgreSQL: two round trips in pipeline mode

# The schedule's shared lock, then the person's year: created on first use; the no-op update takes the row lock.
LOCK_YEAR = """
INSERT INTO person_years (id_number, year, admissions)
SELECT %(id_number)s, %(year)s, 0 FROM (SELECT pg_advisory_xact_lock_shared(%(schedule_lock)s)) AS schedule
ON CONFLICT (id_number, year) DO UPDATE SET admissions = person_years.admissions
RETURNING admissions, admissions_township, admissions_county, admissions_city, admissions_provincial
"""

# The roster's category rows in force on some day of the claim's dates (the tariff, resolved from the generation
# read here, says which day decides), with their dates; the limits inside funds beside the funds' figures.
READ = """
SELECT (SELECT generation FROM tariff_schedule WHERE id = 1),
       funds.names, funds.paid, funds.deductible, funds.cumulative,
       spans.categories, spans.starts, spans.ends, person.scheme, person.region, person.retired,
       limits.funds, limits.names, limits.paid,
       answer.key, answer.request_hash, answer.status_code, answer.response, answer.operation
FROM (SELECT array_agg(fund ORDER BY fund) AS names, array_agg(paid_fen ORDER BY fund) AS paid,
             array_agg(deductible_fen ORDER BY fund) AS deductible,
             array_agg(cumulative_fen ORDER BY fund) AS cumulative
      FROM fund_years WHERE id_number = %(id_number)s AND year = %(year)s) AS funds
LEFT JOIN LATERAL (SELECT id, scheme, region, retired FROM persons WHERE id_number = %(id_number)s) AS person ON true
LEFT JOIN LATERAL (
    SELECT array_agg(category.category ORDER BY category.category, category.valid_from) AS categories,
           array_agg(category.valid_from ORDER BY category.category, category.valid_from) AS starts,
           array_agg(category.valid_to ORDER BY category.category, category.valid_from) AS ends
    FROM person_categories AS category
    WHERE category.person_id = person.id AND category.valid_from <= %(last)s
      AND (category.valid_to IS NULL OR category.valid_to >= %(first)s)) AS spans ON true
CROSS JOIN (SELECT array_agg(fund ORDER BY fund, name) AS funds, array_agg(name ORDER BY fund, name) AS names,
                   array_agg(paid_fen ORDER BY fund, name) AS paid
            FROM limit_years WHERE id_number = %(id_number)s AND year = %(year)s) AS limits
LEFT JOIN LATERAL (
    SELECT record.key, record.request_hash, record.status_code,
           CASE WHEN record.response = '' THEN settlement.result ELSE record.response END AS response,
           record.operation
    FROM idempotency_records AS record
    LEFT JOIN settlements AS settlement ON record.response = '' AND settlement.hospital_id = record.hospital_id
         AND settlement.transaction_id = record.key
    WHERE record.hospital_id = %(hospital_id)s AND record.key = %(key)s) AS answer ON true
"""

WRITE = """
WITH settlement AS (
    INSERT INTO settlements (public_id, hospital_id, transaction_id, id_number, insurance_year, visit_id, visit_type,
        settled_at, created_at, tariff_version_id, tariff_sha256, tariff_parent_version_id, total_fen,
        out_of_catalogue_fen, over_price_limit_fen, pre_self_pay_fen, in_scope_fen, patient_fen, admissions,
        categories, retired, accumulators_before, claim, result)
    VALUES (%(public_id)s, %(hospital_id)s, %(transaction_id)s, %(id_number)s, %(insurance_year)s, %(visit_id)s,
        %(visit_type)s, %(settled_at)s, %(created_at)s, %(tariff_version_id)s, %(tariff_sha256)s,
        %(tariff_parent_version_id)s, %(total_fen)s, %(out_of_catalogue_fen)s, %(over_price_limit_fen)s,
        %(pre_self_pay_fen)s, %(in_scope_fen)s, %(patient_fen)s, %(admissions)s, %(categories)s, %(retired)s,
        %(accumulators_before)s, %(claim)s, %(result)s)
    RETURNING id
), moved AS (
    SELECT * FROM unnest(%(funds)s::text[], %(paid)s::bigint[], %(deductible)s::bigint[], %(cumulative)s::bigint[])
        WITH ORDINALITY AS moved (fund, paid, deductible, cumulative, position)
), entries AS (
    INSERT INTO ledger_entries (settlement_id, hospital_id, id_number, insurance_year, fund, paid_fen,
        deductible_fen, cumulative_fen, created_at)
    SELECT settlement.id, %(hospital_id)s, %(id_number)s, %(insurance_year)s, moved.fund, moved.paid,
        moved.deductible, moved.cumulative, %(created_at)s
    FROM settlement CROSS JOIN moved ORDER BY moved.position
), stays AS (
    UPDATE person_years SET admissions = admissions + %(admissions)s,
        admissions_township = admissions_township + %(admissions_township)s,
        admissions_county = admissions_county + %(admissions_county)s,
        admissions_city = admissions_city + %(admissions_city)s,
        admissions_provincial = admissions_provincial + %(admissions_provincial)s
    WHERE id_number = %(id_number)s AND year = %(insurance_year)s AND %(admissions)s <> 0
), limited AS (
    SELECT * FROM unnest(%(limit_funds)s::text[], %(limit_names)s::text[], %(limit_paid)s::bigint[])
        WITH ORDINALITY AS limited (fund, name, paid, position)
), limit_entries AS (
    INSERT INTO limit_entries (settlement_id, hospital_id, id_number, insurance_year, fund, name, paid_fen,
        created_at)
    SELECT settlement.id, %(hospital_id)s, %(id_number)s, %(insurance_year)s, limited.fund, limited.name,
        limited.paid, %(created_at)s
    FROM settlement CROSS JOIN limited ORDER BY limited.position
), limits AS (
    INSERT INTO limit_years AS year (id_number, year, fund, name, paid_fen)
    SELECT %(id_number)s, %(insurance_year)s, limited.fund, limited.name, limited.paid FROM limited
    ON CONFLICT (id_number, year, fund, name) DO UPDATE SET paid_fen = year.paid_fen + excluded.paid_fen
), funds AS (
    INSERT INTO fund_years AS year (id_number, year, fund, paid_fen, deductible_fen, cumulative_fen)
    SELECT %(id_number)s, %(insurance_year)s, moved.fund, moved.paid, moved.deductible, moved.cumulative FROM moved
    ON CONFLICT (id_number, year, fund) DO UPDATE SET paid_fen = year.paid_fen + excluded.paid_fen,
        deductible_fen = year.deductible_fen + excluded.deductible_fen,
        cumulative_fen = year.cumulative_fen + excluded.cumulative_fen
), answer AS (
    INSERT INTO idempotency_records (hospital_id, key, operation, request_hash, status_code, response, created_at)
    VALUES (%(hospital_id)s, %(transaction_id)s, 'settle', %(request_hash)s, 201, '', %(created_at)s)
)
INSERT INTO audit_log (at, actor, action, entity, entity_id, details)
VALUES (%(created_at)s, %(actor)s, 'settlement.create', 'settlement', %(public_id)s, %(audit_details)s)
"""

ACTIVE_VERSIONS = """
SELECT id, region, version, inherits, effective_from, effective_to, content FROM tariff_versions
WHERE status = 'active' ORDER BY region, effective_from, id
"""


class PostgresStatements:
    """The statements of a settlement's transaction on PostgreSQL and what they read, shared by the blocking and
    the asyncio driver."""

    lock_year = LOCK_YEAR  # tests replace it with a naive read to show that the concurrency checks can fail

    @staticmethod
    def lock_parameters(key: SettlementKey) -> dict[str, Any]:
        return {"id_number": key.id_number, "year": key.insurance_year, "schedule_lock": TARIFF_SCHEDULE_LOCK}

    @staticmethod
    def read_parameters(key: SettlementKey) -> dict[str, Any]:
        return {"id_number": key.id_number, "year": key.insurance_year, "first": key.roster_from,
                "last": key.roster_to, "hospital_id": key.hospital_id, "key": key.transaction_id}

    @staticmethod
    def opened(locked: tuple[Any, ...] | None, read: tuple[Any, ...] | None) -> Opened:
        assert locked is not None and read is not None  # each statement returns exactly one row
        generation, names, paid, deductible, cumulative, categories, starts, ends, scheme, region, retired = read[:11]
        limit_funds, limit_names, limit_paid = read[11:14]
        funds = {fund: (p, d, c) for fund, p, d, c in zip(names or (), paid or (), deductible or (), cumulative or (),
                                                          strict=True)}
        limits = {(fund, name): p for fund, name, p in zip(limit_funds or (), limit_names or (), limit_paid or (),
                                                           strict=True)}
        spans = tuple(CategorySpan(*span) for span in zip(categories or (), starts or (), ends or (), strict=True))
        answer = StoredAnswer(*read[14:]) if read[14] is not None else None
        person = RosterPerson(scheme, region, bool(retired)) if scheme is not None else None
        figures = YearFigures(int(locked[0]), funds, levels_of(locked[1:]), limits)
        return Opened(int(generation), figures, RosterView(person, spans), answer)

    @staticmethod
    def write_parameters(rows: SettlementRows) -> dict[str, Any]:
        moved = list(rows.movements.values())
        admissions = rows.settlement["admissions"]
        # The movements go as array literals (text, cast by the statement): psycopg's list dumpers cost twice as
        # much as all the other parameters together.
        return {**rows.settlement, "funds": _text_array(rows.movements), "paid": _int_array(m[0] for m in moved),
                "deductible": _int_array(m[1] for m in moved), "cumulative": _int_array(m[2] for m in moved),
                **{f"admissions_{level}": admissions if level == rows.level else 0 for level in LEVELS},
                "limit_funds": _text_array(fund for fund, _ in rows.limits),
                "limit_names": _text_array(name for _, name in rows.limits),
                "limit_paid": _int_array(rows.limits.values()),
                "request_hash": rows.request_hash, "actor": rows.actor, "audit_details": rows.audit_details}

    @staticmethod
    def versions(rows: Sequence[tuple[Any, ...]]) -> list[VersionRow]:
        return [VersionRow(*row) for row in rows]


def _text_array(items: Iterable[str]) -> str:
    """A PostgreSQL array literal of strings, each quoted (a backslash or a quote escaped)."""
    quoted = ('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"' for item in items)
    return "{" + ",".join(quoted) + "}"


def _int_array(items: Iterable[int]) -> str:
    return "{" + ",".join(str(int(item)) for item in items) + "}"


def database_error(error: psycopg.Error) -> StatementError:
    """The driver's error as SQLAlchemy's (IntegrityError, OperationalError, ...), as the use cases expect them;
    parameters are never shown (they hold ID numbers and names)."""
    return DBAPIError.instance(None, None, error, psycopg.Error, hide_parameters=True)


class _PipelinedTransaction:
    def __init__(self, connection: psycopg.Connection[Any], opened: Opened) -> None:
        self.connection = connection
        self.opened = opened
        self.committed = False

    def active_versions(self) -> Sequence[VersionRow]:
        return PostgresStatements.versions(self.connection.execute(ACTIVE_VERSIONS).fetchall())

    def record(self, rows: SettlementRows) -> None:
        self.connection.execute(WRITE, PostgresStatements.write_parameters(rows))

    def commit(self) -> None:
        self.connection.execute("COMMIT")  # sent with the write when the block ends
        self.committed = True


class PipelinedSettling:
    """PostgreSQL, blocking (use cases called outside the web application: the command line, tests): a
    settlement's transaction in two round trips on a connection of the engine's pool (see the module's
    docstring)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def begin(self, key: SettlementKey) -> Iterator[_PipelinedTransaction]:
        pooled = self.engine.raw_connection()
        connection = cast(psycopg.Connection[Any], pooled.driver_connection)
        try:
            # Autocommit, so that BEGIN and COMMIT are statements of ours, sent with the others instead of alone.
            connection.autocommit = True
            with connection.pipeline():
                connection.execute("BEGIN")
                locked = connection.execute(PostgresStatements.lock_year, PostgresStatements.lock_parameters(key))
                read = connection.execute(READ, PostgresStatements.read_parameters(key))
                transaction = _PipelinedTransaction(connection, PostgresStatements.opened(
                    locked.fetchone(), read.fetchone()))
                try:
                    yield transaction
                finally:
                    if not transaction.committed:
                        connection.execute("ROLLBACK")
            # Leaving the pipeline sent what was queued and raised the first failure, if any.
        except psycopg.Error as error:
            if connection.info.transaction_status != psycopg.pq.TransactionStatus.UNKNOWN:
                _roll_back(connection)
            if self.engine.dialect.is_disconnect(cast(Any, error), pooled, None):
                # As SQLAlchemy does for its own connections: when one is found dead, the others of the pool
                # (likely dead too, after a restart) are replaced as they come back, not tried one by one.
                pooled.invalidate(error)
                self.engine.dispose(close=False)
            raise database_error(error) from None
        finally:
            if not connection.closed and connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                connection.autocommit = False
            pooled.close()


class Companion(NamedTuple):
    """A statement of the caller's own run inside a settlement's transaction (PostgreSQL, on the event loop), in
    one of its two round trips: the SOAP endpoint records a message's nonce and its envelope log row there, so
    that they commit with the settlement instead of costing a transaction each."""

    sql: str
    parameters: dict[str, Any]


class _AsyncPipelinedTransaction:
    def __init__(self, connection: psycopg.AsyncConnection[Any], opened: Opened, claimed: bool | None) -> None:
        self.connection = connection
        self.opened = opened
        self.committed = False
        self.claimed = claimed  # whether the claim (a statement RETURNING a row when it took) took; None: none

    async def active_versions(self) -> Sequence[VersionRow]:
        cursor = await self.connection.execute(ACTIVE_VERSIONS)
        return PostgresStatements.versions(await cursor.fetchall())

    async def record(self, rows: SettlementRows, also: Sequence[Companion] = ()) -> None:
        await self.connection.execute(WRITE, PostgresStatements.write_parameters(rows))
        for companion in also:
            await self.connection.execute(companion.sql, companion.parameters)

    async def commit(self) -> None:
        await self.connection.execute("COMMIT")  # sent with the write when the block ends
        self.committed = True


class AsyncPipelinedSettling:
    """PostgreSQL, on the service's event loop: the same two round trips on psycopg's AsyncConnection, from a
    pool of autocommit connections that the web application opens and closes with itself (one per worker and
    event loop). No thread is handed a request: a worker's loop keeps many settlements in flight at once, each
    waiting for the database without holding anything but its connection."""

    def __init__(self, url: str, *, size: int, lock_timeout_ms: int, connect_timeout_seconds: int = 5,
                 statement_timeout_ms: int = 0) -> None:
        self.pool = AsyncPool(url, size=size, connect_timeout=connect_timeout_seconds,
                              options=f"-c lock_timeout={int(lock_timeout_ms)} "
                                      f"-c statement_timeout={int(statement_timeout_ms)}")

    async def open(self) -> None:
        await self.pool.open()

    async def close(self) -> None:
        await self.pool.close()

    async def ping(self) -> None:
        """One statement on a connection of the pool (readiness: what settlements would get)."""
        try:
            connection = await self.pool.connection()
            try:
                await connection.execute("SELECT 1")
            finally:
                await self.pool.release(connection)
        except (PoolTimeout, PoolClosed) as error:
            raise database_error(psycopg.OperationalError(str(error))) from None
        except psycopg.Error as error:
            raise database_error(error) from None

    @asynccontextmanager
    async def begin(self, key: SettlementKey,
                    claim: Companion | None = None) -> AsyncIterator[_AsyncPipelinedTransaction]:
        """`claim`: a statement sent in the first round trip, after the read, whose RETURNING row (or none) tells
        the transaction's `claimed`; it commits with the settlement or not at all."""
        lost = False
        try:
            connection = await self.pool.connection()
            try:
                async with connection.pipeline():
                    await connection.execute("BEGIN")
                    locked = await connection.execute(PostgresStatements.lock_year,
                                                      PostgresStatements.lock_parameters(key))
                    read = await connection.execute(READ, PostgresStatements.read_parameters(key))
                    claimed = await connection.execute(claim.sql, claim.parameters) if claim is not None else None
                    transaction = _AsyncPipelinedTransaction(connection, PostgresStatements.opened(
                        await locked.fetchone(), await read.fetchone()),
                        None if claimed is None else await claimed.fetchone() is not None)
                    try:
                        yield transaction
                    finally:
                        if not transaction.committed:
                            await connection.execute("ROLLBACK")
                # Leaving the pipeline sent what was queued and raised the first failure, if any.
            except psycopg.Error:
                lost = connection.broken or connection.closed
                if not lost and connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    await connection.execute("ROLLBACK")  # a failed write left the transaction aborted
                raise
            finally:
                await self.pool.release(connection)
        except (PoolTimeout, PoolClosed) as error:
            raise database_error(psycopg.OperationalError(str(error))) from None
        except psycopg.Error as error:
            if lost:
                await self.pool.replace_idle()
            raise database_error(error) from None


def _roll_back(connection: psycopg.Connection[Any]) -> None:
    """After a failed write the transaction is aborted (its COMMIT was skipped): end it before the connection
    goes back to the pool."""
    try:
        if connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            connection.execute("ROLLBACK")
    except psycopg.Error:
        connection.close()  # the pool replaces a connection it finds closed


def settling_for(engine: Engine, uow: UnitOfWorks) -> Settling:
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg":
        return PipelinedSettling(engine)
    return SessionSettling(uow)


def async_settling_for(engine: Engine, *, size: int, lock_timeout_ms: int, connect_timeout_seconds: int = 5,
                       statement_timeout_ms: int = 0) -> AsyncPipelinedSettling | None:
    """The event loop's settlements, on PostgreSQL; None elsewhere (the blocking path runs in a thread)."""
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg":
        return AsyncPipelinedSettling(engine.url.render_as_string(hide_password=False), size=size,
                                      lock_timeout_ms=lock_timeout_ms, connect_timeout_seconds=connect_timeout_seconds,
                                      statement_timeout_ms=statement_timeout_ms)
    return None
