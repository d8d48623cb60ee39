"""Access and history over SOAP (both databases, live server): a hospital reaches only its own settlements,
idempotency keys are shared by REST and SOAP, and every authenticated exchange is kept once, masked, in an
append-only envelope log."""

from __future__ import annotations

import html
import re
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from settlement.domain.privacy import mask_id_number
from tests.service.conftest import LiveServer, Service, claim_body, new_id_number
from tests.soap.conftest import SoapHospital, message_id, soap_envelope, soap_hospital_for, wsse_header
from tests.soap.test_wsse import NS, counts, eligibility_xml, fault_of, post, settle_xml

NAME = "王喆"  # claim_body's patient: 喆 is a rare character, outside GB 2312


def call(live: LiveServer, service: Service, hospital: SoapHospital, body: str) -> httpx.Response:
    return post(live, soap_envelope(body, wsse_header(hospital.code, hospital.password, service.clock())))


def element(reply: httpx.Response, name: str) -> str:
    found = re.search(rf"<{name}>([^<]*)</{name}>".encode(), reply.content)
    assert found is not None, (name, reply.text)
    return found.group(1).decode()


def settled(live: LiveServer, service: Service, hospital: SoapHospital, key: str,
            claim: dict[str, Any]) -> httpx.Response:
    reply = call(live, service, hospital, settle_xml(key, claim))
    assert reply.status_code == 200, reply.text
    return reply


def get_xml(settlement_id: str) -> str:
    return f'<GetSettlementRequest xmlns="{NS}"><settlementId>{settlement_id}</settlementId></GetSettlementRequest>'


def reverse_xml(key: str, settlement_id: str) -> str:
    return (f'<ReverseRequest xmlns="{NS}"><messageId>{key}</messageId><settlementId>{settlement_id}</settlementId>'
            "<reason>录入错误</reason></ReverseRequest>")


def cancel_xml(key: str, original: str) -> str:
    return (f'<CancelRequest xmlns="{NS}"><messageId>{key}</messageId><originalMessageId>{original}'
            "</originalMessageId></CancelRequest>")


def quote_xml(claim: dict[str, Any]) -> str:
    settle = settle_xml("unused", claim)
    inner = settle[settle.index("<claim>"):settle.index("</SettleRequest>")]
    return f'<QuoteRequest xmlns="{NS}">{inner}</QuoteRequest>'


