"""One rule engine for every payer layer, configured by the tariff's data alone.

A layer, in order: eligibility; the first matching category rule; its base (what is still unpaid of the parts
it covers, or only the part above an earlier layer's cap line); the deductible; the rate, one rate or bands (their
bounds on the amount itself or above the deductible), on this bill or on the year's cumulative base; a guarantee
(a floor that tops up the patient's protection, or a ceiling on total reimbursement); the per-visit and per-year
caps and a limit inside the fund; never more than the base. Each step leaves a trace step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

from settlement.domain.claim import Claim, VisitType
from settlement.domain.money import ONE, ZERO, money
from settlement.domain.tariff import (
    NO_CAP,
    AdmissionCount,
    AdmissionOrdinal,
    Band,
    BandBounds,
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
    limit_key: tuple[str, str] | None = None  # (fund, key) of the limit inside the fund the payment counts against
    limit_cap: Decimal = NO_CAP
    above_cap: Decimal = ZERO  # the part of the amount it rated above the line where its caps cut the payment


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
    admissions_by_level: Mapping[str, int]
    limits: dict[tuple[str, str], Decimal]
    above_cap: dict[str, Decimal]  # by layer id, the layers whose caps cut them on this bill

    @property
    def patient_share(self) -> Decimal:
        return self.total - self.reimbursed


def _clamped(rate: Decimal) -> Decimal:
    if rate > ONE:
        return ONE
    if rate < ZERO:
        return ZERO
    return rate


def band_integral(amount: Decimal, bands: tuple[Band, ...], rate_add: Decimal) -> Decimal:
    """F(x): the sum over bands of rate x the part of [0, x] inside the band (unrounded); `rate_add` moves every
    rate (never above 1 or below 0)."""
    result = ZERO
    for band in bands:
        if amount <= band.lower:
            break
        top = amount if band.upper is None or amount < band.upper else band.upper
        rate = band.rate + rate_add  # clamped inline: this runs for every band of every banded layer
        if rate > ONE:
            rate = ONE
        elif rate < ZERO:
            rate = ZERO
        result += (top - band.lower) * rate
    return result


def band_line(value: Decimal, bands: tuple[Band, ...], rate_add: Decimal) -> Decimal:
    """Where F first exceeds `value`: the amount beyond which a payment of `value` would have to grow (the line a
    cap of `value` cuts the bands at). When no band pays beyond `value`, the end of the last band."""
    reached = ZERO
    for band in bands:
        rate = _clamped(band.rate + rate_add)
        if band.upper is None:
            return band.lower + (value - reached) / rate if rate else band.lower
        grows = (band.upper - band.lower) * rate
        if rate and reached + grows > value:
            return band.lower + (value - reached) / rate
        reached += grows
    last = bands[-1].upper
    assert last is not None  # an open last band has returned
    return last


# How the rate turned an amount into the payment: paid = G(end) - G(start), with G(u) = rate x (u - origin), or
# F(u - origin) on the bands: (bands, rate, rate_add, origin, start, end). A plain tuple (made for every rated
# layer, read only when a cap cut the payment).
Curve = tuple[tuple[Band, ...], Decimal, Decimal, Decimal, Decimal, Decimal]


def cap_line(curve: Curve, paid: Decimal) -> Decimal:
    """The amount where the payment reached `paid`: beyond it the rate would have paid more."""
    bands, rate, rate_add, origin, start, _ = curve
    if not bands:
        return start + paid / rate
    before = band_integral(start - origin, bands, rate_add)
    return max(start, origin + band_line(before + paid, bands, rate_add))


def _matching_rule(layer: Layer, claim: Claim, earlier: int) -> CategoryRule | None:
    categories = claim.patient.categories
    for rule in layer.category_rules:
        if rule.categories is not None and rule.categories.isdisjoint(categories):
            continue
        if rule.referral is not None and rule.referral is not claim.visit.referral:
            continue
        if rule.retired is not None and rule.retired is not claim.patient.retired:
            continue
        if rule.admissions is not None and (claim.visit.type != VisitType.INPATIENT or (
                earlier > 0) is not (rule.admissions is AdmissionOrdinal.REPEAT)):
            continue
        return rule
    return None


def _rule_name(rule: CategoryRule) -> object:
    if rule.label:
        return rule.label
    if rule.categories is not None:
        return rule.categories
    tests = (("referral", rule.referral), ("retired", rule.retired), ("admissions", rule.admissions))
    return ", ".join(f"{name} {value}" for name, value in tests if value is not None)


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

    # The person's earlier inpatient admissions this year, counted as the layer's deductible counts them.
    spec = layer.deductible
    earlier = state.admissions_by_level.get(claim.hospital.level, 0) \
        if spec is not None and spec.repeat_counted is AdmissionCount.LEVEL else state.admissions_before
    rule = _matching_rule(layer, claim, earlier) if layer.category_rules else None
    if rule is not None:
        trace.append(TraceStep("category_rule", (("rule", _rule_name(rule)),), None, rule.source))
    parts = layer.base_parts
    remaining = state.remaining
    if len(parts) == 1:  # the usual case, kept off the generator machinery
        base = remaining[parts[0]]
        trace.append(TraceStep("base", ((parts[0], base),), base))
    else:
        base = _base(layer, remaining)
        trace.append(TraceStep("base", tuple((part, remaining[part]) for part in parts), base))
    if layer.above_cap_of:
        above = sum((state.above_cap.get(layer_id, ZERO) for layer_id in layer.above_cap_of), ZERO)
        base = min(base, above)
        trace.append(TraceStep("base.above_cap", (("layers", layer.above_cap_of), ("above_cap_line", above)), base))

    deductible = ZERO
    deductible_delta = ZERO
    annual_deductible: Decimal | None = None
    cumulative_before = state.cumulative.get(fund, ZERO)
    raw = ZERO
    curve: Curve | None = None
    rates = layer.rates
    if rates is not None:
        scale = ONE if rule is None or rule.deductible_scale is None else rule.deductible_scale
        waived = rule is not None and rule.waive_deductible
        level = claim.hospital.level
        if spec is not None and waived:
            trace.append(TraceStep("deductible.waived", (("categories", claim.patient.categories),), ZERO))
        elif spec is not None and spec.per is DeductiblePer.VISIT:
            level_amount = spec.base_amount(level) if rule is None or rule.deductible_amount is None \
                else rule.deductible_amount
            amount, factor = (spec.repeat_amount(level_amount, level, earlier)
                              if earlier and claim.visit.type == VisitType.INPATIENT else (level_amount, ONE))
            per_visit = money(amount * scale)
            deductible = min(base, per_visit)
            inputs: tuple[tuple[str, object], ...] = (
                ("level", level), ("amount", level_amount), ("earlier_admissions", earlier),
                ("repeat_factor", factor), ("scale", scale), ("deductible", per_visit), ("base", base))
            if spec.repeat_counted is AdmissionCount.LEVEL:
                inputs += (("counted", "level"),)
            trace.append(TraceStep("deductible.per_visit", inputs, deductible, spec.source))
        elif spec is not None:
            annual_deductible = money((spec.base_amount(level) if rule is None or rule.deductible_amount is None
                                       else rule.deductible_amount) * scale)
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

        rate_add = ZERO if rule is None else rule.rate_add - rule.rate_subtract
        override = None if rule is None else rule.rate
        named = () if rates.bounds is None else (("bounds", rates.bounds),)
        if rates.mode is RateMode.ANNUAL_CUMULATIVE and override is None:
            floor = annual_deductible if annual_deductible is not None else ZERO
            after = cumulative_before + base
            lower = max(cumulative_before, floor)
            # On the amount itself the bands count from zero; above the deductible they start at the threshold.
            origin = ZERO if rates.band_bounds is BandBounds.ON_AMOUNT else floor
            raw = ZERO if after <= lower else money(band_integral(after - origin, rates.bands, rate_add)
                                                    - band_integral(lower - origin, rates.bands, rate_add))
            curve = (rates.bands, ZERO, rate_add, origin, lower, after)
            trace.append(TraceStep("rate.annual_cumulative", (
                ("cumulative_before", cumulative_before), ("cumulative_after", after), ("threshold", floor),
                ("rate_add", rate_add), ("bands", rates.bands), *named), raw, rates.source))
        else:
            payable = base - deductible
            if rates.bands and override is None:
                if rates.band_bounds is BandBounds.ON_AMOUNT:
                    raw = money(band_integral(base, rates.bands, rate_add)
                                - band_integral(deductible, rates.bands, rate_add))
                    curve = (rates.bands, ZERO, rate_add, ZERO, deductible, base)
                    trace.append(TraceStep("rate.bands", (
                        ("amount", base), ("above", deductible), ("rate_add", rate_add), ("bands", rates.bands),
                        *named), raw, rates.source))
                else:
                    raw = money(band_integral(payable, rates.bands, rate_add))
                    curve = (rates.bands, ZERO, rate_add, deductible, deductible, base)
                    trace.append(TraceStep("rate.bands", (
                        ("amount", payable), ("rate_add", rate_add), ("bands", rates.bands), *named),
                        raw, rates.source))
            else:
                rate = override if override is not None else rates.by_level.get(
                    level, rates.rate if rates.rate is not None else ZERO)
                rate = _clamped(rate + rate_add)
                raw = money(payable * rate)
                curve = ((), rate, ZERO, ZERO, deductible, base)
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

    uncapped = raw
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
    limit_key: tuple[str, str] | None = None
    limit_cap = NO_CAP
    if layer.limit is not None:
        key, limit_cap = layer.limit.key_and_amount(claim.visit.disease)
        limit_key = (fund, key)
        limit_before = state.limits.get(limit_key, ZERO)
        if raw > limit_cap - limit_before:
            raw = max(ZERO, limit_cap - limit_before)
            trace.append(TraceStep("cap.limit", (("limit", key), ("amount", limit_cap),
                                                 ("paid_before", limit_before)), raw, layer.limit.source))
    above_cap = ZERO
    if raw < uncapped and curve is not None:
        # A cap cut the payment: the rest of the amount rated, above the line where the payment stopped, is what
        # a layer paying above this one's cap line may take.
        line = cap_line(curve, raw)
        above_cap = money(curve[5] - line)
        trace.append(TraceStep("cap.line", (("line", money(line)), ("amount", curve[5])), above_cap))
    return LayerResult(layer.id, fund, layer.name, True, base, deductible, raw, visit_cap, year_cap,
                       annual_deductible, tuple(trace), deductible_delta, base, limit_key, limit_cap, above_cap)
