"""The REST API over a real server on both databases: access, idempotency, quotes, roster categories, reversal,
the year boundary, listing, and error bodies that never carry personal data."""

from __future__ import annotations

import base64
import copy
import json
import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from settlement.domain.claim import SHANGHAI
from tests.service.conftest import (
    LiveServer,
    Service,
    claim_body,
    import_roster_rows,
    new_id_number,
    put_in_force,
    shipped_document,
    start_server,
)

PROBLEM = "application/problem+json"
COUNTED = ("settlements", "reversals", "ledger_entries", "audit_log", "idempotency_records", "person_years",
           "fund_years", "persons", "person_categories", "roster_imports", "tariff_versions", "principals")


def counts(service: Service) -> dict[str, int]:
    with service.app.engine.connect() as connection:
        return {table: connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one() for table in COUNTED}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {table: after[table] - before[table] for table in before if after[table] != before[table]}


def paid(data: dict[str, Any]) -> dict[str, str]:
    return {p["fund"]: p["paid"] for p in data["payers"] if p["eligible"]}


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, Any] = response.json()
    assert body["code"] == code and body["status"] == status and body["type"].endswith(code), body
    assert body["title"] and isinstance(body["detail"], str)
    return body


def settle_body(code: str, person: str, key: str, **claim: Any) -> dict[str, Any]:
    return {"transaction_id": key, "claim": claim_body(code, "county", person, **claim)}


# Access


def test_other_hospitals_settlements_are_not_found_and_not_listed(service: Service, live: LiveServer) -> None:
    code_a, key_a = service.hospital()
    code_b, key_b = service.hospital()
    person = new_id_number()
    with live.client(key_a) as a, live.client(key_b) as b:
        created = a.post("/v1/settlements", json=settle_body(code_a, person, "A-1"))
        assert created.status_code == 201, created.text
        sid = created.json()["settlement_id"]
        b_own = b.post("/v1/settlements", json=settle_body(code_b, new_id_number(), "B-1"))
        assert b_own.status_code == 201, b_own.text
        # The owner reads it: the 404 below is about ownership, not about the id.
        assert a.get(f"/v1/settlements/{sid}").status_code == 200
        before = counts(service)
        assert_problem(b.get(f"/v1/settlements/{sid}"), 404, "NOT_FOUND")
        assert_problem(b.post(f"/v1/settlements/{sid}/reversal", json={"transaction_id": "B-R1"}), 404, "NOT_FOUND")
        # Nothing was reversed: no reversal, no ledger entry, no audit row (only B's key keeps its answer).
        assert delta(before, counts(service)) == {"idempotency_records": 1}
        assert a.get(f"/v1/settlements/{sid}").json()["status"] == "settled"
        window = {"from": "2024-06-01", "to": "2024-06-30"}
        listed_b = b.get("/v1/settlements", params=window)
        assert listed_b.status_code == 200
        assert [item["transaction_id"] for item in listed_b.json()["items"]] == ["B-1"]
        # A hospital naming another hospital in the query still sees only its own rows.
        sneaky = b.get("/v1/settlements", params={**window, "hospital": code_a})
        assert [item["transaction_id"] for item in sneaky.json()["items"]] == ["B-1"]
        listed_a = a.get("/v1/settlements", params=window)
        assert [item["settlement_id"] for item in listed_a.json()["items"]] == [sid]
        # A's own reversal still works afterwards.
        assert a.post(f"/v1/settlements/{sid}/reversal", json={"transaction_id": "A-R1"}).status_code == 201
    finance = service.staff("finance")
    with live.client(finance) as f:
        rows = f.get("/v1/settlements", params={**window, "hospital": code_a}).json()["items"]
        assert [(row["settlement_id"], row["status"]) for row in rows] == [(sid, "reversed")]
        assert f.get(f"/v1/settlements/{sid}").status_code == 200


