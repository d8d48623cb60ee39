"""Quote, settle, reverse, read and list settlements: the cashier's use cases.

Concurrency: every settlement or reversal of a person first locks that person's year (a row lock on
PostgreSQL; SQLite's BEGIN IMMEDIATE holds the database), then checks the caller's key, computes and writes
the settlement, its ledger entries, the new year figures, the key's answer and an audit row in one
transaction. The year figures are therefore always the sum of the ledger, and no cap or deductible is used
twice, however many hospitals settle the same person at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, NamedTuple, TypeVar, cast

import orjson
from sqlalchemy import Table
from sqlalchemy.exc import IntegrityError, OperationalError

from settlement.db.aiopool import DatabaseUnreachable
from settlement.db.models import Correction, IdempotencyRecord, LedgerEntry, LimitEntry, Reversal, Settlement
from settlement.db.repositories import Repository, RosterPerson, StoredAnswer, YearFigures
from settlement.db.settling import AsyncPipelinedSettling, Companion, Opened, SettlementKey, SettlementRows
from settlement.domain.accumulators import Accumulators
from settlement.domain.claim import SHANGHAI, Claim
from settlement.domain.errors import ClaimRejected, ErrorCode, Problem, SettlementError
from settlement.domain.idcard import id_number_problem
from settlement.domain.money import ZERO, fmt, from_fen, to_fen
from settlement.domain.privacy import mask_free_text, mask_id_number, mask_id_numbers
from settlement.domain.settle import Settlement as Computed
from settlement.domain.settle import settle
from settlement.problems import is_kept, problem_body
from settlement.services import quotes
from settlement.services.auth import Caller
from settlement.services.claim_basis import claim_and_tariff, roster_window
from settlement.services.context import Context
from settlement.services.errors import OUTCOME_UNKNOWN, ServiceCode, ServiceError, database_problem
from settlement.tariffstore.store import ResolvedTariff, TariffStore
from settlement.wire.claims import ServiceClaimIn
from settlement.wire.requests import CancelRequest, QuoteRequest, ReverseRequest, SettleRequest
from settlement.wire.results import accumulators_json, settlement_json

log = logging.getLogger("settlement.service")
IDEMPOTENCY = cast(Table, IdempotencyRecord.__table__)
T = TypeVar("T")
RETRIES = 3
# Public ids need to be unique, not secret (another hospital's id answers 404): a generator seeded once from the
# system's entropy is enough, and far cheaper than reading os.urandom on every settlement.
_IDS = random.Random()  # noqa: S311
os.register_at_fork(after_in_child=_IDS.seed)  # forked workers must not draw the same sequence


@dataclass
class Companions:
    """What a caller records with a settlement, in its transaction (PostgreSQL, on the event loop): `claim` goes
    in the first round trip (when it takes no row, `refused()` is raised and nothing is recorded), `after(reply)`
    with the write. `committed` tells whether both committed with a settlement; when none was made (a replay, a
    failure) nothing of theirs was recorded, and the caller records what it needs its own way."""

    claim: Companion
    refused: Callable[[], Exception]
    after: Callable[[Reply], Companion]
    committed: bool = False


class _SettlePlan(NamedTuple):
    """What a settle request means before its transaction: whose, its hash, its claim as stored, what it locks."""

    hospital_id: int
    request_hash: str
    claim_json: Any
    locked: SettlementKey


@dataclass(frozen=True)
class Reply:
    """An answer as it was first given: replayed byte for byte to every retry with the same key."""

    status: int
    body: str
    replayed: bool = False
    data: dict[str, Any] | None = field(default=None, compare=False)  # the body as built, when at hand

    def json(self) -> dict[str, Any]:
        if self.data is not None:
            return self.data
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


# orjson writes the very bytes json.dumps(ensure_ascii=False, separators=(",", ":")) writes for these values
# (tests/unit/test_json_text.py), several times faster; str-enum keys (trace inputs) are written as their value.
_ORJSON = orjson.OPT_NON_STR_KEYS


def canonical_hash(operation: str, payload: Any) -> str:
    try:
        data = orjson.dumps([operation, payload], option=_ORJSON | orjson.OPT_SORT_KEYS)
    except TypeError:  # what orjson refuses (a lone surrogate, an integer over 64 bits) is hashed as before
        data = json.dumps([operation, payload], sort_keys=True, ensure_ascii=False,
                          separators=(",", ":")).encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()


def dumps(body: Any) -> str:
    try:
        return orjson.dumps(body, option=_ORJSON).decode("utf-8")
    except TypeError:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def accumulators_from(figures: YearFigures, year: int) -> Accumulators:
    return Accumulators(
        year,
        figures.admissions,
        {fund: from_fen(d) for fund, (_, d, _) in figures.funds.items()},
        {fund: from_fen(c) for fund, (_, _, c) in figures.funds.items()},
        {fund: from_fen(p) for fund, (p, _, _) in figures.funds.items()},
        figures.by_level,
        {key: from_fen(paid) for key, paid in figures.limits.items()},
    )


def movements_of(computed: Computed) -> dict[str, tuple[int, int, int]]:
    """Per fund, what a settlement adds to the person's year, in fen: (paid, per-year deductible used, cumulative
    base), as its ledger entries record it."""
    before, after = computed.accumulators_before, computed.accumulators_after
    moved: dict[str, tuple[int, int, int]] = {}
    for fund in sorted(set(after.paid) | set(after.deductible_used) | set(after.cumulative)):
        movement = (to_fen(after.paid.get(fund, ZERO) - before.paid.get(fund, ZERO)),
                    to_fen(after.deductible_used.get(fund, ZERO) - before.deductible_used.get(fund, ZERO)),
                    to_fen(after.cumulative.get(fund, ZERO) - before.cumulative.get(fund, ZERO)))
        if any(movement):
            moved[fund] = movement
    return moved


def _reversal_hash(settlement_id: str, request: ReverseRequest) -> str:
    return canonical_hash("reverse", [settlement_id, request.model_dump(mode="json")])


def limit_movements_of(computed: Computed) -> dict[tuple[str, str], int]:
    """Per (fund, limit), what a settlement paid against a limit inside a fund, in fen, as its limit entries
    record it."""
    before, after = computed.accumulators_before.limits, computed.accumulators_after.limits
    moved = {key: to_fen(amount - before.get(key, ZERO)) for key, amount in sorted(after.items())}
    return {key: paid for key, paid in moved.items() if paid}


def figures_hash(figures: YearFigures) -> str:
    return hashlib.sha256(json.dumps([figures.admissions, sorted(figures.funds.items()), sorted(
        figures.by_level.items()), sorted(figures.limits.items())]).encode()).hexdigest()


def _patient_names(claim_text: str) -> tuple[str, ...]:
    """The patient's name in a stored claim, to be masked in what is written about it."""
    name = json.loads(claim_text).get("patient", {}).get("name")
    return (name,) if isinstance(name, str) and name else ()


