"""A real SOAP client against the live server: zeep loads the standard dialect's WSDL from GET /soap?wsdl, signs
every call with a WS-Security UsernameToken digest, and calls every operation. The same story told over REST for
an identical claim (another person, same roster category) gives the same answers: SOAP and REST share every rule.

Also a golden envelope check: the SettleRequest zeep writes from the WSDL is the golden example of the dialect."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import zeep
from lxml import etree
from zeep.exceptions import Fault
from zeep.helpers import serialize_object
from zeep.wsse.username import UsernameToken

from settlement.paths import default_adapters_dir
from tests.service.conftest import LiveServer, Service, claim_body, import_roster_rows, new_id_number
from tests.soap.conftest import SoapHospital, message_id

FAULT_NS = "urn:settlement:soap:fault"
STANDARD = default_adapters_dir() / "standard"
GOLDEN_SETTLE = STANDARD / "examples" / "settle"
CATEGORY = "dibao_rural_a"


# zeep is typed only in part: its constructors and helpers are called through these few functions.


def zeep_client(live: LiveServer, service: Service, hospital: SoapHospital) -> zeep.Client:
    token = UsernameToken(hospital.code, hospital.password, use_digest=True,  # type: ignore[no-untyped-call]
                          created=service.clock())
    transport = zeep.Transport(timeout=10)  # type: ignore[no-untyped-call]
    return zeep.Client(f"{live.url}/soap?wsdl", wsse=token, transport=transport)  # type: ignore[no-untyped-call]


def settle_message(client: zeep.Client, key: str, claim: dict[str, Any]) -> etree._Element:
    """The envelope zeep would send for a SettleRequest (no WS-Security header: the client has none)."""
    written: etree._Element = client.create_message(  # type: ignore[no-untyped-call]
        client.service, "Settle", messageId=key, claim=claim)
    return written


def soap_claim(claim: dict[str, Any]) -> dict[str, Any]:
    """The REST claim JSON as the standard dialect's typed claim (dates, times and money as Python values)."""
    visit, patient = claim["visit"], claim["patient"]
    hospital = {"code": claim["hospital"]["code"], "level": claim["hospital"]["level"]}
    if claim["hospital"].get("name"):
        hospital["name"] = claim["hospital"]["name"]
    return {
        "hospital": hospital,
        "visit": {"id": visit["id"], "type": visit["type"],
                  "admissionDate": date.fromisoformat(visit["admission_date"]),
                  "dischargeDate": date.fromisoformat(visit["discharge_date"]),
                  "settledAt": datetime.fromisoformat(visit["settled_at"])},
        "patient": {"idNumber": patient["id_number"], "name": patient["name"], "scheme": patient["scheme"],
                    "region": patient["region"]},
        "lines": {"line": [{"id": line["id"], "code": line["code"], "name": line["name"],
                            "quantity": Decimal(line["quantity"]), "unitPrice": Decimal(line["unit_price"]),
                            "amount": Decimal(line["amount"])} for line in claim["lines"]]},
    }


def plain(value: Any) -> dict[str, Any]:
    """A zeep answer as nested dicts and lists."""
    result: dict[str, Any] = serialize_object(value, dict)  # type: ignore[no-untyped-call]
    return result


def fault_code(fault: Fault) -> str:
    assert fault.detail is not None, fault.message
    found = fault.detail.find(f".//{{{FAULT_NS}}}code")
    assert found is not None and found.text, etree.tostring(fault.detail)
    return str(found.text)


# Answers with the ids taken out, comparable between SOAP (zeep: Decimals, camelCase) and REST (strings)


def shares_of_soap(answer: dict[str, Any]) -> dict[str, Any]:
    payers = answer["payers"]["payer"]
    shares = {
        "total": answer["total"], "in_scope": answer["inScope"], "patient_pays": answer["patientPays"],
        "payers": [(p["layer"], p["fund"], p["eligible"], p["paid"]) for p in payers],
        "categories": list(answer["categories"]["category"]),
    }
    assert all(isinstance(p[3], Decimal) for p in shares["payers"]) and isinstance(answer["total"], Decimal)
    # Money is exact: every fen of the bill is paid by a payer or by the patient.
    assert sum((p[3] for p in shares["payers"]), Decimal(0)) + answer["patientPays"] == answer["total"], shares
    return shares


