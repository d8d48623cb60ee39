"""Layer features not shown by the golden cases: every bill measure a condition can use, and band text."""

from __future__ import annotations

from decimal import Decimal

import pytest

from settlement.domain.accumulators import Accumulators
from settlement.domain.settle import settle
from settlement.domain.tariff import Band, Condition, Eligibility, Layer, Measure, Rates
from tests.factories import flat_layer, line, make_claim, make_tariff

# A 1,000.00 bill: 100.00 class C, 900.00 class A. After basic (50%) the patient still owes 550.00.
BILL = (line("1", "A1", "1", "900.00"), line("2", "C1", "1", "100.00"))


@pytest.mark.parametrize(("measure", "threshold", "eligible"), [
    (Measure.TOTAL, "1000.00", True),
    (Measure.TOTAL, "1000.01", False),
    (Measure.IN_SCOPE, "900.00", True),
    (Measure.IN_SCOPE, "900.01", False),
    (Measure.PATIENT_SHARE, "550.00", True),
    (Measure.PATIENT_SHARE, "550.01", False),
    (Measure.BASE, "450.00", True),  # the in-scope amount basic left
    (Measure.BASE, "450.01", False),
])
def test_each_measure_gates_a_layer_at_its_threshold(measure: Measure, threshold: str, eligible: bool) -> None:
    second = Layer("second", "610100", "second", Eligibility(conditions=(Condition(measure, Decimal(threshold)),)),
                   rates=Rates(rate=Decimal("1.00")))
    result = settle(make_claim(BILL), make_tariff(flat_layer(rate="0.50"), second), Accumulators(2024))
    assert result.payers[1].eligible is eligible
    assert result.payers[1].paid == (Decimal("450.00") if eligible else Decimal("0.00"))
    if not eligible:
        assert "condition not met" in str(result.payers[1].trace[0].inputs[0][1])


@pytest.mark.parametrize(("condition", "value", "holds"), [
    (Condition(Measure.TOTAL, above=Decimal(10)), Decimal(10), False),
    (Condition(Measure.TOTAL, above=Decimal(10)), Decimal("10.01"), True),
    (Condition(Measure.TOTAL, at_most=Decimal(10)), Decimal(10), True),
    (Condition(Measure.TOTAL, below=Decimal(10)), Decimal(10), False),
])
def test_condition_bounds(condition: Condition, value: Decimal, holds: bool) -> None:
    assert condition.holds(value) is holds


def test_band_text() -> None:
    assert str(Band(Decimal(0), Decimal(30000), Decimal("0.60"))) == "0-30000@0.60"
    assert str(Band(Decimal(30000), None, Decimal("0.80"))) == "30000-@0.80"
    described = Condition(Measure.TOTAL, at_least=Decimal(1), below=Decimal(9)).describe()
    assert described == "total at least 1 and below 9"