def changes(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {table: after[table] - before[table] for table in before if after[table] != before[table]}


# Access


def test_other_hospitals_settlements_are_not_found_over_soap(service: Service, live: LiveServer) -> None:
    a, b = soap_hospital_for(service), soap_hospital_for(service)
    key = message_id(a.code)
    sid = element(settled(live, service, a, key, claim_body(a.code, a.level, new_id_number())), "settlementId")
    assert call(live, service, a, get_xml(sid)).status_code == 200  # the 404s below are about ownership
    before = counts(service)
    assert fault_of(call(live, service, b, get_xml(sid))) == (500, "NOT_FOUND", 404)
    assert fault_of(call(live, service, b, reverse_xml(message_id(b.code), sid))) == (500, "NOT_FOUND", 404)
    # B cancelling A's message id cancels a message of B's own (keys are per hospital): A's settlement stays.
    cancelled = call(live, service, b, cancel_xml(message_id(b.code), key))
    assert element(cancelled, "status") == "cancelled_before_arrival"
    # Nothing moved: B's keys keep their answers, and the log keeps B's three exchanges.
    assert changes(before, counts(service)) == {"idempotency_records": 3, "soap_exchanges": 3, "wsse_nonces": 3,
                                                "audit_log": 1}
    assert element(call(live, service, a, get_xml(sid)), "status") == "settled"
    # The same over REST, with B's API key.
    with live.client(b.api_key) as client:
        assert client.get(f"/v1/settlements/{sid}").status_code == 404
    # And A's own reversal still works afterwards.
    assert element(call(live, service, a, reverse_xml(message_id(a.code), sid)), "status") == "reversed"


def test_a_claim_naming_another_hospital_is_refused(service: Service, live: LiveServer) -> None:
    a, b = soap_hospital_for(service), soap_hospital_for(service)
    person = new_id_number()
    before = counts(service)
    for claim in (claim_body(a.code, a.level, person), claim_body(b.code, "city", person)):
        reply = call(live, service, b, settle_xml(message_id(b.code), claim))
        assert fault_of(reply) == (500, "HOSPITAL_MISMATCH", 422)
        assert person.encode() not in reply.content
    # No settlement; the failure is kept under each key (as over REST) and the exchanges are logged.
    assert changes(before, counts(service)) == {"idempotency_records": 2, "soap_exchanges": 2, "wsse_nonces": 2}


# Idempotency across REST and SOAP


def test_one_key_across_soap_and_rest_is_one_settlement(service: Service, live: LiveServer,
                                                        soap_hospital: SoapHospital) -> None:
    code = soap_hospital.code
    with live.client(soap_hospital.api_key) as client:
        # SOAP first, then REST with the same key and the same claim: the REST call replays the SOAP settlement.
        key = message_id(code)
        claim = claim_body(code, soap_hospital.level, new_id_number())
        over_soap = settled(live, service, soap_hospital, key, claim)
        before = counts(service)
        over_rest = client.post("/v1/settlements", json={"transaction_id": key, "claim": claim})
        assert over_rest.status_code == 201, over_rest.text
        assert over_rest.headers.get("Idempotent-Replayed") == "true"
        body = over_rest.json()
        assert body["settlement_id"] == element(over_soap, "settlementId")
        assert body["patient_pays"] == element(over_soap, "patientPays")
        assert changes(before, counts(service)) == {}
        # REST first, then SOAP.
        key = message_id(code)
        claim = claim_body(code, soap_hospital.level, new_id_number())
        first = client.post("/v1/settlements", json={"transaction_id": key, "claim": claim})
        assert first.status_code == 201, first.text
        before = counts(service)
        again = settled(live, service, soap_hospital, key, claim)
        assert element(again, "settlementId") == first.json()["settlement_id"]
        assert element(again, "replayed") == "true"
        assert changes(before, counts(service)) == {"soap_exchanges": 1, "wsse_nonces": 1}
        # A different claim under the key, over REST, is refused as it is over SOAP.
        other = claim_body(code, soap_hospital.level, new_id_number())
        refused = client.post("/v1/settlements", json={"transaction_id": key, "claim": other})
        assert refused.status_code == 409 and refused.json()["code"] == "IDEMPOTENCY_KEY_REUSED"


def test_a_key_reused_for_another_claim_is_refused_and_records_nothing(service: Service, live: LiveServer,
                                                                       soap_hospital: SoapHospital) -> None:
    key = message_id(soap_hospital.code)
    claim = claim_body(soap_hospital.code, soap_hospital.level, new_id_number())
    sid = element(settled(live, service, soap_hospital, key, claim), "settlementId")
    other = claim_body(soap_hospital.code, soap_hospital.level, claim["patient"]["id_number"], amount="1000.01")
    before = counts(service)
    assert fault_of(call(live, service, soap_hospital, settle_xml(key, other))) == (500, "IDEMPOTENCY_KEY_REUSED",
                                                                                    409)
    assert changes(before, counts(service)) == {"soap_exchanges": 1, "wsse_nonces": 1}
    # The original still replays.
    again = settled(live, service, soap_hospital, key, claim)
    assert element(again, "settlementId") == sid and element(again, "replayed") == "true"


# The envelope log


def assert_masked(logged: str, person: str, name: str, secrets: list[str]) -> None:
    """Neither the ID number nor the name nor a secret of WS-Security appears in a stored envelope."""
    assert person not in logged and person[:-1] not in logged, "an unmasked ID number"
    assert name not in logged, "an unmasked name"
    for secret in secrets:
        assert secret not in logged, "a password or digest"


def exchanges(service: Service, code: str) -> list[dict[str, Any]]:
    with service.app.engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT x.operation, x.code, x.message_id, x.settlement_id, x.outcome, x.request, x.reply, x.dialect "
            "FROM soap_exchanges x JOIN hospitals h ON h.id = x.hospital_id WHERE h.code = :code ORDER BY x.id"),
            {"code": code}).mappings().all()
    return [dict(row) for row in rows]