def refuse_contradicting_roster(claim: Claim, person: RosterPerson | None) -> None:
    """For a person on the roster, the roster decides the region and the scheme (and so the tariff and the payers):
    a claim saying otherwise is refused, naming each field, rather than settled under another region's tariff or
    scheme. A person not on the roster is settled as the hospital says."""
    if person is None:
        return
    patient = claim.patient
    problems = [Problem(ErrorCode.CLAIM_CONTRADICTS_ROSTER, f"patient.{field}",
                        f"the roster records this person's {field} as {recorded}; the claim says {claimed}")
                for field, recorded, claimed in (("region", person.region, patient.region),
                                                 ("scheme", person.scheme, patient.scheme)) if recorded != claimed]
    if problems:
        raise ClaimRejected(problems)


def future_date_problems(claim: Claim, now: datetime, skew_seconds: int) -> list[Problem]:
    """The claim's dates that lie after the settlement time (the service's clock) by more than the allowed skew.
    A settlement dated ahead would hold its tariff version in force over that date, and no later version of the
    region could take effect before it (TARIFF_RETROACTIVE)."""
    latest = now + timedelta(seconds=skew_seconds)
    last_day = latest.astimezone(SHANGHAI).date()
    visit = claim.visit
    problems = [Problem(ErrorCode.CLAIM_DATE_IN_FUTURE, f"visit.{name}",
                        f"{name.replace('_', ' ')} {day} is after today ({last_day}, Asia/Shanghai)")
                for name, day in (("admission_date", visit.admission_date), ("discharge_date", visit.discharge_date))
                if day > last_day]
    if visit.settled_at > latest:
        problems.append(Problem(ErrorCode.CLAIM_DATE_IN_FUTURE, "visit.settled_at",
                                f"settlement time {visit.settled_at.isoformat()} is after the service's clock "
                                f"({now.astimezone(SHANGHAI).isoformat(timespec='seconds')}) by more than the "
                                f"allowed {skew_seconds} s"))
    return problems


def _category_names(tariffs: TariffStore) -> dict[str, str]:
    """Category code -> name, over every version in force. A function of its own: its loop over the tariffs'
    regions once replaced the person's region in eligibility (tests/unit/test_loop_rebinding.py)."""
    names: dict[str, str] = {}
    for tariff_region in tariffs.regions():
        for version in tariffs.versions(tariff_region):
            names.update({code: spec.get("name", code)
                          for code, spec in (version.raw.get("categories") or {}).items()})
    return names


