"""The schema of a tariff version file (YAML). Decimals are quoted strings; every rule block may cite a source.

Validation errors name the file, the path inside it and the reason. See tariffs/README.md for the format.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Annotated, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

_DECIMAL = re.compile(r"[0-9]{1,12}(\.[0-9]{1,6})?")  # fullmatch, ASCII digits: Decimal() takes more
LEVELS = ("township", "county", "city", "provincial")


def _decimal(value: object) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, (bool, int | float)):
        raise ValueError(f"write decimals as quoted strings, e.g. '{value}', so no float ever reads them")
    if not isinstance(value, str) or not _DECIMAL.fullmatch(value):
        raise ValueError(f"not a non-negative decimal string: {value!r}")
    return Decimal(value)


def _money(value: object) -> Decimal:
    amount = _decimal(value)
    if amount != amount.quantize(Decimal("0.01")):
        raise ValueError(f"an amount has at most two decimals: {value!r}")
    return amount


def _rate(value: object) -> Decimal:
    rate = _decimal(value)
    if rate > 1:
        raise ValueError(f"a rate or share is a fraction between 0 and 1 (0.85 for 85%), got {value!r}")
    return rate


def _scale(value: object) -> Decimal:
    scale = _decimal(value)
    if scale > 10:
        raise ValueError(f"a scale is a factor such as 0.50 (halved) or 1.50 (half as much again), got {value!r}")
    return scale


def _cap(value: object) -> Decimal | None:
    if value is None or value == "none":
        return None  # "none" lifts the cap
    return _money(value)


def _iso_date(value: object) -> object:
    if isinstance(value, str):
        return date.fromisoformat(value)
    return value


DecimalStr = Annotated[Decimal, BeforeValidator(_decimal)]
Money = Annotated[Decimal, BeforeValidator(_money)]
Rate = Annotated[Decimal, BeforeValidator(_rate)]
Scale = Annotated[Decimal, BeforeValidator(_scale)]
Code = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
Level = Literal["township", "county", "city", "provincial"]
BasePartName = Literal["in_scope", "pre_self_pay", "over_price_limit", "out_of_catalogue"]
IsoDate = Annotated[date, BeforeValidator(_iso_date)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(Strict):
    title: str
    status: Literal["verified", "unverified", "illustrative"]
    note: str | None = None
    url: str | None = None


class Category(Strict):
    name: str
    roster_code: str | None = None  # the civil-affairs list's code (1 低保, 2 特困...)


class Effective(Strict):
    from_: IsoDate = Field(alias="from")
    to: IsoDate | None = None  # inclusive; absent while open-ended

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.to is not None and self.to < self.from_:
            raise ValueError(f"effective.to {self.to} is before effective.from {self.from_}")
        return self


class CatalogueItem(Strict):
    code: Code
    name: str
    kind: Literal["drug", "service", "material"] = "drug"
    item_class: Literal["A", "B", "C"] = Field(alias="class")
    share: Rate | None = None
    share_by_category: dict[Code, Rate] = Field(default_factory=dict)
    price_cap: Money | None = None
    unit: str | None = None
    note: str | None = None

    @model_validator(mode="after")
    def _class_rules(self) -> Self:
        if self.item_class == "B" and self.share is None:
            raise ValueError(f"class B item {self.code} needs a self-paid-first share")
        if self.item_class != "B" and (self.share is not None or self.share_by_category):
            raise ValueError(f"only class B items have shares ({self.code} is class {self.item_class})")
        if self.item_class == "C" and self.price_cap is not None:
            raise ValueError(f"class C item {self.code} is fully self-paid; a price cap means nothing")
        return self


class CatalogueSpec(Strict):
    file: str | None = None  # a CSV beside the version file
    items: list[CatalogueItem] = Field(default_factory=list)  # inline items, or overrides of the file's
    unknown_items: Literal["out_of_catalogue", "reject"] = "out_of_catalogue"


class Condition(Strict):
    measure: Literal["total", "in_scope", "patient_share", "base"]
    at_least: Money | None = None
    above: Money | None = None
    at_most: Money | None = None
    below: Money | None = None

    @model_validator(mode="after")
    def _has_limit(self) -> Self:
        if all(limit is None for limit in (self.at_least, self.above, self.at_most, self.below)):
            raise ValueError("a condition needs at least one of at_least, above, at_most, below")
        return self


class Eligible(Strict):
    schemes: list[Literal["resident", "employee"]] | None = None
    categories: list[Code] | None = None
    excluded_categories: list[Code] = Field(default_factory=list)
    visit_types: list[Literal["inpatient", "outpatient", "chronic_outpatient"]] | None = None
    hospital_levels: list[Level] | None = None
    conditions: list[Condition] = Field(default_factory=list)


class RepeatAdmission(Strict):
    """How a per-visit deductible falls for repeat inpatient admissions: one of three forms (or none, when only
    `counted` is given for category rules that test first or repeat admissions)."""

    counted: Literal["year", "level"] | None = None  # absent: year (every earlier admission of the year)
    step: Rate | None = None  # a share of the first admission's amount off per earlier admission...
    floor: Rate | None = None  # ...never below this share of it
    step_amount: Money | None = None  # this many yuan off per earlier admission...
    floor_amount: Money | None = None  # ...never below this amount
    amounts: dict[Level, list[Money]] | None = None  # the 2nd, 3rd... admission's amounts by level (last repeats)

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        forms = [name for name, given in (("step and floor", self.step is not None or self.floor is not None),
                                          ("step_amount", self.step_amount is not None
                                           or self.floor_amount is not None),
                                          ("amounts", self.amounts is not None)) if given]
        if len(forms) > 1:
            raise ValueError(f"give one way to reduce the deductible, not {' and '.join(forms)}")
        if (self.step is None) != (self.floor is None):
            raise ValueError("step and floor go together (a share off per admission, never below a share)")
        if self.floor_amount is not None and self.step_amount is None:
            raise ValueError("floor_amount bounds a step_amount; give the step_amount")
        if self.amounts is not None and (not self.amounts or not all(self.amounts.values())):
            raise ValueError("amounts lists, by level, the deductible of the 2nd, 3rd... admission")
        return self


class DeductibleSpec(Strict):
    per: Literal["visit", "year"]
    amount: Money | None = None
    by_level: dict[Level, Money] = Field(default_factory=dict)
    repeat_admission: RepeatAdmission | None = None
    source: Code | None = None

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.amount is None and set(self.by_level) != set(LEVELS):
            missing = sorted(set(LEVELS) - set(self.by_level))
            raise ValueError(f"give an amount, or by_level for every level (missing {missing})")
        if self.repeat_admission is not None and self.per != "visit":
            raise ValueError("repeat_admission reduces a per-visit deductible only")
        return self


class Dates(Strict):
    """Which date decides: `tariff`, the version in force on which date settles a claim (read from the version in
    force on the settlement date); `categories`, the roster's categories in force on which date apply."""

    tariff: Literal["admission", "discharge", "settlement"] | None = None  # absent: settlement
    categories: Literal["admission", "discharge", "settlement"] | None = None  # absent: settlement


