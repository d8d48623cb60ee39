"""Each bad-claim rule is shown to fire on a mutated valid claim, with its stable code and path.

A claim is validated when it is made: building an invalid one raises ClaimRejected with every problem.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated

import pytest
from pydantic import BaseModel, Field

from settlement.domain.claim import SHANGHAI, claim_problems
from settlement.domain.errors import ClaimRejected, ErrorCode, Problem, SettlementError
from settlement.wire.claims import parse_claim
from tests.factories import VALID_ID, line, make_claim


def rejected(build: Callable[[], object]) -> list[Problem]:
    try:
        build()
    except ClaimRejected as error:
        return error.problems
    return []


def codes(build: Callable[[], object]) -> list[ErrorCode]:
    return [problem.code for problem in rejected(build)]


def test_the_base_claim_is_valid() -> None:
    claim = make_claim()
    assert claim_problems(claim) == []
    assert claim.total == Decimal("100.00")
    assert claim.insurance_year == 2024


def test_amount_must_be_quantity_times_price_to_the_fen() -> None:
    good = line("1", "A1", "3", "0.3333")  # 0.9999 -> 1.00
    assert good.amount == Decimal("1.00")
    assert codes(lambda: make_claim((good,))) == []
    bad = line("1", "A1", "3", "0.3333", amount="0.99")
    problems = rejected(lambda: make_claim((bad,)))
    assert [p.code for p in problems] == [ErrorCode.CLAIM_AMOUNT_MISMATCH]
    assert problems[0].path == "lines[0].amount"


@pytest.mark.parametrize("quantity", ["0", "-1"])
def test_quantity_must_be_positive(quantity: str) -> None:
    assert ErrorCode.CLAIM_NON_POSITIVE_QUANTITY in codes(lambda: make_claim((line("1", "A1", quantity, "10.00"),)))


def test_price_must_not_be_negative() -> None:
    assert ErrorCode.CLAIM_NEGATIVE_PRICE in codes(lambda: make_claim((line("1", "A1", "1", "-10.00"),)))


def test_discharge_before_admission() -> None:
    assert codes(lambda: make_claim(admission=date(2024, 6, 16), discharge=date(2024, 6, 15))) == [
        ErrorCode.CLAIM_DATES_OUT_OF_ORDER]


def test_settlement_before_discharge() -> None:
    assert codes(lambda: make_claim(discharge=date(2024, 6, 15),
                                    settled_at=datetime(2024, 6, 14, 23, 0, tzinfo=SHANGHAI))) == [
        ErrorCode.CLAIM_DATES_OUT_OF_ORDER]


def test_settlement_time_needs_a_zone() -> None:
    naive = datetime(2024, 6, 15, 12, 0)  # noqa: DTZ001 - the fault under test
    assert codes(lambda: make_claim(settled_at=naive)) == [ErrorCode.CLAIM_NAIVE_SETTLEMENT_TIME]


def test_empty_bill() -> None:
    assert codes(lambda: make_claim(())) == [ErrorCode.CLAIM_EMPTY]


def test_duplicate_line_ids() -> None:
    assert codes(lambda: make_claim((line("1", "A1", "1", "1.00"), line("1", "A1", "1", "2.00")))) == [
        ErrorCode.CLAIM_DUPLICATE_LINE]


@pytest.mark.parametrize(("change", "code"), [
    ({"scheme": "farmer"}, ErrorCode.CLAIM_UNKNOWN_SCHEME),
    ({"level": "level9"}, ErrorCode.CLAIM_UNKNOWN_LEVEL),
    ({"visit_type": "daycare"}, ErrorCode.CLAIM_UNKNOWN_VISIT_TYPE),
    ({"id_number": VALID_ID[:17] + "0"}, ErrorCode.CLAIM_INVALID_ID_NUMBER),
])
def test_unknown_codes_and_bad_id(change: dict[str, str], code: ErrorCode) -> None:
    assert codes(lambda: make_claim(**change)) == [code]  # type: ignore[arg-type]


def test_declared_total_must_match_the_lines() -> None:
    claim = make_claim()
    assert codes(lambda: replace(claim, declared_total=Decimal("100.00"))) == []
    assert codes(lambda: replace(claim, declared_total=Decimal("100.01"))) == [ErrorCode.CLAIM_TOTAL_MISMATCH]


def test_every_problem_is_reported_and_the_error_carries_the_first_code() -> None:
    with pytest.raises(ClaimRejected) as caught:
        make_claim((line("1", "A1", "0", "1.00", amount="5.00"),), scheme="x", id_number="123")
    assert caught.value.code is ErrorCode.CLAIM_UNKNOWN_SCHEME
    assert len(caught.value.problems) == 4
    assert "123" not in str(caught.value)  # the ID number is personal data


def test_a_settlement_error_needs_a_problem() -> None:
    with pytest.raises(ValueError, match="at least one problem"):
        SettlementError([])
    assert str(Problem(ErrorCode.CLAIM_EMPTY, "", "no lines")) == "CLAIM_EMPTY: no lines"


# Money on the wire: decimal strings only, checked by the wire models before any claim is built.

WIRE_LINE: dict[str, object] = {"id": "1", "code": "A1", "quantity": "2", "unit_price": "50.0000", "amount": "100.00"}
WIRE_CLAIM: dict[str, object] = {
    "hospital": {"code": "H1", "level": "county"},
    "visit": {"id": "V1", "type": "inpatient", "admission_date": "2024-06-10", "discharge_date": "2024-06-15",
              "settled_at": "2024-06-15T10:00:00+08:00"},
    "patient": {"id_number": VALID_ID, "scheme": "resident", "region": "611002"},
    "lines": [WIRE_LINE],
    "total": "100.00",
}


def _wire_line(**change: object) -> dict[str, object]:
    return {**WIRE_CLAIM, "lines": [{**WIRE_LINE, **change}]}


def test_wire_money_becomes_exact_decimals() -> None:
    wire = {**_wire_line(quantity="0.5", unit_price="200.0001", amount="100.00"), "total": "100.00"}
    claim = parse_claim(wire).to_domain()
    first = claim.lines[0]
    assert (first.quantity, first.unit_price, first.amount) == (Decimal("0.5"), Decimal("200.0001"), Decimal("100.00"))
    assert str(first.unit_price) == "200.0001" and str(claim.declared_total) == "100.00"


@pytest.mark.parametrize(("field", "value"), [
    ("amount", 100.0),          # a JSON number: money never travels as a float
    ("amount", 100),
    ("amount", "100.001"),      # more decimals than the field has
    ("quantity", "1.00001"),
    ("unit_price", "1e2"),      # exponents, signs, spaces, separators: Decimal would take them, the wire does not
    ("amount", "+100.00"),
    ("amount", " 100.00"),
    ("amount", "1_00.00"),
    ("amount", "100."),
    ("amount", "١٠٠.٠٠"),       # Arabic-Indic digits: a \d pattern (and Decimal) would accept them
    ("amount", "NaN"),
    ("amount", "1234567890123.00"),
])
def test_wire_money_must_be_a_plain_decimal_string(field: str, value: object) -> None:
    problems = rejected(lambda: parse_claim(_wire_line(**{field: value})))
    assert [(p.code, p.path) for p in problems] == [(ErrorCode.CLAIM_MALFORMED, f"lines[0].{field}")]
    assert "must be a decimal string" in problems[0].message and str(value) not in problems[0].message


def test_a_region_in_another_scripts_digits_is_malformed_not_an_unknown_tariff() -> None:
    wire = {**WIRE_CLAIM, "patient": {**WIRE_CLAIM["patient"], "region": "٦١١٠٠٢"}}  # type: ignore[dict-item]
    problems = rejected(lambda: parse_claim(wire))
    assert [(p.code, p.path) for p in problems] == [(ErrorCode.CLAIM_MALFORMED, "patient.region")]
    assert parse_claim(WIRE_CLAIM).to_domain().patient.region == "611002"  # the control


def test_a_unicode_digit_pattern_in_pydantic_lets_other_scripts_through() -> None:
    # The planted fault for the case above: the Rust regex behind pydantic's `pattern` reads \d as any digit.
    class Naive(BaseModel):
        region: Annotated[str, Field(pattern=r"^\d{6}$")]

    assert Naive(region="٦١١٠٠٢").region == "٦١١٠٠٢"


def test_the_unicode_digit_case_is_one_a_naive_pattern_lets_through() -> None:
    # The planted fault for the case above: Python's \d (as the wire's pattern once was) matches any script's digits.
    assert re.fullmatch(r"-?\d{1,12}(\.\d{1,2})?", "١٠٠.٠٠") and Decimal("١٠٠.٠٠") == 100
