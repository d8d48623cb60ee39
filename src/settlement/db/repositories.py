"""All SQL of the engine. Repositories never commit: the unit of work of each use case does."""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Connection, Table, and_, bindparam, case, delete, func, insert, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from settlement.db.models import (
    AuditEntry,
    Correction,
    CredentialsGeneration,
    FundYear,
    Hospital,
    HospitalDialect,
    IdempotencyRecord,
    LedgerEntry,
    LimitEntry,
    LimitYear,
    Person,
    PersonCategory,
    PersonYear,
    Principal,
    Reversal,
    RosterImport,
    Settlement,
    SoapCredential,
    SoapExchange,
    TariffSchedule,
    TariffVersion,
    Timestamp,
    WsseNonce,
)

PERSON_YEARS = cast(Table, PersonYear.__table__)
FUND_YEARS = cast(Table, FundYear.__table__)
LIMIT_YEARS = cast(Table, LimitYear.__table__)
LIMIT_ENTRIES = cast(Table, LimitEntry.__table__)
LEVELS = ("township", "county", "city", "provincial")  # person_years.admissions_<level>
AUDIT_LOG = cast(Table, AuditEntry.__table__)
NONCES = cast(Table, WsseNonce.__table__)
EXCHANGES = cast(Table, SoapExchange.__table__)
SCHEDULE = cast(Table, TariffSchedule.__table__)
TARIFF_SCHEDULE_LOCK = 0x7461726966  # "tarif": the advisory lock between activations and settlements
ROSTER_IMPORT_LOCK = 0x726F73746572  # "roster": one roster import at a time


@dataclass(frozen=True)
class Statements:
    """The hot path's statements, built once per dialect: SQLAlchemy then reuses their compiled form instead of
    building and hashing a new statement on every request."""

    lock_year: Any
    funds: Any
    limits: Any
    categories_on: Any
    roster: Any
    answer: Any
    move_admissions: Any
    move_funds: Any
    move_limits: Any
    generation: Any
    schedule_lock_shared: Any


@functools.cache
def _statements(dialect: str) -> Statements:
    dialect_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    years, funds, limits = PERSON_YEARS, FUND_YEARS, LIMIT_YEARS
    upsert_funds = dialect_insert(funds)
    upsert_limits = dialect_insert(limits)
    by_level = [years.c[f"admissions_{level}"] for level in LEVELS]
    return Statements(
        lock_year=dialect_insert(years).values(id_number=bindparam("p_id"), year=bindparam("p_year"), admissions=0)
        .on_conflict_do_update(index_elements=["id_number", "year"], set_={"admissions": years.c.admissions})
        .returning(years.c.admissions, *by_level),
        funds=select(funds.c.fund, funds.c.paid_fen, funds.c.deductible_fen, funds.c.cumulative_fen)
        .where(funds.c.id_number == bindparam("p_id"), funds.c.year == bindparam("p_year")),
        limits=select(limits.c.fund, limits.c.name, limits.c.paid_fen)
        .where(limits.c.id_number == bindparam("p_id"), limits.c.year == bindparam("p_year")),
        # The person's roster record with the category rows in force on some day of [p_first, p_last]: no row when
        # the person is not on the roster; one row with no category when none is in force then.
        roster=select(Person.scheme, Person.region, Person.retired, PersonCategory.category, PersonCategory.valid_from,
                      PersonCategory.valid_to)
        .select_from(Person)
        .outerjoin(PersonCategory, and_(PersonCategory.person_id == Person.id,
                                        PersonCategory.valid_from <= bindparam("p_last"),
                                        or_(PersonCategory.valid_to.is_(None),
                                            PersonCategory.valid_to >= bindparam("p_first"))))
        .where(Person.id_number == bindparam("p_id"))
        .order_by(PersonCategory.category, PersonCategory.valid_from),
        categories_on=select(PersonCategory.category, PersonCategory.valid_from, PersonCategory.valid_to)
        .join(Person, Person.id == PersonCategory.person_id)
        .where(Person.id_number == bindparam("p_id"), PersonCategory.valid_from <= bindparam("p_day"),
               or_(PersonCategory.valid_to.is_(None), PersonCategory.valid_to >= bindparam("p_day")))
        .order_by(PersonCategory.category),
        # A settlement's record keeps no copy of its reply (an empty response): the settlement's own is the answer.
        answer=select(IdempotencyRecord.key, IdempotencyRecord.request_hash, IdempotencyRecord.status_code,
                      case((IdempotencyRecord.response == "", Settlement.result), else_=IdempotencyRecord.response),
                      IdempotencyRecord.operation)
        .outerjoin(Settlement, and_(IdempotencyRecord.response == "",
                                    Settlement.hospital_id == IdempotencyRecord.hospital_id,
                                    Settlement.transaction_id == IdempotencyRecord.key))
        .where(IdempotencyRecord.hospital_id == bindparam("p_hospital"), IdempotencyRecord.key == bindparam("p_key")),
        move_admissions=update(years).where(years.c.id_number == bindparam("p_id"), years.c.year == bindparam("p_year"))
        .values(admissions=years.c.admissions + bindparam("p_delta"), **{
            f"admissions_{level}": years.c[f"admissions_{level}"]
            + case((bindparam("p_level") == level, bindparam("p_delta")), else_=0) for level in LEVELS}),
        generation=select(SCHEDULE.c.generation).where(SCHEDULE.c.id == 1),
        schedule_lock_shared=select(func.pg_advisory_xact_lock_shared(bindparam("p_lock"))),
        move_funds=upsert_funds.on_conflict_do_update(
            index_elements=["id_number", "year", "fund"],
            set_={name: funds.c[name] + upsert_funds.excluded[name]
                  for name in ("paid_fen", "deductible_fen", "cumulative_fen")}),
        move_limits=upsert_limits.on_conflict_do_update(
            index_elements=["id_number", "year", "fund", "name"],
            set_={"paid_fen": limits.c.paid_fen + upsert_limits.excluded.paid_fen}),
    )


