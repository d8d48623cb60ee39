"""Control characters and dates in every input the OpenAPI document names, on both databases.

Every string a route takes (body fields, query and path parameters) is found by walking the OpenAPI document of a
live server. Each gets a value holding a control character (NUL was a 500 on PostgreSQL, which refuses it in text),
and each date a number or a string of digits (pydantic's lax mode read them as Unix time: `"on": 0` was the first
of January 1970). Every answer must be 422 REQUEST_MALFORMED naming that field, as problem+json, with nothing
recorded. A first pass sends NUL to every field, so that none is left to chance; Hypothesis then draws the
characters, the text around them and the fields.

The document is also read as it is: every request string has a pattern refusing control characters, or a date
format. Headers are left out: HTTP itself refuses control characters in them.

The planted fault: the eligibility request as it was (any string, pydantic's lax date) on a route of its own
fails both checks: its strings have no pattern, and a NUL gets through (a 500 on PostgreSQL), as does `"on": 0`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect, text

from settlement.api.app import create_app
from tests.service.conftest import LiveServer, Service, claim_body, serve_on_loopback
from tests.service.naive import add_naive_eligibility

PROBLEM = "application/problem+json"
REFUSED_EVERYWHERE = ["\x00", "\x01", "\x08", "\x0b", "\x1b", "\x1f", "\x7f", "\x85", "\x9f", "\ufffe", "\uffff"]
LINE_BREAKS = ["\t", "\n", "\r"]  # refused in names and codes; kept in notes and reasons
# Dates as numbers, digit strings, other scripts' digits and date-times: each was read as some date, or could be.
NOT_DATES = [0, 1700000000, -1, 1.5, "0", "1700000000", "20240615", "２０２４-06-15", "2024-6-15"]
NOT_DATES_ONLY = ["2024-06-15T00:00:00", "2024-06-15 00:00"]  # fine for a date-time, not for a date


@dataclass(frozen=True)
class Baseline:
    """A request of the right shape for a route (its values need not name anything that exists: a refusal
    of the request's shape comes first)."""

    who: str = "none"  # hospital | finance | admin | none
    path: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    body: Any = None
    upload: bool = False


def _claim() -> dict[str, Any]:
    return claim_body("H00000000001", "county", "611002196804120038")


# Every operation of the document; a route added without a baseline here fails test_every_route_has_a_baseline.
BASELINES: dict[tuple[str, str], Baseline] = {
    ("GET", "/health"): Baseline(),
    ("GET", "/health/ready"): Baseline(),
    ("POST", "/v1/eligibility"): Baseline("hospital", body={"id_number": "611002196804120038", "on": "2024-06-15"}),
    ("POST", "/v1/quotes"): Baseline("hospital", body={"claim": _claim()}),
    ("POST", "/v1/settlements"): Baseline("hospital", body={"transaction_id": "CC-1", "claim": _claim()}),
    ("GET", "/v1/settlements"): Baseline("finance", query={"from": "2024-06-01", "to": "2024-06-30"}),
    ("GET", "/v1/settlements/{settlement_id}"): Baseline("hospital", path={"settlement_id": "ST2024061500000000"}),
    ("POST", "/v1/settlements/{settlement_id}/reversal"): Baseline(
        "hospital", path={"settlement_id": "ST2024061500000000"}, body={"transaction_id": "R-1", "reason": "录入错误"}),
    ("POST", "/v1/cancellations"): Baseline(
        "hospital", body={"transaction_id": "C-1", "original_transaction_id": "T-1", "reason": "超时"}),
    ("GET", "/v1/finance/discrepancies"): Baseline("finance"),
    ("POST", "/v1/finance/discrepancies/{discrepancy_id}/resolution"): Baseline(
        "finance", path={"discrepancy_id": "1"}, body={"action": "write_off", "note": "checked", "amount": "-1.00"}),
    ("POST", "/v1/finance/reconciliations"): Baseline(
        "finance", body={"payer": "basic", "business_date": "2024-06-15"}),
    ("GET", "/v1/finance/reconciliations/{payer}/{business_date}"): Baseline(
        "finance", path={"payer": "basic", "business_date": "2024-06-15"}),
    ("GET", "/v1/finance/reconciliations/{payer}/{business_date}/report.{extension}"): Baseline(
        "finance", path={"payer": "basic", "business_date": "2024-06-15", "extension": "csv"}),
    ("POST", "/v1/finance/clearing/{month}"): Baseline("finance", path={"month": "2024-06"}),
    ("GET", "/v1/finance/clearing/{month}/statement.{extension}"): Baseline(
        "finance", path={"month": "2024-06", "extension": "csv"}),
    ("POST", "/v1/admin/roster"): Baseline("admin", upload=True),
    ("POST", "/v1/admin/hospitals"): Baseline("admin", query={"check": "true"}, upload=True),
    ("GET", "/v1/admin/tariffs"): Baseline("admin"),
    ("POST", "/v1/admin/tariffs"): Baseline("admin", upload=True),
    ("POST", "/v1/admin/tariffs/catalogue"): Baseline("admin", query={"region": "611000"}, upload=True),
    ("GET", "/v1/admin/tariffs/{version_id}"): Baseline("admin", path={"version_id": "1"}),
    ("GET", "/v1/admin/tariffs/{version_id}/diff"): Baseline("admin", path={"version_id": "1"}),
    ("POST", "/v1/admin/tariffs/{version_id}/approval"): Baseline("admin", path={"version_id": "1"}),
    ("POST", "/v1/admin/tariffs/{version_id}/activation"): Baseline("admin", path={"version_id": "1"}),
    ("POST", "/v1/admin/tariffs/{version_id}/withdrawal"): Baseline(
        "admin", path={"version_id": "1"}, body={"reason": "superseded"}),
    ("POST", "/v1/admin/tariffs/{version_id}/simulation"): Baseline(
        "admin", path={"version_id": "1"}, body={"from": "2024-01-01", "to": "2024-01-31"}),
    ("POST", "/v1/admin/settlements/verification"): Baseline("admin", body={"from": "2024-01-01", "to": "2024-01-31"}),
    ("GET", "/v1/admin/keys"): Baseline("admin"),
    ("POST", "/v1/admin/keys"): Baseline("admin", body={"kind": "finance", "name": "张会计"}),
    ("POST", "/v1/admin/keys/{key_id}/revocation"): Baseline("admin", path={"key_id": "1"}),
    ("POST", "/v1/admin/keys/{key_id}/rotation"): Baseline("admin", path={"key_id": "1"}),
    ("POST", "/v1/admin/hospitals/{code}/disablement"): Baseline("admin", path={"code": "H00000000001"}),
    ("POST", "/v1/admin/hospitals/{code}/enablement"): Baseline("admin", path={"code": "H00000000001"}),
    ("POST", "/v1/admin/hospitals/{code}/soap-password"): Baseline("admin", path={"code": "H00000000001"}),
    ("POST", "/naive/eligibility"): Baseline("hospital", body={"id_number": "611002196804120038", "on": "2024-06-15"}),
}


# The document's inputs

@dataclass(frozen=True)
class Slot:
    """One string or date input of one operation: where it goes and what its schema says."""

    method: str
    template: str
    where: str  # path | query | body
    location: tuple[str | int, ...]
    kind: str  # text | date | date-time
    pattern: str | None = None
    max_length: int | None = None
    choices: tuple[str, ...] = ()  # an enum's values

    @property
    def name(self) -> str:
        """The field as the problem's path names it: `claim.lines.0.name`, `query.from`, `path.payer`."""
        dotted = ".".join(str(part) for part in self.location)
        return dotted if self.where == "body" else f"{self.where}.{dotted}"

    def __str__(self) -> str:
        return f"{self.method} {self.template} {self.name}"


def _resolved(schema: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    branches = [branch for branch in schema.get("anyOf", ()) if branch.get("type") != "null"]
    return _resolved(branches[0], document) if branches else schema


def _leaves(schema: dict[str, Any], document: dict[str, Any],
            location: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], dict[str, Any]]]:
    """The string schemas under a schema (arrays by their first item), with where they sit."""
    schema = _resolved(schema, document)
    if schema.get("type") == "object":
        for name, child in schema.get("properties", {}).items():
            yield from _leaves(child, document, (*location, name))
        if isinstance(schema.get("additionalProperties"), dict):
            yield from _leaves(schema["additionalProperties"], document, (*location, "key"))
    elif schema.get("type") == "array":
        yield from _leaves(schema["items"], document, (*location, 0))
    elif schema.get("type") == "string" and "contentMediaType" not in schema:  # an uploaded file is no text
        yield location, schema


