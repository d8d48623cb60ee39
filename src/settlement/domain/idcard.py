"""Resident identity numbers (GB 11643-1999): 18 characters, ISO 7064 MOD 11-2 check character."""

from __future__ import annotations

import re
from datetime import date
from operator import mul

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
# fullmatch and ASCII digits: "$" would let "...X\n" through and "\d" any script's digits, each a second spelling
# of one person (a second set of annual figures, a second start for every cap).
_SHAPE = re.compile(r"[0-9]{17}[0-9X]")


def check_character(first17: str) -> str:
    return _CHECK[sum(map(mul, map(int, first17), _WEIGHTS)) % 11]


def id_number_problem(id_number: str) -> str | None:
    """None when valid, else a reason that does not repeat the number (it is personal data)."""
    if not _SHAPE.fullmatch(id_number):
        return "must be 17 digits followed by a digit or X"
    try:
        date(int(id_number[6:10]), int(id_number[10:12]), int(id_number[12:14]))
    except ValueError:
        return "birth date part is not a real date"
    if check_character(id_number[:17]) != id_number[17]:
        return "check character does not match (GB 11643 MOD 11-2)"
    return None
