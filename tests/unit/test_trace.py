from __future__ import annotations

from decimal import Decimal

from settlement.domain.accumulators import Accumulators
from settlement.domain.settle import settle
from settlement.domain.trace import TraceStep
from tests.factories import flat_layer, make_claim, make_tariff


def test_a_step_explains_itself_with_its_source() -> None:
    step = TraceStep("rate.flat", (("amount", Decimal("100.00")), ("rate", Decimal("0.80"))), Decimal("80.00"),
                     "SLYB-2023-81")
    assert step.explain() == "rate.flat(amount=100.00, rate=0.80) -> 80.00 [SLYB-2023-81]"
    assert TraceStep("eligibility", (("reason", "x"),)).explain() == "eligibility(reason=x)"


def test_wire_form_keeps_json_types_and_stringifies_the_rest() -> None:
    step = TraceStep("x", (("n", 3), ("flag", True), ("none", None), ("text", "a"), ("amount", Decimal("1.50")),
                           ("set", frozenset({"b", "a"})), ("list", (Decimal("1"), "z"))), Decimal("2.00"))
    assert step.as_dict() == {
        "rule": "x",
        "inputs": {"n": 3, "flag": True, "none": None, "text": "a", "amount": "1.50", "set": ["a", "b"],
                   "list": ["1", "z"]},
        "output": "2.00",
        "source": None,
    }
    assert TraceStep("y", ()).as_dict()["output"] is None


def test_every_payer_number_has_a_trace() -> None:
    result = settle(make_claim(), make_tariff(flat_layer()), Accumulators(2024))
    rules = [step.rule for step in result.payers[0].trace]
    assert rules == ["base", "rate.flat"]
    assert result.payers[0].trace[-1].output == result.payers[0].paid
