"""Tariff value objects: the catalogue and the ordered payer chain, built from data, never from code.

A payer layer is one rule shape for every payer: basic insurance, critical-illness insurance, medical
assistance, a guarantee or a fifth layer differ only in the values below. Reading files is the tariff store's
job; these objects are already validated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from enum import StrEnum

# A cap of infinity is no cap: min() then leaves the amount alone, and nothing special-cases "unlimited".
NO_CAP = Decimal("Infinity")


class ItemClass(StrEnum):
    A = "A"  # 甲类: enters scope in full
    B = "B"  # 乙类: a self-paid-first share, the rest in scope
    C = "C"  # 丙类: fully self-paid


class UnknownItemPolicy(StrEnum):
    OUT_OF_CATALOGUE = "out_of_catalogue"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    code: str
    name: str
    item_class: ItemClass
    share: Decimal = Decimal(0)
    # Lower class B shares for some person categories, keyed by category code (groups already expanded).
    share_by_category: Mapping[str, Decimal] = field(default_factory=dict)
    price_cap: Decimal | None = None

    def share_for(self, categories: tuple[str, ...]) -> Decimal:
        """The class B share for this person: the lowest that any of their categories is entitled to."""
        share = self.share
        for category in categories:
            special = self.share_by_category.get(category)
            if special is not None and special < share:
                share = special
        return share


@dataclass(frozen=True, slots=True)
class Catalogue:
    entries: Mapping[str, CatalogueEntry]
    unknown_items: UnknownItemPolicy = UnknownItemPolicy.OUT_OF_CATALOGUE


class Measure(StrEnum):
    """What a bill condition compares."""

    TOTAL = "total"  # the whole bill
    IN_SCOPE = "in_scope"  # the bill's in-scope amount
    PATIENT_SHARE = "patient_share"  # what the patient would still pay before this layer
    BASE = "base"  # this layer's base


@dataclass(frozen=True, slots=True)
class Condition:
    measure: Measure
    at_least: Decimal | None = None
    above: Decimal | None = None
    at_most: Decimal | None = None
    below: Decimal | None = None

    def holds(self, value: Decimal) -> bool:
        return not (
            (self.at_least is not None and value < self.at_least)
            or (self.above is not None and value <= self.above)
            or (self.at_most is not None and value > self.at_most)
            or (self.below is not None and value >= self.below)
        )

    def describe(self) -> str:
        parts = [
            f"{word} {limit}"
            for word, limit in (
                ("at least", self.at_least),
                ("above", self.above),
                ("at most", self.at_most),
                ("below", self.below),
            )
            if limit is not None
        ]
        return f"{self.measure} {' and '.join(parts)}"


@dataclass(frozen=True, slots=True)
class Eligibility:
    """Who a layer pays for; None means any."""

    schemes: frozenset[str] | None = None
    categories: frozenset[str] | None = None  # the person needs at least one of these
    excluded_categories: frozenset[str] = frozenset()
    visit_types: frozenset[str] | None = None
    hospital_levels: frozenset[str] | None = None
    conditions: tuple[Condition, ...] = ()


class BasePart(StrEnum):
    IN_SCOPE = "in_scope"
    PRE_SELF_PAY = "pre_self_pay"
    OVER_PRICE_LIMIT = "over_price_limit"
    OUT_OF_CATALOGUE = "out_of_catalogue"


class DeductiblePer(StrEnum):
    VISIT = "visit"
    YEAR = "year"


class AdmissionCount(StrEnum):
    """Which earlier inpatient admissions make this one a repeat admission."""

    YEAR = "year"  # every earlier admission of the person's year, at any hospital
    LEVEL = "level"  # only the earlier admissions of the year at hospitals of this claim's level


@dataclass(frozen=True, slots=True)
class Deductible:
    per: DeductiblePer
    amount: Decimal = Decimal(0)
    by_level: Mapping[str, Decimal] = field(default_factory=dict)  # overrides `amount` for listed levels
    # Per-visit deductibles of inpatient stays fall for each earlier admission (counted as `repeat_counted` says)
    # in one of three ways: by `repeat_step` (a share of the first admission's amount) never below
    # `repeat_floor` of it; by `repeat_step_amount` yuan never below `repeat_floor_amount`; or to the amounts
    # listed for the second, third... admission at the hospital's level (`repeat_amounts`, the last repeating).
    repeat_step: Decimal = Decimal(0)
    repeat_floor: Decimal = Decimal(1)
    source: str | None = None
    repeat_counted: AdmissionCount = AdmissionCount.YEAR
    repeat_step_amount: Decimal | None = None
    repeat_floor_amount: Decimal = Decimal(0)
    repeat_amounts: Mapping[str, tuple[Decimal, ...]] = field(default_factory=dict)

    def base_amount(self, level: str) -> Decimal:
        return self.by_level.get(level, self.amount)

    def repeat_amount(self, first: Decimal, level: str, earlier: int) -> tuple[Decimal, Decimal]:
        """The per-visit amount after `earlier` (at least one) admissions, from the first admission's `first`, and
        the factor that was applied (1 unless the reduction is a share)."""
        if self.repeat_step_amount is not None:
            return min(first, max(self.repeat_floor_amount, first - self.repeat_step_amount * earlier)), Decimal(1)
        listed = self.repeat_amounts.get(level)
        if listed:
            return listed[min(earlier, len(listed)) - 1], Decimal(1)
        factor = max(self.repeat_floor, Decimal(1) - self.repeat_step * earlier)
        return first * factor, factor


class RateMode(StrEnum):
    BILL = "bill"  # rates apply to this bill's amount after the deductible
    ANNUAL_CUMULATIVE = "annual_cumulative"  # bands apply to the year's cumulative base: f(after) - f(before)


class BandBounds(StrEnum):
    """What a band's bounds are measured on; only the part above the deductible is ever paid."""

    # "起付线以上至2万元的部分": the bounds are on the amount itself (the bill's base, or the year's cumulative
    # base), from zero; the deductible takes the bottom of the first bands.
    ON_AMOUNT = "on_amount"
    # "扣除起付线后，2万元以内": the bounds are on the amount above the deductible; the bands start after it.
    ABOVE_DEDUCTIBLE = "above_deductible"