def _after_failed_attempt(attempt: int, error: IntegrityError | OperationalError) -> None:
    """Log a failed attempt; after the last one, re-raise a lost race and answer a lock wait (or a lost
    connection) with DATABASE_BUSY."""
    if isinstance(error, IntegrityError):
        constraint = getattr(getattr(error.orig, "diag", None), "constraint_name", None)
        log.warning("a concurrent transaction won a race (attempt %d, constraint %s)", attempt + 1, constraint)
        if attempt == RETRIES - 1:
            raise error
        return
    log.warning("database busy (attempt %d): %s", attempt + 1, type(error.orig).__name__)
    if isinstance(error.orig, DatabaseUnreachable):  # retrying within the request would only wait longer
        raise database_problem(error) from None
    if attempt == RETRIES - 1:
        problem = database_problem(error)
        if problem.code == ServiceCode.DATABASE_UNAVAILABLE:  # no answer from the server at all, not a lock
            raise problem from None
        raise ServiceError(ServiceCode.DATABASE_BUSY, f"the person's record is busy; {OUTCOME_UNKNOWN}") from None


class Undone(NamedTuple):
    """What a reversal posts: per fund, the entry it is linked to and the negated sum of the fund's entries."""

    movements: dict[str, tuple[int, tuple[int, int, int]]]
    corrected_fen: int  # what the corrections reversed with it moved from the patient to the funds
    corrections: list[int]  # the corrections reversed with it (their row ids)


def reversal_entries(entries: Sequence[LedgerEntry]) -> Undone:
    """A reversal undoes the settlement as it stands: its own entries and every correction posted to it so far,
    netted per fund, so that the ledger of the settlement sums to zero in every fund and column and the person's
    year figures return to what they were. One entry per fund (reconciliation pairs one per settlement, entry and
    fund), linked to the fund's first entry."""
    sums: dict[str, tuple[int, tuple[int, int, int]]] = {}
    corrected = 0
    corrections: list[int] = []
    for entry in entries:
        first, (paid, deductible, cumulative) = sums.get(entry.fund, (entry.id, (0, 0, 0)))
        sums[entry.fund] = (first, (paid - entry.paid_fen, deductible - entry.deductible_fen,
                                    cumulative - entry.cumulative_fen))
        if entry.correction_id is not None:
            corrected += entry.paid_fen
            corrections.append(entry.correction_id)
    return Undone({fund: value for fund, value in sums.items() if any(value[1])}, corrected, corrections)


def ledger_view(row: Settlement, entries: Sequence[LedgerEntry], corrections: Sequence[Correction],
                reversal: Reversal | None) -> dict[str, Any]:
    """What reading a settlement shows besides its reply, each part balancing to the fen (total = paid + patient):
    its corrections (a correction moves money between a fund and the patient's share, the bill is unchanged), its
    reversal's entries, and `net`, what the settlement amounts to now, summed from the ledger."""
    shown: dict[str, Any] = {"corrections": [{
        "correction_id": correction.public_id, "fund": correction.fund, "amount": fmt(from_fen(correction.amount_fen)),
        "patient_pays": fmt(from_fen(-correction.amount_fen)), "total": fmt(ZERO),
        "recorded_at": correction.created_at.isoformat()} for correction in corrections]}
    net_paid: dict[str, int] = {}
    reversed_paid: dict[str, int] = {}
    for entry in entries:
        net_paid[entry.fund] = net_paid.get(entry.fund, 0) + entry.paid_fen
        if entry.reversal_id is not None:
            reversed_paid[entry.fund] = reversed_paid.get(entry.fund, 0) + entry.paid_fen
    if reversal is not None:
        shown["reversal"] = {
            "reversal_id": reversal.public_id, "transaction_id": reversal.transaction_id,
            "recorded_at": reversal.created_at.isoformat(), "reason": reversal.reason,
            "total": fmt(from_fen(-row.total_fen)),
            "entries": [{"fund": fund, "paid": fmt(from_fen(paid))} for fund, paid in reversed_paid.items()],
            "patient_pays": fmt(from_fen(-row.total_fen - sum(reversed_paid.values())))}
    total = 0 if reversal is not None else row.total_fen
    shown["net"] = {"total": fmt(from_fen(total)),
                    "paid": {fund: fmt(from_fen(paid)) for fund, paid in sorted(net_paid.items())},
                    "patient_pays": fmt(from_fen(total - sum(net_paid.values())))}
    return shown


