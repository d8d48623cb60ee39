"""The canonical claim: what every hospital dialect is mapped to before the engine sees it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import NamedTuple

from settlement.domain.errors import ClaimRejected, ErrorCode, Problem
from settlement.domain.idcard import id_number_problem
from settlement.domain.money import FEN, ZERO
from settlement.domain.tariff import DateBasis

# Asia/Shanghai has been UTC+8 without daylight saving since 1991; a fixed offset keeps the domain free of
# the time-zone database, so a settlement recomputes identically on any machine.
SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")


class HospitalLevel(StrEnum):
    TOWNSHIP = "township"
    COUNTY = "county"
    CITY = "city"
    PROVINCIAL = "provincial"


class Scheme(StrEnum):
    RESIDENT = "resident"
    EMPLOYEE = "employee"


class VisitType(StrEnum):
    INPATIENT = "inpatient"
    OUTPATIENT = "outpatient"
    CHRONIC_OUTPATIENT = "chronic_outpatient"


@dataclass(frozen=True, slots=True)
class Hospital:
    code: str
    level: str


@dataclass(frozen=True, slots=True)
class Visit:
    id: str
    type: str
    admission_date: date
    discharge_date: date
    settled_at: datetime
    referral: bool = False  # referred out of the region (转外就医), as the hospital declares it
    disease: str | None = None  # the disease group a limit may be kept by (门诊慢特病病种), as the tariff names it


@dataclass(frozen=True, slots=True)
class Patient:
    id_number: str
    name: str
    scheme: str
    region: str
    categories: tuple[str, ...] = ()
    retired: bool = False  # 退休 (employee scheme), from the roster


class Line(NamedTuple):
    """One bill line. A NamedTuple, as the computation's per-line values are: a bill has up to 5,000 lines, and a
    frozen dataclass's constructor (a setattr per field) cost more than the rest of building the claim."""

    id: str
    code: str
    name: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Claim:
    hospital: Hospital
    visit: Visit
    patient: Patient
    lines: tuple[Line, ...]
    declared_total: Decimal | None = None
    total: Decimal = field(init=False)

    def __post_init__(self) -> None:
        # A claim is validated once, when it is made: an invalid Claim cannot exist, so settle() and every later
        # step can rely on it (and a claim settled again is not checked again).
        object.__setattr__(self, "total", sum((line.amount for line in self.lines), ZERO))
        problems = claim_problems(self)
        if problems:
            raise ClaimRejected(problems)

    @property
    def insurance_year(self) -> int:
        """Annual amounts run per calendar year of the discharge date (a local date in Asia/Shanghai)."""
        return self.visit.discharge_date.year

    @property
    def tariff_date(self) -> date:
        """The settlement time's date in Asia/Shanghai: the version in force on it says which date decides the
        version that settles the claim (see date_of)."""
        return self.visit.settled_at.astimezone(SHANGHAI).date()

    def date_of(self, basis: DateBasis) -> date:
        return day_of(basis, self.visit.admission_date, self.visit.discharge_date, self.tariff_date)


def day_of(basis: DateBasis, admission: date, discharge: date, settled_on: date) -> date:
    """The claim's date that `basis` names (`settled_on`: the settlement time's date in Asia/Shanghai)."""
    if basis is DateBasis.ADMISSION:
        return admission
    if basis is DateBasis.DISCHARGE:
        return discharge
    return settled_on


_LEVELS = frozenset(HospitalLevel)
_SCHEMES = frozenset(Scheme)
_VISIT_TYPES = frozenset(VisitType)


def _choices(values: frozenset[str]) -> str:
    """The accepted values as plain words (an enum's repr would reach hospitals' screens)."""
    return ", ".join(sorted(str(value) for value in values))


def claim_problems(claim: Claim) -> list[Problem]:
    """Every reason the claim cannot be settled, in document order; an empty list means it is well formed."""
    problems: list[Problem] = []

    def add(code: ErrorCode, path: str, message: str) -> None:
        problems.append(Problem(code, path, message))

    if claim.hospital.level not in _LEVELS:
        add(ErrorCode.CLAIM_UNKNOWN_LEVEL, "hospital.level",
            f"unknown hospital level {claim.hospital.level!r}; expected one of {_choices(_LEVELS)}")
    visit = claim.visit
    if visit.type not in _VISIT_TYPES:
        add(ErrorCode.CLAIM_UNKNOWN_VISIT_TYPE, "visit.type",
            f"unknown visit type {visit.type!r}; expected one of {_choices(_VISIT_TYPES)}")
    if visit.discharge_date < visit.admission_date:
        add(ErrorCode.CLAIM_DATES_OUT_OF_ORDER, "visit.discharge_date",
            f"discharge {visit.discharge_date} is before admission {visit.admission_date}")
    if visit.settled_at.tzinfo is None or visit.settled_at.utcoffset() is None:
        add(ErrorCode.CLAIM_NAIVE_SETTLEMENT_TIME, "visit.settled_at", "settlement time must carry its time zone")
    elif visit.settled_at.astimezone(SHANGHAI).date() < visit.discharge_date:
        add(ErrorCode.CLAIM_DATES_OUT_OF_ORDER, "visit.settled_at", "settlement time is before the discharge date")
    patient = claim.patient
    if patient.scheme not in _SCHEMES:
        add(ErrorCode.CLAIM_UNKNOWN_SCHEME, "patient.scheme",
            f"unknown insurance scheme {patient.scheme!r}; expected one of {_choices(_SCHEMES)}")
    reason = id_number_problem(patient.id_number)
    if reason is not None:
        add(ErrorCode.CLAIM_INVALID_ID_NUMBER, "patient.id_number", reason)
    if not claim.lines:
        add(ErrorCode.CLAIM_EMPTY, "lines", "the bill has no lines")
    seen: set[str] = set()
    remember = seen.add
    for index, line in enumerate(claim.lines):
        # Hot loop: paths and messages are only formatted when something is wrong.
        line_id = line.id
        quantity = line.quantity
        unit_price = line.unit_price
        if line_id in seen:
            add(ErrorCode.CLAIM_DUPLICATE_LINE, f"lines[{index}].id", f"line id {line_id!r} appears more than once")
        remember(line_id)
        if quantity <= ZERO:
            add(ErrorCode.CLAIM_NON_POSITIVE_QUANTITY, f"lines[{index}].quantity",
                f"quantity must be positive, got {quantity}")
        if unit_price < ZERO:
            add(ErrorCode.CLAIM_NEGATIVE_PRICE, f"lines[{index}].unit_price",
                f"unit price must not be negative, got {unit_price}")
        expected = (quantity * unit_price).quantize(FEN, ROUND_HALF_UP)
        if line.amount != expected:
            add(ErrorCode.CLAIM_AMOUNT_MISMATCH, f"lines[{index}].amount",
                f"amount {line.amount} is not quantity {quantity} x unit price {unit_price} = {expected}")
    if claim.declared_total is not None and claim.declared_total != claim.total:
        add(ErrorCode.CLAIM_TOTAL_MISMATCH, "total",
            f"declared total {claim.declared_total} is not the sum of the lines {claim.total}")
    return problems