@dataclass(frozen=True, slots=True)
class Band:
    lower: Decimal
    upper: Decimal | None  # None: open-ended
    rate: Decimal

    def __str__(self) -> str:
        return f"{self.lower}-{'' if self.upper is None else self.upper}@{self.rate}"


@dataclass(frozen=True, slots=True)
class Rates:
    mode: RateMode = RateMode.BILL
    rate: Decimal | None = None
    by_level: Mapping[str, Decimal] = field(default_factory=dict)
    bands: tuple[Band, ...] = ()
    source: str | None = None
    # None: the reading tariffs had before it could be named (per bill above the deductible, a year's cumulative
    # amount on the amount itself); see `band_bounds`.
    bounds: BandBounds | None = None

    @property
    def band_bounds(self) -> BandBounds:
        if self.bounds is not None:
            return self.bounds
        return BandBounds.ABOVE_DEDUCTIBLE if self.mode is RateMode.BILL else BandBounds.ON_AMOUNT


@dataclass(frozen=True, slots=True)
class Caps:
    per_visit: Decimal = NO_CAP
    per_year: Decimal = NO_CAP
    source: str | None = None


@dataclass(frozen=True, slots=True)
class Limit:
    """An annual limit inside the layer's fund (门诊统筹 a year, 门诊慢特病 per disease): what the layers naming it
    pay in a year, kept apart under the fund and `name` (and the claim's disease, when limits are per disease),
    never passes it; the fund's own per-year cap binds too."""

    name: str
    per_year: Decimal | None = None  # for a claim whose disease `by_disease` does not list; None: nothing
    by_disease: Mapping[str, Decimal] = field(default_factory=dict)  # one limit per disease group, kept apart
    source: str | None = None

    def key_and_amount(self, disease: str | None) -> tuple[str, Decimal]:
        """The year-to-date key of the claim's limit and its amount."""
        if not self.by_disease:
            return self.name, self.per_year if self.per_year is not None else Decimal(0)
        amount = self.by_disease.get(disease or "")
        if amount is None:
            amount = self.per_year if self.per_year is not None else Decimal(0)
        return f"{self.name}:{disease or ''}", amount


