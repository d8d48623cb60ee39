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


@dataclass(frozen=True, slots=True)
class Deductible:
    per: DeductiblePer
    amount: Decimal = Decimal(0)
    by_level: Mapping[str, Decimal] = field(default_factory=dict)  # overrides `amount` for listed levels
    # Per-visit deductibles of inpatient stays fall by `repeat_step` for each earlier admission this year,
    # never below `repeat_floor` of the base amount.
    repeat_step: Decimal = Decimal(0)
    repeat_floor: Decimal = Decimal(1)
    source: str | None = None

    def base_amount(self, level: str) -> Decimal:
        return self.by_level.get(level, self.amount)


class RateMode(StrEnum):
    BILL = "bill"  # rates apply to this bill's amount after the deductible
    ANNUAL_CUMULATIVE = "annual_cumulative"  # bands apply to the year's cumulative base: f(after) - f(before)


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


@dataclass(frozen=True, slots=True)
class Caps:
    per_visit: Decimal = NO_CAP
    per_year: Decimal = NO_CAP
    source: str | None = None


@dataclass(frozen=True, slots=True)
class CategoryRule:
    """Changes for persons in some categories. The first rule (in tariff order) matching the person applies."""

    categories: frozenset[str]
    waive_deductible: bool = False
    deductible_scale: Decimal | None = None
    rate: Decimal | None = None  # replaces the layer's rate or bands with one rate
    rate_add: Decimal = Decimal(0)  # added to every rate (points as a fraction: 0.05), never above 1
    per_visit_cap: Decimal | None = None  # None keeps the layer's; NO_CAP lifts it
    per_year_cap: Decimal | None = None
    label: str = ""
    source: str | None = None


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
