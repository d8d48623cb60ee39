"""Every dialect folder's examples, found on disk: adding a dialect is adding a folder.

For each example: the hospital's envelope maps to exactly the canonical request, and the canonical result renders
to exactly the golden reply envelope, byte for byte (in the dialect's encoding).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from settlement.paths import default_adapters_dir
from settlement.soap.dialects import Dialect, Registry, load_registry
from settlement.soap.gateway import locate, parse_envelope, read_message, render_reply
from settlement.soap.xmlsafe import Limits

ADAPTERS = default_adapters_dir()
REGISTRY = load_registry(ADAPTERS)
EXAMPLES = sorted(path for path in ADAPTERS.glob("*/examples/*") if path.is_dir())


def mapped(registry: Registry, request: bytes) -> dict[str, Any]:
    envelope, _ = parse_envelope(request, None, None, Limits())
    dialect, _, element = locate(registry, envelope, None)
    code, operation, canonical = read_message(dialect, element, Limits())
    return {"dialect": dialect.name, "code": code, "operation": operation, "request": canonical}


def rendered(dialect: Dialect, result: dict[str, Any]) -> bytes:
    return render_reply(dialect, result["operation"], result["status"], result["body"], result.get("replayed", False),
                        result["code"], result.get("message_id", ""), result.get("request")).body


def test_three_dialects_ship_with_examples() -> None:
    assert {"standard", "legacy-gbk", "rural-ncms"} <= set(REGISTRY.dialects)
    for name in REGISTRY.dialects:
        cases = [path for path in EXAMPLES if path.parent.parent.name == name]
        assert len(cases) >= 4, f"{name} has too few examples"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: f"{path.parent.parent.name}/{path.name}")
def test_request_maps_to_its_canonical_request(example: Path) -> None:
    if not (example / "request.xml").exists():
        pytest.skip("a reply-only example")  # pragma: no cover - every shipped example has both
    expected = json.loads((example / "canonical.json").read_text(encoding="utf-8"))
    assert mapped(REGISTRY, (example / "request.xml").read_bytes()) == expected


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: f"{path.parent.parent.name}/{path.name}")
def test_result_renders_to_the_golden_reply(example: Path) -> None:
    dialect = REGISTRY.get(example.parent.parent.name)
    assert dialect is not None
    result = json.loads((example / "result.json").read_text(encoding="utf-8"))
    assert rendered(dialect, result) == (example / "reply.xml").read_bytes()


def test_a_changed_request_no_longer_matches() -> None:
    """The comparison catches a planted difference: one fen more on a line."""
    example = ADAPTERS / "standard" / "examples" / "settle"
    expected = json.loads((example / "canonical.json").read_text(encoding="utf-8"))
    request = (example / "request.xml").read_bytes().replace(b"<ns0:amount>420.00<", b"<ns0:amount>420.01<")
    assert mapped(REGISTRY, request) != expected


def test_a_changed_result_no_longer_renders_the_golden_reply() -> None:
    example = ADAPTERS / "standard" / "examples" / "settle"
    dialect = REGISTRY.get("standard")
    assert dialect is not None
    result = json.loads((example / "result.json").read_text(encoding="utf-8"))
    result["body"]["patient_pays"] = "0.01"
    assert rendered(dialect, result) != (example / "reply.xml").read_bytes()