class SettlementService:
    def __init__(self, context: Context) -> None:
        self.ctx = context

    # Shared steps

    def _hospital_id(self, caller: Caller) -> int:
        if caller.kind != "hospital" or caller.hospital_id is None:
            raise ServiceError(ServiceCode.FORBIDDEN, "only a hospital's key may quote, settle or reverse")
        return caller.hospital_id

    @staticmethod
    def _same_hospital(caller: Caller, claim_in: ServiceClaimIn) -> None:
        if (claim_in.hospital.code, claim_in.hospital.level) != (caller.hospital_code, caller.hospital_level):
            raise ServiceError(ServiceCode.HOSPITAL_MISMATCH,
                               f"the claim names hospital {claim_in.hospital.code} ({claim_in.hospital.level}); "
                               f"your key is for {caller.hospital_code} ({caller.hospital_level})")

    @classmethod
    def _before_locking(cls, caller: Caller, claim_in: ServiceClaimIn) -> None:
        """The refusals a settlement makes before it locks the person's year (each kept under the key, like every
        business failure): another hospital's claim, and an invalid ID number, since the year is locked by it
        before the claim is built (one too long for the column was a 500 on PostgreSQL); the latter with every
        problem of the claim."""
        cls._same_hospital(caller, claim_in)
        if id_number_problem(claim_in.patient.id_number) is not None:
            claim_in.build(claim_in.patient, ())  # raises ClaimRejected

    def _claim(self, repo: Repository, caller: Caller, claim_in: ServiceClaimIn) -> tuple[Claim, ResolvedTariff]:
        self._same_hospital(caller, claim_in)
        tariffs = self.ctx.tariffs.current(repo)  # the versions in force as of this transaction
        # The person's record and categories come from the roster (the categories in force on the date the tariff
        # says decides), never from the hospital.
        roster = repo.roster_between(claim_in.patient.id_number, *roster_window(claim_in))
        now = self.ctx.clock()
        return claim_and_tariff(claim_in, roster, tariffs, lambda claim: self._refuse_before_settling(
            claim, roster.person, now))

    def _refuse_before_settling(self, claim: Claim, person: RosterPerson | None, now: datetime) -> None:
        refuse_contradicting_roster(claim, person)
        self._refuse_future_dates(claim, now)

    def _refuse_future_dates(self, claim: Claim, now: datetime) -> None:
        problems = future_date_problems(claim, now, self.ctx.claim_clock_skew_seconds)
        if problems:
            raise ClaimRejected(problems)

    def _basis(self, hospital_id: int, claim_in: ServiceClaimIn, computed: Computed,
               figures: YearFigures, expires_at: int) -> quotes.QuoteBasis:
        shares = {fund: to_fen(amount) for fund, amount in computed.paid_by_fund().items()}
        shares["patient"] = to_fen(computed.patient_pays)
        return quotes.QuoteBasis(hospital_id, canonical_hash("claim", claim_in.model_dump(mode="json")),
                                 computed.tariff.sha256, figures_hash(figures), computed.claim.patient.categories,
                                 shares, expires_at)

    def _with_retries(self, work: Callable[[], T]) -> T:
        """Retry a transaction that lost a race (a key inserted by a concurrent retry) or a lock wait."""
        for attempt in range(RETRIES):
            try:
                return work()
            except (IntegrityError, OperationalError) as error:
                _after_failed_attempt(attempt, error)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _with_retries_async(self, work: Callable[[], Awaitable[T]]) -> T:
        """`_with_retries` for a transaction on the event loop."""
        for attempt in range(RETRIES):
            try:
                return await work()
            except (IntegrityError, OperationalError) as error:
                _after_failed_attempt(attempt, error)
        raise AssertionError("unreachable")  # pragma: no cover

    def _replay(self, record: StoredAnswer, request_hash: str) -> Reply:
        if record.operation == "void":  # cancelled by the caller before it arrived: refused, whatever it asks
            return Reply(record.status_code, record.response, replayed=True)
        if record.request_hash != request_hash:
            raise ServiceError(ServiceCode.IDEMPOTENCY_KEY_REUSED,
                               f"transaction id {record.key!r} was already used for a different request; "
                               "new money needs a new transaction id")
        return Reply(record.status_code, record.response, replayed=True)

    def _keep_failure(self, hospital_id: int, key: str, operation: str, request_hash: str,
                      error: SettlementError | ServiceError) -> Reply:
        """Record a business failure under the key, so that a retry gets the same answer; nothing else."""
        status, body = problem_body(error)
        text = dumps(body)

        def record() -> Reply:
            with self.ctx.uow() as tx:
                existing = tx.repo.idempotency_record(hospital_id, key)
                if existing is not None:
                    return self._replay(existing, request_hash)
                tx.repo.add(IdempotencyRecord(hospital_id=hospital_id, key=key, operation=operation,
                                              request_hash=request_hash, status_code=status, response=text,
                                              created_at=self.ctx.clock()))
                tx.commit()
                return Reply(status, text)

        return self._with_retries(record)

    def _idempotent(self, attempt: Callable[[], Reply], hospital_id: int, key: str, operation: str,
                    request_hash: str) -> Reply:
        """Run a keyed operation; a business failure is kept under its key so that a retry gets the same answer."""
        try:
            return self._with_retries(attempt)
        except (SettlementError, ServiceError) as error:
            if not is_kept(str(error.code)):
                raise
            return self._keep_failure(hospital_id, key, operation, request_hash, error)

    # Use cases

    def quote(self, caller: Caller, request: QuoteRequest) -> dict[str, Any]:
        """Compute as settle would; record nothing. The quote id lets settle confirm nothing changed."""
        hospital_id = self._hospital_id(caller)
        with self.ctx.uow() as tx:  # read only: rolled back at the end
            claim, resolved = self._claim(tx.repo, caller, request.claim)
            figures = tx.repo.read_year(claim.patient.id_number, claim.insurance_year)
            computed = settle(claim, resolved.tariff, accumulators_from(figures, claim.insurance_year))
        now = self.ctx.clock()
        expires = int(now.timestamp()) + self.ctx.quote_ttl_seconds
        basis = self._basis(hospital_id, request.claim, computed, figures, expires)
        body = settlement_json(computed)
        body["categories"] = list(claim.patient.categories)
        return {"quote_id": quotes.sign(basis, self.ctx.secret),
                "expires_at": datetime.fromtimestamp(expires, tz=SHANGHAI).isoformat(), **body}

    def _settle_plan(self, caller: Caller, request: SettleRequest) -> _SettlePlan:
        hospital_id = self._hospital_id(caller)
        claim_in = request.claim
        dumped = request.model_dump(mode="json")
        # The insurance year is the discharge date's (domain.claim.Claim.insurance_year).
        locked = SettlementKey(hospital_id, request.transaction_id, claim_in.patient.id_number,
                               claim_in.visit.discharge_date.year, *roster_window(claim_in))
        return _SettlePlan(hospital_id, canonical_hash("settle", dumped), dumped["claim"], locked)

    def _settle_in(self, request: SettleRequest, plan: _SettlePlan, opened: Opened,
                   tariffs: TariffStore) -> tuple[SettlementRows | None, Reply]:
        """Between the reads and the writes of a settlement's transaction, taken after the locks (the schedule's
        shared lock, then the person's year), so that a concurrent retry of the same key has committed or not yet
        begun and exactly one of them settles: the key's first answer again, or the rows to record."""
        if opened.answer is not None:
            return None, self._replay(opened.answer, plan.request_hash)
        claim_in = request.claim
        # The person's record and categories come from the roster (the categories in force on the date the tariff
        # says decides), never from the hospital.
        now = self.ctx.clock()
        claim, resolved = claim_and_tariff(claim_in, opened.roster, tariffs, lambda built: self._refuse_before_settling(
            built, opened.roster.person, now))
        year = claim.insurance_year
        assert year == plan.locked.insurance_year, "the year locked is the claim's insurance year"
        computed = settle(claim, resolved.tariff, accumulators_from(opened.figures, year))
        if request.quote_id is not None:
            quoted = quotes.verify(request.quote_id, self.ctx.secret)
            quotes.compare(quoted, self._basis(plan.hospital_id, claim_in, computed, opened.figures,
                                               quoted.expires_at), int(now.timestamp()))
        return self._rows(plan.hospital_id, request, plan.claim_json, plan.request_hash, claim, resolved, computed,
                          now)

    def settle(self, caller: Caller, request: SettleRequest) -> Reply:
        plan = self._settle_plan(caller, request)

        def attempt() -> Reply:
            self._before_locking(caller, request.claim)
            with self.ctx.settling.begin(plan.locked) as tx:
                opened: Opened = tx.opened
                tariffs = self.ctx.tariffs.at(opened.generation, tx.active_versions)
                rows, reply = self._settle_in(request, plan, opened, tariffs)
                if rows is not None:
                    tx.record(rows)
                    tx.commit()
            return reply

        return self._idempotent(attempt, plan.hospital_id, request.transaction_id, "settle", plan.request_hash)

    async def settle_async(self, caller: Caller, request: SettleRequest, settling: AsyncPipelinedSettling,
                           companions: Companions | None = None) -> Reply:
        """`settle` on the event loop (the service on PostgreSQL): the same steps and rules, the database awaited.
        `companions`: the caller's own statements, committed with the settlement (see Companions)."""
        plan = self._settle_plan(caller, request)

        async def attempt() -> Reply:
            self._before_locking(caller, request.claim)
            async with settling.begin(plan.locked, companions.claim if companions is not None else None) as tx:
                if companions is not None and not tx.claimed:
                    raise companions.refused()
                opened = tx.opened
                # The versions are read in this transaction only when the schedule moved since this worker loaded it.
                versions = () if self.ctx.tariffs.loaded(opened.generation) else await tx.active_versions()
                tariffs = self.ctx.tariffs.at(opened.generation, lambda: versions)
                rows, reply = self._settle_in(request, plan, opened, tariffs)
                if rows is not None:
                    await tx.record(rows, (companions.after(reply),) if companions is not None else ())
                    await tx.commit()
            # Here the pipeline has answered: the COMMIT went through.
            if companions is not None:
                companions.committed = rows is not None
            return reply

        try:
            return await self._with_retries_async(attempt)
        except (SettlementError, ServiceError) as error:
            if not is_kept(str(error.code)):
                raise
            return await asyncio.to_thread(self._keep_failure, plan.hospital_id, request.transaction_id, "settle",
                                           plan.request_hash, error)

    def _rows(self, hospital_id: int, request: SettleRequest, claim_json: Any, request_hash: str, claim: Claim,
              resolved: ResolvedTariff, computed: Computed, now: datetime) -> tuple[SettlementRows, Reply]:
        """What a settlement records, and the reply it gives (stored once, as the settlement's result)."""
        dec = computed.decomposition
        before, after = computed.accumulators_before, computed.accumulators_after
        public_id = f"ST{now.astimezone(SHANGHAI):%Y%m%d}{_IDS.getrandbits(48):012X}"
        body: dict[str, Any] = {
            "settlement_id": public_id,
            "transaction_id": request.transaction_id,
            "status": "settled",
            "recorded_at": now.isoformat(),
            "visit_id": claim.visit.id,
            "categories": list(claim.patient.categories),
            **settlement_json(computed),
        }
        text = dumps(body)
        id_number = claim.patient.id_number
        movements = movements_of(computed)
        rows = SettlementRows(
            settlement={
                "public_id": public_id, "hospital_id": hospital_id, "transaction_id": request.transaction_id,
                "id_number": id_number, "insurance_year": claim.insurance_year, "visit_id": claim.visit.id,
                "visit_type": claim.visit.type, "settled_at": claim.visit.settled_at, "created_at": now,
                "tariff_version_id": resolved.version.id, "tariff_sha256": computed.tariff.sha256,
                "tariff_parent_version_id": resolved.parent.id if resolved.parent is not None else None,
                "total_fen": to_fen(dec.total), "out_of_catalogue_fen": to_fen(dec.out_of_catalogue),
                "over_price_limit_fen": to_fen(dec.over_price_limit), "pre_self_pay_fen": to_fen(dec.pre_self_pay),
                "in_scope_fen": to_fen(dec.in_scope), "patient_fen": to_fen(computed.patient_pays),
                "admissions": after.admissions - before.admissions,
                "categories": json.dumps(list(claim.patient.categories)),  # ASCII-escaped, as always
                "retired": claim.patient.retired,
                "accumulators_before": dumps(accumulators_json(before)),
                "claim": dumps(claim_json), "result": text,
            },
            movements=movements,
            request_hash=request_hash,
            actor=f"hospital:{hospital_id}",
            audit_details=dumps({
                "transaction_id": request.transaction_id, "person": mask_id_number(id_number),
                "total": fmt(dec.total), "paid": {fund: fmt(from_fen(m[0])) for fund, m in movements.items()},
                "patient_pays": fmt(computed.patient_pays), "tariff": computed.tariff.sha256}),
            limits=limit_movements_of(computed),
            level=claim.hospital.level,
        )
        return rows, Reply(201, text, data=body)

    def reverse(self, caller: Caller, settlement_id: str, request: ReverseRequest) -> Reply:
        """A full reversal: negative entries linked to the originals; the year figures are restored."""
        return self._reverse(caller, settlement_id, request, "reverse", _reversal_hash(settlement_id, request))

    def _reverse(self, caller: Caller, settlement_id: str, request: ReverseRequest, operation: str,
                 request_hash: str) -> Reply:
        """`reverse`, its answer kept under the key as the answer to `operation` (reverse, or the cancellation that
        asked for it: a resent cancellation must find its own request there, not the reversal's)."""
        hospital_id = self._hospital_id(caller)
        key = request.transaction_id

        def attempt() -> Reply:
            with self.ctx.uow() as tx:
                repo = tx.repo
                existing = repo.idempotency_record(hospital_id, key)
                if existing is not None:
                    return self._replay(existing, request_hash)
                original = repo.settlement(settlement_id, hospital_id)
                if original is None:  # another hospital's settlement is not found either
                    raise ServiceError(ServiceCode.NOT_FOUND, f"no settlement {settlement_id} of your hospital")
                repo.lock_year(original.id_number, original.insurance_year)
                existing = repo.idempotency_record(hospital_id, key)
                if existing is not None:
                    return self._replay(existing, request_hash)
                done = repo.reversal_of(original.id)
                if done is not None:
                    raise ServiceError(ServiceCode.SETTLEMENT_ALREADY_REVERSED,
                                       f"settlement {settlement_id} was already reversed by {done.public_id}")
                now = self.ctx.clock()
                # Every path masks the reason here, those that build the request without validating it too; the
                # patient's name is known here, and masked in it as well.
                reason = mask_free_text(request.reason, _patient_names(original.claim))
                reversal = Reversal(public_id=f"RV{now.astimezone(SHANGHAI):%Y%m%d}{_IDS.getrandbits(48):012X}",
                                    settlement_id=original.id, hospital_id=hospital_id, transaction_id=key,
                                    admissions=-original.admissions, reason=reason, created_at=now)
                repo.add(reversal)
                repo.flush()
                undone = reversal_entries(repo.ledger_of(original.id))
                movements = {fund: movement for fund, (_, movement) in undone.movements.items()}
                for fund, (first_entry_id, (paid, deductible, cumulative)) in undone.movements.items():
                    repo.add(LedgerEntry(settlement_id=original.id, reversal_id=reversal.id,
                                         reverses_entry_id=first_entry_id, hospital_id=hospital_id,
                                         id_number=original.id_number, insurance_year=original.insurance_year,
                                         fund=fund, paid_fen=paid, deductible_fen=deductible,
                                         cumulative_fen=cumulative, created_at=now))
                limits: dict[tuple[str, str], int] = {}
                for limit in repo.limit_entries_of(original.id):
                    repo.add(LimitEntry(settlement_id=original.id, reversal_id=reversal.id,
                                        reverses_entry_id=limit.id, hospital_id=hospital_id,
                                        id_number=limit.id_number, insurance_year=limit.insurance_year,
                                        fund=limit.fund, name=limit.name, paid_fen=-limit.paid_fen, created_at=now))
                    limits[(limit.fund, limit.name)] = -limit.paid_fen
                # The stay is taken off the level it was counted at: the claim's, as received.
                level = json.loads(original.claim)["hospital"]["level"] if original.admissions else ""
                repo.move_year(original.id_number, original.insurance_year, -original.admissions, movements, level,
                               limits)
                # The patient's share as corrected: each correction moved money between a fund and the patient.
                patient_fen = -(original.patient_fen - undone.corrected_fen)
                text = dumps({
                    "reversal_id": reversal.public_id, "settlement_id": original.public_id,
                    "transaction_id": key, "status": "reversed", "recorded_at": now.isoformat(),
                    "entries": [{"fund": fund, "paid": fmt(from_fen(movement[0]))}
                                for fund, (_, movement) in undone.movements.items()],
                    "patient_pays": fmt(from_fen(patient_fen)), "total": fmt(from_fen(-original.total_fen)),
                    "corrections": self._correction_ids(repo, original.id, undone.corrections),
                })
                repo.add(IdempotencyRecord(hospital_id=hospital_id, key=key, operation=operation,
                                           request_hash=request_hash, status_code=201, response=text,
                                           created_at=now))
                repo.audit(now, f"hospital:{hospital_id}", "settlement.reverse", "settlement", original.public_id,
                           dumps({"reversal": reversal.public_id, "transaction_id": key, "reason": reason}))
                tx.commit()
                return Reply(201, text)

        return self._idempotent(attempt, hospital_id, key, operation, request_hash)

    @staticmethod
    def _correction_ids(repo: Repository, settlement_id: int, ids: list[int]) -> list[str]:
        """The public ids of some of a settlement's corrections (read only when there are any)."""
        if not ids:
            return []
        public = {correction.id: correction.public_id for correction in repo.corrections_of(settlement_id)}
        return [public[correction_id] for correction_id in ids]

    def cancel(self, caller: Caller, request: CancelRequest) -> Reply:
        """Reverse whatever a call the caller never heard back from did (the national 2601), by its key.

        A settlement made under that key is reversed in full; when nothing was recorded under it, the key is
        marked cancelled, so that the original, should it still arrive, is refused instead of paid.
        """
        hospital_id = self._hospital_id(caller)
        key, original_key = request.transaction_id, request.original_transaction_id
        if key == original_key:
            raise ServiceError(ServiceCode.REQUEST_MALFORMED, "a cancellation needs a transaction id of its own")
        request_hash = canonical_hash("cancel", request.model_dump(mode="json"))

        def attempt() -> Reply | str:
            with self.ctx.uow() as tx:
                repo = tx.repo
                existing = repo.idempotency_record(hospital_id, key)
                if existing is not None:
                    if self._reversed_before_the_fix(repo, hospital_id, request, existing):
                        return Reply(existing.status_code, existing.response, replayed=True)
                    return self._replay(existing, request_hash)
                original = repo.idempotency_record(hospital_id, original_key)
                if original is not None and original.operation == "settle" and original.status_code == 201:
                    row = repo.settlement_by_transaction(hospital_id, original_key)
                    assert row is not None
                    return row.public_id  # reversed below, in the reversal's own transaction
                now = self.ctx.clock()
                outcome = "nothing_settled"
                if original is None:
                    _, problem = problem_body(ServiceError(
                        ServiceCode.TRANSACTION_CANCELLED,
                        f"transaction id {original_key!r} was cancelled by {key!r} before it was settled"))
                    repo.insert_many(IDEMPOTENCY, [{
                        "hospital_id": hospital_id, "key": original_key, "operation": "void", "request_hash": "",
                        "status_code": problem["status"], "response": dumps(problem), "created_at": now}])
                    outcome = "cancelled_before_arrival"
                text = dumps({"transaction_id": key, "original_transaction_id": original_key, "status": outcome,
                              "recorded_at": now.isoformat()})
                repo.insert_many(IDEMPOTENCY, [{
                    "hospital_id": hospital_id, "key": key, "operation": "cancel", "request_hash": request_hash,
                    "status_code": 201, "response": text, "created_at": now}])
                repo.audit(now, f"hospital:{hospital_id}", "transaction.cancel", "transaction", original_key,
                           dumps({"transaction_id": key, "outcome": outcome,
                                  "reason": mask_id_numbers(request.reason)}))
                tx.commit()
                return Reply(201, text)

        decided = self._with_retries(attempt)
        if isinstance(decided, Reply):
            return decided
        return self._reverse(caller, decided, ReverseRequest(transaction_id=key, reason=request.reason), "cancel",
                             request_hash)

    @staticmethod
    def _reversed_before_the_fix(repo: Repository, hospital_id: int, request: CancelRequest,
                                 existing: StoredAnswer) -> bool:
        """Whether the answer under a cancellation's key is this cancellation's reversal as earlier versions
        recorded it: under the reverse operation and the reversal's hash (so the resent cancellation was refused)."""
        if existing.operation != "reverse":
            return False
        original = repo.settlement_by_transaction(hospital_id, request.original_transaction_id)
        return original is not None and existing.request_hash == _reversal_hash(
            original.public_id, ReverseRequest(transaction_id=request.transaction_id, reason=request.reason))

    def get(self, caller: Caller, settlement_id: str) -> dict[str, Any]:
        own = caller.hospital_id if caller.kind == "hospital" else None
        if caller.kind not in ("hospital", "finance", "admin"):
            raise ServiceError(ServiceCode.FORBIDDEN, "not allowed")  # pragma: no cover - kinds are closed
        with self.ctx.uow() as tx:
            row = tx.repo.settlement(settlement_id, own)
            if row is None:
                raise ServiceError(ServiceCode.NOT_FOUND, f"no settlement {settlement_id}")
            reversal = tx.repo.reversal_of(row.id)
            body: dict[str, Any] = json.loads(row.result)
            entries = tx.repo.entries_of(row.id)
            corrections = tx.repo.corrections_of(row.id) if any(e.correction_id for e in entries) else ()
            if reversal is not None:
                body["status"] = "reversed"
            body.update(ledger_view(row, entries, corrections, reversal))
            return body

    def list(self, caller: Caller, start: date, end: date, cursor: int | None, limit: int,
             hospital_code: str | None = None) -> dict[str, Any]:
        """The calling hospital's settlements recorded between two dates (Asia/Shanghai, inclusive), paged."""
        with self.ctx.uow() as tx:
            if caller.kind == "hospital":
                hospital_id = caller.hospital_id
            else:
                hospital = tx.repo.hospital_by_code(hospital_code or "")
                if hospital is None:
                    raise ServiceError(ServiceCode.NOT_FOUND, "name a hospital code to list its settlements")
                hospital_id = hospital.id
            assert hospital_id is not None
            low = datetime.combine(start, time.min, SHANGHAI)
            high = datetime.combine(end + timedelta(days=1), time.min, SHANGHAI)
            rows = tx.repo.settlements_page(hospital_id, low, high, cursor, limit + 1)
            items = [{
                "settlement_id": row.public_id, "transaction_id": row.transaction_id, "visit_id": row.visit_id,
                "recorded_at": row.created_at.isoformat(), "total": fmt(from_fen(row.total_fen)),
                "patient_pays": fmt(from_fen(row.patient_fen)),
                "status": "reversed" if reversal else "settled",
                "person": mask_id_number(row.id_number),
            } for row, reversal in rows[:limit]]
            next_cursor = str(rows[limit - 1][0].id) if len(rows) > limit else None
            return {"items": items, "next_cursor": next_cursor}

    def eligibility(self, caller: Caller, id_number: str, day: date) -> dict[str, Any]:
        with self.ctx.uow() as tx:
            person = tx.repo.person(id_number)
            scheme, region, retired = (person.scheme, person.region, person.retired) if person else (None, None, None)
            categories = tx.repo.categories_on(id_number, day)
            figures = tx.repo.read_year(id_number, day.year)
            tariffs = self.ctx.tariffs.current(tx.repo)
        names = _category_names(tariffs)
        return {
            "person": mask_id_number(id_number),
            "in_roster": person is not None,
            "scheme": scheme,
            "retired": retired,
            "region": region,
            "on": day.isoformat(),
            "categories": [{"code": code, "name": names.get(code, code), "valid_from": start.isoformat(),
                            "valid_to": end.isoformat() if end else None} for code, start, end in categories],
            "year_to_date": accumulators_json(accumulators_from(figures, day.year)),
        }