def _slot(method: str, template: str, where: str, location: tuple[str | int, ...],
          schema: dict[str, Any]) -> Slot:
    kind = str(schema["format"]) if schema.get("format") in ("date", "date-time") else "text"
    return Slot(method, template, where, location, kind, schema.get("pattern"), schema.get("maxLength"),
                tuple(schema.get("enum", ())))


def slots_of(document: dict[str, Any]) -> list[Slot]:
    found: list[Slot] = []
    for template, operations in document["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", ()):
                if parameter["in"] in ("path", "query"):
                    for location, schema in _leaves(parameter["schema"], document, (parameter["name"],)):
                        found.append(_slot(method.upper(), template, parameter["in"], location, schema))
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None:
                for location, schema in _leaves(body["schema"], document, ()):
                    found.append(_slot(method.upper(), template, "body", location, schema))
    return found


def takes(pattern: str | None, character: str) -> bool:
    """Whether a pattern lets the character through, inside a value (Python's "$" also matches before a final line
    feed, which JSON Schema's and pydantic-core's do not)."""
    return pattern is None or re.search(pattern, f"a{character}b") is not None


def unguarded(slots: list[Slot]) -> list[str]:
    """The slots whose schema lets a control character through: neither a date, nor a pattern refusing them, nor a
    choice among fixed values."""
    return [str(slot) for slot in slots if slot.kind == "text" and (
        any(c in choice for choice in slot.choices for c in REFUSED_EVERYWHERE) if slot.choices
        else any(takes(slot.pattern, c) for c in REFUSED_EVERYWHERE))]