class BandSpec(Strict):
    from_: Money | None = Field(default=None, alias="from")
    to: Money | None = None
    rate: Rate


class RateSpec(Strict):
    mode: Literal["bill", "annual_cumulative"] = "bill"
    rate: Rate | None = None
    by_level: dict[Level, Rate] = Field(default_factory=dict)
    bands: list[BandSpec] = Field(default_factory=list)
    # What the band bounds are measured on: the amount itself from zero, or the amount above the deductible.
    # Absent: above_deductible for mode bill, on_amount for annual_cumulative (the readings before it was named).
    bounds: Literal["on_amount", "above_deductible"] | None = None
    source: Code | None = None

    @model_validator(mode="after")
    def _one_shape(self) -> Self:
        flat = self.rate is not None or bool(self.by_level)
        if flat == bool(self.bands):
            raise ValueError("give either a rate (rate or by_level) or bands, not both and not neither")
        if self.bounds is not None and not self.bands:
            raise ValueError("bounds say how band bounds are read; a single rate has none")
        if self.rate is None and self.by_level and set(self.by_level) != set(LEVELS):
            missing = sorted(set(LEVELS) - set(self.by_level))
            raise ValueError(f"by_level without a default rate must name every level (missing {missing})")
        if self.mode == "annual_cumulative" and not self.bands:
            raise ValueError("annual_cumulative rates need bands")
        lower = Decimal(0)
        for index, band in enumerate(self.bands):
            if band.from_ is not None and band.from_ != lower:
                raise ValueError(f"bands[{index}] starts at {band.from_}, expected {lower}: bands are contiguous "
                                 "from 0")
            if band.to is None:
                if index != len(self.bands) - 1:
                    raise ValueError(f"bands[{index}] is open-ended but is not the last band")
                break
            if band.to <= lower:
                raise ValueError(f"bands[{index}] ends at {band.to}, not above its start {lower}")
            lower = band.to
        return self


class CapsSpec(Strict):
    per_visit: Annotated[Decimal | None, BeforeValidator(_cap)] = None
    per_year: Annotated[Decimal | None, BeforeValidator(_cap)] = None
    source: Code | None = None


