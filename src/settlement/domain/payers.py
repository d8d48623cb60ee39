"""One rule engine for every payer layer, configured by the tariff's data alone.

A layer, in order: eligibility; its base (what is still unpaid of the parts it covers); the deductible;
the rate, one rate or bands, on this bill or on the year's cumulative base; a guarantee (a floor that tops up
the patient's protection, or a ceiling on total reimbursement); the per-visit and per-year caps; never more
than the base. Each step leaves a trace step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

from settlement.domain.claim import Claim, VisitType
from settlement.domain.money import ONE, ZERO, money
from settlement.domain.tariff import (
    Band,
    BasePart,
    CategoryRule,
    DeductiblePer,
    GuaranteeBase,
    GuaranteeDirection,
    Layer,
    Measure,
    RateMode,
)
from settlement.domain.trace import TraceStep


class LayerResult(NamedTuple):
    layer_id: str
    fund: str
    name: str
    eligible: bool
    base: Decimal  # what this layer was offered
    deductible: Decimal  # deductible applied on this bill
    paid: Decimal
    visit_cap: Decimal
    year_cap: Decimal
    annual_deductible: Decimal | None  # the per-year deductible in force for this person, if any
    trace: tuple[TraceStep, ...]
    # Year-to-date movements of the layer's fund caused by this bill.
    deductible_delta: Decimal = ZERO
    cumulative_delta: Decimal = ZERO


@dataclass(slots=True)
class ChainState:
    """What the layers so far have left, threaded through the chain."""

    claim: Claim
    total: Decimal
    in_scope_total: Decimal
    remaining: dict[BasePart, Decimal]
    reimbursed: Decimal
    admissions_before: int
    deductible_used: dict[str, Decimal]
    cumulative: dict[str, Decimal]
    paid: dict[str, Decimal]

    @property
    def patient_share(self) -> Decimal:
        return self.total - self.reimbursed


def band_integral(amount: Decimal, bands: tuple[Band, ...], rate_add: Decimal) -> Decimal:
    """F(x): the sum over bands of rate x the part of [0, x] inside the band (unrounded)."""
    result = ZERO
    for band in bands:
        if amount <= band.lower:
            break
        top = amount if band.upper is None or amount < band.upper else band.upper
        result += (top - band.lower) * min(ONE, band.rate + rate_add)
    return result


def _matching_rule(layer: Layer, categories: tuple[str, ...]) -> CategoryRule | None:
    for rule in layer.category_rules:
        if not rule.categories.isdisjoint(categories):
            return rule
    return None


def _ineligibility(layer: Layer, state: ChainState) -> str | None:
    claim = state.claim
    who = layer.eligibility
    if who.schemes is not None and claim.patient.scheme not in who.schemes:
        return f"scheme {claim.patient.scheme} not in {sorted(who.schemes)}"
    if who.visit_types is not None and claim.visit.type not in who.visit_types:
        return f"visit type {claim.visit.type} not in {sorted(who.visit_types)}"
    if who.hospital_levels is not None and claim.hospital.level not in who.hospital_levels:
        return f"hospital level {claim.hospital.level} not in {sorted(who.hospital_levels)}"
    categories = claim.patient.categories
    if who.categories is not None and who.categories.isdisjoint(categories):
        return f"person in none of the categories {sorted(who.categories)}"
    if not who.excluded_categories.isdisjoint(categories):
        return f"person in an excluded category {sorted(who.excluded_categories.intersection(categories))}"
    for condition in who.conditions:
        value = _measure(condition.measure, layer, state)
        if not condition.holds(value):
            return f"condition not met: {condition.describe()} (is {value})"
    return None


def _measure(measure: Measure, layer: Layer, state: ChainState) -> Decimal:
    if measure is Measure.TOTAL:
        return state.total
    if measure is Measure.IN_SCOPE:
        return state.in_scope_total
    if measure is Measure.PATIENT_SHARE:
        return state.patient_share
    return _base(layer, state.remaining)


def _base(layer: Layer, remaining: Mapping[BasePart, Decimal]) -> Decimal:
    return sum((remaining[part] for part in layer.base_parts), ZERO)


def apply_layer(layer: Layer, state: ChainState) -> LayerResult:
    claim = state.claim
    fund = layer.fund
    trace: list[TraceStep] = []
    reason = _ineligibility(layer, state)
    if reason is not None:
        trace.append(TraceStep("eligibility", (("reason", reason),), ZERO))
        return LayerResult(layer.id, fund, layer.name, False, ZERO, ZERO, ZERO, layer.caps.per_visit,
                           layer.caps.per_year, None, tuple(trace))

    rule = _matching_rule(layer, claim.patient.categories)
    if rule is not None:
        trace.append(TraceStep("category_rule", (("rule", rule.label or rule.categories),), None,
                               rule.source))
    parts = layer.base_parts
    remaining = state.remaining
    if len(parts) == 1:  # the usual case, kept off the generator machinery
        base = remaining[parts[0]]
        trace.append(TraceStep("base", ((parts[0], base),), base))
    else:
        base = _base(layer, remaining)
        trace.append(TraceStep("base", tuple((part, remaining[part]) for part in parts), base))

    deductible = ZERO
    deductible_delta = ZERO
    annual_deductible: Decimal | None = None
    cumulative_before = state.cumulative.get(fund, ZERO)
    raw = ZERO
    rates = layer.rates
    if rates is not None:
        scale = ONE if rule is None or rule.deductible_scale is None else rule.deductible_scale
        waived = rule is not None and rule.waive_deductible
        spec = layer.deductible
        if spec is not None and waived:
            trace.append(TraceStep("deductible.waived", (("categories", claim.patient.categories),), ZERO))
        elif spec is not None and spec.per is DeductiblePer.VISIT:
            level_amount = spec.base_amount(claim.hospital.level)
            factor = ONE
            if spec.repeat_step and claim.visit.type == VisitType.INPATIENT:
                factor = max(spec.repeat_floor, ONE - spec.repeat_step * state.admissions_before)
            per_visit = money(level_amount * factor * scale)
            deductible = min(base, per_visit)
            trace.append(TraceStep("deductible.per_visit", (
                ("level", claim.hospital.level), ("amount", level_amount),
                ("earlier_admissions", state.admissions_before), ("repeat_factor", factor), ("scale", scale),
                ("deductible", per_visit), ("base", base)), deductible, spec.source))
        elif spec is not None:
            annual_deductible = money(spec.base_amount(claim.hospital.level) * scale)
            used = state.deductible_used.get(fund, ZERO)
            deductible_left = max(ZERO, annual_deductible - used)
            if rates.mode is RateMode.ANNUAL_CUMULATIVE:
                # The threshold is the part of the year's cumulative base below it; the year's deductible
                # record never passes the threshold even if the threshold changed mid-year.
                deductible = max(ZERO, min(cumulative_before + base, annual_deductible)
                                 - min(cumulative_before, annual_deductible))
                deductible_delta = min(deductible, deductible_left)
            else:
                deductible = deductible_delta = min(base, deductible_left)
            trace.append(TraceStep("deductible.per_year", (
                ("annual", annual_deductible), ("used_before", used), ("scale", scale), ("base", base)),
                deductible, spec.source))

        rate_add = ZERO if rule is None else rule.rate_add
        override = None if rule is None else rule.rate
        if rates.mode is RateMode.ANNUAL_CUMULATIVE and override is None:
            floor = annual_deductible if annual_deductible is not None else ZERO
            after = cumulative_before + base
            lower = max(cumulative_before, floor)
            raw = ZERO if after <= lower else money(
                band_integral(after, rates.bands, rate_add) - band_integral(lower, rates.bands, rate_add))
            trace.append(TraceStep("rate.annual_cumulative", (
                ("cumulative_before", cumulative_before), ("cumulative_after", after), ("threshold", floor),
                ("rate_add", rate_add), ("bands", rates.bands)), raw, rates.source))
        else:
            payable = base - deductible
            if rates.bands and override is None:
                raw = money(band_integral(payable, rates.bands, rate_add))
                trace.append(TraceStep("rate.bands", (
                    ("amount", payable), ("rate_add", rate_add), ("bands", rates.bands)),
                    raw, rates.source))
            else:
                rate = override if override is not None else rates.by_level.get(
                    claim.hospital.level, rates.rate if rates.rate is not None else ZERO)
                rate = min(ONE, rate + rate_add)
                raw = money(payable * rate)
                trace.append(TraceStep("rate.flat", (("amount", payable), ("rate", rate)), raw,
                                       rule.source if override is not None and rule is not None else rates.source))

    guarantee = layer.guarantee
    if guarantee is not None:
        gbase = state.total if guarantee.base is GuaranteeBase.TOTAL else state.in_scope_total
        bound = money(gbase * guarantee.share)
        if guarantee.direction is GuaranteeDirection.PATIENT_SHARE_AT_MOST:
            # The patient's share of this layer's parts (its base, minus what the rate already paid) is
            # brought down to the bound.
            raw = max(raw, base - bound)
            trace.append(TraceStep("guarantee.patient_share_at_most", (
                ("base", guarantee.base), ("base_amount", gbase), ("share", guarantee.share),
                ("bound", bound), ("patient_share_of_parts", base)), raw, guarantee.source))
        else:
            room = max(ZERO, bound - state.reimbursed)
            if raw > room:
                raw = room
            trace.append(TraceStep("guarantee.reimbursement_at_most", (
                ("base", guarantee.base), ("base_amount", gbase), ("share", guarantee.share),
                ("bound", bound), ("reimbursed_before", state.reimbursed)), raw, guarantee.source))

    visit_cap = layer.caps.per_visit
    year_cap = layer.caps.per_year
    if rule is not None:
        visit_cap = visit_cap if rule.per_visit_cap is None else rule.per_visit_cap
        year_cap = year_cap if rule.per_year_cap is None else rule.per_year_cap
    if raw > visit_cap:
        raw = visit_cap
        trace.append(TraceStep("cap.per_visit", (("cap", visit_cap),), raw, layer.caps.source))
    paid_before = state.paid.get(fund, ZERO)
    if raw > year_cap - paid_before:  # an infinite cap never binds
        raw = max(ZERO, year_cap - paid_before)
        trace.append(TraceStep("cap.per_year", (("cap", year_cap), ("paid_before", paid_before)), raw,
                               layer.caps.source))
    return LayerResult(layer.id, fund, layer.name, True, base, deductible, raw, visit_cap, year_cap,
                       annual_deductible, tuple(trace), deductible_delta, base)