# Sending a request with one input replaced

def _put(container: Any, location: tuple[str | int, ...], value: Any) -> None:
    for part in location[:-1]:
        container = container[part]
    container[location[-1]] = value


def send(client: httpx.Client, keys: dict[str, str], slot: Slot, value: Any) -> httpx.Response:
    baseline = BASELINES[(slot.method, slot.template)]
    path, query, body = dict(baseline.path), dict(baseline.query), copy.deepcopy(baseline.body)
    if slot.where == "body":
        _put(body, slot.location, value)
    elif slot.where == "query":
        query[str(slot.location[0])] = str(value)
    else:
        path[str(slot.location[0])] = str(value)
    url = slot.template.format(**{name: quote(item, safe="") for name, item in path.items()})
    headers = {"Authorization": f"Bearer {keys[baseline.who]}"} if baseline.who in keys else {}
    files = {"file": ("file.csv", b"code,name,class\n", "text/csv")} if baseline.upload else None
    return client.request(slot.method, url, params=query, json=body, files=files, headers=headers)


def assert_refused(response: httpx.Response, slot: Slot) -> None:
    assert response.status_code == 422, (str(slot), response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith(PROBLEM), str(slot)
    problem = response.json()
    assert problem["code"] == "REQUEST_MALFORMED", (str(slot), problem)
    assert slot.name in [item["path"] for item in problem["problems"]], (str(slot), problem["problems"])


def row_counts(service: Service) -> dict[str, int]:
    tables = [name for name in inspect(service.app.engine).get_table_names() if name != "alembic_version"]
    query = "SELECT " + ", ".join(f"(SELECT COUNT(*) FROM {name})" for name in tables)
    with service.app.engine.connect() as connection:
        return dict(zip(tables, connection.execute(text(query)).one(), strict=True))


# Values

_AROUND = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"),
                                exclude_characters="/\ufffe\uffff"), max_size=6)
_CONTROL = st.one_of(st.sampled_from(REFUSED_EVERYWHERE), st.characters(max_codepoint=0x1F),
                     st.characters(min_codepoint=0x7F, max_codepoint=0x9F))


