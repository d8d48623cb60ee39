"""All SQL of the engine. Repositories never commit: the unit of work of each use case does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import Table, and_, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from settlement.db.models import (
    AuditEntry,
    FundYear,
    Hospital,
    IdempotencyRecord,
    LedgerEntry,
    Person,
    PersonCategory,
    PersonYear,
    Principal,
    Reversal,
    RosterImport,
    Settlement,
    TariffVersion,
)

PERSON_YEARS = cast(Table, PersonYear.__table__)
FUND_YEARS = cast(Table, FundYear.__table__)
AUDIT_LOG = cast(Table, AuditEntry.__table__)


@dataclass(frozen=True)
class YearFigures:
    """A person's locked year-to-date figures, in fen."""

    admissions: int
    funds: dict[str, tuple[int, int, int]]  # fund -> (paid, deductible used, cumulative)


class Repository:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.dialect = session.get_bind().dialect.name

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

    # The roster

    def person(self, id_number: str) -> Person | None:
        return self.session.scalar(select(Person).where(Person.id_number == id_number))

    def categories_on(self, id_number: str, day: date) -> list[PersonCategory]:
        query = (
            select(PersonCategory)
            .join(Person, Person.id == PersonCategory.person_id)
            .where(Person.id_number == id_number, PersonCategory.valid_from <= day,
                   or_(PersonCategory.valid_to.is_(None), PersonCategory.valid_to >= day))
            .order_by(PersonCategory.category)
        )
        return list(self.session.scalars(query))

    def category_row(self, person_id: int, category: str, valid_from: date) -> PersonCategory | None:
        return self.session.scalar(select(PersonCategory).where(
            PersonCategory.person_id == person_id, PersonCategory.category == category,
            PersonCategory.valid_from == valid_from))

    def roster_import_by_sha(self, sha256: str) -> RosterImport | None:
        return self.session.scalar(select(RosterImport).where(RosterImport.sha256 == sha256)
                                   .order_by(RosterImport.id).limit(1))

    # Tariff versions

    def tariff_version_by_sha(self, sha256: str) -> TariffVersion | None:
        return self.session.scalar(select(TariffVersion).where(TariffVersion.sha256 == sha256))

    def tariff_versions(self) -> Sequence[TariffVersion]:
        return self.session.scalars(select(TariffVersion).order_by(TariffVersion.region,
                                                                   TariffVersion.effective_from)).all()

    # Year-to-date figures, under the person's lock

    def lock_year(self, id_number: str, year: int) -> YearFigures:
        """Lock the person's year (creating it on first use) and read its figures.

        Every settlement and reversal of one person and year takes this row lock first, so they run one after
        the other across hospitals and processes; on SQLite the whole database is already held by BEGIN
        IMMEDIATE. The upsert with a no-op update takes the lock and reads the row in one round trip.
        """
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        table = PERSON_YEARS
        upsert = dialect_insert(table).values(id_number=id_number, year=year, admissions=0).on_conflict_do_update(
            index_elements=["id_number", "year"], set_={"admissions": table.c.admissions})
        admissions: int = self.session.execute(upsert.returning(table.c.admissions)).scalar_one()
        return YearFigures(admissions, self._funds(id_number, year))

    def _funds(self, id_number: str, year: int) -> dict[str, tuple[int, int, int]]:
        table = FUND_YEARS
        rows = self.session.execute(
            select(table.c.fund, table.c.paid_fen, table.c.deductible_fen, table.c.cumulative_fen)
            .where(table.c.id_number == id_number, table.c.year == year))
        return {fund: (paid, deductible, cumulative) for fund, paid, deductible, cumulative in rows}

    def read_year(self, id_number: str, year: int) -> YearFigures:
        """The figures without a lock, for displays (eligibility) and quotes."""
        table = PERSON_YEARS
        admissions = self.session.execute(select(table.c.admissions).where(
            table.c.id_number == id_number, table.c.year == year)).scalar()
        return YearFigures(admissions or 0, self._funds(id_number, year))

    def move_year(self, id_number: str, year: int, admissions: int,
                  funds: dict[str, tuple[int, int, int]]) -> None:
        """Add movements (positive for a settlement, negative for a reversal) to a year locked by lock_year."""
        person_years = PERSON_YEARS
        if admissions:
            self.session.execute(update(person_years).where(
                person_years.c.id_number == id_number, person_years.c.year == year
            ).values(admissions=person_years.c.admissions + admissions))
        if not funds:
            return
        table = FUND_YEARS
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        statement = dialect_insert(table)
        statement = statement.on_conflict_do_update(
            index_elements=["id_number", "year", "fund"],
            set_={name: table.c[name] + statement.excluded[name]
                  for name in ("paid_fen", "deductible_fen", "cumulative_fen")})
        self.session.execute(statement, [
            {"id_number": id_number, "year": year, "fund": fund, "paid_fen": paid, "deductible_fen": deductible,
             "cumulative_fen": cumulative}
            for fund, (paid, deductible, cumulative) in funds.items()])

    def insert_returning_id(self, table: Any, values: dict[str, Any]) -> int:
        """One INSERT ... RETURNING id: the write path avoids the ORM's per-object bookkeeping."""
        new_id: int = self.session.execute(insert(table).values(**values).returning(table.c.id)).scalar_one()
        return new_id

    def insert_many(self, table: Any, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.session.execute(insert(table), rows)

    # Idempotency

    def idempotency_record(self, hospital_id: int, key: str) -> IdempotencyRecord | None:
        return self.session.scalar(select(IdempotencyRecord).where(IdempotencyRecord.hospital_id == hospital_id,
                                                                   IdempotencyRecord.key == key))

    # Settlements

    def settlement(self, public_id: str, hospital_id: int | None = None) -> Settlement | None:
        query = select(Settlement).where(Settlement.public_id == public_id)
        if hospital_id is not None:
            query = query.where(Settlement.hospital_id == hospital_id)
        return self.session.scalar(query)

    def reversal_of(self, settlement_id: int) -> Reversal | None:
        return self.session.scalar(select(Reversal).where(Reversal.settlement_id == settlement_id))

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

    def audit(self, at: datetime, actor: str, action: str, entity: str, entity_id: str, details: str) -> None:
        self.session.execute(insert(AUDIT_LOG).values(at=at, actor=actor, action=action, entity=entity,
                                                      entity_id=entity_id, details=details))
