"""The rules of issue 16 where the golden cases do not reach: band lines, rate shifts below zero, rule tests on
claim and roster attributes, limits without a figure for the claim's disease, and the dates a tariff decides by."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest

from settlement.domain.accumulators import Accumulators
from settlement.domain.claim import SHANGHAI
from settlement.domain.payers import band_integral, band_line
from settlement.domain.settle import settle
from settlement.domain.tariff import (
    AdmissionOrdinal,
    Band,
    BandBounds,
    Caps,
    CategoryRule,
    DateBasis,
    Deductible,
    DeductiblePer,
    Layer,
    Limit,
    RateMode,
    Rates,
)
from tests.factories import flat_layer, line, make_claim, make_tariff

BANDS = (Band(Decimal(0), Decimal(1000), Decimal("0.50")), Band(Decimal(1000), Decimal(3000), Decimal("0.00")),
         Band(Decimal(3000), Decimal(5000), Decimal("0.80")))


@pytest.mark.parametrize(("value", "line_at"), [
    (Decimal("0"), Decimal("0")),
    (Decimal("250"), Decimal("500")),
    (Decimal("500"), Decimal("3000")),  # the 0% band pays nothing more: the payment grows again at 3,000
    (Decimal("900"), Decimal("3500")),
    (Decimal("2100"), Decimal("5000")),  # beyond what the bands can pay: the end of the last band
])
def test_band_line_is_where_the_bands_first_pay_more(value: Decimal, line_at: Decimal) -> None:
    assert band_line(value, BANDS, Decimal(0)) == line_at
    assert band_integral(line_at, BANDS, Decimal(0)) == min(value, Decimal(2100))


def test_band_line_of_an_open_band() -> None:
    paying = (Band(Decimal(0), Decimal(100), Decimal("0.50")), Band(Decimal(100), None, Decimal("0.25")))
    assert band_line(Decimal(100), paying, Decimal(0)) == Decimal(300)
    free = (Band(Decimal(0), Decimal(100), Decimal("0.50")), Band(Decimal(100), None, Decimal("0.00")))
    assert band_line(Decimal(50), free, Decimal(0)) == Decimal(100)


def test_a_rate_never_goes_below_zero() -> None:
    lowered = Layer("basic", "390100", "basic", rates=Rates(rate=Decimal("0.05")), category_rules=(
        CategoryRule(None, referral=True, rate_subtract=Decimal("0.10")),))
    banded = Layer("banded", "390100", "banded", rates=Rates(bands=(Band(Decimal(0), None, Decimal("0.05")),)),
                   category_rules=(CategoryRule(None, referral=True, rate_subtract=Decimal("0.10")),))
    for layer in (lowered, banded):
        result = settle(make_claim(referral=True), make_tariff(layer), Accumulators(2024))
        assert result.payers[0].paid == Decimal("0.00")
        assert result.payers[0].trace[0].inputs == (("rule", "referral True"),)


CAPPED = Layer("pooling", "310100", "pooling", deductible=Deductible(DeductiblePer.VISIT, Decimal("1000.00")),
               caps=Caps(per_year=Decimal("3000.00")))
SUBSIDY = Layer("subsidy", "330100", "subsidy", above_cap_of=("pooling",), rates=Rates(rate=Decimal("1.00")))


@pytest.mark.parametrize(("rates", "year", "pooling", "subsidy"), [
    # Bands on the bill above the deductible: 10,000 - 1,000 = 9,000 rated; F reaches 3,000 at 1,000 + 5,000.
    (Rates(bands=(Band(Decimal(0), None, Decimal("0.60")),)), Accumulators(2024), "3000.00", "4000.00"),
    # Bands on the amount itself: F(x) - F(1,000) reaches 3,000 at x = 6,000 as well.
    (Rates(bands=(Band(Decimal(0), None, Decimal("0.60")),), bounds=BandBounds.ON_AMOUNT), Accumulators(2024),
     "3000.00", "4000.00"),
    # The year's cumulative amount (threshold 1,000 reached before): 2,000 -> 12,000, paying from 2,000.
    (Rates(RateMode.ANNUAL_CUMULATIVE, bands=(Band(Decimal(0), None, Decimal("0.60")),)),
     Accumulators(2024, cumulative={"310100": Decimal("2000.00")}, deductible_used={"310100": Decimal("1000.00")}),
     "3000.00", "5000.00"),
    # Above the threshold: the same bands start at 1,000; the line is at 2,000 + 5,000 = 7,000 again.
    (Rates(RateMode.ANNUAL_CUMULATIVE, bands=(Band(Decimal(0), None, Decimal("0.60")),),
           bounds=BandBounds.ABOVE_DEDUCTIBLE),
     Accumulators(2024, cumulative={"310100": Decimal("2000.00")}, deductible_used={"310100": Decimal("1000.00")}),
     "3000.00", "5000.00"),
])
def test_the_cap_line_of_every_rate_shape(rates: Rates, year: Accumulators, pooling: str, subsidy: str) -> None:
    per = DeductiblePer.YEAR if rates.mode is RateMode.ANNUAL_CUMULATIVE else DeductiblePer.VISIT
    layer = Layer(CAPPED.id, CAPPED.fund, CAPPED.name, rates=rates, caps=CAPPED.caps,
                  deductible=Deductible(per, Decimal("1000.00")))
    result = settle(make_claim((line("1", "A1", "1", "10000.00"),)), make_tariff(layer, SUBSIDY), year)
    assert [payer.paid for payer in result.payers] == [Decimal(pooling), Decimal(subsidy)]
    assert result.payers[0].trace[-1].rule == "cap.line"


def test_a_layer_not_cut_by_a_cap_leaves_nothing_above_its_line() -> None:
    uncapped = Layer("pooling", "310100", "pooling", rates=Rates(rate=Decimal("0.50")))
    result = settle(make_claim(), make_tariff(uncapped, SUBSIDY), Accumulators(2024))
    assert [payer.paid for payer in result.payers] == [Decimal("50.00"), Decimal("0.00")]
    assert result.payers[1].trace[1].rule == "base.above_cap"


RULES = (
    CategoryRule(None, label="referred retiree", referral=True, retired=True, rate=Decimal("0.70")),
    CategoryRule(None, referral=True, rate=Decimal("0.60")),
    CategoryRule(None, retired=True, rate=Decimal("0.90")),
    CategoryRule(frozenset({"dibao"}), admissions=AdmissionOrdinal.FIRST, rate=Decimal("0.95")),
)


@pytest.mark.parametrize(("claim", "rate", "rule"), [
    ({"referral": True, "retired": True}, "0.70", "referred retiree"),
    ({"referral": True}, "0.60", "referral True"),
    ({"retired": True}, "0.90", "retired True"),
    ({"categories": ("dibao",)}, "0.95", frozenset({"dibao"})),
    ({"categories": ("dibao",), "visit_type": "outpatient"}, "0.80", None),  # not an admission at all
    ({}, "0.80", None),
])
def test_rules_test_claim_and_roster_attributes(claim: dict[str, object], rate: str, rule: object) -> None:
    layer = Layer("basic", "310100", "basic", rates=Rates(rate=Decimal("0.80")), category_rules=RULES)
    result = settle(make_claim(**claim), make_tariff(layer), Accumulators(2024))  # type: ignore[arg-type]
    assert result.payers[0].paid == Decimal(rate) * 100
    named = [step.inputs[0][1] for step in result.payers[0].trace if step.rule == "category_rule"]
    assert named == ([rule] if rule is not None else [])


def test_repeat_admissions_at_a_township_never_rise_above_the_first() -> None:
    stepped = Deductible(DeductiblePer.VISIT, by_level={"township": Decimal("150.00")},
                         repeat_step_amount=Decimal("100.00"), repeat_floor_amount=Decimal("200.00"))
    layer = Layer("basic", "390100", "basic", deductible=stepped, rates=Rates(rate=Decimal("1.00")))
    result = settle(make_claim((line("1", "A1", "1", "1000.00"),), level="township"), make_tariff(layer),
                    Accumulators(2024, admissions=3))
    assert result.payers[0].deductible == Decimal("150.00")


def test_a_per_year_deductible_amount_set_by_a_rule() -> None:
    layer = Layer("assist", "610100", "assist", deductible=Deductible(DeductiblePer.YEAR, Decimal("1200.00")),
                  rates=Rates(rate=Decimal("0.50")),
                  category_rules=(CategoryRule(None, referral=True, deductible_amount=Decimal("2000.00")),))
    result = settle(make_claim((line("1", "A1", "1", "5000.00"),), referral=True), make_tariff(layer),
                    Accumulators(2024))
    assert (result.payers[0].annual_deductible, result.payers[0].paid) == (Decimal("2000.00"), Decimal("1500.00"))


@pytest.mark.parametrize(("disease", "limit", "paid"), [
    ("diabetes", Limit("chronic", by_disease={"diabetes": Decimal("300.00")}), "300.00"),
    ("gout", Limit("chronic", Decimal("100.00"), {"diabetes": Decimal("300.00")}), "100.00"),  # not listed
    ("gout", Limit("chronic", by_disease={"diabetes": Decimal("300.00")}), "0.00"),  # nothing for it
    (None, Limit("chronic", by_disease={"diabetes": Decimal("300.00")}), "0.00"),  # no disease declared
    (None, Limit("outpatient", Decimal("100.00")), "100.00"),
])
def test_the_limit_a_claim_counts_against(disease: str | None, limit: Limit, paid: str) -> None:
    layer = Layer("chronic", "390100", "chronic", rates=Rates(rate=Decimal("0.80")), limit=limit)
    claim = make_claim((line("1", "A1", "1", "1000.00"),), visit_type="chronic_outpatient", disease=disease)
    result = settle(claim, make_tariff(layer), Accumulators(2024))
    assert result.payers[0].paid == Decimal(paid)


def test_a_limit_named_by_nobody_pays_nothing() -> None:
    assert Limit("nothing").key_and_amount(None) == ("nothing", Decimal(0))


def test_the_dates_a_claim_can_be_read_by() -> None:
    claim = make_claim(admission=date(2024, 12, 28), discharge=date(2025, 1, 3),
                       settled_at=datetime(2025, 1, 4, 0, 30, tzinfo=SHANGHAI))
    assert [claim.date_of(basis) for basis in DateBasis] == [date(2024, 12, 28), date(2025, 1, 3), date(2025, 1, 4)]


def test_flat_layer_is_unchanged_by_the_new_fields() -> None:
    result = settle(make_claim(), make_tariff(flat_layer()), Accumulators(2024))
    assert result.payers[0].limit_key is None and result.payers[0].above_cap == Decimal(0)


def test_a_rate_never_goes_above_one() -> None:
    retiree = (CategoryRule(None, retired=True, rate_add=Decimal("0.05")),)
    banded = Layer("basic", "390100", "basic", rates=Rates(bands=(Band(Decimal(0), None, Decimal("0.98")),)),
                   category_rules=retiree)
    flat = Layer("basic", "390100", "basic", rates=Rates(rate=Decimal("0.98")), category_rules=retiree)
    for raised in (banded, flat):
        result = settle(make_claim(retired=True), make_tariff(raised), Accumulators(2024))
        assert result.payers[0].paid == Decimal("100.00")
