from __future__ import annotations

import pytest

from settlement.domain.idcard import check_character, id_number_problem
from settlement.domain.privacy import mask_id_number, mask_name
from tests.factories import OTHER_VALID_ID, VALID_ID


@pytest.mark.parametrize("id_number", [VALID_ID, OTHER_VALID_ID])
def test_valid_numbers_pass(id_number: str) -> None:
    assert id_number_problem(id_number) is None


def test_check_character_of_known_numbers() -> None:
    assert check_character(VALID_ID[:17]) == "X"
    assert check_character(OTHER_VALID_ID[:17]) == "1"


@pytest.mark.parametrize(("id_number", "reason"), [
    (VALID_ID[:17] + "1", "check character"),  # one mutated character
    (OTHER_VALID_ID[:16] + "81", "check character"),
    ("11010519491331002X", "birth date"),  # month 13
    ("1101051949123100", "17 digits"),
    ("11010519491231002x", "17 digits"),  # lower-case x is not the standard's
    ("ABCDEFGHIJKLMNOPQR", "17 digits"),
    # Second spellings of a valid number (each would be a second person with caps of its own): a "$" anchor lets
    # a trailing newline through, "\\d" another script's digits; the check character is right in both.
    (VALID_ID + "\n", "17 digits"),
    ("".join(chr(0x660 + int(c)) if c.isdigit() else c for c in VALID_ID), "17 digits"),
    (" " + VALID_ID, "17 digits"),
])
def test_invalid_numbers_name_the_reason_without_the_number(id_number: str, reason: str) -> None:
    problem = id_number_problem(id_number)
    assert problem is not None
    assert reason in problem
    assert id_number not in problem


def test_masking() -> None:
    assert mask_id_number(VALID_ID) == "110105********002X"
    assert mask_id_number("12345") == "*****"
    assert mask_name("王喆") == "王*"
    assert mask_name("欧阳堃堃") == "欧***"
    assert mask_name("") == ""