def shares_of_rest(answer: dict[str, Any]) -> dict[str, Any]:
    return {
        "total": Decimal(answer["total"]), "in_scope": Decimal(answer["in_scope"]),
        "patient_pays": Decimal(answer["patient_pays"]),
        "payers": [(p["layer"], p["fund"], p["eligible"], Decimal(p["paid"])) for p in answer["payers"]],
        "categories": list(answer["categories"]),
    }


def soap_story(client: zeep.Client, code: str, person: str) -> list[Any]:
    """Every operation of the standard dialect, in a cashier's order; returns the answers without their ids."""
    service = client.service
    story: list[Any] = []

    eligible = plain(service.Eligibility(idNumber=person, on=date(2024, 6, 15)))
    assert eligible["person"] == person[:6] + "********" + person[-4:]
    story.append(("eligibility", eligible["inRoster"], [c["code"] for c in eligible["categories"]["category"]]))

    first = soap_claim(claim_body(code, "county", person, amount="2345.67"))
    quoted = plain(service.Quote(claim=first))
    assert quoted["quoteId"]
    story.append(("quote", shares_of_soap(quoted)))
    as_quoted = plain(service.Settle(messageId=message_id(code), quoteId=quoted["quoteId"], claim=first))
    assert shares_of_soap(as_quoted) == shares_of_soap(quoted)
    story.append(("settle as quoted", shares_of_soap(as_quoted), as_quoted["status"], as_quoted["replayed"]))

    key = message_id(code)
    second = soap_claim(claim_body(code, "county", person, amount="1000.00"))
    settled = plain(service.Settle(messageId=key, claim=second))
    again = plain(service.Settle(messageId=key, claim=second))
    sid = settled["settlementId"]
    assert settled["messageId"] == key and settled["replayed"] is False
    assert again["settlementId"] == sid and again["replayed"] is True
    assert shares_of_soap(again) == shares_of_soap(settled)
    story.append(("settle", shares_of_soap(settled), settled["status"], again["replayed"]))

    read = plain(service.GetSettlement(settlementId=sid))
    assert read["settlementId"] == sid and read["messageId"] == key and read.get("reversalId") is None
    story.append(("get", shares_of_soap(read), read["status"]))

    reverse_key = message_id(code)
    reversed_ = plain(service.Reverse(messageId=reverse_key, settlementId=sid, reason="录入错误"))
    reversed_again = plain(service.Reverse(messageId=reverse_key, settlementId=sid, reason="录入错误"))
    assert reversed_["settlementId"] == sid and reversed_["reversalId"]
    assert reversed_again["reversalId"] == reversed_["reversalId"] and reversed_again["replayed"] is True
    assert reversed_["total"] == -settled["total"] and reversed_["patientPays"] == -settled["patientPays"]
    entries = [(e["fund"], e["amount"]) for e in reversed_["entries"]["entry"]]
    story.append(("reverse", reversed_["status"], reversed_["replayed"], entries))
    with pytest.raises(Fault) as twice:
        service.Reverse(messageId=message_id(code), settlementId=sid)
    story.append(("reverse twice", fault_code(twice.value)))
    after = plain(service.GetSettlement(settlementId=sid))
    assert after["status"] == "reversed" and after["reversalId"] == reversed_["reversalId"]

    # Cancel (2601) of a call that settled: reverses it.
    uncertain = message_id(code)
    lost = plain(service.Settle(messageId=uncertain, claim=soap_claim(claim_body(code, "county", person,
                                                                                 amount="500.00"))))
    cancelled = plain(service.Cancel(messageId=message_id(code), originalMessageId=uncertain, reason="超时"))
    assert cancelled["settlementId"] == lost["settlementId"] and cancelled["reversalId"]
    assert cancelled["total"] == -lost["total"]
    assert plain(service.GetSettlement(settlementId=lost["settlementId"]))["status"] == "reversed"
    story.append(("cancel settled", cancelled["status"], shares_of_soap(lost)))

    # Cancel of a call that never arrived: the original, should it arrive later, is refused.
    never = message_id(code)
    voided = plain(service.Cancel(messageId=message_id(code), originalMessageId=never))
    assert voided["originalMessageId"] == never and voided.get("reversalId") is None
    with pytest.raises(Fault) as late:
        service.Settle(messageId=never, claim=soap_claim(claim_body(code, "county", person)))
    story.append(("cancel never arrived", voided["status"], fault_code(late.value)))
    return story