def test_missing_or_wrong_credentials_are_401_without_side_effect(service: Service, live: LiveServer) -> None:
    code, key = service.hospital()
    _, revoked = service.hospital()
    with service.app.engine.begin() as connection:
        connection.execute(text("UPDATE principals SET revoked_at = :now WHERE key_prefix = :prefix"),
                           {"now": datetime(2024, 6, 1, tzinfo=UTC), "prefix": revoked.split("_")[1]})
    prefix, secret = key.split("_", 2)[1:]
    altered = f"stl_{prefix}_{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}"
    unknown_prefix = f"stl_{'0' * 12}_{secret}"
    attempts: list[tuple[dict[str, str], str]] = [
        ({}, "AUTH_REQUIRED"),
        ({"Authorization": "Bearer"}, "AUTH_REQUIRED"),
        ({"Authorization": "Bearer garbage"}, "AUTH_INVALID"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "AUTH_REQUIRED"),
        ({"X-API-Key": "garbage"}, "AUTH_INVALID"),
        ({"Authorization": f"Bearer {altered}"}, "AUTH_INVALID"),
        ({"Authorization": f"Bearer {unknown_prefix}"}, "AUTH_INVALID"),
        ({"Authorization": f"Bearer {revoked}"}, "AUTH_INVALID"),
    ]
    person = new_id_number()
    with live.client() as client:
        for number, (headers, expected) in enumerate(attempts):
            before = counts(service)
            body = settle_body(code, person, f"T-{number}")
            assert_problem(client.post("/v1/settlements", json=body, headers=headers), 401, expected)
            assert_problem(client.post("/v1/quotes", json={"claim": body["claim"]}, headers=headers), 401, expected)
            assert_problem(client.get("/v1/settlements", params={"from": "2024-06-01", "to": "2024-06-30"},
                                      headers=headers), 401, expected)
            assert delta(before, counts(service)) == {}, headers
        # The same request with the real key does change things: the checks above could have failed.
        before = counts(service)
        ok = client.post("/v1/settlements", json=settle_body(code, person, "T-0"),
                         headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 201, ok.text
        assert {"settlements", "ledger_entries", "audit_log", "idempotency_records"} <= set(
            delta(before, counts(service)))
        sid = ok.json()["settlement_id"]
        for headers, expected in attempts:
            before = counts(service)
            response = client.post(f"/v1/settlements/{sid}/reversal", json={"transaction_id": "R-1"},
                                   headers=headers)
            assert_problem(response, 401, expected)
            assert delta(before, counts(service)) == {}


def test_finance_and_admin_keys_cannot_settle(service: Service, live: LiveServer) -> None:
    code, key = service.hospital()
    person = new_id_number()
    with live.client(key) as hospital:
        created = hospital.post("/v1/settlements", json=settle_body(code, person, "H-1")).json()
    for kind in ("finance", "admin"):
        staff_key = service.staff(kind)
        before = counts(service)
        with live.client(staff_key) as staff:
            body = settle_body(code, person, f"{kind}-1")
            assert_problem(staff.post("/v1/settlements", json=body), 403, "FORBIDDEN")
            assert_problem(staff.post("/v1/quotes", json={"claim": body["claim"]}), 403, "FORBIDDEN")
            assert_problem(staff.post(f"/v1/settlements/{created['settlement_id']}/reversal",
                                      json={"transaction_id": f"{kind}-R"}), 403, "FORBIDDEN")
            # They may read.
            assert staff.get(f"/v1/settlements/{created['settlement_id']}").status_code == 200
        assert delta(before, counts(service)) == {}


# Idempotency


def test_same_key_same_body_replays_byte_for_byte(service: Service, live: LiveServer) -> None:
    code, key = service.hospital()
    body = settle_body(code, new_id_number(), "IDEM-1")
    with live.client(key) as client:
        first = client.post("/v1/settlements", json=body)
        assert first.status_code == 201, first.text
        assert "idempotent-replayed" not in first.headers
        before = counts(service)
        service.clock.now += timedelta(minutes=5)
        again = client.post("/v1/settlements", json=body)
        assert again.status_code == 201
        assert again.content == first.content
        assert again.headers["idempotent-replayed"] == "true"
        assert delta(before, counts(service)) == {}
    # Keys are scoped per hospital: another hospital's "IDEM-1" is its own, new settlement.
    other_code, other_key = service.hospital()
    with live.client(other_key) as client:
        theirs = client.post("/v1/settlements", json=settle_body(other_code, new_id_number(), "IDEM-1"))
        assert theirs.status_code == 201 and "idempotent-replayed" not in theirs.headers
        assert theirs.json()["settlement_id"] != first.json()["settlement_id"]


def test_same_key_different_body_is_409_and_records_nothing(service: Service, live: LiveServer) -> None:
    code, key = service.hospital()
    body = settle_body(code, new_id_number(), "IDEM-2")
    changed = copy.deepcopy(body)
    changed["claim"]["lines"][0].update(unit_price="999.00", amount="999.00")
    with live.client(key) as client:
        first = client.post("/v1/settlements", json=body)
        assert first.status_code == 201
        before = counts(service)
        assert_problem(client.post("/v1/settlements", json=changed), 409, "IDEMPOTENCY_KEY_REUSED")
        assert delta(before, counts(service)) == {}
        # The original answer is untouched.
        assert client.post("/v1/settlements", json=body).content == first.content


@pytest.mark.parametrize("fault", ["amount_mismatch", "hospital_mismatch"])
def test_a_failed_key_keeps_its_failure(service: Service, live: LiveServer, fault: str) -> None:
    code, key = service.hospital()
    other_code, _ = service.hospital()
    person = new_id_number()
    good = settle_body(code, person, "FAIL-1")
    bad = copy.deepcopy(good)
    if fault == "amount_mismatch":
        bad["claim"]["lines"][0].update(quantity="2", unit_price="500.00", amount="1100.00")
        expected = "CLAIM_AMOUNT_MISMATCH"
    else:
        bad["claim"]["hospital"]["code"] = other_code
        expected = "HOSPITAL_MISMATCH"
    with live.client(key) as client:
        before = counts(service)
        first = client.post("/v1/settlements", json=bad)
        assert_problem(first, 422, expected)
        # Only the key's answer is written: no settlement, no ledger, no audit, no year figures.
        assert delta(before, counts(service)) == {"idempotency_records": 1}
        retry = client.post("/v1/settlements", json=bad)
        assert retry.status_code == 422 and retry.content == first.content
        assert retry.headers["idempotent-replayed"] == "true"
        corrected = client.post("/v1/settlements", json=good)
        assert_problem(corrected, 409, "IDEMPOTENCY_KEY_REUSED")
        assert delta(before, counts(service)) == {"idempotency_records": 1}
        # New money needs a new key, and then the corrected bill settles.
        fresh = client.post("/v1/settlements", json={**good, "transaction_id": "FAIL-2"})
        assert fresh.status_code == 201, fresh.text


# Quotes


def quote(client: httpx.Client, claim: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/quotes", json={"claim": claim})
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def test_quote_records_nothing_and_settles_exactly_as_quoted(service: Service, live: LiveServer) -> None:
    code, key = service.hospital()
    person = new_id_number()
    import_roster_rows(service, [(person, "dibao_rural_a", "2024-01-01", "")])
    claim = claim_body(code, "county", person, amount="2345.67")
    with live.client(key) as client:
        before = counts(service)
        quoted = quote(client, claim)
        assert delta(before, counts(service)) == {}
        assert quoted["quote_id"].startswith("q1.")
        expires = datetime.fromisoformat(quoted["expires_at"])
        assert expires == service.clock.now + timedelta(minutes=15)
        assert quoted["categories"] == ["dibao_rural_a"]
        service.clock.now += timedelta(minutes=14)
        settled = client.post("/v1/settlements", json={"transaction_id": "Q-1", "claim": claim,
                                                       "quote_id": quoted["quote_id"]})
        assert settled.status_code == 201, settled.text
        data = settled.json()
    for field in ("total", "out_of_catalogue", "over_price_limit", "pre_self_pay", "in_scope", "payers",
                  "patient_pays", "tariff", "categories"):
        assert data[field] == quoted[field], field
    assert paid(data)["610100"] != "0.00"


def test_quote_refused_when_another_settlement_moved_the_year(service: Service, live: LiveServer) -> None:
    code, key = service.hospital()
    person = new_id_number()
    claim = claim_body(code, "county", person)
    with live.client(key) as client:
        quoted = quote(client, claim)
        other = client.post("/v1/settlements", json=settle_body(code, person, "Q-OTHER"))
        assert other.status_code == 201
        before = counts(service)
        response = client.post("/v1/settlements", json={"transaction_id": "Q-2", "claim": claim,
                                                        "quote_id": quoted["quote_id"]})
        assert_problem(response, 409, "QUOTE_ACCUMULATORS_CHANGED")
        assert delta(before, counts(service)) == {"idempotency_records": 1}
        # Quoting again and settling with the new quote works.
        again = quote(client, claim)
        assert client.post("/v1/settlements", json={"transaction_id": "Q-3", "claim": claim,
                                                    "quote_id": again["quote_id"]}).status_code == 201


def test_quote_refused_when_the_roster_changed(service: Service, live: LiveServer) -> None:
    code, key = service.hospital()
    person = new_id_number()
    import_roster_rows(service, [(person, "low_income", "2024-01-01", "")])
    claim = claim_body(code, "county", person)
    with live.client(key) as client:
        quoted = quote(client, claim)
        assert quoted["categories"] == ["low_income"]
        import_roster_rows(service, [(person, "dibao_rural_a", "2024-06-01", "")])
        response = client.post("/v1/settlements", json={"transaction_id": "Q-4", "claim": claim,
                                                        "quote_id": quoted["quote_id"]})
        assert_problem(response, 409, "QUOTE_CATEGORIES_CHANGED")


def test_quote_expires_after_fifteen_minutes(service: Service, live: LiveServer) -> None:
    code, key = service.hospital()
    claim = claim_body(code, "county", new_id_number())
    start = service.clock.now
    with live.client(key) as client:
        quoted = quote(client, claim)
        service.clock.now = start + timedelta(minutes=16)
        body = {"transaction_id": "Q-5", "claim": claim, "quote_id": quoted["quote_id"]}
        assert_problem(client.post("/v1/settlements", json=body), 409, "QUOTE_EXPIRED")
        service.clock.now = start + timedelta(minutes=14)
        assert client.post("/v1/settlements", json={**body, "transaction_id": "Q-6"}).status_code == 201


def test_tampered_quote_id_is_invalid(service: Service, live: LiveServer) -> None:
    code, key = service.hospital()
    claim = claim_body(code, "county", new_id_number())
    with live.client(key) as client:
        quote_id: str = quote(client, claim)["quote_id"]
        version, body, mac = quote_id.split(".")
        payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        payload["s"]["patient"] = 0  # a cheaper bill for the patient, under the old signature
        forged = base64.urlsafe_b64encode(
            json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).rstrip(b"=").decode()
        flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
        before = counts(service)
        for number, bad in enumerate((f"{version}.{forged}.{mac}", f"{version}.{body}.{flipped}",
                                      f"q2.{body}.{mac}", "garbage", f"{quote_id}.x")):
            response = client.post("/v1/settlements", json={"transaction_id": f"Q-T{number}", "claim": claim,
                                                            "quote_id": bad})
            assert_problem(response, 422, "QUOTE_INVALID")
        assert delta(before, counts(service)) == {"idempotency_records": 5}
        assert client.post("/v1/settlements", json={"transaction_id": "Q-T9", "claim": claim,
                                                    "quote_id": quote_id}).status_code == 201


def test_quote_used_with_another_claim_is_a_mismatch(service: Service, live: LiveServer) -> None:
    code, key = service.hospital()
    person = new_id_number()
    claim = claim_body(code, "county", person)
    other = copy.deepcopy(claim)
    other["lines"][0].update(unit_price="1000.01", amount="1000.01")
    with live.client(key) as client:
        quoted = quote(client, claim)
        response = client.post("/v1/settlements", json={"transaction_id": "Q-7", "claim": other,
                                                        "quote_id": quoted["quote_id"]})
        assert_problem(response, 409, "QUOTE_CLAIM_MISMATCH")


def test_quote_refused_when_the_tariff_changed(own_service: Service) -> None:
    service = own_service
    code, key = service.hospital()
    # The cashier quotes, two minutes before midnight on 14 June, a bill settled just after it (within the
    # allowed clock skew)...
    service.clock.now = datetime(2024, 6, 14, 15, 58, tzinfo=UTC)
    claim = claim_body(code, "county", new_id_number(), settled_at="2024-06-15T00:00:30+08:00")
    document = shipped_document()
    layers = {layer["id"]: layer for layer in document["layers"]}
    assert layers["basic_inpatient"]["rate"]["by_level"]["county"] == "0.75"
    layers["basic_inpatient"]["rate"]["by_level"]["county"] = "0.80"
    document.update(version="2024-06-15", effective={"from": "2024-06-15"})
    live = start_server(service.app)
    try:
        with live.client(key) as client:
            quoted = quote(client, claim)
            assert paid(quoted)["390100"] == "450.00"  # 600 in scope after the deductible, at 75%
            # ...and before it is settled, a version in force from the 15th is activated.
            put_in_force(service, document)
            assert paid(quote(client, claim))["390100"] == "480.00"  # the rate really changed: 600 x 80%
            response = client.post("/v1/settlements", json={"transaction_id": "Q-8", "claim": claim,
                                                            "quote_id": quoted["quote_id"]})
            assert_problem(response, 409, "QUOTE_TARIFF_CHANGED")
    finally:
        live.server.should_exit = True
        live.thread.join(timeout=10)


# Categories come from the roster


def test_categories_come_from_the_roster_on_the_settlement_date(service: Service, live: LiveServer) -> None:
    code, key = service.hospital()
    june, july = new_id_number(), new_id_number()
    rows = []
    for person in (june, july):
        rows += [(person, "dibao_rural_b", "2022-01-01", "2024-06-30"), (person, "low_income", "2024-07-01", "")]
    import_roster_rows(service, rows)
    with live.client(key) as client:
        service.clock.now = datetime(2024, 6, 30, 15, 0, tzinfo=UTC)  # each settled when it is dated
        last = client.post("/v1/settlements", json=settle_body(
            code, june, "CAT-1", amount="5000.00", discharge="2024-06-30", settled_at="2024-06-30T23:00:00+08:00"))
        service.clock.now = datetime(2024, 6, 30, 16, 0, tzinfo=UTC)
        first = client.post("/v1/settlements", json=settle_body(
            code, july, "CAT-2", amount="5000.00", discharge="2024-07-01", settled_at="2024-07-01T00:00:00+08:00"))
        assert last.status_code == 201 and first.status_code == 201, (last.text, first.text)
    # Basic pays (5,000 - 400) x 75% = 3,450.00 either way; 1,550.00 stays in scope.
    # 低保 (to 30 June): no deductible, 70% = 1,085.00. 低收入 (from 1 July): (1,550 - 1,200) x 60% = 210.00.
    assert last.json()["categories"] == ["dibao_rural_b"]
    assert paid(last.json()) == {"390100": "3450.00", "390200": "0.00", "610100": "1085.00"}
    assert last.json()["patient_pays"] == "465.00"
    assert first.json()["categories"] == ["low_income"]
    assert paid(first.json()) == {"390100": "3450.00", "390200": "0.00", "610100": "210.00"}
    assert first.json()["patient_pays"] == "1340.00"


def test_a_claim_cannot_bring_its_own_categories(service: Service, live: LiveServer) -> None:
    code, key = service.hospital()
    body = settle_body(code, new_id_number(), "CAT-3")
    body["claim"]["patient"]["categories"] = ["tekun_centralized"]
    with live.client(key) as client:
        before = counts(service)
        problem = assert_problem(client.post("/v1/settlements", json=body), 422, "REQUEST_MALFORMED")
        assert any(p["path"] == "claim.patient.categories" for p in problem["problems"]), problem
        assert_problem(client.post("/v1/quotes", json={"claim": body["claim"]}), 422, "REQUEST_MALFORMED")
        assert delta(before, counts(service)) == {}
        del body["claim"]["patient"]["categories"]
        settled = client.post("/v1/settlements", json=body)
        assert settled.status_code == 201 and settled.json()["categories"] == []


# Reversal


def rows_of(service: Service, query: str, **params: Any) -> list[tuple[Any, ...]]:
    with service.app.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(query), params)]


