"""Properties of every settlement, over random bills, random tariffs and random years of bills.

The identities are checked here independently of settle()'s own checker, so a fault in either is caught.
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import date
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from settlement.domain.accumulators import Accumulators
from settlement.domain.claim import Claim
from settlement.domain.errors import InvariantViolation
from settlement.domain.money import ZERO, is_fen_exact
from settlement.domain.payers import band_integral
from settlement.domain.settle import Settlement, settle
from settlement.domain.tariff import (
    Band,
    Caps,
    Deductible,
    DeductiblePer,
    Layer,
    RateMode,
    Rates,
    Tariff,
)
from tests.factories import make_tariff
from tests.property.strategies import claims, tariffs, year_to_date

# Each example settles BILLS_PER_TARIFF bills under one random tariff: 1,000 examples in CI give the 10,000
# random bills of reliability.md (tariffs are the expensive part to generate).
EXAMPLES = int(os.environ.get("SETTLEMENT_PROPERTY_EXAMPLES", "1000" if os.environ.get("CI") else "200"))
BILLS_PER_TARIFF = 10


def independent_violations(result: Settlement) -> list[str]:
    found = []
    dec = result.decomposition
    if dec.out_of_catalogue + dec.over_price_limit + dec.pre_self_pay + dec.in_scope != dec.total:
        found.append("scope parts do not sum to the bill")
    if sum(line.amount for line in result.claim.lines) != dec.total:
        found.append("bill total is not the sum of the lines")
    paid = sum((payer.paid for payer in result.payers), ZERO)
    if paid + result.patient_pays != dec.total:
        found.append("payers + patient != bill")
    for payer in result.payers:
        if payer.paid < 0 or not is_fen_exact(payer.paid):
            found.append(f"{payer.layer_id} pays {payer.paid}")
        if payer.paid > payer.base:
            found.append(f"{payer.layer_id} pays more than offered")
        if not payer.eligible and payer.paid:
            found.append(f"{payer.layer_id} pays while not eligible")
    if result.patient_pays < 0:
        found.append("negative patient share")
    if paid > dec.total - dec.out_of_catalogue - dec.over_price_limit - dec.pre_self_pay + sum(
            (payer.base for payer in result.payers if payer.eligible), ZERO):
        found.append("payers paid more than anything they were offered")
    return found


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_every_settlement_balances_to_the_fen(data: st.DataObject) -> None:
    tariff = data.draw(tariffs())
    for _ in range(BILLS_PER_TARIFF):
        claim = data.draw(claims(tariff.catalogue))
        accumulators = data.draw(year_to_date())
        try:
            result = settle(claim, tariff, accumulators)
        except InvariantViolation as error:  # pragma: no cover - the failure being searched for
            raise AssertionError(str(error)) from None
        assert independent_violations(result) == []


def run_year(tariff: Tariff, bills: list[Claim]) -> tuple[list[Settlement], Accumulators]:
    accumulators = Accumulators(2024)
    results = []
    for claim in bills:
        result = settle(claim, tariff, accumulators)
        results.append(result)
        accumulators = result.accumulators_after
    return results, accumulators


@settings(max_examples=max(100, EXAMPLES // 5), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_a_year_of_bills_never_passes_a_cap_or_deductible(data: st.DataObject) -> None:
    tariff = data.draw(tariffs())
    bills = [data.draw(claims(tariff.catalogue, date(2024, 1 + month, 10), max_lines=5))
             for month in range(data.draw(st.integers(min_value=1, max_value=8)))]
    results, final = run_year(tariff, bills)
    per_fund: dict[str, Decimal] = {}
    for result in results:
        assert independent_violations(result) == []
        running = dict(result.accumulators_before.paid)
        used = dict(result.accumulators_before.deductible_used)
        limited = dict(result.accumulators_before.limits)
        for payer in result.payers:
            if payer.limit_key is not None:
                limited[payer.limit_key] = limited.get(payer.limit_key, ZERO) + payer.paid
                if payer.paid > 0:  # a limit inside a fund is never passed either
                    assert limited[payer.limit_key] <= payer.limit_cap
            per_fund[payer.fund] = per_fund.get(payer.fund, ZERO) + payer.paid
            running[payer.fund] = running.get(payer.fund, ZERO) + payer.paid
            if payer.paid > 0:
                # A fund's payments this year never pass the cap that applied to this person on this bill.
                assert running[payer.fund] <= payer.year_cap
            used[payer.fund] = used.get(payer.fund, ZERO) + payer.deductible_delta
            if payer.annual_deductible is not None and payer.deductible_delta > 0:
                assert used[payer.fund] <= payer.annual_deductible
    for fund, total in per_fund.items():
        assert final.paid_by(fund) == total  # the accumulator is the sum of the payments, exactly
    assert final.admissions == sum(1 for claim in bills if claim.visit.type == "inpatient")


CRITICAL_BANDS = (Band(Decimal(0), Decimal(30000), Decimal("0.60")), Band(Decimal(30000), Decimal(100000),
                  Decimal("0.70")), Band(Decimal(100000), None, Decimal("0.80")))
CRITICAL = Layer("critical", "390200", "critical", deductible=Deductible(DeductiblePer.YEAR, Decimal("10000")),
                 rates=Rates(RateMode.ANNUAL_CUMULATIVE, bands=CRITICAL_BANDS))


def naive_bill_bands(layer: Layer) -> Layer:
    """The planted fault: bands applied to each bill alone, as if every bill started the year afresh."""
    assert layer.rates is not None
    return replace(layer, rates=replace(layer.rates, mode=RateMode.BILL))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=6_000_000), min_size=1, max_size=10))
def test_annual_bands_pay_f_of_the_year_once(fen_amounts: list[int]) -> None:
    """Summed over the year, an annual banded layer pays F(year total) - F(threshold), within rounding."""
    from tests.factories import line, make_claim  # local: keeps the strategy module import-light

    tariff = make_tariff(CRITICAL)
    bills = [make_claim((line("1", "A1", "1", str(Decimal(fen) / 100)),), discharge=date(2024, 1 + i % 12, 1))
             for i, fen in enumerate(fen_amounts)]
    _results, final = run_year(tariff, bills)
    year_base = sum((Decimal(fen) / 100 for fen in fen_amounts), ZERO)
    exact = band_integral(year_base, CRITICAL_BANDS, ZERO) - band_integral(min(year_base, Decimal(10000)),
                                                                            CRITICAL_BANDS, ZERO)
    paid = final.paid_by("390200")
    assert abs(paid - exact) <= Decimal("0.005") * len(bills)
    assert final.deductible_used["390200"] == min(year_base, Decimal(10000))


def test_the_naive_per_bill_banding_breaks_the_annual_property() -> None:
    from tests.factories import line, make_claim

    bills = [make_claim((line("1", "A1", "1", "20000.00"),), discharge=date(2024, month, 1)) for month in (1, 2, 3)]
    _, right = run_year(make_tariff(CRITICAL), bills)
    _, naive = run_year(make_tariff(naive_bill_bands(CRITICAL)), bills)
    # Year 60,000: F(60,000) - F(10,000) = 18,000 + 21,000 - 6,000 = 33,000. Per bill it would be 3 x 6,000.
    assert right.paid_by("390200") == Decimal("33000.00")
    assert naive.paid_by("390200") != right.paid_by("390200")


def test_a_naive_cap_check_is_caught_by_the_year_property() -> None:
    """Checking the cap against this bill alone (forgetting the year) over-pays: the property sees it."""
    capped = make_tariff(Layer("basic", "390100", "basic", rates=Rates(rate=Decimal("0.80")),
                               caps=Caps(per_year=Decimal("1000.00"))))
    from tests.factories import line, make_claim

    bills = [make_claim((line("1", "A1", "1", "1000.00"),), discharge=date(2024, m, 1)) for m in (1, 2)]
    _results, final = run_year(capped, bills)
    assert final.paid_by("390100") == Decimal("1000.00")
    naive_total = sum((settle(bill, capped, Accumulators(2024)).payers[0].paid for bill in bills), ZERO)
    assert naive_total > capped.layers[0].caps.per_year