@functools.cache
def _insert(table: Table) -> Any:
    return insert(table)


@functools.cache
def _insert_returning_id(table: Table) -> Any:
    return insert(table).returning(table.c.id)


class CategorySpan(NamedTuple):
    category: str
    valid_from: date
    valid_to: date | None


class RosterPerson(NamedTuple):
    """Where and in which scheme the roster records a person: for a person on it, these decide the tariff."""

    scheme: str
    region: str
    retired: bool = False  # 退休 (the employee scheme), which a tariff's rules may test


class VersionRow(NamedTuple):
    """An active tariff version as the schedule loads it."""

    id: int
    region: str
    version: str
    inherits: str | None
    effective_from: date
    effective_to: date | None
    content: str


class StoredAnswer(NamedTuple):
    key: str
    request_hash: str
    status_code: int
    response: str
    operation: str


@dataclass(frozen=True)
class YearFigures:
    """A person's locked year-to-date figures, in fen."""

    admissions: int
    funds: dict[str, tuple[int, int, int]]  # fund -> (paid, deductible used, cumulative)
    by_level: dict[str, int] = field(default_factory=dict)  # the admissions by hospital level (non-zero ones)
    limits: dict[tuple[str, str], int] = field(default_factory=dict)  # (fund, limit) -> paid against it


def levels_of(counts: Sequence[int]) -> dict[str, int]:
    """person_years.admissions_<level> columns, in LEVELS order, as a mapping of the non-zero ones."""
    return {level: int(count) for level, count in zip(LEVELS, counts, strict=True) if count}


class RosterView(NamedTuple):
    """What the roster says of a person for a claim: the person's record (None when not on the roster) and the
    category rows in force on some day of the claim's dates (the tariff says which day decides)."""

    person: RosterPerson | None
    spans: tuple[CategorySpan, ...]  # by category, then start

    @property
    def retired(self) -> bool:
        return self.person is not None and self.person.retired

    def categories_on(self, day: date) -> tuple[str, ...]:
        return tuple(span.category for span in self.spans
                     if span.valid_from <= day and (span.valid_to is None or span.valid_to >= day))