class AdmissionOrdinal(StrEnum):
    FIRST = "first"  # an inpatient stay with no earlier admission (counted as the layer's deductible counts)
    REPEAT = "repeat"  # an inpatient stay with at least one


@dataclass(frozen=True, slots=True)
class CategoryRule:
    """Changes for some persons or claims. The first rule (in tariff order) matching the claim applies.

    A rule matches when every test it has holds: the person is in one of `categories` (None: any person), the
    visit is (or is not) a referral out of the region, the person is (or is not) retired, the stay is a first
    or a repeat admission."""

    categories: frozenset[str] | None
    waive_deductible: bool = False
    deductible_scale: Decimal | None = None  # may be above 1: a higher deductible
    rate: Decimal | None = None  # replaces the layer's rate or bands with one rate
    rate_add: Decimal = Decimal(0)  # added to every rate (points as a fraction: 0.05), never above 1
    per_visit_cap: Decimal | None = None  # None keeps the layer's; NO_CAP lifts it
    per_year_cap: Decimal | None = None
    label: str = ""
    source: str | None = None
    referral: bool | None = None
    retired: bool | None = None
    admissions: AdmissionOrdinal | None = None
    deductible_amount: Decimal | None = None  # replaces the layer's deductible amount (before any reduction)
    rate_subtract: Decimal = Decimal(0)  # taken off every rate (points as a fraction), never below 0


class GuaranteeDirection(StrEnum):
    PATIENT_SHARE_AT_MOST = "patient_share_at_most"  # a floor of protection: the layer tops up
    REIMBURSEMENT_AT_MOST = "reimbursement_at_most"  # a ceiling: the layer pays less


class GuaranteeBase(StrEnum):
    TOTAL = "total"
    IN_SCOPE = "in_scope"


@dataclass(frozen=True, slots=True)
class Guarantee:
    direction: GuaranteeDirection
    share: Decimal
    base: GuaranteeBase
    source: str | None = None


@dataclass(frozen=True, slots=True)
class Layer:
    id: str
    fund: str
    name: str
    eligibility: Eligibility = Eligibility()
    base_parts: tuple[BasePart, ...] = (BasePart.IN_SCOPE,)
    deductible: Deductible | None = None
    rates: Rates | None = None
    caps: Caps = Caps()
    category_rules: tuple[CategoryRule, ...] = ()
    guarantee: Guarantee | None = None
    limit: Limit | None = None
    # Its base is only the part of the in-scope amount above the line where these earlier layers' caps cut
    # their payment (职工大额医疗费用补助 above the pooling fund's annual cap), never more than is left.
    above_cap_of: tuple[str, ...] = ()


class DateBasis(StrEnum):
    """Which of a claim's dates decides something (policy texts differ)."""

    ADMISSION = "admission"
    DISCHARGE = "discharge"
    SETTLEMENT = "settlement"  # the settlement time's date in Asia/Shanghai


@dataclass(frozen=True, slots=True)
class TariffRef:
    """How a settlement names the tariff it used: enough to find the exact content years later."""

    region: str
    version: str
    sha256: str


@dataclass(frozen=True, slots=True)
class Tariff:
    ref: TariffRef
    name: str
    effective_from: date
    effective_to: date | None  # inclusive; None while open-ended
    catalogue: Catalogue
    layers: tuple[Layer, ...]
    # Human names of the categories this tariff knows, for explanations only.
    category_names: Mapping[str, str] = field(default_factory=dict)
    # The date whose version in force settles a claim (read from the version in force on the settlement date),
    # and the date whose roster categories apply.
    tariff_date: DateBasis = DateBasis.SETTLEMENT
    categories_date: DateBasis = DateBasis.SETTLEMENT
