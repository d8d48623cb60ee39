"""ID numbers in free text (reasons, notes, file names, envelopes) are masked wherever and however they are written.
The random versions of these cases are in tests/property/test_free_text_masking.py."""

from __future__ import annotations

import pytest

from settlement.domain.privacy import (
    _RUN,
    _mask_run,
    cut,
    looks_like_id_number,
    mask_free_text,
    mask_id_numbers,
)
from tests.factories import VALID_ID

ID = "611002196804120038"
MASKED = "611002********0038"
FULL_WIDTH = "".join(chr(0xFF10 + int(char)) for char in ID)


@pytest.mark.parametrize(("text", "stored"), [
    # The example, and the number glued to letters, Chinese or punctuation on either side.
    ("王喆 611002196804120038 录入错误", f"王喆 {MASKED} 录入错误"),
    (f"ID{ID}abc", f"ID{MASKED}abc"),
    (f"身份证{ID}号", f"身份证{MASKED}号"),
    (f"<reason>{ID}</reason>", f"<reason>{MASKED}</reason>"),
    # Written in full-width digits, split by zero-width characters, spaces, hyphens and the like.
    (FULL_WIDTH, MASKED),
    (f"原因：{FULL_WIDTH[:9]}{ID[9:]}", f"原因：{MASKED}"),
    ("611002\u200b1968\u200d0412\ufeff0038", MASKED),
    ("6110 0219 6804 1200 38", MASKED),
    ("611002-19680412-0038", MASKED),
    ("611002\u00a019680412\u30000038", MASKED),
    ("611002\u00ad196804120038", MASKED),
    ("6\u03021\u03021002196804120038", MASKED),  # combining marks on the digits
    ("611002\U000e0020196804120038", MASKED),  # a tag character
    ("\u0666\u0661\u0661\u0660\u0660\u0662196804120038", MASKED),  # Arabic-Indic digits
    # The X check character: upper or lower case, full-width, after a separator.
    (VALID_ID, "110105********002X"),
    ("11010519491231002x", "110105********002X"),
    ("11010519491231002\uff38", "110105********002X"),
    ("1101051949123100 2 x", "110105********002X"),
    # Old 15-digit numbers (YYMMDD).
    ("611002680412003", "611002*****2003"),
    ("补录 6110 0268 0412 003 号", "补录 611002*****2003 号"),
    # Other digits next to it, with something between: the number is found among them.
    ("100 611002196804120038", f"100 {MASKED}"),
    (f"{ID} 5", f"{MASKED} 5"),
    ("  1 2  3 611002 1968041200 38 x", f"  1 2  3 {MASKED} x"),
    (f"a {VALID_ID} {ID} b", f"a 110105********002X {MASKED} b"),
    (f"{ID} {ID}", f"{MASKED} {MASKED}"),  # two in one run
    # Two numbers that overlap in one run (611002680412001 and 680412001105000) are masked as one.
    ("611002 680412 001 105000", "611002***********5000"),
])
def test_id_numbers_are_masked(text: str, stored: str) -> None:
    assert mask_id_numbers(text) == stored


@pytest.mark.parametrize("text", [
    "001109000010001",  # a catalogue code: 15 digits, region 00
    "H61100200011-20240312-000001",  # a message id
    "H61100200011-20240312101500-0001",
    "6110021968041200381",  # 19 digits: another number
    "123456789012345678",  # 18 digits without a birth date (year 7890)
    "611002180013120038",  # month 13
    "611002190001000038",  # day 00
    "611002171001010038",  # year 1710
    "12345 67890 12345",  # 15 digits in three groups, no birth date
    "                    ",  # separators without digits
    "1 2 3 4 5 6 7 8 9 1 2 3 4 5",  # 14 digits, spread out
    "amount 35.00, quantity 12",
    "short",
    "",
])
def test_other_text_is_kept(text: str) -> None:
    assert mask_id_numbers(text) == text


def test_the_fast_path_and_the_general_one_agree() -> None:
    """Texts with ASCII digits and separators only take the fast path (on bytes); each case gives what the
    general expression gives."""
    def general(text: str) -> str:
        return _RUN.sub(lambda match: _mask_run(match.group()), text)

    for text in ["王喆 611002196804120038 录入错误", "100 611002196804120038", "611002 680412 001 105000",
                 "  1 2  3 611002 1968041200 38 x", "001109000010001 611002680412003", "X" * 20 + ID,
                 "H61100200011-20240312101500-0001 " + VALID_ID.lower()]:
        assert mask_id_numbers(text) == general(text), text


def test_the_shape_of_an_id_number() -> None:
    assert looks_like_id_number(ID) and looks_like_id_number(VALID_ID) and looks_like_id_number("611002680412003")
    assert not looks_like_id_number("011002196804120038")
    assert not looks_like_id_number("611002210004120038")  # year 2100
    assert not looks_like_id_number("611002681304120")  # month 13 in a 15-digit number
    assert not looks_like_id_number("611002680432003")  # day 32


def test_masking_never_lengthens_a_text() -> None:
    """Fields keep their length limits (a reversal's reason is at most 256 characters in the database)."""
    for text in ["611002 - 1968 - 0412 - 0038", FULL_WIDTH, "6110 0268 0412 003"]:
        assert len(mask_id_numbers(text)) <= len(text)


def test_names_of_the_persons_concerned() -> None:
    assert mask_free_text("王喆 611002196804120038 录入错误", ["王喆"]) == f"王* {MASKED} 录入错误"
    assert mask_free_text("王喆与王某", ["王喆", "王", ""]) == "王*与王某"  # one character names nothing
    assert mask_free_text("no names", []) == "no names"


def test_a_masked_number_is_not_found_again() -> None:
    once = mask_id_numbers(f"王喆 {ID} 与 {VALID_ID}")
    assert mask_id_numbers(once) == once


def test_a_cut_drops_the_digits_running_into_it() -> None:
    assert cut("short", 10) == "short"
    assert cut("reason: 611002196804120038 录入错误", 20) == "reason:"  # 12 digits would show the birth date
    assert cut("reason: 6110 0219\u200b6804", 16) == "reason:"
    assert cut("录入错误，重新结算", 4) == "录入错误"
    assert cut("1" * 100_000 + "a", 99_999) == ""  # one pass, however long the run