def rest_story(live: LiveServer, key: str, code: str, person: str) -> list[Any]:
    """The same story over REST."""
    story: list[Any] = []
    with live.client(key) as client:
        def ok(response: Any, status: int = 201) -> dict[str, Any]:
            assert response.status_code == status, response.text
            body: dict[str, Any] = response.json()
            return body

        eligible = ok(client.post("/v1/eligibility", json={"id_number": person, "on": "2024-06-15"}), 200)
        story.append(("eligibility", eligible["in_roster"], [c["code"] for c in eligible["categories"]]))

        first = claim_body(code, "county", person, amount="2345.67")
        quoted = ok(client.post("/v1/quotes", json={"claim": first}), 200)
        story.append(("quote", shares_of_rest(quoted)))
        as_quoted = ok(client.post("/v1/settlements", json={"transaction_id": message_id(code), "claim": first,
                                                            "quote_id": quoted["quote_id"]}))
        story.append(("settle as quoted", shares_of_rest(as_quoted), as_quoted["status"], False))

        transaction = message_id(code)
        second = {"transaction_id": transaction, "claim": claim_body(code, "county", person, amount="1000.00")}
        settled = ok(client.post("/v1/settlements", json=second))
        replay = client.post("/v1/settlements", json=second)
        assert ok(replay)["settlement_id"] == settled["settlement_id"]
        story.append(("settle", shares_of_rest(settled), settled["status"],
                      replay.headers.get("Idempotent-Replayed") == "true"))
        sid = settled["settlement_id"]
        story.append(("get", shares_of_rest(ok(client.get(f"/v1/settlements/{sid}"), 200)), "settled"))

        reversal = {"transaction_id": message_id(code), "reason": "录入错误"}
        reversed_ = ok(client.post(f"/v1/settlements/{sid}/reversal", json=reversal))
        assert ok(client.post(f"/v1/settlements/{sid}/reversal", json=reversal)) == reversed_
        story.append(("reverse", reversed_["status"], False,
                      [(e["fund"], Decimal(e["paid"])) for e in reversed_["entries"]]))
        twice = client.post(f"/v1/settlements/{sid}/reversal", json={"transaction_id": message_id(code)})
        story.append(("reverse twice", twice.json()["code"]))

        uncertain = message_id(code)
        lost = ok(client.post("/v1/settlements", json={"transaction_id": uncertain, "claim": claim_body(
            code, "county", person, amount="500.00")}))
        cancelled = ok(client.post("/v1/cancellations", json={"transaction_id": message_id(code),
                                                              "original_transaction_id": uncertain, "reason": "超时"}))
        story.append(("cancel settled", cancelled["status"], shares_of_rest(lost)))

        never = message_id(code)
        voided = ok(client.post("/v1/cancellations", json={"transaction_id": message_id(code),
                                                           "original_transaction_id": never}))
        late = client.post("/v1/settlements", json={"transaction_id": never,
                                                    "claim": claim_body(code, "county", person)})
        story.append(("cancel never arrived", voided["status"], late.json()["code"]))
    return story


def test_zeep_calls_every_operation_and_rest_answers_the_same(service: Service, live: LiveServer,
                                                              soap_hospital: SoapHospital) -> None:
    over_soap, over_rest = new_id_number(), new_id_number()
    import_roster_rows(service, [(over_soap, CATEGORY, "2024-01-01", ""), (over_rest, CATEGORY, "2024-01-01", "")])
    client = zeep_client(live, service, soap_hospital)
    soap = soap_story(client, soap_hospital.code, over_soap)
    # What the story must show, whichever way it is told.
    by_step = {step[0]: step[1:] for step in soap}
    assert by_step["eligibility"] == (True, [CATEGORY])
    assert by_step["quote"][0]["categories"] == [CATEGORY]
    assert by_step["settle as quoted"][1:] == ("settled", False)
    assert by_step["settle"][1:] == ("settled", True)
    assert by_step["reverse"][:2] == ("reversed", False)
    assert by_step["reverse twice"] == ("SETTLEMENT_ALREADY_REVERSED",)
    assert by_step["cancel settled"][0] == "reversed"
    assert by_step["cancel never arrived"] == ("cancelled_before_arrival", "TRANSACTION_CANCELLED")
    rest = rest_story(live, soap_hospital.api_key, soap_hospital.code, over_rest)
    assert rest == soap


