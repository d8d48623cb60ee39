"""The service writes its replies, stored claims and request hashes with orjson. They must be the very bytes the
standard library wrote before (replies are replayed byte for byte, and a request hash recorded under a key before
an upgrade must still match the same request after it)."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from settlement.domain.tariff import BasePart
from settlement.services.settlements import canonical_hash, dumps


def stdlib_dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def stdlib_hash(operation: str, payload: Any) -> str:
    import hashlib

    text = json.dumps([operation, payload], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# Text as requests bring it: any character but a lone surrogate (which no UTF-8 body can carry).
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
SCALARS = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | TEXT
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES)
def test_replies_are_written_as_the_standard_library_wrote_them(value: Any) -> None:
    assert dumps(value) == stdlib_dumps(value)


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES)
def test_request_hashes_are_those_recorded_before(value: Any) -> None:
    assert canonical_hash("settle", value) == stdlib_hash("settle", value)


def test_the_awkward_characters_and_enum_keys() -> None:
    value = {"name": "王喆堃 𠮷", "note": "tab\there \"quoted\" back\\slash \x00\x1f\u2028\u2029 é",
             "inputs": {BasePart.IN_SCOPE: "1.00"}, "z": 1, "a": [True, None, -5]}
    assert dumps(value) == stdlib_dumps(value)
    assert canonical_hash("settle", value) == stdlib_hash("settle", value)
    assert '"in_scope":"1.00"' in dumps(value)


def test_orjson_left_to_its_defaults_would_differ() -> None:
    """The controls: without its options orjson refuses the trace's enum keys and keeps keys unsorted, so the
    checks above are the ones that keep the options right."""
    try:
        orjson.dumps({BasePart.IN_SCOPE: 1})
    except TypeError:
        pass
    else:  # pragma: no cover - orjson's documented behaviour
        raise AssertionError("orjson accepted a non-str key without OPT_NON_STR_KEYS")
    unsorted = ["settle", {"b": 1, "a": 2}]
    assert orjson.dumps(unsorted).decode() != json.dumps(unsorted, sort_keys=True, separators=(",", ":"))


def test_what_orjson_refuses_is_written_as_before() -> None:
    lone_surrogate = {"name": "\ud800"}
    huge = {"amount": 2**70}
    assert dumps(lone_surrogate) == stdlib_dumps(lone_surrogate)
    assert dumps(huge) == stdlib_dumps(huge)
    assert canonical_hash("settle", huge) == stdlib_hash("settle", huge)