class Repository:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.dialect = session.get_bind().dialect.name

    def _core(self, statement: Any, parameters: Any = None) -> Any:
        """Core statements go straight to the session's connection: the ORM layer adds nothing for them."""
        return self.session.connection().execute(statement, parameters)

    def add(self, row: Any) -> None:
        self.session.add(row)

    def flush(self) -> None:
        self.session.flush()

    # Hospitals and principals

    def hospital_by_code(self, code: str) -> Hospital | None:
        return self.session.scalar(select(Hospital).where(Hospital.code == code))

    def hospital(self, hospital_id: int) -> Hospital | None:
        return self.session.get(Hospital, hospital_id)

    def principal_by_prefix(self, prefix: str) -> Principal | None:
        return self.session.scalar(select(Principal).where(Principal.key_prefix == prefix))

    def hospitals(self) -> Sequence[Hospital]:
        return self.session.scalars(select(Hospital).order_by(Hospital.code)).all()

    def principal(self, principal_id: int, *, for_update: bool = False) -> Principal | None:
        query = select(Principal).where(Principal.id == principal_id)
        return self.session.scalar(query.with_for_update() if for_update else query)

    def principals(self, *, kind: str | None = None, include_revoked: bool = False
                   ) -> list[tuple[Principal, str | None]]:
        """Keys with their hospital's code, oldest first."""
        query = select(Principal, Hospital.code).outerjoin(Hospital, Hospital.id == Principal.hospital_id) \
            .order_by(Principal.id)
        if kind is not None:
            query = query.where(Principal.kind == kind)
        if not include_revoked:
            query = query.where(Principal.revoked_at.is_(None))
        return [(row[0], row[1]) for row in self.session.execute(query)]

    def active_keys_of(self, kind: str, name: str) -> Sequence[Principal]:
        return self.session.scalars(select(Principal).where(Principal.kind == kind, Principal.name == name,
                                                            Principal.revoked_at.is_(None))).all()

    def credentials_generation(self) -> int:
        """Moved on by triggers with every change to keys, hospitals, SOAP passwords and dialect bindings."""
        return int(self.session.execute(select(CredentialsGeneration.generation)
                                        .where(CredentialsGeneration.id == 1)).scalar_one())

    # The roster

    def person(self, id_number: str) -> Person | None:
        return self.session.scalar(select(Person).where(Person.id_number == id_number))

    def categories_on(self, id_number: str, day: date) -> list[CategorySpan]:
        rows = self._core(_statements(self.dialect).categories_on, {"p_id": id_number, "p_day": day})
        return [CategorySpan(*row) for row in rows]

    def roster_between(self, id_number: str, first: date, last: date) -> RosterView:
        """The person's roster record and category rows in force on some day from `first` to `last`, in one
        statement."""
        rows = self._core(_statements(self.dialect).roster,
                          {"p_id": id_number, "p_first": first, "p_last": last}).all()
        if not rows:
            return RosterView(None, ())
        person = RosterPerson(rows[0][0], rows[0][1], bool(rows[0][2]))
        return RosterView(person, tuple(CategorySpan(*row[3:]) for row in rows if row[3] is not None))

    # The roster import, a chunk of rows at a time (services.roster): reads and writes in bulk.

    def lock_roster(self) -> None:
        """One import at a time (PostgreSQL; SQLite's write transaction already holds the database): a second
        waits, then reads what the first committed, instead of inserting the same persons beside it and failing
        on the unique index when the first commits."""
        if self.dialect == "postgresql":
            self.session.execute(text("SELECT pg_advisory_xact_lock(:p_lock)"), {"p_lock": ROSTER_IMPORT_LOCK})

    def persons_by_id_number(self, id_numbers: Collection[str]) -> dict[str, tuple[int, str, str, str, bool]]:
        """id number -> (id, name, scheme, region, retired) of the persons known among `id_numbers`."""
        if not id_numbers:
            return {}
        rows = self.session.execute(select(Person.id_number, Person.id, Person.name, Person.scheme, Person.region,
                                           Person.retired)
                                    .where(Person.id_number.in_(id_numbers)))
        return {row[0]: (row[1], row[2], row[3], row[4], bool(row[5])) for row in rows}

    def insert_persons(self, values: list[dict[str, Any]]) -> dict[str, int]:
        """Insert persons; their ids by id number."""
        if not values:
            return {}
        rows = self.session.execute(insert(Person).returning(Person.id_number, Person.id), values)
        return {row[0]: row[1] for row in rows}

    def update_persons(self, values: list[dict[str, Any]]) -> None:
        if values:
            self.session.execute(update(Person), values)  # by primary key, in one executemany

    def category_spans(self, person_ids: Collection[int]) -> dict[tuple[int, str, date], tuple[int, date | None]]:
        """(person id, category, valid from) -> (id, valid to) of the persons' category rows."""
        if not person_ids:
            return {}
        rows = self.session.execute(select(PersonCategory.person_id, PersonCategory.category,
                                           PersonCategory.valid_from, PersonCategory.id, PersonCategory.valid_to)
                                    .where(PersonCategory.person_id.in_(person_ids)))
        return {(row[0], row[1], row[2]): (row[3], row[4]) for row in rows}

    def insert_categories(self, values: list[dict[str, Any]]) -> None:
        if values:
            self.session.execute(insert(PersonCategory), values)

    def update_categories(self, values: list[dict[str, Any]]) -> None:
        if values:
            self.session.execute(update(PersonCategory), values)

    def roster_import_by_sha(self, sha256: str) -> RosterImport | None:
        return self.session.scalar(select(RosterImport).where(RosterImport.sha256 == sha256)
                                   .order_by(RosterImport.id).limit(1))

    # Tariff versions

    def tariff_versions(self, statuses: Sequence[str] | None = None,
                        region: str | None = None) -> Sequence[TariffVersion]:
        query = select(TariffVersion).order_by(TariffVersion.region, TariffVersion.effective_from, TariffVersion.id)
        if statuses is not None:
            query = query.where(TariffVersion.status.in_(statuses))
        if region is not None:
            query = query.where(TariffVersion.region == region)
        return self.session.scalars(query).all()

    def active_version_rows(self) -> list[VersionRow]:
        return [VersionRow(row.id, row.region, row.version, row.inherits, row.effective_from, row.effective_to,
                           row.content) for row in self.tariff_versions(statuses=("active",))]

    def tariff_version(self, version_id: int, *, for_update: bool = False) -> TariffVersion | None:
        return self.session.get(TariffVersion, version_id, with_for_update=for_update)

    def tariff_version_by_label(self, region: str, version: str, *,
                                for_update: bool = False) -> TariffVersion | None:
        query = select(TariffVersion).where(TariffVersion.region == region, TariffVersion.version == version)
        return self.session.scalar(query.with_for_update() if for_update else query)

    def tariff_generation(self, *, shared_lock: bool = False) -> int:
        """The schedule's generation; `shared_lock` holds, on PostgreSQL, the shared side of the schedule lock
        until the transaction ends (an activation takes it exclusively).

        The lock and the read are two statements: under READ COMMITTED a statement's snapshot is taken when it
        starts, so a read in the statement that waited for an activation would not see what it committed."""
        if shared_lock and self.dialect == "postgresql":
            self._core(_statements(self.dialect).schedule_lock_shared, {"p_lock": TARIFF_SCHEDULE_LOCK})
        return int(self._core(_statements(self.dialect).generation).scalar_one())

    def lock_tariff_schedule(self, now: datetime) -> int:
        """Take the schedule lock exclusively (waiting for settlements in flight) and move the generation on;
        returns the new generation. On SQLite the write transaction already holds the database."""
        if self.dialect == "postgresql":
            self.session.execute(text("SELECT pg_advisory_xact_lock(:p_lock)"), {"p_lock": TARIFF_SCHEDULE_LOCK})
        schedule = SCHEDULE
        generation = self._core(update(schedule).where(schedule.c.id == 1)
                                .values(generation=schedule.c.generation + 1, changed_at=now)
                                .returning(schedule.c.generation)).scalar_one()
        return int(generation)

    def settlement_dated_from(self, version_ids: Sequence[int], since: datetime) -> str | None:
        """A settlement dated `since` or later that used one of the versions (as its own or inherited), if any,
        reversals aside: a reversed settlement pays nothing, so it holds no date against a new version (one dated
        far ahead would otherwise freeze its region's tariff for good)."""
        return self.session.scalar(
            select(Settlement.public_id).where(Settlement.settled_at >= since, or_(
                Settlement.tariff_version_id.in_(version_ids),
                Settlement.tariff_parent_version_id.in_(version_ids)),
                ~select(Reversal.id).where(Reversal.settlement_id == Settlement.id).exists()).limit(1))

    def settlements_dated(self, start: datetime, end: datetime, after_id: int, limit: int,
                          version_ids: Sequence[int] | None = None) -> Sequence[Settlement]:
        """Settlements dated in [start, end), by id, a page at a time; optionally only those of some versions."""
        query = select(Settlement).where(Settlement.settled_at >= start, Settlement.settled_at < end,
                                         Settlement.id > after_id)
        if version_ids is not None:
            query = query.where(or_(Settlement.tariff_version_id.in_(version_ids),
                                    Settlement.tariff_parent_version_id.in_(version_ids)))
        return self.session.scalars(query.order_by(Settlement.id).limit(limit)).all()

    def original_entries(self, settlement_ids: Sequence[int]) -> Sequence[LedgerEntry]:
        """The ledger entries the settlements made themselves (not reversals, not finance's corrections)."""
        return self.session.scalars(select(LedgerEntry).where(
            LedgerEntry.settlement_id.in_(settlement_ids), LedgerEntry.reversal_id.is_(None),
            LedgerEntry.correction_id.is_(None)).order_by(LedgerEntry.id)).all()

    def original_limit_entries(self, settlement_ids: Sequence[int]) -> Sequence[LimitEntry]:
        """The limit entries the settlements made themselves (not their reversals)."""
        return self.session.scalars(select(LimitEntry).where(
            LimitEntry.settlement_id.in_(settlement_ids), LimitEntry.reversal_id.is_(None))
            .order_by(LimitEntry.id)).all()

    def reversal_times(self, settlement_ids: Sequence[int]) -> dict[int, datetime]:
        rows = self.session.execute(select(Reversal.settlement_id, Reversal.created_at)
                                    .where(Reversal.settlement_id.in_(settlement_ids))).all()
        return {settlement_id: at for settlement_id, at in rows}  # noqa: C416 - rows are not pairs to mypy

    # Year-to-date figures, under the person's lock

    def lock_year(self, id_number: str, year: int) -> YearFigures:
        """Lock the person's year (creating it on first use) and read its figures.

        Every settlement and reversal of one person and year takes this row lock first, so they run one after
        the other across hospitals and processes; on SQLite the whole database is already held by BEGIN
        IMMEDIATE. The upsert with a no-op update takes the lock and reads the row in one round trip. The
        funds are read by a second statement, whose snapshot is taken after the lock was granted.
        """
        statements = _statements(self.dialect)
        row = self._core(statements.lock_year, {"p_id": id_number, "p_year": year}).one()
        return YearFigures(row[0], self._funds(id_number, year), levels_of(row[1:]), self._limits(id_number, year))

    def _funds(self, id_number: str, year: int) -> dict[str, tuple[int, int, int]]:
        rows = self._core(_statements(self.dialect).funds, {"p_id": id_number, "p_year": year})
        return {fund: (paid, deductible, cumulative) for fund, paid, deductible, cumulative in rows}

    def _limits(self, id_number: str, year: int) -> dict[tuple[str, str], int]:
        rows = self._core(_statements(self.dialect).limits, {"p_id": id_number, "p_year": year})
        return {(fund, name): paid for fund, name, paid in rows}

    def read_year(self, id_number: str, year: int) -> YearFigures:
        """The figures without a lock, for displays (eligibility) and quotes."""
        table = PERSON_YEARS
        row = self._core(select(table.c.admissions, *(table.c[f"admissions_{level}"] for level in LEVELS)).where(
            table.c.id_number == id_number, table.c.year == year)).first()
        if row is None:
            return YearFigures(0, self._funds(id_number, year), {}, self._limits(id_number, year))
        return YearFigures(row[0], self._funds(id_number, year), levels_of(row[1:]), self._limits(id_number, year))

    def move_year(self, id_number: str, year: int, admissions: int, funds: dict[str, tuple[int, int, int]],
                  level: str = "", limits: dict[tuple[str, str], int] | None = None) -> None:
        """Add movements (positive for a settlement, negative for a reversal) to a year locked by lock_year: the
        admissions (of a stay at a hospital of `level`), the funds' figures and the limits'."""
        statements = _statements(self.dialect)
        if admissions:
            self._core(statements.move_admissions, {"p_id": id_number, "p_year": year, "p_delta": admissions,
                                                    "p_level": level})
        if funds:
            self._core(statements.move_funds, [
                {"id_number": id_number, "year": year, "fund": fund, "paid_fen": paid,
                 "deductible_fen": deductible, "cumulative_fen": cumulative}
                for fund, (paid, deductible, cumulative) in funds.items()])
        if limits:
            self._core(statements.move_limits, [
                {"id_number": id_number, "year": year, "fund": fund, "name": name, "paid_fen": paid}
                for (fund, name), paid in limits.items()])

    def insert_returning_id(self, table: Table, values: dict[str, Any]) -> int:
        """One INSERT ... RETURNING id: the write path avoids the ORM's per-object bookkeeping."""
        new_id: int = self._core(_insert_returning_id(table), values).scalar_one()
        return new_id

    def insert_many(self, table: Table, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._core(_insert(table), rows)

    # Idempotency

    def idempotency_record(self, hospital_id: int, key: str) -> StoredAnswer | None:
        row = self._core(_statements(self.dialect).answer, {"p_hospital": hospital_id, "p_key": key}).first()
        return StoredAnswer(*row) if row is not None else None

    # Settlements

    def settlement(self, public_id: str, hospital_id: int | None = None) -> Settlement | None:
        query = select(Settlement).where(Settlement.public_id == public_id)
        if hospital_id is not None:
            query = query.where(Settlement.hospital_id == hospital_id)
        return self.session.scalar(query)

    def reversal_of(self, settlement_id: int) -> Reversal | None:
        return self.session.scalar(select(Reversal).where(Reversal.settlement_id == settlement_id))

    def entries_of(self, settlement_id: int) -> Sequence[LedgerEntry]:
        """Every ledger entry of a settlement: its own, its corrections' and its reversal's, in the order made."""
        return self.session.scalars(select(LedgerEntry).where(LedgerEntry.settlement_id == settlement_id)
                                    .order_by(LedgerEntry.id)).all()

    def corrections_of(self, settlement_id: int) -> Sequence[Correction]:
        return self.session.scalars(select(Correction).where(Correction.settlement_id == settlement_id)
                                    .order_by(Correction.id)).all()

    def ledger_of(self, settlement_id: int) -> Sequence[LedgerEntry]:
        return self.session.scalars(select(LedgerEntry).where(LedgerEntry.settlement_id == settlement_id,
                                                              LedgerEntry.reversal_id.is_(None))
                                    .order_by(LedgerEntry.id)).all()

    def settlements_page(self, hospital_id: int, start: datetime, end: datetime, after_id: int | None,
                         limit: int) -> Sequence[tuple[Settlement, str | None]]:
        query = (
            select(Settlement, Reversal.public_id)
            .outerjoin(Reversal, Reversal.settlement_id == Settlement.id)
            .where(Settlement.hospital_id == hospital_id, Settlement.created_at >= start,
                   Settlement.created_at < end)
            .order_by(Settlement.id)
            .limit(limit)
        )
        if after_id is not None:
            query = query.where(Settlement.id > after_id)
        return [(row[0], row[1]) for row in self.session.execute(query)]

    def limit_entries_of(self, settlement_id: int) -> Sequence[LimitEntry]:
        return self.session.scalars(select(LimitEntry).where(LimitEntry.settlement_id == settlement_id,
                                                             LimitEntry.reversal_id.is_(None))
                                    .order_by(LimitEntry.id)).all()

    def limit_totals(self, id_number: str, year: int) -> dict[tuple[str, str], int]:
        """The sum of a person's limit entries for a year: what the limits' year figures must equal."""
        query = (select(LimitEntry.fund, LimitEntry.name, func.sum(LimitEntry.paid_fen))
                 .where(LimitEntry.id_number == id_number, LimitEntry.insurance_year == year)
                 .group_by(LimitEntry.fund, LimitEntry.name))
        return {(fund, name): int(paid) for fund, name, paid in self.session.execute(query)}

    def ledger_totals(self, id_number: str, year: int) -> dict[str, tuple[int, int, int]]:
        """The sum of a person's ledger for a year, per fund: what the year figures must equal."""
        query = (
            select(LedgerEntry.fund, func.sum(LedgerEntry.paid_fen), func.sum(LedgerEntry.deductible_fen),
                   func.sum(LedgerEntry.cumulative_fen))
            .where(and_(LedgerEntry.id_number == id_number, LedgerEntry.insurance_year == year))
            .group_by(LedgerEntry.fund)
        )
        return {fund: (int(paid), int(deductible), int(cumulative))
                for fund, paid, deductible, cumulative in self.session.execute(query)}

    # Audit

    def audit_of(self, entity: str, entity_id: str) -> Sequence[AuditEntry]:
        return self.session.scalars(select(AuditEntry).where(AuditEntry.entity == entity,
                                                             AuditEntry.entity_id == entity_id)
                                    .order_by(AuditEntry.id)).all()

    def audit(self, at: datetime, actor: str, action: str, entity: str, entity_id: str, details: str) -> None:
        self._core(_insert(AUDIT_LOG), {"at": at, "actor": actor, "action": action, "entity": entity,
                                        "entity_id": entity_id, "details": details})

    # SOAP access: WS-Security credentials, dialect bindings, nonces and the envelope log

    def soap_credential(self, username: str) -> tuple[SoapCredential, Hospital] | None:
        row = self.session.execute(
            select(SoapCredential, Hospital).join(Hospital, Hospital.id == SoapCredential.hospital_id)
            .where(SoapCredential.username == username, SoapCredential.revoked_at.is_(None))
            .order_by(SoapCredential.id.desc()).limit(1)).first()
        return (row[0], row[1]) if row is not None else None

    def soap_credentials_of(self, hospital_id: int) -> Sequence[SoapCredential]:
        return self.session.scalars(select(SoapCredential).where(SoapCredential.hospital_id == hospital_id,
                                                                 SoapCredential.revoked_at.is_(None))).all()

    def dialects_of(self, hospital_id: int) -> list[str]:
        return list(self.session.scalars(select(HospitalDialect.dialect).where(
            HospitalDialect.hospital_id == hospital_id).order_by(HospitalDialect.dialect)))

    def unbind_dialect(self, hospital_id: int, dialect: str) -> None:
        self.session.execute(delete(HospitalDialect).where(HospitalDialect.hospital_id == hospital_id,
                                                           HospitalDialect.dialect == dialect))

    def exchanges(self, hospital_id: int | None = None) -> Sequence[SoapExchange]:
        query = select(SoapExchange).order_by(SoapExchange.id)
        if hospital_id is not None:
            query = query.where(SoapExchange.hospital_id == hospital_id)
        return self.session.scalars(query).all()

    def purge_exchanges(self, cutoff: datetime, batch: int) -> int:
        """Delete up to `batch` envelope-log rows recorded before `cutoff`, oldest first, the way the append-only
        guard allows (revision 0008): through purge_soap_exchanges on PostgreSQL, under a purge mark written and
        removed within this transaction on SQLite. A cutoff within the last 30 days is refused by the database."""
        if self.dialect == "postgresql":
            return int(self.session.execute(text("SELECT purge_soap_exchanges(:cutoff, :batch)").bindparams(
                bindparam("cutoff", type_=Timestamp)), {"cutoff": cutoff, "batch": batch}).scalar_one())
        mark = {"cutoff": cutoff}
        stamped = (bindparam("cutoff", type_=Timestamp),)
        self.session.execute(text("INSERT INTO soap_exchange_purges (purge_before) VALUES (:cutoff)")
                             .bindparams(*stamped), mark)
        deleted = cast(CursorResult[Any], self.session.execute(text(
            "DELETE FROM soap_exchanges WHERE id IN (SELECT id FROM soap_exchanges WHERE created_at < :cutoff "
            "ORDER BY created_at LIMIT :batch)").bindparams(*stamped), {**mark, "batch": batch})).rowcount
        self.session.execute(text("DELETE FROM soap_exchange_purges"))
        return int(deleted)

    def settlement_by_transaction(self, hospital_id: int, transaction_id: str) -> Settlement | None:
        return self.session.scalar(select(Settlement).where(Settlement.hospital_id == hospital_id,
                                                            Settlement.transaction_id == transaction_id))


# Bookkeeping rows written on a connection of their own (settlement.db.engine.make_bookkeeping_engine)

def add_nonce(connection: Connection, hospital_id: int, nonce: str, seen_at: datetime) -> None:
    """Raises IntegrityError when the nonce was seen already."""
    connection.execute(_insert(NONCES), {"hospital_id": hospital_id, "nonce": nonce, "seen_at": seen_at})


def purge_nonces(connection: Connection, before: datetime) -> None:
    connection.execute(delete(NONCES).where(NONCES.c.seen_at < before))


def add_exchange(connection: Connection, values: dict[str, Any]) -> None:
    connection.execute(_insert(EXCHANGES), values)