def test_reversal_mirrors_the_ledger_and_restores_the_year(service: Service, live: LiveServer) -> None:
    code, key = service.hospital()
    person = new_id_number()
    import_roster_rows(service, [(person, "dibao_rural_a", "2024-01-01", "")])
    ask = {"id_number": person, "on": "2024-06-15"}
    with live.client(key) as client:
        assert client.post("/v1/settlements", json=settle_body(code, person, "REV-0")).status_code == 201
        year_before = client.post("/v1/eligibility", json=ask).json()["year_to_date"]
        created = client.post("/v1/settlements", json=settle_body(code, person, "REV-1", amount="3000.00"))
        assert created.status_code == 201
        sid = created.json()["settlement_id"]
        moved = client.post("/v1/eligibility", json=ask).json()["year_to_date"]
        assert moved != year_before and moved["admissions"] == year_before["admissions"] + 1
        (internal_id,) = rows_of(service, "SELECT id FROM settlements WHERE public_id = :p", p=sid)[0]
        settlement_row = rows_of(service, "SELECT * FROM settlements WHERE id = :i", i=internal_id)
        originals = rows_of(service, "SELECT * FROM ledger_entries WHERE settlement_id = :i ORDER BY id",
                            i=internal_id)
        assert originals
        reversal = client.post(f"/v1/settlements/{sid}/reversal",
                               json={"transaction_id": "REV-R1", "reason": "wrong patient"})
        assert reversal.status_code == 201, reversal.text
        reply = reversal.json()
        assert reply["status"] == "reversed" and reply["settlement_id"] == sid
        assert reply["total"] == "-3000.00"
        # Replayed by its own key, byte for byte.
        replay = client.post(f"/v1/settlements/{sid}/reversal",
                             json={"transaction_id": "REV-R1", "reason": "wrong patient"})
        assert replay.content == reversal.content and replay.headers["idempotent-replayed"] == "true"
        assert_problem(client.post(f"/v1/settlements/{sid}/reversal", json={"transaction_id": "REV-R2"}),
                       409, "SETTLEMENT_ALREADY_REVERSED")
        year_after = client.post("/v1/eligibility", json=ask).json()["year_to_date"]
        assert year_after == year_before
        read = client.get(f"/v1/settlements/{sid}").json()
        assert read["status"] == "reversed" and read["reversal"]["transaction_id"] == "REV-R1"
    # The original rows are unchanged; one negative mirror per original entry, linked to it.
    assert rows_of(service, "SELECT * FROM settlements WHERE id = :i", i=internal_id) == settlement_row
    ledger = rows_of(service, "SELECT id, reverses_entry_id, reversal_id, fund, paid_fen, deductible_fen, "
                              "cumulative_fen FROM ledger_entries WHERE settlement_id = :i ORDER BY id",
                     i=internal_id)
    assert rows_of(service, "SELECT * FROM ledger_entries WHERE settlement_id = :i AND reversal_id IS NULL "
                            "ORDER BY id", i=internal_id) == originals
    mirrors = [row for row in ledger if row[2] is not None]
    by_id = {row[0]: row for row in ledger if row[2] is None}
    assert len(mirrors) == len(by_id) == len(originals)
    assert len(rows_of(service, "SELECT id FROM reversals WHERE settlement_id = :i", i=internal_id)) == 1
    for mirror in mirrors:
        original = by_id[mirror[1]]
        assert mirror[3] == original[3]
        assert mirror[4:] == tuple(-value for value in original[4:])
    # The year figures are the sum of the ledger.
    figures = rows_of(service, "SELECT fund, paid_fen, deductible_fen, cumulative_fen FROM fund_years "
                               "WHERE id_number = :p AND year = 2024 ORDER BY fund", p=person)
    sums = rows_of(service, "SELECT fund, SUM(paid_fen), SUM(deductible_fen), SUM(cumulative_fen) FROM "
                            "ledger_entries WHERE id_number = :p AND insurance_year = 2024 GROUP BY fund "
                            "ORDER BY fund", p=person)
    assert [tuple(int(v) if not isinstance(v, str) else v for v in row) for row in sums] == figures


