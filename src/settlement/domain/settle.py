"""settle(claim, tariff, accumulators): the whole computation, pure and deterministic.

Nothing here reads a clock, a file or a database, so a settlement recomputes bit for bit from its stored claim,
tariff version and accumulators. Rounding is defined in settlement.domain.money: every layer's share is rounded
to the fen (half up) and the patient pays the residual.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from operator import add

from settlement.domain.accumulators import Accumulators
from settlement.domain.claim import Claim, VisitType
from settlement.domain.decompose import Decomposition, decompose
from settlement.domain.errors import ErrorCode, InvariantViolation, Problem
from settlement.domain.money import ZERO, allocate, is_fen_exact
from settlement.domain.payers import ChainState, LayerResult, apply_layer
from settlement.domain.tariff import BasePart, DeductiblePer, Tariff, TariffRef


@dataclass(frozen=True, slots=True)
class Settlement:
    claim: Claim
    tariff: TariffRef
    decomposition: Decomposition
    payers: tuple[LayerResult, ...]  # in chain order, ineligible layers included with 0.00
    patient_pays: Decimal
    accumulators_before: Accumulators
    accumulators_after: Accumulators

    @property
    def total(self) -> Decimal:
        return self.decomposition.total

    def paid_by_fund(self) -> dict[str, Decimal]:
        funds: dict[str, Decimal] = {}
        for payer in self.payers:
            if payer.eligible:
                funds[payer.fund] = funds.get(payer.fund, ZERO) + payer.paid
        return funds


def settle(claim: Claim, tariff: Tariff, accumulators: Accumulators) -> Settlement:
    accumulators.check_for_year(claim.insurance_year)
    decomposition = decompose(claim, tariff.catalogue)
    state = ChainState(
        claim=claim,
        total=decomposition.total,
        in_scope_total=decomposition.in_scope,
        remaining={
            BasePart.IN_SCOPE: decomposition.in_scope,
            BasePart.PRE_SELF_PAY: decomposition.pre_self_pay,
            BasePart.OVER_PRICE_LIMIT: decomposition.over_price_limit,
            BasePart.OUT_OF_CATALOGUE: decomposition.out_of_catalogue,
        },
        reimbursed=ZERO,
        admissions_before=accumulators.admissions,
        deductible_used=dict(accumulators.deductible_used),
        cumulative=dict(accumulators.cumulative),
        paid=dict(accumulators.paid),
        admissions_by_level=accumulators.admissions_by_level,
        limits=dict(accumulators.limits),
        above_cap={},
    )
    results: list[LayerResult] = []
    for layer in tariff.layers:
        result = apply_layer(layer, state)
        results.append(result)
        if not result.eligible:
            continue
        fund = result.fund
        if result.paid:
            # The payment comes out of the layer's parts in proportion to what was left of each.
            parts = layer.base_parts
            if len(parts) == 1:
                state.remaining[parts[0]] -= result.paid
            else:
                shares = allocate(result.paid, [state.remaining[part] for part in parts])
                for part, share in zip(parts, shares, strict=True):
                    state.remaining[part] -= share
            state.reimbursed += result.paid
        state.paid[fund] = state.paid.get(fund, ZERO) + result.paid
        state.cumulative[fund] = state.cumulative.get(fund, ZERO) + result.cumulative_delta
        if layer.deductible is not None and layer.deductible.per is DeductiblePer.YEAR:
            state.deductible_used[fund] = state.deductible_used.get(fund, ZERO) + result.deductible_delta
        if result.limit_key is not None:
            state.limits[result.limit_key] = state.limits.get(result.limit_key, ZERO) + result.paid
        if result.above_cap:
            state.above_cap[result.layer_id] = result.above_cap
    by_level = accumulators.admissions_by_level
    stay = claim.visit.type == VisitType.INPATIENT
    if stay:
        level = claim.hospital.level
        by_level = {**by_level, level: by_level.get(level, 0) + 1}
    after = Accumulators(
        year=accumulators.year,
        admissions=accumulators.admissions + (1 if stay else 0),
        deductible_used=state.deductible_used,
        cumulative=state.cumulative,
        paid=state.paid,
        admissions_by_level=by_level,
        limits=state.limits,
    )
    settlement = Settlement(claim, tariff.ref, decomposition, tuple(results), state.patient_share,
                            accumulators, after)
    problems = settlement_violations(settlement)
    if problems:
        raise InvariantViolation(problems)
    return settlement


def settlement_violations(settlement: Settlement) -> list[Problem]:
    """Every identity of domain.md that the settlement breaks; empty when it balances to the fen."""
    found: list[Problem] = []

    def fail(path: str, message: str) -> None:
        found.append(Problem(ErrorCode.INVARIANT_VIOLATED, path, message))

    dec = settlement.decomposition
    parts = dec.out_of_catalogue + dec.over_price_limit + dec.pre_self_pay + dec.in_scope
    if parts != dec.total:
        fail("decomposition", f"parts sum to {parts}, the bill is {dec.total}")
    # Column-wise with C-level map/min/sum, since this runs for every line of every bill (a claim always has
    # lines): each line's parts split its amount, no part is negative, and the lines add up to the bill.
    _, _, _, amounts, outs, overs, pres, scopes, _, _ = zip(*dec.lines)  # noqa: B905 - LineResults are uniform
    split = tuple(map(add, map(add, outs, overs), map(add, pres, scopes)))
    if split != amounts:
        index = next(i for i, (a, b) in enumerate(zip(split, amounts, strict=True)) if a != b)
        fail(f"decomposition.lines[{index}]", f"parts add up to {split[index]}, the line is {amounts[index]}")
    if min(min(outs), min(overs), min(pres), min(scopes)) < ZERO:
        fail("decomposition.lines", "a line has a negative part")
    if sum(amounts, ZERO) != dec.total:
        fail("decomposition", "the lines do not add up to the bill")
    paid = sum((payer.paid for payer in settlement.payers), ZERO)
    if paid + settlement.patient_pays != dec.total:
        fail("patient_pays", f"payers {paid} + patient {settlement.patient_pays} != bill {dec.total}")
    if settlement.patient_pays < 0:
        fail("patient_pays", f"negative patient share {settlement.patient_pays}")
    shares = [dec.total, dec.out_of_catalogue, dec.over_price_limit, dec.pre_self_pay, dec.in_scope,
              settlement.patient_pays, *(payer.paid for payer in settlement.payers)]
    if not all(is_fen_exact(amount) for amount in shares):
        fail("", "an amount is not a whole number of fen")

    before = settlement.accumulators_before
    after = settlement.accumulators_after
    running = dict(before.paid)
    used = dict(before.deductible_used)
    limits = dict(before.limits)
    for index, payer in enumerate(settlement.payers):
        path = f"payers[{index}]"
        if payer.paid < 0:
            fail(path, f"{payer.fund} pays a negative amount {payer.paid}")
        if payer.paid > payer.base:
            fail(path, f"{payer.fund} pays {payer.paid}, more than the {payer.base} it was offered")
        if payer.paid > payer.visit_cap:
            fail(path, f"{payer.fund} pays {payer.paid}, over its per-visit cap {payer.visit_cap}")
        running[payer.fund] = running.get(payer.fund, ZERO) + payer.paid
        # A cap or deductible may be lower than what a year already holds (a category gained mid-year): then
        # this bill must add nothing to it.
        if payer.paid > 0 and running[payer.fund] > payer.year_cap:
            fail(path, f"{payer.fund} paid {running[payer.fund]} this year, over its cap {payer.year_cap}")
        used[payer.fund] = used.get(payer.fund, ZERO) + payer.deductible_delta
        if payer.annual_deductible is not None and payer.deductible_delta > 0 and \
                used[payer.fund] > payer.annual_deductible:
            fail(path, f"{payer.fund} deductible used {used[payer.fund]} exceeds {payer.annual_deductible}")
        key = payer.limit_key
        if key is not None:
            limits[key] = limits.get(key, ZERO) + payer.paid
            if payer.paid > 0 and limits[key] > payer.limit_cap:
                fail(path, f"{payer.fund} paid {limits[key]} this year against {key[1]}, over its limit "
                           f"{payer.limit_cap}")
    for fund, amount in settlement.paid_by_fund().items():
        if after.paid_by(fund) != before.paid_by(fund) + amount:
            fail(f"accumulators.paid.{fund}", "year-to-date paid does not move by this bill's payment")
    for key, amount in limits.items():
        if after.limits.get(key, ZERO) != amount:
            fail(f"accumulators.limits.{key[0]}.{key[1]}", "the limit's year-to-date figure does not move by "
                                                          "this bill's payment")
    return found
