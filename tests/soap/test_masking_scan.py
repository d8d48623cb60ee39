"""The envelope log's mask: ID numbers wherever they stand (settlement.domain.privacy.mask_id_numbers, tested in
tests/unit and tests/property), known names, WS-Security secrets, and the text of each dialect's personal elements
whatever it holds (an ID number too malformed to be recognised as one, a name the message never mapped)."""

from __future__ import annotations

import pytest

from settlement.soap.dialects import load_registry
from settlement.soap.gateway import mask, mask_personal
from tests.factories import ROOT


def test_the_edges() -> None:
    for text, masked in [
        ("<idNumber>611002195001010009</idNumber>", "<idNumber>611002********0009</idNumber>"),
        ("A611002195001010009", "A611002********0009"),  # glued to a letter: masked now
        ("6110021950010100091", "6110021950010100091"),  # 19 digits: a longer number
        ("11010519491231002X,11010519491231002x", "110105********002X,110105********002X"),
        ("123456789012345678", "123456789012345678"),  # 18 digits that are no ID number (year 7890)
        ("<reason>６１１００２１９５００１０１０００９</reason>", "<reason>611002********0009</reason>"),
    ]:
        assert mask(text, set()) == masked, text


def test_a_personal_element_is_masked_whatever_it_holds() -> None:
    assert mask_personal("611002196813400038") == "611002********0038"  # month 13: no ID number's shape
    assert mask_personal(" 611002********0038 ") == "611002********0038"  # masked already: kept as it is
    assert mask_personal("王喆") == "王*"
    assert mask_personal("") == ""


@pytest.mark.parametrize(("dialect", "message", "hidden"), [
    ("rural-ncms", "<request><body><D504_02>王喆</D504_02><D504_05>611002196813400038</D504_05></body></request>",
     ["王喆", "196813400"]),
    ("legacy-gbk", "<input><prm_aac003>王喆</prm_aac003><prm_aac002>611002196813400038</prm_aac002></input>",
     ["王喆", "196813400"]),
    ("standard", "<EligibilityRequest><idNumber>611002196813400038</idNumber></EligibilityRequest>", ["196813400"]),
])
def test_every_dialect_lists_its_personal_elements(dialect: str, message: str, hidden: list[str]) -> None:
    """A message the mapping never read (no name known) keeps none of them; without the manifest's list (the
    rural dialect had none) it would keep them all."""
    pattern = load_registry(ROOT / "adapters").dialects[dialect].personal_pattern
    assert pattern is not None
    for text in (message, message.replace("<", "&lt;").replace(">", "&gt;")):  # plain, and inside a string
        stored = mask(text, set(), pattern)
        assert not [part for part in hidden if part in stored], stored
        assert all(part in mask(text, set(), None) for part in hidden)  # the planted fault: no list
