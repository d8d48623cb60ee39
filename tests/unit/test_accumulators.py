from __future__ import annotations

from decimal import Decimal

import pytest

from settlement.domain.accumulators import Accumulators
from settlement.domain.errors import AccumulatorError, ErrorCode
from settlement.domain.settle import settle
from tests.factories import flat_layer, make_claim, make_tariff


def test_year_must_match_the_claim() -> None:
    with pytest.raises(AccumulatorError) as caught:
        settle(make_claim(), make_tariff(flat_layer()), Accumulators(2023))
    assert caught.value.code is ErrorCode.ACCUMULATORS_YEAR_MISMATCH


@pytest.mark.parametrize("fields", [
    {"admissions": -1},
    {"paid": {"390100": Decimal("-0.01")}},
    {"cumulative": {"390200": Decimal("0.001")}},
    {"deductible_used": {"390100": Decimal("-5")}},
    {"admissions_by_level": {"county": -1}},
    {"limits": {("390100", "outpatient_pooling"): Decimal("-0.01")}},
    {"limits": {("390100", "outpatient_pooling"): Decimal("0.001")}},
])
def test_negative_or_sub_fen_figures_are_refused_when_made(fields: dict[str, object]) -> None:
    with pytest.raises(AccumulatorError) as caught:
        Accumulators(2024, **fields)  # type: ignore[arg-type]
    assert caught.value.code is ErrorCode.ACCUMULATORS_INVALID


def test_inpatient_admissions_count_and_outpatient_do_not() -> None:
    tariff = make_tariff(flat_layer())
    inpatient = settle(make_claim(), tariff, Accumulators(2024, admissions=2))
    outpatient = settle(make_claim(visit_type="outpatient"), tariff, Accumulators(2024, admissions=2))
    assert inpatient.accumulators_after.admissions == 3
    assert outpatient.accumulators_after.admissions == 2
    assert inpatient.accumulators_after.paid == {"390100": Decimal("80.00")}
    assert inpatient.accumulators_before.paid == {}


def test_admissions_are_counted_by_level_too() -> None:
    tariff = make_tariff(flat_layer())
    before = Accumulators(2024, admissions=2, admissions_by_level={"township": 2})
    city = settle(make_claim(level="city"), tariff, before)
    township = settle(make_claim(level="township"), tariff, before)
    outpatient = settle(make_claim(visit_type="outpatient"), tariff, before)
    assert city.accumulators_after.admissions_by_level == {"township": 2, "city": 1}
    assert township.accumulators_after.admissions_by_level == {"township": 3}
    assert outpatient.accumulators_after.admissions_by_level == {"township": 2}
    assert before.admissions_by_level == {"township": 2}  # the figures handed in are never changed