class CategoryCaps(Strict):
    """In a category rule: a key absent keeps the layer's cap; 'none' lifts it."""

    per_visit: str | None = None
    per_year: str | None = None

    @model_validator(mode="after")
    def _values(self) -> Self:
        for value in (self.per_visit, self.per_year):
            if value is not None and value != "none":
                _money(value)
        return self


class CategoryRuleSpec(Strict):
    label: str | None = None
    # The tests: every one given must hold (at least one is given).
    categories: Annotated[list[Code], Field(min_length=1)] | None = None
    referral: bool | None = None  # the visit is (true) or is not (false) a referral out of the region
    retired: bool | None = None  # the person is (true) or is not (false) retired, by the roster
    admissions: Literal["first", "repeat"] | None = None  # an inpatient stay with no, or some, earlier admission
    # The changes.
    deductible: Literal["waive"] | None = None
    deductible_scale: Scale | None = None
    deductible_amount: Money | None = None
    rate: Rate | None = None
    rate_add: Rate | None = None
    rate_subtract: Rate | None = None
    caps: CategoryCaps | None = None
    source: Code | None = None

    @model_validator(mode="after")
    def _tests(self) -> Self:
        if all(test is None for test in (self.categories, self.referral, self.retired, self.admissions)):
            raise ValueError("a rule tests at least one of categories, referral, retired, admissions")
        if self.deductible == "waive" and (self.deductible_scale is not None or self.deductible_amount is not None):
            raise ValueError("a waived deductible has no scale or amount")
        return self


class LimitSpec(Strict):
    name: Code  # its year-to-date figure is kept under the fund and this name (and the disease, when by_disease)
    per_year: Money | None = None  # for every claim, or for a disease by_disease does not list
    by_disease: dict[Code, Money] | None = None  # one limit per disease group (the claim's visit.disease)
    source: Code | None = None

    @model_validator(mode="after")
    def _amount(self) -> Self:
        if self.per_year is None and not self.by_disease:
            raise ValueError("a limit needs per_year, by_disease or both")
        return self


class GuaranteeSpec(Strict):
    direction: Literal["patient_share_at_most", "reimbursement_at_most"]
    share: Rate
    base: Literal["total", "in_scope"]
    source: Code | None = None


class LayerSpec(Strict):
    id: Code
    fund: Annotated[str, Field(pattern=r"^[0-9]{6}$")]
    name: str
    eligible: Eligible = Eligible()
    base: list[BasePartName] = Field(default_factory=lambda: list[BasePartName](["in_scope"]), min_length=1)
    deductible: DeductibleSpec | None = None
    rate: RateSpec | None = None
    caps: CapsSpec = CapsSpec()
    category_rules: list[CategoryRuleSpec] = Field(default_factory=list)
    guarantee: GuaranteeSpec | None = None
    limit: LimitSpec | None = None  # an annual limit inside the fund, beside the fund's own cap
    # Its base: only the in-scope amount above the line where these earlier layers' caps cut their payment.
    above_cap_of: Annotated[list[Code], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if len(set(self.base)) != len(self.base):
            raise ValueError("base lists a part twice")
        if self.rate is None and self.guarantee is None:
            raise ValueError("a layer needs a rate, a guarantee, or both")
        if self.rate is None and self.deductible is not None:
            raise ValueError("a deductible needs a rate to apply to")
        if self.guarantee is not None and self.guarantee.direction == "patient_share_at_most" and self.rate:
            raise ValueError("a patient-share guarantee tops up on its own; give it no rate")
        if self.guarantee is not None and self.guarantee.direction == "reimbursement_at_most" and not self.rate:
            raise ValueError("a reimbursement ceiling limits a rate; give the layer a rate")
        if self.rate is not None and self.rate.mode == "annual_cumulative" and self.deductible is not None \
                and self.deductible.per != "year":
            raise ValueError("annual_cumulative bands take a per-year deductible (the threshold), not per visit")
        return self


class TariffDocument(Strict):
    """One effective version of one region's tariff, as written in tariffs/<region>/<version>.yaml."""

    region: Annotated[str, Field(pattern=r"^[0-9]{6}$")]
    name: str
    version: Code
    inherits: Annotated[str, Field(pattern=r"^[0-9]{6}$")] | None = None
    effective: Effective
    description: str | None = None
    sources: dict[Code, Source] = Field(default_factory=dict)
    categories: dict[Code, Category] = Field(default_factory=dict)
    category_groups: dict[Code, list[Code]] = Field(default_factory=dict)
    catalogue: CatalogueSpec = CatalogueSpec()
    layers: list[LayerSpec] = Field(default_factory=list)
    dates: Dates | None = None
