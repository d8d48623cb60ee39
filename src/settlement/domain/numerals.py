"""Amounts in capital numerals (人民币大写), as the patient's slip writes what they pay.

The convention (《支付结算办法》 allows two readings in places; this is the one the engine uses everywhere):
- 拾 is always preceded by its digit: 10.00 is 壹拾元整, never 拾元整.
- A run of zeros between two non-zero digits is read as one 零: 1,000,010.50 is 壹佰万零壹拾元伍角.
- A run that ends on a 万 or 亿 position whose unit is written is not read (the unit already separates):
  107,000.53 is 壹拾万柒仟元伍角叁分; when that group is all zeros, the 零 stays: 100,001,000.00 is
  壹亿零壹仟元整.
- 零 stands between 元 and 分 when 角 is zero (10.05 is 壹拾元零伍分); none stands between 元 and 角
  (1,680.32 is 壹仟陆佰捌拾元叁角贰分). An amount below one yuan has no 元 part (0.50 is 伍角, 0.05 is 伍分).
- 整 follows 元 when there are no 角 and 分, and nothing follows 角 (100,000.00 is 壹拾万元整, 10.50 is
  壹拾元伍角). Zero is 零元整. A negative amount (a reversal) is preceded by 负.
"""

from __future__ import annotations

from decimal import Decimal

from settlement.domain.money import to_fen

DIGITS = "零壹贰叁肆伍陆柒捌玖"
PLACES = ("", "拾", "佰", "仟")
GROUPS = ("", "万", "亿")
LARGEST = 10**12 - 1  # yuan: 亿 is the largest unit named (9,999 亿 and below)


def _yuan(value: int) -> str:
    """The integer part, with 零 for every zero run between non-zero digits except one ending on a written
    group unit."""
    digits = str(value)
    out: list[str] = []
    zeros = False  # a zero run waits to be read as one 零
    group_written = False  # the current group has a non-zero digit (so its unit will be written)
    for index, char in enumerate(digits):
        position = len(digits) - 1 - index
        place, group = position % 4, position // 4
        if place == 3 or index == 0:
            group_written = False
        if char == "0":
            zeros = True
        else:
            if zeros:
                out.append("零")
            out.append(DIGITS[int(char)] + PLACES[place])
            zeros = False
            group_written = True
        if place == 0 and group > 0 and group_written:
            out.append(GROUPS[group])
            zeros = False  # the unit separates: a run ending here is not read
    return "".join(out)


def capital(amount: Decimal) -> str:
    """`amount` (yuan, at most two places) in capital numerals, e.g. 2949.74 -> 贰仟玖佰肆拾玖元柒角肆分."""
    fen = to_fen(amount)
    sign = "负" if fen < 0 else ""
    fen = abs(fen)
    yuan, jiao, cents = fen // 100, fen // 10 % 10, fen % 10
    if yuan > LARGEST:
        raise ValueError(f"{amount} is beyond the largest amount capital numerals name here")
    if fen == 0:
        return "零元整"
    text = f"{_yuan(yuan)}元" if yuan else ""
    if jiao:
        text += DIGITS[jiao] + "角"
    elif cents and yuan:
        text += "零"
    if cents:
        text += DIGITS[cents] + "分"
    elif not jiao:
        text += "整"
    return sign + text