def test_a_fen_missing_from_the_shares_is_seen() -> None:
    """The exact-sum check can fail: an answer whose payers and patient do not add up to the total."""
    answer = {"total": Decimal("1000.00"), "inScope": Decimal("1000.00"), "patientPays": Decimal("550.00"),
              "categories": {"category": []},
              "payers": {"payer": [{"layer": "basic_inpatient", "fund": "390100", "eligible": True,
                                    "paid": Decimal("449.99")}]}}
    with pytest.raises(AssertionError):
        shares_of_soap(answer)
    answer["payers"]["payer"][0]["paid"] = Decimal("450.00")  # type: ignore[index]
    assert shares_of_soap(answer)["patient_pays"] == Decimal("550.00")


# The golden envelope


def golden_claim() -> dict[str, Any]:
    lines = [("1", "001109000010001", "普通病房床位费(双人间)", "12", "35.00", "420.00"),
             ("2", "001201000020000", "特级护理", "3", "60.00", "180.00"),
             ("3", "001204000060000", "静脉输液", "24", "12.00", "288.00"),
             ("4", "002501030010000", "粪便常规", "2", "8.00", "16.00")]
    return soap_claim({
        "hospital": {"code": "H61100200011", "level": "county", "name": "商州区人民医院"},
        "visit": {"id": "ZY2024031200158", "type": "inpatient", "admission_date": "2024-03-02",
                  "discharge_date": "2024-03-12", "settled_at": "2024-03-12T10:15:00+08:00"},
        "patient": {"id_number": "611002196804120038", "name": "王喆", "scheme": "resident", "region": "611002"},
        "lines": [{"id": i, "code": c, "name": n, "quantity": q, "unit_price": p, "amount": a}
                  for i, c, n, q, p, a in lines]})


def canonical(element: etree._Element) -> bytes:
    """Exclusive of insignificant whitespace, in canonical XML."""
    parser = etree.XMLParser(remove_blank_text=True)
    reparsed = etree.fromstring(etree.tostring(element), parser)
    return etree.tostring(reparsed, method="c14n")


def golden_request() -> etree._Element:
    return etree.parse(str(GOLDEN_SETTLE / "request.xml")).getroot()


@pytest.fixture(scope="module")
def offline_client() -> zeep.Client:
    """zeep on the WSDL file itself (the live server serves the same file, see below): no database needed."""
    return zeep.Client(str(STANDARD / "service.wsdl"))  # type: ignore[no-untyped-call]


def test_zeep_writes_the_golden_settle_envelope(offline_client: zeep.Client) -> None:
    written = settle_message(offline_client, "H61100200011-20240312101500-0001", golden_claim())
    assert canonical(written) == canonical(golden_request())


def test_a_changed_envelope_is_not_the_golden_one(offline_client: zeep.Client) -> None:
    claim = golden_claim()
    claim["lines"]["line"][0]["amount"] = Decimal("420.01")
    written = settle_message(offline_client, "H61100200011-20240312101500-0001", claim)
    assert canonical(written) != canonical(golden_request())


def test_the_served_wsdl_is_the_dialect_file_with_its_address(service: Service, live: LiveServer) -> None:
    served = httpx.get(f"{live.url}/soap", params={"wsdl": ""}, timeout=10)
    assert served.status_code == 200
    text = Path(STANDARD / "service.wsdl").read_text(encoding="utf-8")
    expected = text.replace("SOAP_ADDRESS", f"{live.url}/soap").replace(
        'schemaLocation="schema.xsd"', f'schemaLocation="{live.url}/soap/standard/files/schema.xsd"')
    assert served.text == expected
    schema = httpx.get(f"{live.url}/soap/standard/files/schema.xsd", timeout=10)
    assert schema.content == (STANDARD / "schema.xsd").read_bytes()