# The year boundary


def test_new_year_at_midnight_in_shanghai(service: Service, live: LiveServer) -> None:
    code, key = service.hospital()
    person = new_id_number()
    with live.client(key) as client:
        service.clock.now = datetime(2024, 12, 31, 15, 59, 59, tzinfo=UTC)  # each settled when it is dated
        december = client.post("/v1/settlements", json=settle_body(
            code, person, "Y-1", discharge="2024-12-31", settled_at="2024-12-31T23:59:59+08:00"))
        service.clock.now = datetime(2024, 12, 31, 16, 0, tzinfo=UTC)
        january = client.post("/v1/settlements", json=settle_body(
            code, person, "Y-2", discharge="2025-01-01", settled_at="2025-01-01T00:00:00+08:00"))
        assert december.status_code == 201 and january.status_code == 201, (december.text, january.text)
        # A second admission in the same year would get a 20% lower deductible (320.00 -> 510.00 paid).
        assert paid(december.json())["390100"] == "450.00"
        assert paid(january.json())["390100"] == "450.00"
        old = client.post("/v1/eligibility", json={"id_number": person, "on": "2024-12-31"}).json()["year_to_date"]
        new = client.post("/v1/eligibility", json={"id_number": person, "on": "2025-01-01"}).json()["year_to_date"]
    assert (old["year"], old["admissions"], old["paid"]["390100"]) == (2024, 1, "450.00")
    assert (new["year"], new["admissions"], new["paid"]["390100"]) == (2025, 1, "450.00")
    years = rows_of(service, "SELECT transaction_id, insurance_year FROM settlements WHERE id_number = :p "
                             "ORDER BY transaction_id", p=person)
    assert years == [("Y-1", 2024), ("Y-2", 2025)]


