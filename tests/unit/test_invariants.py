"""The identity checker catches every planted fault; settle refuses to return a broken result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal

import pytest

from settlement.domain import settle as settle_module
from settlement.domain.accumulators import Accumulators
from settlement.domain.errors import ErrorCode, InvariantViolation
from settlement.domain.payers import ChainState, LayerResult, apply_layer
from settlement.domain.settle import Settlement, settle, settlement_violations
from settlement.domain.tariff import Caps, Deductible, DeductiblePer, Layer, Limit, Rates
from tests.factories import line, make_claim, make_tariff

TARIFF = make_tariff(
    Layer("basic", "390100", "basic", deductible=Deductible(DeductiblePer.YEAR, Decimal("100.00")),
          rates=Rates(rate=Decimal("0.80")), caps=Caps(per_year=Decimal("1000.00"))),
    Layer("assist", "610100", "assist", rates=Rates(rate=Decimal("0.50")), caps=Caps(per_visit=Decimal("500.00"))),
)


def good() -> Settlement:
    claim = make_claim((line("1", "A1", "1", "1000.00"), line("2", "B10", "1", "200.00"), line("3", "C1", "1", "5.00")))
    return settle(claim, TARIFF, Accumulators(2024))


def with_payer(result: Settlement, index: int, **changes: object) -> Settlement:
    payers = list(result.payers)
    payers[index] = payers[index]._replace(**changes)  # type: ignore[arg-type]
    return replace(result, payers=tuple(payers))


def test_a_correct_settlement_has_no_violations() -> None:
    result = good()
    assert settlement_violations(result) == []
    # Basic (1,180 - 100) x 80% = 864.00; assistance 316.00 x 50% = 158.00.
    assert result.paid_by_fund() == {"390100": Decimal("864.00"), "610100": Decimal("158.00")}
    assert result.total == Decimal("1205.00")


PLANTED: dict[str, Callable[[Settlement], Settlement]] = {
    "patient one fen short": lambda r: replace(r, patient_pays=r.patient_pays - Decimal("0.01")),
    "negative patient share": lambda r: replace(
        with_payer(r, 1, paid=r.payers[1].paid + r.patient_pays + Decimal("1.00")), patient_pays=Decimal("-1.00")),
    "parts do not sum": lambda r: replace(r, decomposition=replace(r.decomposition,
                                                                   in_scope=r.decomposition.in_scope + 1)),
    "line parts do not sum": lambda r: replace(r, decomposition=replace(r.decomposition, lines=(
        r.decomposition.lines[0]._replace(in_scope=Decimal("1.00")), *r.decomposition.lines[1:]))),
    "negative line part": lambda r: replace(r, decomposition=replace(r.decomposition, lines=(
        r.decomposition.lines[0]._replace(in_scope=Decimal("1001.00"), pre_self_pay=Decimal("-1.00")),
        *r.decomposition.lines[1:]))),
    "lines do not add up to the bill": lambda r: replace(r, decomposition=replace(
        r.decomposition, total=r.decomposition.total + 1, out_of_catalogue=r.decomposition.out_of_catalogue + 1),
        patient_pays=r.patient_pays + 1),
    "sub-fen amount": lambda r: replace(r, patient_pays=r.patient_pays + Decimal("0.001")),
    "negative payer": lambda r: replace(with_payer(r, 1, paid=Decimal("-1.00")),
                                        patient_pays=r.patient_pays + r.payers[1].paid + 1),
    "payer above its base": lambda r: with_payer(r, 1, base=r.payers[1].paid - Decimal("0.01")),
    "payer above its visit cap": lambda r: with_payer(r, 1, visit_cap=Decimal("10.00")),
    "payer above its year cap": lambda r: with_payer(r, 0, year_cap=Decimal("700.00")),
    "deductible above the annual": lambda r: with_payer(r, 0, annual_deductible=Decimal("50.00")),
    "accumulator not moved": lambda r: replace(r, accumulators_after=replace(
        r.accumulators_after, paid={**r.accumulators_after.paid, "610100": Decimal("0.00")})),
}


def limited() -> Settlement:
    """Basic pays 80% of 1,000.00 within an outpatient limit of 1,000.00 a year, of which 150.00 was used."""
    tariff = make_tariff(Layer("outpatient", "390100", "outpatient", rates=Rates(rate=Decimal("0.80")),
                               limit=Limit("outpatient_pooling", Decimal("1000.00"))))
    before = Accumulators(2024, limits={("390100", "outpatient_pooling"): Decimal("150.00")})
    return settle(make_claim((line("1", "A1", "1", "1000.00"),), visit_type="outpatient"), tariff, before)


LIMIT_FAULTS: dict[str, Callable[[Settlement], Settlement]] = {
    "payer above its limit": lambda r: with_payer(r, 0, limit_cap=Decimal("900.00")),
    "limit figure not moved": lambda r: replace(r, accumulators_after=replace(
        r.accumulators_after, limits={("390100", "outpatient_pooling"): Decimal("150.00")})),
}


def test_a_limited_settlement_has_no_violations() -> None:
    result = limited()
    assert settlement_violations(result) == []
    assert result.accumulators_after.limits == {("390100", "outpatient_pooling"): Decimal("950.00")}


@pytest.mark.parametrize("fault", LIMIT_FAULTS, ids=list(LIMIT_FAULTS))
def test_every_planted_limit_fault_is_reported(fault: str) -> None:
    problems = settlement_violations(LIMIT_FAULTS[fault](limited()))
    assert problems and "outpatient_pooling" in str(problems[0]), problems


@pytest.mark.parametrize("fault", PLANTED, ids=list(PLANTED))
def test_every_planted_fault_is_reported(fault: str) -> None:
    problems = settlement_violations(PLANTED[fault](good()))
    assert problems, fault
    assert all(problem.code is ErrorCode.INVARIANT_VIOLATED for problem in problems)


def naive_apply_layer(layer: Layer, state: ChainState) -> LayerResult:
    """A layer engine that forgets caps: the planted fault settle must refuse to return."""
    result = apply_layer(replace(layer, caps=Caps()), state)
    return result._replace(visit_cap=layer.caps.per_visit, year_cap=layer.caps.per_year)


def test_settle_refuses_to_return_a_result_that_breaks_an_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settle_module, "apply_layer", naive_apply_layer)
    claim = make_claim((line("1", "A1", "1", "5000.00"),))
    with pytest.raises(InvariantViolation) as caught:
        settle(claim, TARIFF, Accumulators(2024))
    assert caught.value.code is ErrorCode.INVARIANT_VIOLATED
    assert "cap" in str(caught.value)
