"""Tables. Money is integer fen (BIGINT); ledger, settlements, reversals and the audit log are append-only
(the database refuses UPDATE and DELETE on them, see the initial migration)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

class UtcDateTime(TypeDecorator[datetime]):
    """Instants stored in UTC and read back aware. PostgreSQL keeps the offset itself; SQLite keeps only the
    clock time, so every value is converted to UTC first (comparisons and date ranges then agree)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("a naive datetime has no place in the database: give it a time zone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Timestamp = UtcDateTime()
# High-volume tables need 64-bit ids on PostgreSQL; SQLite's rowid alias must be spelled INTEGER.
BigId = BigInteger().with_variant(Integer, "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Hospital(Base):
    __tablename__ = "hospitals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    level: Mapped[str] = mapped_column(String(16))
    region: Mapped[str] = mapped_column(String(6))
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    disabled_at: Mapped[datetime | None] = mapped_column(Timestamp)  # its keys and SOAP password are refused


class Principal(Base):
    """Who may call: a hospital's system, a finance officer or an administrator. Keys are stored hashed; a person
    (kind and name) holds one active key: rotating revokes the old one."""

    __tablename__ = "principals"
    __table_args__ = (Index("uq_principals_active_name", "kind", "name", unique=True,
                            postgresql_where=text("revoked_at IS NULL"), sqlite_where=text("revoked_at IS NULL")),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # hospital | finance | admin
    name: Mapped[str] = mapped_column(String(128))
    hospital_id: Mapped[int | None] = mapped_column(ForeignKey("hospitals.id"))
    key_prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    revoked_at: Mapped[datetime | None] = mapped_column(Timestamp)


class Person(Base):
    """The civil-affairs roster: who is in which assistance category, and when."""

    __tablename__ = "persons"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    id_number: Mapped[str] = mapped_column(String(18), unique=True)
    name: Mapped[str] = mapped_column(String(64))
    scheme: Mapped[str] = mapped_column(String(16))
    region: Mapped[str] = mapped_column(String(6))
    retired: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # 退休 (employee scheme)


class PersonCategory(Base):
    __tablename__ = "person_categories"
    __table_args__ = (UniqueConstraint("person_id", "category", "valid_from"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("persons.id"), index=True)
    category: Mapped[str] = mapped_column(String(64))
    valid_from: Mapped[date] = mapped_column(Date)
    valid_to: Mapped[date | None] = mapped_column(Date)  # inclusive; None while open-ended
    import_id: Mapped[int | None] = mapped_column(ForeignKey("roster_imports.id"))


class RosterImport(Base):
    __tablename__ = "roster_imports"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    filename: Mapped[str] = mapped_column(String(256))
    imported_at: Mapped[datetime] = mapped_column(Timestamp)
    rows: Mapped[int] = mapped_column(Integer)
    accepted: Mapped[int] = mapped_column(Integer)
    rejected: Mapped[int] = mapped_column(Integer)
    changed: Mapped[int] = mapped_column(Integer)
    report: Mapped[str] = mapped_column(Text)  # JSON: the rejected rows with line and reason


class TariffVersion(Base):
    """One tariff version of one region: its document as written (a county's names its city in `inherits`) and
    its life: draft, approved by a second administrator, active (in force from its effective date), or withdrawn.

    The document, its hash and its range never change once recorded (triggers refuse it): ending a version is a
    new version. Only the life columns are filled in as it moves on.
    """

    __tablename__ = "tariff_versions"
    __table_args__ = (UniqueConstraint("region", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    region: Mapped[str] = mapped_column(String(6))
    version: Mapped[str] = mapped_column(String(128))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)  # of `content`
    effective_from: Mapped[date] = mapped_column(Date)
    effective_to: Mapped[date | None] = mapped_column(Date)  # its own end date; else until the next version
    inherits: Mapped[str | None] = mapped_column(String(6))
    content: Mapped[str] = mapped_column(Text)  # canonical JSON of the document, catalogue inline
    loaded_at: Mapped[datetime] = mapped_column(Timestamp)  # when it was recorded
    status: Mapped[str] = mapped_column(String(16), default="draft")  # draft | approved | active | withdrawn
    origin: Mapped[str] = mapped_column(String(256), default="")  # the file or upload it came from
    based_on_id: Mapped[int | None] = mapped_column(ForeignKey("tariff_versions.id"))  # a catalogue draft's base
    created_by: Mapped[str] = mapped_column(String(128), default="system")
    approved_by: Mapped[str | None] = mapped_column(String(128))
    approved_at: Mapped[datetime | None] = mapped_column(Timestamp)
    activated_by: Mapped[str | None] = mapped_column(String(128))
    activated_at: Mapped[datetime | None] = mapped_column(Timestamp)
    withdrawn_by: Mapped[str | None] = mapped_column(String(128))
    withdrawn_at: Mapped[datetime | None] = mapped_column(Timestamp)
    note: Mapped[str | None] = mapped_column(Text)  # the author's note, or why it was withdrawn


class TariffSchedule(Base):
    """One row: the generation of the set of active versions, moved on by every activation or withdrawal.

    Every settlement reads it in its own transaction (under a shared lock on PostgreSQL that an activation takes
    exclusively), so a settlement sees the versions in force either all before or all after a change.
    """

    __tablename__ = "tariff_schedule"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, default=0)
    changed_at: Mapped[datetime | None] = mapped_column(Timestamp)


class CredentialsGeneration(Base):
    """One row: moved on by triggers with every change to principals, hospitals, SOAP passwords and dialect
    bindings (by a command or by hand). Each worker re-reads it every half second and drops what it cached of
    older generations (settlement.services.auth.CredentialsWatch)."""

    __tablename__ = "credentials_generation"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger, default=0)


class PersonYear(Base):
    """One row per person and insurance year: the lock that serialises that person's settlements."""

    __tablename__ = "person_years"
    id_number: Mapped[str] = mapped_column(String(18), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    admissions: Mapped[int] = mapped_column(Integer, default=0)
    # The same admissions by the hospital's level (the sum of settlements and reversals of stays at that level).
    admissions_township: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    admissions_county: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    admissions_city: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    admissions_provincial: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class FundYear(Base):
    """Year-to-date figures of one fund for one person: always the sum of that person's ledger entries."""

    __tablename__ = "fund_years"
    id_number: Mapped[str] = mapped_column(String(18), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    fund: Mapped[str] = mapped_column(String(6), primary_key=True)
    paid_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    deductible_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    cumulative_fen: Mapped[int] = mapped_column(BigInteger, default=0)


class LimitYear(Base):
    """What a fund paid a person in a year against one limit inside it (门诊统筹, a disease's 门诊慢特病 limit): a
    part of the fund's paid figure, kept apart; always the sum of that person's limit entries."""

    __tablename__ = "limit_years"
    id_number: Mapped[str] = mapped_column(String(18), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    fund: Mapped[str] = mapped_column(String(6), primary_key=True)
    name: Mapped[str] = mapped_column(String(130), primary_key=True)  # the limit, and its disease when per disease
    paid_fen: Mapped[int] = mapped_column(BigInteger)


class Settlement(Base):
    __tablename__ = "settlements"
    __table_args__ = (
        UniqueConstraint("hospital_id", "transaction_id"),
        Index("ix_settlements_hospital_created", "hospital_id", "created_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospitals.id"))
    transaction_id: Mapped[str] = mapped_column(String(64))
    id_number: Mapped[str] = mapped_column(String(18), index=True)
    insurance_year: Mapped[int] = mapped_column(Integer)
    visit_id: Mapped[str] = mapped_column(String(128))
    visit_type: Mapped[str] = mapped_column(String(32))
    settled_at: Mapped[datetime] = mapped_column(Timestamp)  # the hospital's settlement time (tariff date)
    created_at: Mapped[datetime] = mapped_column(Timestamp)  # when the engine committed it
    tariff_version_id: Mapped[int] = mapped_column(ForeignKey("tariff_versions.id"))  # the region's version
    tariff_parent_version_id: Mapped[int | None] = mapped_column(ForeignKey("tariff_versions.id"))  # inherited
    tariff_sha256: Mapped[str] = mapped_column(String(64))  # of the tariff as resolved (after inheritance)
    total_fen: Mapped[int] = mapped_column(BigInteger)
    out_of_catalogue_fen: Mapped[int] = mapped_column(BigInteger)
    over_price_limit_fen: Mapped[int] = mapped_column(BigInteger)
    pre_self_pay_fen: Mapped[int] = mapped_column(BigInteger)
    in_scope_fen: Mapped[int] = mapped_column(BigInteger)
    patient_fen: Mapped[int] = mapped_column(BigInteger)
    admissions: Mapped[int] = mapped_column(SmallInteger)  # 1 for an inpatient stay, else 0
    categories: Mapped[str] = mapped_column(Text)  # JSON list: the roster's categories on the tariff's date
    retired: Mapped[bool | None] = mapped_column(Boolean)  # the roster's, as used; None before revision 0009
    accumulators_before: Mapped[str] = mapped_column(Text)  # JSON: what the computation started from
    claim: Mapped[str] = mapped_column(Text)  # JSON: the claim as received
    result: Mapped[str] = mapped_column(Text)  # JSON: the reply, shares and trace


class Reversal(Base):
    __tablename__ = "reversals"
    __table_args__ = (UniqueConstraint("hospital_id", "transaction_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    settlement_id: Mapped[int] = mapped_column(BigId, ForeignKey("settlements.id"), unique=True)  # one reversal at most
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospitals.id"))
    transaction_id: Mapped[str] = mapped_column(String(64))
    admissions: Mapped[int] = mapped_column(SmallInteger)  # -1 when the reversed settlement counted a stay
    reason: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class LedgerEntry(Base):
    """One entry per fund per settlement; a reversal adds the negative mirror, linked to the original."""

    __tablename__ = "ledger_entries"
    __table_args__ = (Index("ix_ledger_person_year", "id_number", "insurance_year"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    settlement_id: Mapped[int] = mapped_column(BigId, ForeignKey("settlements.id"), index=True)
    reversal_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("reversals.id"))
    reverses_entry_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("ledger_entries.id"))
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospitals.id"))
    id_number: Mapped[str] = mapped_column(String(18))
    insurance_year: Mapped[int] = mapped_column(Integer)
    fund: Mapped[str] = mapped_column(String(6))
    paid_fen: Mapped[int] = mapped_column(BigInteger)
    deductible_fen: Mapped[int] = mapped_column(BigInteger)
    cumulative_fen: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    correction_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("corrections.id"))


class LimitEntry(Base):
    """One entry per limit a settlement's payment counted against; a reversal adds the negative mirror."""

    __tablename__ = "limit_entries"
    __table_args__ = (Index("ix_limit_entries_person_year", "id_number", "insurance_year"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    settlement_id: Mapped[int] = mapped_column(BigId, ForeignKey("settlements.id"), index=True)
    reversal_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("reversals.id"))
    reverses_entry_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("limit_entries.id"))
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospitals.id"))
    id_number: Mapped[str] = mapped_column(String(18))
    insurance_year: Mapped[int] = mapped_column(Integer)
    fund: Mapped[str] = mapped_column(String(6))
    name: Mapped[str] = mapped_column(String(130))
    paid_fen: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class IdempotencyRecord(Base):
    """The first answer given to a caller's key, replayed to every retry; failures keep their answer too."""

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("hospital_id", "key"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospitals.id"))
    key: Mapped[str] = mapped_column(String(64))
    operation: Mapped[str] = mapped_column(String(32))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class AuditEntry(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(Timestamp)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    entity: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str] = mapped_column(String(64))
    details: Mapped[str] = mapped_column(Text)  # JSON, personal data masked


class SoapCredential(Base):
    """A hospital's WS-Security password. Checking a digest needs the password itself, so it is kept encrypted
    (Fernet, with the service's credentials key), never hashed; see the README."""

    __tablename__ = "soap_credentials"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospitals.id"), index=True)
    username: Mapped[str] = mapped_column(String(32), index=True)
    secret_encrypted: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    revoked_at: Mapped[datetime | None] = mapped_column(Timestamp)


class HospitalDialect(Base):
    """Which SOAP dialects a hospital may speak."""

    __tablename__ = "hospital_dialects"
    __table_args__ = (UniqueConstraint("hospital_id", "dialect"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospitals.id"))
    dialect: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class WsseNonce(Base):
    """Nonces seen within the WS-Security window: a nonce is accepted once. Rows older than the window are
    purged, so this table is not append-only."""

    __tablename__ = "wsse_nonces"
    hospital_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(Timestamp, index=True)


class SoapExchange(Base):
    """Every SOAP envelope in and out, personal data masked, linked to the settlement it made or read. A refused
    message is kept as its size, sha256 and a short masked prefix; a long envelope is kept truncated (the size and
    hash are of the whole); rows older than the retention are purged (revision 0008), nothing else is deleted."""

    __tablename__ = "soap_exchanges"
    __table_args__ = (Index("ix_soap_exchanges_hospital_message", "hospital_id", "message_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    hospital_id: Mapped[int] = mapped_column(ForeignKey("hospitals.id"))
    dialect: Mapped[str] = mapped_column(String(32))
    operation: Mapped[str] = mapped_column(String(32))
    code: Mapped[str] = mapped_column(String(32))  # the dialect's operation or trade code
    message_id: Mapped[str | None] = mapped_column(String(64))
    settlement_id: Mapped[str | None] = mapped_column(String(32), index=True)  # public id
    outcome: Mapped[str] = mapped_column(String(64))  # ok | replayed | the error code
    request: Mapped[str] = mapped_column(Text)
    reply: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp, index=True)
    request_bytes: Mapped[int | None] = mapped_column(BigInteger)  # the body as received (None: before 0008)
    request_sha256: Mapped[str | None] = mapped_column(String(64))
    reply_bytes: Mapped[int | None] = mapped_column(BigInteger)  # the reply as sent
    reply_sha256: Mapped[str | None] = mapped_column(String(64))


class ReconciliationRun(Base):
    """One per (payer, business date): a rerun recomputes into the same record; two starts at once give one."""

    __tablename__ = "reconciliation_runs"
    __table_args__ = (UniqueConstraint("payer", "business_date"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    payer: Mapped[str] = mapped_column(String(32))
    business_date: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16))  # pending | running | done | failed
    request_id: Mapped[str] = mapped_column(String(64))  # the statement request's id, reused by every retry
    started_at: Mapped[datetime | None] = mapped_column(Timestamp)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    engine_count: Mapped[int] = mapped_column(Integer, default=0)
    engine_total_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    payer_count: Mapped[int] = mapped_column(Integer, default=0)
    payer_total_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    discrepancies: Mapped[int] = mapped_column(Integer, default=0)
    totals: Mapped[str] = mapped_column(Text, default="[]")  # JSON: per fund and hospital, both sides
    error: Mapped[str | None] = mapped_column(Text)
    # The lease of the process working the run (revision 0012): who, and when it last said it still works it.
    holder: Mapped[str | None] = mapped_column(String(96))
    heartbeat_at: Mapped[datetime | None] = mapped_column(Timestamp)


class Lease(Base):
    """A lease by name (the scheduler's: which process runs the jobs), renewed by its holder; a lease not renewed
    for longer than its length may be taken by another."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(96))
    acquired_at: Mapped[datetime] = mapped_column(Timestamp)
    renewed_at: Mapped[datetime] = mapped_column(Timestamp)


class StatementRow(Base):
    """A payer's statement of a business date, as received (replaced when the run is repeated)."""

    __tablename__ = "statement_rows"
    # The key is the run and the row's position in the statement (from 1): one index, which every query by run
    # uses, and no sequence (revision 0005). No foreign key: a run's rows are replaced by the million.
    run_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    line: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    settlement_id: Mapped[str] = mapped_column(String(32))  # the engine's public settlement id
    entry_kind: Mapped[str] = mapped_column(String(16))  # settlement | reversal | correction
    fund: Mapped[str] = mapped_column(String(6))
    hospital_code: Mapped[str] = mapped_column(String(32))
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    occurred_at: Mapped[datetime | None] = mapped_column(Timestamp)


class Discrepancy(Base):
    """One difference between the ledger and a payer's statement, worked by finance staff. Its figures never
    change; only its resolution is filled in (and audited)."""

    __tablename__ = "discrepancies"
    __table_args__ = (UniqueConstraint("run_id", "settlement_id", "entry_kind", "fund"),
                      Index("ix_discrepancies_status_payer", "status", "payer"))
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(BigId, ForeignKey("reconciliation_runs.id"))
    payer: Mapped[str] = mapped_column(String(32))
    business_date: Mapped[date] = mapped_column(Date)
    kind: Mapped[str] = mapped_column(String(16))  # payer_only (1) | engine_only (2) | amount_differs (3)
    timing: Mapped[bool] = mapped_column(Boolean, default=False)  # recognised as a cross-midnight timing case
    settlement_id: Mapped[str] = mapped_column(String(32))
    entry_kind: Mapped[str] = mapped_column(String(16))
    fund: Mapped[str] = mapped_column(String(6))
    hospital_code: Mapped[str] = mapped_column(String(32))
    engine_fen: Mapped[int | None] = mapped_column(BigInteger)
    payer_fen: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    status: Mapped[str] = mapped_column(String(16))  # open | resolved | cleared (gone on a rerun)
    action: Mapped[str | None] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)
    resolved_by: Mapped[str | None] = mapped_column(String(128))
    resolved_at: Mapped[datetime | None] = mapped_column(Timestamp)
    correction_id: Mapped[int | None] = mapped_column(BigId)


class Correction(Base):
    """A correction posted by finance: its ledger entry is linked to it; nothing else is edited."""

    __tablename__ = "corrections"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    discrepancy_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("discrepancies.id"))
    settlement_id: Mapped[int] = mapped_column(BigId, ForeignKey("settlements.id"))
    fund: Mapped[str] = mapped_column(String(6))
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class ClearingRun(Base):
    """One monthly clearing per month: what each fund owes each hospital (the statement files are its output)."""

    __tablename__ = "clearing_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    month: Mapped[str] = mapped_column(String(7), unique=True)  # YYYY-MM
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)
    totals: Mapped[str] = mapped_column(Text, default="[]")


APPEND_ONLY_TABLES = ("settlements", "reversals", "ledger_entries", "audit_log", "soap_exchanges", "corrections",
                      "limit_entries")