# Listing


def settle_at(client: httpx.Client, service: Service, code: str, key: str, at: datetime) -> str:
    """A settlement recorded at `at` (the service's clock), of a bill settled then."""
    service.clock.now = at
    local = at.astimezone(SHANGHAI)
    response = client.post("/v1/settlements", json=settle_body(code, new_id_number(), key,
                                                               settled_at=local.isoformat(),
                                                               discharge=local.date().isoformat()))
    assert response.status_code == 201, response.text
    return key


def pages(client: httpx.Client, params: dict[str, Any]) -> list[list[dict[str, Any]]]:
    result = []
    cursor = None
    while True:
        page = client.get("/v1/settlements", params={**params, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        data = page.json()
        result.append(data["items"])
        cursor = data["next_cursor"]
        if cursor is None:
            return result
        assert len(result) < 20


def test_list_pages_with_a_cursor(service: Service, live: LiveServer) -> None:
    code, key = service.hospital()
    noon = datetime(2024, 6, 11, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
    with live.client(key) as client:
        expected = [settle_at(client, service, code, f"L-{n}", noon + timedelta(hours=n)) for n in range(8)]
        found = pages(client, {"from": "2024-06-11", "to": "2024-06-11", "limit": 3})
        assert [len(page) for page in found] == [3, 3, 2]
        assert [item["transaction_id"] for page in found for item in page] == expected
        assert all(item["person"].count("*") == 8 for page in found for item in page)
        everything = client.get("/v1/settlements", params={"from": "2024-06-11", "to": "2024-06-11"}).json()
        assert [item["transaction_id"] for item in everything["items"]] == expected
        assert everything["next_cursor"] is None
        empty = client.get("/v1/settlements", params={"from": "2024-06-12", "to": "2024-06-30"}).json()
        assert empty == {"items": [], "next_cursor": None}
        assert_problem(client.get("/v1/settlements", params={"from": "2024-06-12", "to": "2024-06-11"}),
                       422, "REQUEST_MALFORMED")


def test_list_range_is_inclusive_in_shanghai(service: Service, live: LiveServer) -> None:
    code, key = service.hospital()
    shanghai_midnight = datetime(2024, 6, 9, 16, 0, tzinfo=UTC)  # 2024-06-10 00:00 in Shanghai
    second = timedelta(seconds=1)
    with live.client(key) as client:
        settle_at(client, service, code, "OUT-before", shanghai_midnight - second)
        inside = [settle_at(client, service, code, "IN-first", shanghai_midnight)]
        inside += [settle_at(client, service, code, f"IN-{n}", shanghai_midnight + timedelta(hours=11 * n))
                   for n in range(1, 6)]
        last_second = shanghai_midnight + timedelta(days=3) - second  # 2024-06-12 23:59:59 in Shanghai
        inside.append(settle_at(client, service, code, "IN-last", last_second))
        settle_at(client, service, code, "OUT-after", last_second + second)
        found = pages(client, {"from": "2024-06-10", "to": "2024-06-12", "limit": 3})
        assert [item["transaction_id"] for page in found for item in page] == inside
        assert [len(page) for page in found] == [3, 3, 1]
        single = client.get("/v1/settlements", params={"from": "2024-06-09", "to": "2024-06-09"}).json()
        assert [item["transaction_id"] for item in single["items"]] == ["OUT-before"]


def test_list_recorded_at_is_the_settlements_own(service: Service, live: LiveServer) -> None:
    code, key = service.hospital()
    with live.client(key) as client:
        created = client.post("/v1/settlements", json=settle_body(code, new_id_number(), "RA-1")).json()
        listed = client.get("/v1/settlements", params={"from": "2024-06-15", "to": "2024-06-15"}).json()
    assert [item["recorded_at"] for item in listed["items"]] == [created["recorded_at"]]
    assert datetime.fromisoformat(created["recorded_at"]).utcoffset() is not None


# Errors


def test_business_failures_are_problems_never_500(service: Service, live: LiveServer) -> None:
    code, key = service.hospital()
    person = new_id_number()
    unknown = [{"id": "1", "code": "NOT-IN-ANY-CATALOGUE", "name": "院内项目", "quantity": "2", "unit_price": "50.00",
                "amount": "100.00"}]
    with live.client(key) as client:
        outside = client.post("/v1/settlements", json=settle_body(code, person, "E-1", lines=unknown))
        assert outside.status_code == 201, outside.text
        assert outside.json()["out_of_catalogue"] == "100.00" and outside.json()["patient_pays"] == "100.00"
        before = counts(service)
        assert_problem(client.post("/v1/settlements", json=settle_body(code, person, "E-2", region="110105")),
                       422, "TARIFF_NOT_FOUND")
        assert_problem(client.post("/v1/quotes", json={"claim": claim_body(code, "county", person,
                                                                           region="110105")}),
                       422, "TARIFF_NOT_FOUND")
        number = settle_body(code, person, "E-3")
        number["claim"]["lines"][0]["amount"] = 1000.0
        problem = assert_problem(client.post("/v1/settlements", json=number), 422, "REQUEST_MALFORMED")
        assert [p["path"] for p in problem["problems"]] == ["claim.lines.0.amount"]
        assert "decimal string" in problem["problems"][0]["message"]
        broken = client.post("/v1/settlements", content=b'{"transaction_id": "E-4", "claim": {',
                             headers={"content-type": "application/json"})
        assert_problem(broken, 422, "REQUEST_MALFORMED")
        assert_problem(client.post("/v1/settlements", json={"transaction_id": "E 5!", "claim": number["claim"]}),
                       422, "REQUEST_MALFORMED")
        dates = settle_body(code, person, "E-6", discharge="2024-06-20", settled_at="2024-06-15T10:00:00+08:00")
        assert_problem(client.post("/v1/settlements", json=dates), 422, "CLAIM_DATES_OUT_OF_ORDER")
        assert_problem(client.get("/v1/settlements/ST-NOPE"), 404, "NOT_FOUND")
        assert_problem(client.post("/v1/settlements/ST-NOPE/reversal", json={"transaction_id": "E-7"}),
                       404, "NOT_FOUND")
        # Kept failures write their key's answer only.
        assert delta(before, counts(service)) == {"idempotency_records": 3}


@pytest.mark.parametrize(("content_type", "status"), [
    ("application/json", 201),
    ("application/json; charset=utf-8", 201),
    ("Application/JSON", 201),
    ("application/vnd.settlement+json", 201),
    (None, 422),            # no content type: not read as JSON (FastAPI's strict rule, against cross-site posts)
    ("text/plain", 422),
    ("application/x-www-form-urlencoded", 422),
    ("application/jsonp", 422),
])
def test_the_settle_body_is_read_as_json_only_when_labelled_json(
        service: Service, live: LiveServer, content_type: str | None, status: int) -> None:
    code, key = service.hospital()
    body = json.dumps(settle_body(code, new_id_number(), f"CT-{secrets.token_hex(4)}")).encode()
    headers = {"content-type": content_type} if content_type else {}
    with live.client(key) as client:
        before = counts(service)
        client.headers.pop("content-type", None)
        response = client.post("/v1/settlements", content=body, headers=headers)
        assert response.status_code == status, response.text
        if status == 422:
            problem = assert_problem(response, 422, "REQUEST_MALFORMED")
            assert problem["problems"] == [{"code": "REQUEST_MALFORMED", "path": "",
                                            "message": "Input should be a valid dictionary or object to extract "
                                                       "fields from"}]
            assert delta(before, counts(service)) == {}


def test_an_empty_or_broken_settle_body_names_its_problem(service: Service, live: LiveServer) -> None:
    code, key = service.hospital()
    with live.client(key) as client:
        before = counts(service)
        labelled = {"content-type": "application/json"}
        empty = assert_problem(client.post("/v1/settlements", content=b"", headers=labelled), 422, "REQUEST_MALFORMED")
        assert [p["message"] for p in empty["problems"]] == ["Field required"]
        broken = assert_problem(client.post("/v1/settlements", content=b'{"transaction_id": ', headers=labelled),
                                422, "REQUEST_MALFORMED")
        assert "JSON" in broken["problems"][0]["message"]  # "Invalid JSON: ..." (FastAPI said "JSON decode error")
        body = settle_body(code, "110101199003077777", "BAD-1")
        body["claim"]["patient"]["id_number"] = "4" * 40  # too long: the message does not echo it
        long = assert_problem(client.post("/v1/settlements", json=body), 422, "REQUEST_MALFORMED")
        assert [p["path"] for p in long["problems"]] == ["claim.patient.id_number"]
        assert "4" * 40 not in json.dumps(long)
        assert delta(before, counts(service)) == {}


def test_personal_data_stays_out_of_errors_and_logs(service: Service, live: LiveServer,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    code, key = service.hospital()
    person = new_id_number()
    import_roster_rows(service, [(person, "dibao_rural_a", "2024-01-01", "")])
    wrong = person[:17] + ("0" if person[17] != "0" else "1")
    name = "欧阳喆"
    bodies = []
    caplog.set_level(logging.DEBUG)
    with live.client(key) as client:
        invalid = settle_body(code, wrong, "P-1")
        invalid["claim"]["patient"]["name"] = name
        response = client.post("/v1/settlements", json=invalid)
        assert_problem(response, 422, "CLAIM_INVALID_ID_NUMBER")
        bodies.append(response.text)
        quoted = client.post("/v1/quotes", json={"claim": invalid["claim"]})
        assert_problem(quoted, 422, "CLAIM_INVALID_ID_NUMBER")
        bodies.append(quoted.text)
        mismatch = settle_body(code, person, "P-2")
        mismatch["claim"]["patient"]["name"] = name
        mismatch["claim"]["lines"][0]["amount"] = "1.00"
        response = client.post("/v1/settlements", json=mismatch)
        assert_problem(response, 422, "CLAIM_AMOUNT_MISMATCH")
        bodies.append(response.text)
        shapeless = settle_body(code, person, "P-3")
        shapeless["claim"]["patient"]["name"] = name
        shapeless["claim"]["patient"]["id_number"] = person + "0" * 20
        response = client.post("/v1/settlements", json=shapeless)
        assert_problem(response, 422, "REQUEST_MALFORMED")
        bodies.append(response.text)
        ok = settle_body(code, person, "P-4")
        ok["claim"]["patient"]["name"] = name
        assert client.post("/v1/settlements", json=ok).status_code == 201
        eligibility = client.post("/v1/eligibility", json={"id_number": person})
        assert eligibility.status_code == 200 and person not in eligibility.text
    for text_body in bodies:
        for secret in (person, wrong, name):
            assert secret not in text_body
    # The log capture is live (httpx logs every request at INFO), so the check below is not vacuous.
    assert any(record.name.startswith("httpx") for record in caplog.records)
    for record in caplog.records:
        message = record.getMessage() + (record.exc_text or "")
        for secret in (person, wrong, name):
            assert secret not in message, (record.name, message)
    assert person not in caplog.text and name not in caplog.text


def test_the_settle_operation_is_documented_like_a_body_parameter_and_the_auth_dependency(
        service: Service, live: LiveServer) -> None:
    """Settle reads its body and its key itself (for speed); its OpenAPI operation must still say what FastAPI
    writes for a route taking a body model and depending on the caller, as the quote route does."""
    with live.client() as client:
        document = client.get("/openapi.json").json()
    settle, quote = document["paths"]["/v1/settlements"]["post"], document["paths"]["/v1/quotes"]["post"]
    assert settle["parameters"] == quote["parameters"]
    assert [p["name"] for p in settle["parameters"]] == ["authorization", "x-api-key"]
    assert settle["requestBody"] == {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/SettleRequest"}}}}
    schemas = document["components"]["schemas"]
    assert schemas["SettleRequest"]["required"] == ["transaction_id", "claim"]
    amount = schemas["LineIn"]["properties"]["amount"]  # a decimal string, never a number
    assert (amount["type"], amount["pattern"]) == ("string", "^-?[0-9]{1,12}(\\.[0-9]{1,2})?$")


@pytest.mark.parametrize("spelling", ["trailing newline", "Arabic-Indic digits", "one digit more"])
def test_a_second_spelling_of_an_id_number_is_refused_not_a_second_person(
        service: Service, live: LiveServer, spelling: str) -> None:
    """Were "...X\\n" or the number in another script's digits accepted, the same person would get a second set of
    annual figures, and every cap would start again. A line feed is refused with the request's shape (no string the
    service takes holds a control character), before the claim is read: nothing is kept under the key."""
    code, key = service.hospital()
    person = new_id_number()
    other = {"trailing newline": person + "\n", "one digit more": person + "1",  # too long for the column: was a 500
             "Arabic-Indic digits": "".join(chr(0x660 + int(c)) if c.isdigit() else c for c in person)}[spelling]
    with live.client(key) as client:
        assert client.post("/v1/settlements", json=settle_body(code, person, "SP-1")).status_code == 201
        before = counts(service)
        refused = client.post("/v1/settlements", json=settle_body(code, other, "SP-2"))
        if spelling == "trailing newline":
            problem = assert_problem(refused, 422, "REQUEST_MALFORMED")
            assert [p["path"] for p in problem["problems"]] == ["claim.patient.id_number"]
            kept = {}
        else:
            problem = assert_problem(refused, 422, "CLAIM_INVALID_ID_NUMBER")
            assert [p["path"] for p in problem["problems"]] == ["patient.id_number"]
            kept = {"idempotency_records": 1}  # the key keeps its failure
        assert other not in refused.text and person not in refused.text
        assert delta(before, counts(service)) == kept
