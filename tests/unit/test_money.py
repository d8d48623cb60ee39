from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from settlement.domain.money import (
    FEN,
    allocate,
    fmt,
    from_fen,
    is_fen_exact,
    money,
    parse_amount,
    parse_decimal,
    to_fen,
)


@pytest.mark.parametrize(("raw", "rounded"), [
    ("0.005", "0.01"), ("0.004", "0.00"), ("2.675", "2.68"), ("-0.005", "-0.01"), ("33.335", "33.34"),
])
def test_money_rounds_half_up_to_the_fen(raw: str, rounded: str) -> None:
    assert money(Decimal(raw)) == Decimal(rounded)


def test_half_even_would_differ_so_the_rule_matters() -> None:
    # Python's default context rounds half to even: 2.665 -> 2.66. The engine must give 2.67.
    assert Decimal("2.665").quantize(Decimal("0.01")) == Decimal("2.66")
    assert money(Decimal("2.665")) == Decimal("2.67")


@pytest.mark.parametrize("text", ["12", "12.5", "12.50", "0.01", "-3.00", "999999999999.99"])
def test_parse_amount_accepts_plain_decimals(text: str) -> None:
    assert parse_amount(text) == Decimal(text)


@pytest.mark.parametrize("text", ["1e3", "12.345", "NaN", "Infinity", "", " 1.00", "1,000.00", "+1", "1.00\n",
                                  "١.٠٠"])
def test_parse_amount_refuses_other_notations(text: str) -> None:
    with pytest.raises(ValueError, match="not a money amount"):
        parse_amount(text)


def test_parse_amount_refuses_non_strings() -> None:
    with pytest.raises(ValueError, match="not a money amount"):
        parse_amount(1.5)  # type: ignore[arg-type]


def test_parse_decimal_limits_places() -> None:
    assert parse_decimal("0.0325", places=4) == Decimal("0.0325")
    with pytest.raises(ValueError, match="decimal places"):
        parse_decimal("0.03251", places=4)
    with pytest.raises(ValueError, match="not a decimal"):
        parse_decimal("1e-3")


def test_fen_round_trip_and_refusal() -> None:
    assert to_fen(Decimal("123.45")) == 12345
    assert from_fen(12345) == Decimal("123.45")
    assert fmt(Decimal("5")) == "5.00"
    with pytest.raises(ValueError, match="whole number of fen"):
        to_fen(Decimal("0.001"))


def test_is_fen_exact() -> None:
    assert is_fen_exact(Decimal("1.10"))
    assert not is_fen_exact(Decimal("1.105"))
    assert not is_fen_exact(Decimal("NaN"))
    assert not is_fen_exact(Decimal("Infinity"))  # quantize raises: not an amount


def test_allocate_splits_exactly_and_deterministically() -> None:
    assert allocate(Decimal("1.00"), [Decimal(1), Decimal(1), Decimal(1)]) == [
        Decimal("0.34"), Decimal("0.33"), Decimal("0.33")]
    assert allocate(Decimal("0.00"), [Decimal(0), Decimal(0)]) == [Decimal("0.00"), Decimal("0.00")]
    assert allocate(Decimal("10.00"), [Decimal(0), Decimal(5)]) == [Decimal("0.00"), Decimal("10.00")]


def test_allocate_refuses_impossible_splits() -> None:
    with pytest.raises(ValueError, match="negative"):
        allocate(Decimal("-1.00"), [Decimal(1)])
    with pytest.raises(ValueError, match="zero weights"):
        allocate(Decimal("1.00"), [Decimal(0)])


def naive_allocate(total: Decimal, weights: list[Decimal]) -> list[Decimal]:
    """Rounding each part on its own: the planted fault the property below must catch."""
    weight_sum = sum(weights, Decimal(0))
    return [money(total * weight / weight_sum) for weight in weights]


amounts = st.integers(min_value=0, max_value=10**12).map(from_fen)
weight_lists = st.lists(st.integers(min_value=0, max_value=10**9).map(from_fen), min_size=1, max_size=8).filter(
    lambda ws: sum(ws) > 0)


@given(amounts, weight_lists)
def test_allocate_parts_always_sum_to_the_whole(total: Decimal, weights: list[Decimal]) -> None:
    parts = allocate(total, weights)
    assert sum(parts, Decimal(0)) == total
    assert all(part >= 0 and is_fen_exact(part) for part in parts)


def test_the_naive_split_breaks_the_sum() -> None:
    parts = naive_allocate(Decimal("1.00"), [Decimal(1), Decimal(1), Decimal(1)])
    assert sum(parts, Decimal(0)) != Decimal("1.00")


@pytest.mark.parametrize("written", ["1E+2", "-0.00", "0.005", "1.2E+5", "12.3", "-1.23E-7", "99999999999.995", "7"])
def test_fmt_of_amounts_not_in_fen(written: str) -> None:
    assert fmt(Decimal(written)) == str(Decimal(written).quantize(FEN))


@given(st.decimals(allow_nan=False, allow_infinity=False, places=None, min_value=-10**12, max_value=10**12).map(
    lambda value: value.scaleb(-2)) | st.integers(-10**14, 10**14).map(lambda fen: Decimal(fen).scaleb(-2)))
def test_fmt_skips_the_quantize_only_where_it_changes_nothing(amount: Decimal) -> None:
    assert fmt(amount) == str(amount.quantize(FEN))