def test_every_exchange_is_logged_once_and_masked(service: Service, live: LiveServer,
                                                  soap_hospital: SoapHospital) -> None:
    hospital, code = soap_hospital, soap_hospital.code
    person = new_id_number()
    claim = claim_body(code, hospital.level, person)
    secrets = [hospital.password]
    sent: list[tuple[str, str, str | None]] = []  # (operation, dialect code, message id)

    def send(body: str, operation: str, dialect_code: str, key: str | None) -> httpx.Response:
        header = wsse_header(code, hospital.password, service.clock())
        secrets.append(re.search(r"PasswordDigest\">([^<]+)<", header).group(1))  # type: ignore[union-attr]
        reply = post(live, soap_envelope(body, header))
        sent.append((operation, dialect_code, key))
        return reply

    send(eligibility_xml(person), "eligibility", "EligibilityRequest", None)
    send(quote_xml(claim), "quote", "QuoteRequest", None)
    key = message_id(code)
    sid = element(send(settle_xml(key, claim), "settle", "SettleRequest", key), "settlementId")
    send(settle_xml(key, claim), "settle", "SettleRequest", key)  # a replay is an exchange too
    send(get_xml(sid), "get", "GetSettlementRequest", None)
    reverse_key = message_id(code)
    send(reverse_xml(reverse_key, sid), "reverse", "ReverseRequest", reverse_key)
    twice = message_id(code)
    send(reverse_xml(twice, sid), "reverse", "ReverseRequest", twice)
    cancel_key = message_id(code)
    send(cancel_xml(cancel_key, message_id(code)), "cancel", "CancelRequest", cancel_key)
    reused = claim_body(code, hospital.level, person, amount="999.00")
    send(settle_xml(key, reused), "settle", "SettleRequest", key)
    # Refused before authentication: not logged (nothing is known of who sent it).
    wrong = wsse_header(code, "wrong", service.clock())
    assert fault_of(post(live, soap_envelope(settle_xml(message_id(code), claim), wrong)))[1] == "AUTH_INVALID"

    rows = exchanges(service, code)
    assert [(r["operation"], r["code"], r["message_id"]) for r in rows] == sent
    assert {r["dialect"] for r in rows} == {"standard"}
    assert [r["settlement_id"] for r in rows] == [None, None, sid, sid, sid, sid, sid, None, None]
    assert rows[0]["outcome"] == "ok" and rows[-1]["outcome"] == "IDEMPOTENCY_KEY_REUSED"
    masked = mask_id_number(person)
    assert masked == f"{person[:6]}********{person[-4:]}"
    for row in rows:
        for logged in (row["request"], row["reply"]):
            assert_masked(logged, person, NAME, secrets)
        assert re.search(r"<wsse:Password Type=\"[^\"]+#PasswordDigest\">\*\*\*</wsse:Password>", row["request"])
        assert row["reply"].startswith('<?xml version="1.0" encoding="UTF-8"?>')
    for row in [*rows[:4], rows[-1]]:  # eligibility, quote, the settles: they carried the person
        assert masked in row["request"]
    for row in [*rows[1:4], rows[-1]]:  # and, but for eligibility, the name
        assert "王*" in row["request"]
    assert "SETTLEMENT_ALREADY_REVERSED" in rows[6]["reply"]


def test_the_logged_outcome_tells_replays_and_kept_failures(service: Service, live: LiveServer,
                                                            soap_hospital: SoapHospital) -> None:
    """SoapExchange.outcome is documented as 'ok | replayed | the error code'."""
    key = message_id(soap_hospital.code)
    claim = claim_body(soap_hospital.code, soap_hospital.level, new_id_number())
    sid = element(settled(live, service, soap_hospital, key, claim), "settlementId")
    settled(live, service, soap_hospital, key, claim)
    call(live, service, soap_hospital, reverse_xml(message_id(soap_hospital.code), sid))
    twice = call(live, service, soap_hospital, reverse_xml(message_id(soap_hospital.code), sid))
    assert fault_of(twice)[1] == "SETTLEMENT_ALREADY_REVERSED"
    outcomes = [row["outcome"] for row in exchanges(service, soap_hospital.code)]
    assert outcomes == ["ok", "replayed", "ok", "SETTLEMENT_ALREADY_REVERSED"]


def test_the_mask_check_catches_an_unmasked_envelope(service: Service, live: LiveServer,
                                                     soap_hospital: SoapHospital) -> None:
    """The planted fault: the envelope as it was sent (unmasked) fails the check the log passes."""
    person = new_id_number()
    header = wsse_header(soap_hospital.code, soap_hospital.password, service.clock())
    envelope = soap_envelope(settle_xml(message_id(soap_hospital.code), claim_body(
        soap_hospital.code, soap_hospital.level, person)), header).decode()
    digest = re.search(r"PasswordDigest\">([^<]+)<", header).group(1)  # type: ignore[union-attr]
    assert post(live, envelope.encode()).status_code == 200
    (row,) = exchanges(service, soap_hospital.code)
    assert_masked(row["request"], person, NAME, [digest])
    for planted in (envelope, envelope.replace(NAME, "王*"), row["request"].replace("***", digest),
                    row["request"].replace(mask_id_number(person), person)):
        with pytest.raises(AssertionError):
            assert_masked(planted, person, NAME, [digest])


