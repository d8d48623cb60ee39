"""The canonical result is written as text and parsed once; it must be the very tree the node-by-node builder
(kept here as the reference) made, whatever the values hold."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from settlement.soap import canonical


def reference_fill(element: etree._Element, value: Any) -> None:
    """The builder the service used before: one lxml call per node."""
    sub = etree.SubElement
    if isinstance(value, dict):
        for key, item in value.items():
            name = str(key)
            if name in canonical.OMITTED:
                continue
            child = sub(element, name) if canonical._is_name(name) else sub(element, "entry", key=name)
            if isinstance(item, str):
                child.text = item
            else:
                reference_fill(child, item)
    elif isinstance(value, list):
        for item in value:
            child = sub(element, "item")
            if isinstance(item, str):
                child.text = item
            else:
                reference_fill(child, item)
    elif value is None:
        return
    elif isinstance(value, bool):
        element.text = "true" if value else "false"
    else:
        element.text = str(value)


def reference(body: dict[str, Any]) -> bytes:
    root = etree.Element("result", operation="settle", status="201", replayed="false")
    reference_fill(root, body)
    return etree.tostring(root, method="c14n")


def written(body: dict[str, Any]) -> bytes:
    parts = ['<result operation="settle" status="201" replayed="false">']
    canonical.write(parts, body)
    parts.append("</result>")
    return etree.tostring(etree.fromstring("".join(parts).encode("utf-8")), method="c14n")


# XML 1.0 characters only (what a parsed request can carry), with the ones that need escaping made likely.
XML_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\ufffe\uffff",
                                 min_codepoint=0x20) | st.sampled_from("&<>\"'\r\n\t"), max_size=8)
KEYS = st.one_of(st.sampled_from(["total", "lines", "trace", "paid", "a.b", "x-y"]), st.text("0123456789", min_size=1,
                 max_size=6), XML_TEXT)
VALUES = st.recursive(st.none() | st.booleans() | st.integers() | XML_TEXT,
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
                      max_leaves=12)


@settings(max_examples=1000, deadline=None)
@given(st.dictionaries(KEYS, VALUES, max_size=5))
def test_the_text_is_the_tree_the_node_builder_made(body: dict[str, Any]) -> None:
    assert written(body) == reference(body)


def test_a_carriage_return_and_attribute_white_space_survive_the_parse() -> None:
    """The controls: without the character references a parser turns a raw CR into a newline and a tab or
    newline in an attribute into a space, so the trees would differ."""
    body = {"note": "a\r\nb", "390100 \t\n": "x", "A\n": "y"}  # "A\n" is no element name (a "$" took it for one)
    assert written(body) == reference(body)
    raw = etree.fromstring('<r k="a\tb">c\rd</r>')
    assert raw.get("k") == "a b" and raw.text == "c\nd"
