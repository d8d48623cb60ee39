"""Capital numerals (人民币大写) against the hard cases of docs/domain.md and an independent implementation.

The reference below works another way than settlement.domain.numerals: it writes every digit with its place and
group unit ("壹拾零万壹仟零佰零拾零") and then removes what the convention does not read, with regular expressions.
"""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from settlement.domain.numerals import LARGEST, capital

DIGITS = "零壹贰叁肆伍陆柒捌玖"


def reference_yuan(value: int) -> str:
    digits = str(value)
    full = ""
    for index, char in enumerate(digits):
        position = len(digits) - 1 - index
        full += DIGITS[int(char)] + ("", "拾", "佰", "仟")[position % 4]
        if position % 4 == 0 and position:
            full += ("", "万", "亿")[position // 4]
    full = re.sub("零[拾佰仟]", "零", full)
    full = re.sub("零+", "零", full)
    full = full.replace("亿零万", "亿零")  # an empty 万 group after 亿 is read as one 零
    full = re.sub("零+", "零", full)
    full = re.sub("零([万亿])", r"\1", full)  # a run ending on a written unit is not read
    return full.rstrip("零") or "零"


def reference(amount: Decimal) -> str:
    sign = "负" if amount < 0 else ""
    fen = int(abs(amount) * 100)
    yuan, jiao, cents = divmod(fen, 100)[0], fen % 100 // 10, fen % 10
    if fen == 0:
        return "零元整"
    head = reference_yuan(yuan) + "元" if yuan else ""
    tail = {(False, False): "整", (True, False): f"{DIGITS[jiao]}角",
            (False, True): ("零" if yuan else "") + f"{DIGITS[cents]}分",
            (True, True): f"{DIGITS[jiao]}角{DIGITS[cents]}分"}[(jiao > 0, cents > 0)]
    return sign + head + tail


HARD_CASES = [
    ("2949.74", "贰仟玖佰肆拾玖元柒角肆分"),  # the README's example patient
    ("1000010.50", "壹佰万零壹拾元伍角"),
    ("10.05", "壹拾元零伍分"),
    ("100000.00", "壹拾万元整"),
    ("10.00", "壹拾元整"),
    ("0.00", "零元整"),
    ("0.05", "伍分"),
    ("0.50", "伍角"),
    ("1680.32", "壹仟陆佰捌拾元叁角贰分"),
    ("107000.53", "壹拾万柒仟元伍角叁分"),
    ("100100.00", "壹拾万零壹佰元整"),
    ("100001000.00", "壹亿零壹仟元整"),
    ("100000000.00", "壹亿元整"),
    ("1000.05", "壹仟元零伍分"),
    ("1001.00", "壹仟零壹元整"),
    ("-54.60", "负伍拾肆元陆角"),
    ("-2949.74", "负贰仟玖佰肆拾玖元柒角肆分"),
    ("999999999999.99", "玖仟玖佰玖拾玖亿玖仟玖佰玖拾玖万玖仟玖佰玖拾玖元玖角玖分"),
]


@pytest.mark.parametrize(("amount", "expected"), HARD_CASES)
def test_the_hard_cases_read_as_the_convention_says(amount: str, expected: str) -> None:
    assert capital(Decimal(amount)) == expected
    assert reference(Decimal(amount)) == expected


@given(st.integers(min_value=-LARGEST * 100 - 99, max_value=LARGEST * 100 + 99))
def test_every_amount_reads_as_the_independent_reference(fen: int) -> None:
    amount = Decimal(fen).scaleb(-2)
    assert capital(amount) == reference(amount)


@given(st.lists(st.sampled_from("00000123456789"), min_size=1, max_size=12))
def test_amounts_with_zero_runs_read_as_the_reference(digits: list[str]) -> None:
    amount = Decimal("".join(digits))
    assert capital(amount) == reference(amount)


def test_beyond_the_largest_named_unit_is_refused() -> None:
    with pytest.raises(ValueError, match="beyond"):
        capital(Decimal(LARGEST + 1))


def naive_group_reader(amount: Decimal) -> str:
    """A common way to write it: each 4-digit group read alone, 零 before a group below 1,000, empty groups
    skipped. It loses the 零 of an empty 万 group (100,001,000 is read 壹亿壹仟)."""
    yuan = int(amount)
    groups = []
    while yuan:
        yuan, group = divmod(yuan, 10_000)
        groups.append(group)
    text = ""
    for index in range(len(groups) - 1, -1, -1):
        group = groups[index]
        if not group:
            continue
        read = reference_yuan(group)
        if group < 1000 and index < len(groups) - 1:
            read = "零" + read
        text += read + ("", "万", "亿")[index]
    return text + "元整"


def test_control_the_hard_cases_catch_a_group_by_group_reader() -> None:
    misread = [amount for amount, expected in HARD_CASES
               if amount.endswith(".00") and not amount.startswith("-") and amount != "0.00"
               and naive_group_reader(Decimal(amount)) != expected]
    assert misread == ["100001000.00"]
