"""Money: exact decimals, one rounding rule, fen conversion and a sum-preserving split.

Rounding policy (the only place it is defined): every amount the engine produces is rounded to the fen
(0.01 yuan) with ROUND_HALF_UP: each line's over-limit and self-paid-first parts, and each payer layer's share.
The patient's share is never rounded on its own: it is the residual of the bill after every payer, so the
settlement always balances exactly.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation

FEN = Decimal("0.01")
ZERO = Decimal("0.00")
ONE = Decimal("1")

# Up to 12 integer digits (hundreds of billions of yuan) and exactly 0-2 decimals: no exponents, no signs
# other than an optional leading minus, no NaN or infinity.
# (fullmatch, ASCII digits: Decimal() would also take a trailing newline or another script's digits.)
_AMOUNT_RE = re.compile(r"-?[0-9]{1,12}(\.[0-9]{1,2})?")
_DECIMAL_RE = re.compile(r"-?[0-9]{1,12}(\.[0-9]{1,6})?")


def money(value: Decimal) -> Decimal:
    """Round to the fen, half up. The one rounding function of the engine."""
    return value.quantize(FEN, rounding=ROUND_HALF_UP)


def parse_amount(text: str) -> Decimal:
    """Parse a money string such as '12.50'; reject floats' notations, NaN and more than two decimals."""
    if not isinstance(text, str) or not _AMOUNT_RE.fullmatch(text):
        raise ValueError(f"not a money amount with at most two decimals: {text!r}")
    return Decimal(text).quantize(FEN)


def parse_decimal(text: str, places: int = 6) -> Decimal:
    """Parse a plain decimal string (quantities, unit prices, rates) with at most `places` decimals."""
    if not isinstance(text, str) or not _DECIMAL_RE.fullmatch(text):
        raise ValueError(f"not a decimal number: {text!r}")
    value = Decimal(text)
    if value.as_tuple().exponent < -places:  # type: ignore[operator]
        raise ValueError(f"more than {places} decimal places: {text!r}")
    return value


def to_fen(amount: Decimal) -> int:
    """Integer fen for storage; refuses an amount that is not already fen-exact."""
    fen = amount * 100
    if fen != fen.to_integral_value():
        raise ValueError(f"amount is not a whole number of fen: {amount}")
    return int(fen)


def from_fen(fen: int) -> Decimal:
    return (Decimal(fen) / 100).quantize(FEN)


def fmt(amount: Decimal) -> str:
    """Wire form of an amount: a decimal string with exactly two places."""
    text = str(amount)
    # Nearly every amount is already in fen: two places, and never in exponent form then (a point third from
    # the end can only mean that), so the quantize (half of a reply's cost of writing amounts) is skipped.
    if text[-3:-2] == ".":
        return text
    return str(amount.quantize(FEN))


def allocate(total: Decimal, weights: Sequence[Decimal]) -> list[Decimal]:
    """Split `total` (fen-exact, >= 0) in proportion to non-negative `weights`; the parts sum to `total`.

    Largest-remainder method in fen: each part is first rounded down, then the leftover fen go to the parts
    with the largest remainders (earliest first on ties), so the split is deterministic.
    """
    if total < 0:
        raise ValueError("cannot allocate a negative total")
    weight_sum = sum(weights, ZERO)
    if weight_sum <= 0:
        if total == 0:
            return [ZERO for _ in weights]
        raise ValueError("cannot allocate a positive total over zero weights")
    total_fen = to_fen(total)
    floors: list[int] = []
    remainders: list[tuple[Decimal, int]] = []
    for index, weight in enumerate(weights):
        exact = Decimal(total_fen) * weight / weight_sum
        floor = int(exact.to_integral_value(rounding=ROUND_DOWN))
        floors.append(floor)
        remainders.append((exact - floor, index))
    leftover = total_fen - sum(floors)
    for _, index in sorted(remainders, key=lambda item: (-item[0], item[1]))[:leftover]:
        floors[index] += 1
    return [from_fen(part) for part in floors]


def is_fen_exact(value: Decimal) -> bool:
    try:
        return value == value.quantize(FEN)
    except InvalidOperation:
        return False