def refused_value(slot: Slot) -> st.SearchStrategy[Any]:
    if slot.kind != "text":
        return st.sampled_from(NOT_DATES + (NOT_DATES_ONLY if slot.kind == "date" else []))
    allowed = {c for c in LINE_BREAKS if takes(slot.pattern, c)}
    budget = max(1, (slot.max_length or 13) - 1) // 2  # short enough that only the character can be refused
    around = _AROUND.map(lambda part: part[:budget])
    return st.builds(lambda before, control, after: before + control + after, around,
                     _CONTROL.filter(lambda c: c not in allowed), around)


# The checks

@dataclass
class Target:
    service: Service
    client: httpx.Client
    keys: dict[str, str]
    slots: list[Slot]


@pytest.fixture
def target(service: Service, live: LiveServer) -> Iterator[Target]:
    keys = {"hospital": service.hospital()[1], "finance": service.staff("finance"), "admin": service.staff("admin")}
    with live.client(timeout=30) as client:
        document = client.get("/openapi.json").json()
        yield Target(service, client, keys, slots_of(document))


def test_every_route_has_a_baseline_and_every_request_string_a_guard(target: Target) -> None:
    document = target.client.get("/openapi.json").json()
    operations = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    assert operations - set(BASELINES) == set(), "give the new route a baseline request above"
    assert len(target.slots) > 40 and {slot.kind for slot in target.slots} == {"text", "date", "date-time"}
    assert unguarded(target.slots) == []


def test_nul_in_every_string_and_a_number_in_every_date_is_refused_recording_nothing(target: Target) -> None:
    before = row_counts(target.service)
    for slot in target.slots:
        assert_refused(send(target.client, target.keys, slot, "a\x00b" if slot.kind == "text" else 0), slot)
    assert row_counts(target.service) == before


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_control_characters_and_numbers_anywhere_are_refused_recording_nothing(target: Target,
                                                                               data: st.DataObject) -> None:
    slot = data.draw(st.sampled_from(target.slots), label="slot")
    value = data.draw(refused_value(slot), label="value")
    before = row_counts(target.service)
    assert_refused(send(target.client, target.keys, slot, value), slot)
    assert row_counts(target.service) == before


def test_line_breaks_are_kept_in_notes_and_refused_in_names(target: Target) -> None:
    """The control: what the multi-line fields take is refused in one-line ones (a reversal's reason may hold a
    line break; the patient's name may not)."""
    reason = next(slot for slot in target.slots if slot.template == "/v1/cancellations" and slot.name == "reason")
    name = next(slot for slot in target.slots if slot.template == "/v1/eligibility" and slot.name == "id_number")
    assert all(takes(reason.pattern, c) for c in LINE_BREAKS) and not any(takes(name.pattern, c) for c in LINE_BREAKS)
    kept = send(target.client, target.keys, reason, "第一行\n第二行\t")
    assert kept.status_code != 422 or "reason" not in kept.text, kept.text  # not refused for its line break
    assert_refused(send(target.client, target.keys, name, "611002196804120038\n"), name)


# The planted fault

@pytest.fixture
def naive_target(service: Service) -> Iterator[Target]:
    app = create_app(service.app)
    add_naive_eligibility(app)
    url, server, thread = serve_on_loopback(app, "the naive server")
    keys = {"hospital": service.hospital()[1]}
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            document = client.get("/openapi.json").json()
            naive = [slot for slot in slots_of(document) if slot.template.startswith("/naive/")]
            yield Target(service, client, keys, naive)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_control_the_checks_catch_the_request_as_it_was(naive_target: Target, database_url: str) -> None:
    assert [slot.name for slot in naive_target.slots] == ["id_number", "on"]
    assert unguarded(naive_target.slots) == ["POST /naive/eligibility id_number"]
    id_number, on = naive_target.slots
    nul = send(naive_target.client, naive_target.keys, id_number, "61100\x00")
    with pytest.raises(AssertionError):
        assert_refused(nul, id_number)
    if database_url.startswith("postgresql"):
        assert nul.status_code == 500  # PostgreSQL refuses NUL in text: the bug this guards
    epoch = send(naive_target.client, naive_target.keys, on, 0)
    assert epoch.status_code == 200 and epoch.json()["on"] == "1970-01-01"
    with pytest.raises(AssertionError):
        assert_refused(epoch, on)