def test_a_message_refused_by_the_schema_is_logged_masked(service: Service, live: LiveServer,
                                                          soap_hospital: SoapHospital) -> None:
    person = new_id_number()
    claim = claim_body(soap_hospital.code, soap_hospital.level, person)
    claim["lines"][0]["quantity"] = "one"  # not an xs:decimal
    reply = call(live, service, soap_hospital, settle_xml(message_id(soap_hospital.code), claim))
    assert fault_of(reply) == (500, "MESSAGE_INVALID", 422)
    (row,) = exchanges(service, soap_hospital.code)
    assert_masked(row["request"], person, NAME, [soap_hospital.password])


def test_character_references_do_not_unmask_the_log(service: Service, live: LiveServer,
                                                    soap_hospital: SoapHospital) -> None:
    """Legal XML, and what systems with a narrow charset send for rare characters: the log must not keep the
    name or the ID number in a form any XML reader turns back into the text."""
    person = new_id_number()
    claim = claim_body(soap_hospital.code, soap_hospital.level, person)
    body = settle_xml(message_id(soap_hospital.code), claim)
    body = body.replace(NAME, "".join(f"&#{ord(c)};" for c in NAME))
    body = body.replace(f"<idNumber>{person}", f"<idNumber>&#{ord(person[0])};{person[1:]}")
    assert call(live, service, soap_hospital, body).status_code == 200
    (row,) = exchanges(service, soap_hospital.code)
    assert_masked(html.unescape(row["request"]), person, NAME, [])


def test_a_digest_in_cdata_is_masked_in_the_log(service: Service, live: LiveServer,
                                                soap_hospital: SoapHospital) -> None:
    header = wsse_header(soap_hospital.code, soap_hospital.password, service.clock())
    digest = re.search(r"PasswordDigest\">([^<]+)<", header).group(1)  # type: ignore[union-attr]
    header = header.replace(f">{digest}<", f"><![CDATA[{digest}]]><")
    person = new_id_number()
    assert post(live, soap_envelope(eligibility_xml(person), header)).status_code == 200  # accepted
    (row,) = exchanges(service, soap_hospital.code)
    assert_masked(row["request"], person, NAME, [digest])


# The log is history


def test_the_envelope_log_refuses_update_and_delete(service: Service, live: LiveServer,
                                                    soap_hospital: SoapHospital) -> None:
    assert call(live, service, soap_hospital, eligibility_xml(new_id_number())).status_code == 200
    (row,) = exchanges(service, soap_hospital.code)
    statements = ["UPDATE soap_exchanges SET outcome = 'tampered' WHERE hospital_id = "
                  "(SELECT id FROM hospitals WHERE code = :code)",
                  "UPDATE soap_exchanges SET request = '' WHERE hospital_id = "
                  "(SELECT id FROM hospitals WHERE code = :code)",
                  "DELETE FROM soap_exchanges WHERE hospital_id = (SELECT id FROM hospitals WHERE code = :code)"]
    for statement in statements:
        with pytest.raises(DBAPIError, match="APPEND_ONLY"), service.app.engine.begin() as connection:
            connection.execute(text(statement), {"code": soap_hospital.code})
    assert exchanges(service, soap_hospital.code) == [row]
    # The planted contrast: the nonce table is not history (old nonces are purged), and the same statement on it
    # goes through; the check above would have seen a table without the guard.
    with service.app.engine.begin() as connection:
        deleted = connection.execute(text(
            "DELETE FROM wsse_nonces WHERE hospital_id = (SELECT id FROM hospitals WHERE code = :code)"),
            {"code": soap_hospital.code})
        assert deleted.rowcount == 1


def test_the_logged_reply_is_the_reply_sent(service: Service, live: LiveServer,
                                            soap_hospital: SoapHospital) -> None:
    """The log keeps what went over the wire (masked): a settle reply holds nothing personal, so it is stored
    exactly as sent."""
    key = message_id(soap_hospital.code)
    reply = settled(live, service, soap_hospital, key, claim_body(soap_hospital.code, soap_hospital.level,
                                                                   new_id_number()))
    (row,) = exchanges(service, soap_hospital.code)
    assert row["reply"] == reply.text
    assert row["settlement_id"] == element(reply, "settlementId") and row["message_id"] == key
