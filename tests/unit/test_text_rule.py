"""The one rule for text (settlement.domain.text): its checker and its patterns say the same, in Python's regular
expressions and in pydantic-core's (the wire types), for any string."""

from __future__ import annotations

import re
from typing import Annotated

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from settlement.domain.text import FREE_TEXT, ONE_LINE, text_problem
from settlement.wire.fields import Text


class Both(BaseModel):
    line: Annotated[str, Text(10_000)] = ""
    free: Annotated[str, Text(10_000, multiline=True)] = ""


def taken_by_the_wire(field: str, value: str) -> bool:
    try:
        Both.model_validate({field: value})
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize(("value", "multiline", "problem"), [
    ("王喆 录入错误", False, None),
    ("a" * 5, False, None),
    ("a" * 6, False, "is longer than 5 characters"),
    ("a\x00b", False, "holds a control character (U+0000)"),
    ("a\nb", False, "holds a control character (U+000A)"),
    ("a\nb\tc\r", True, None),
    ("a\x0bb", True, "holds a control character (U+000B)"),
    ("\x7f", True, "holds a control character (U+007F)"),
    ("x\x85", False, "holds a control character (U+0085)"),
    ("\ufffe", False, "holds a control character (U+FFFE)"),
    ("\U0001f600\u00a0\u3000", False, None),  # beyond the BMP, no-break and ideographic spaces: characters
])
def test_the_checker(value: str, multiline: bool, problem: str | None) -> None:
    assert text_problem(value, 5 if value.startswith("a" * 5) else 100, multiline=multiline) == problem


@given(st.text(st.characters(codec="utf-8"), max_size=12))  # every character but the surrogates
def test_the_checker_the_patterns_and_the_wire_agree(value: str) -> None:
    # Python's "$" also matches before a final line feed: fullmatch is what JSON Schema's and Rust's "$" mean.
    for pattern, multiline, field in ((ONE_LINE, False, "line"), (FREE_TEXT, True, "free")):
        taken = text_problem(value, 10_000, multiline=multiline) is None
        assert (re.fullmatch(pattern.removeprefix("^").removesuffix("$"), value) is not None) == taken, value
        assert taken_by_the_wire(field, value) == taken, value
