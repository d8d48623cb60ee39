"""The envelope log masks ID numbers by scanning for runs of digits (several times faster on an envelope full of
amounts and codes); it must mask exactly what the regular expression alone masks."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from settlement.domain.privacy import mask_id_number
from settlement.soap.gateway import _ID_NUMBER, mask_id_numbers

IDS = ["611002195001010009", "11010519491231002X", "11010519491231002x", "611002185001010009"]
PIECES = st.one_of(
    st.sampled_from(IDS),
    st.text("0123456789", min_size=1, max_size=22),
    st.text("0123456789Xx<>abA _-/\"=", max_size=6),
    st.text(max_size=4),
)


def by_regex(text: str) -> str:
    return _ID_NUMBER.sub(lambda match: mask_id_number(match.group(0)), text)


@settings(max_examples=2000, deadline=None)
@given(st.lists(PIECES, max_size=8).map("".join))
def test_the_scan_masks_what_the_regular_expression_masks(text: str) -> None:
    assert mask_id_numbers(text) == by_regex(text)


def test_the_edges() -> None:
    for text, masked in [
        ("<idNumber>611002195001010009</idNumber>", True),  # in an element
        ("611002195001010009", True),  # the whole text
        ("A611002195001010009", False),  # glued to a letter on the left
        ("6110021950010100091", False),  # 19 digits: a longer number
        ("11010519491231002X,11010519491231002x", True),  # X check characters, two of them
        ("123456789012345678", False),  # 18 digits that are no ID number (year 78, month 90)
    ]:
        assert (mask_id_numbers(text) != text) is masked, text
        assert mask_id_numbers(text) == by_regex(text)


def test_a_scan_that_only_tried_runs_of_18_would_miss_the_x_check_character() -> None:
    """The control: an ID number ends in a digit or X, so runs of 18 digits alone are not enough."""
    text = "<id>11010519491231002X</id>"
    zeros = text.encode().translate(bytes.maketrans(b"123456789", b"000000000"))
    assert b"0" * 18 not in zeros and b"0" * 17 in zeros
    assert mask_id_numbers(text) == by_regex(text) != text
