"""Two refusals every interface gives alike, since every dialect goes through the same service (issue 15):

- item 2, CLAIM_CONTRADICTS_ROSTER: for a person on the roster, the roster decides the region and the scheme (and
  so the tariff and the payers). A claim saying another region (the patient would be settled under another
  county's tariff) or another scheme (a resident sent as `employee` paid 100%) is refused, naming the field; a
  person not on the roster is settled as the hospital says, as before.
- item 3, CLAIM_DATE_IN_FUTURE: a claim dated after the service's clock (beyond the allowed skew).

Each over REST (quote and settle), the standard dialect through zeep, legacy-gbk (41) and rural-ncms (B020012),
on SQLite and PostgreSQL (REST there runs the pipelined transaction on the event loop). Nothing is recorded for
a refusal, and it is kept under its key."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import date, datetime
from typing import Any
from xml.sax.saxutils import escape

import httpx
import pytest
from sqlalchemy import text
from zeep.exceptions import Fault

from settlement.bootstrap import SYSTEM
from settlement.paths import default_adapters_dir
from settlement.services.roster import import_roster
from tests.service.conftest import LiveServer, Service, claim_body, new_id_number
from tests.soap.conftest import SOAP11, SoapHospital, message_id, wsse_header
from tests.soap.test_gbk_roundtrip import GBK, legacy_envelope, legacy_message, legacy_output, rural_response
from tests.soap.test_zeep_interop import fault_code, plain, soap_claim, zeep_client

RURAL_SETTLE = default_adapters_dir() / "rural-ncms" / "examples" / "settle" / "request.xml"
SCHEME_CODES = {"resident": "390", "employee": "310"}
TODAY = "2024-06-15T10:00:00+08:00"  # the test clock, in Shanghai
TOMORROW = "2024-06-16T09:00:00+08:00"


def on_roster(service: Service, region: str = "611002", scheme: str = "resident") -> str:
    person = new_id_number(region)
    report = import_roster(service.app.context, SYSTEM, "one.csv", (
        "id_number,name,scheme,region,category,valid_from,valid_to\n"
        f"{person},测试,{scheme},{region},dibao_rural_a,2023-01-01,\n").encode())
    assert report.accepted == 1, report
    return person


Outcome = tuple[str, str]  # ("settled", settlement id) or ("refused", code)
Settle = Callable[[str, str, str, str], Outcome]  # person, region, scheme, settled_at


def interfaces(service: Service, live: LiveServer, hospital: SoapHospital) -> dict[str, Settle]:
    """One settle function per interface, for a claim of the given person, region, scheme and settlement time."""
    client = zeep_client(live, service, hospital)

    def claim(person: str, region: str, scheme: str, settled_at: str) -> dict[str, Any]:
        body = claim_body(hospital.code, hospital.level, person, region=region, settled_at=settled_at,
                          discharge=settled_at[:10])
        body["patient"]["scheme"] = scheme
        return body

    def rest(person: str, region: str, scheme: str, settled_at: str) -> Outcome:
        with live.client(hospital.api_key) as http:
            reply = http.post("/v1/settlements", json={"transaction_id": f"T-{secrets.token_hex(6)}",
                                                       "claim": claim(person, region, scheme, settled_at)})
        body = reply.json()
        return ("settled", body["settlement_id"]) if reply.status_code == 201 else ("refused", body["code"])

    def standard(person: str, region: str, scheme: str, settled_at: str) -> Outcome:
        try:
            answer = plain(client.service.Settle(messageId=message_id(hospital.code),
                                                 claim=soap_claim(claim(person, region, scheme, settled_at))))
        except Fault as fault:
            return "refused", fault_code(fault)
        return "settled", str(answer["settlementId"])

    def legacy(person: str, region: str, scheme: str, settled_at: str) -> Outcome:
        when = datetime.fromisoformat(settled_at)
        inner = legacy_message({"prm_msgid": message_id(hospital.code), "prm_akb020": hospital.code,
                                "prm_aac002": person, "prm_aab301": region, "prm_aae140": SCHEME_CODES[scheme],
                                "prm_akc190": f"ZY{secrets.token_hex(6)}", "prm_akc192": f"{when:%Y%m%d}",
                                "prm_akc194": f"{when:%Y%m%d}", "prm_aae036": f"{when:%Y%m%d%H%M%S}"})
        envelope = legacy_envelope("41", inner, wsse_header(hospital.code, hospital.password, service.clock()))
        output = legacy_output(httpx.post(f"{live.url}/soap", content=envelope.encode("gbk"),
                                          headers={"Content-Type": GBK}, timeout=30))
        if output.findtext("prm_appcode") == "0":
            return "settled", str(output.findtext("prm_yka103"))
        return "refused", str(output.findtext("prm_errcode"))

    def rural(person: str, region: str, scheme: str, settled_at: str) -> Outcome:
        when = datetime.fromisoformat(settled_at)
        example = RURAL_SETTLE.read_text(encoding="utf-8")
        inner = example[example.index("<![CDATA[") + 9:example.index("]]>")]
        inner = (inner.replace("H61100200011-20240312101500-0001", message_id(hospital.code))
                 .replace("H61100200011", hospital.code).replace("611002196804120038", person)
                 .replace("<D504_06>611002</D504_06>", f"<D504_06>{region}</D504_06>")
                 .replace("<D504_07>390</D504_07>", f"<D504_07>{SCHEME_CODES[scheme]}</D504_07>")
                 .replace("ZY2024031200158", f"ZY{secrets.token_hex(6)}")
                 .replace("2024-03-02", f"{when:%Y-%m-%d}").replace("2024-03-12", f"{when:%Y-%m-%d}")
                 .replace("20240312101500", f"{when:%Y%m%d%H%M%S}"))
        envelope = (f'<?xml version="1.0" encoding="UTF-8"?>\n<soap:Envelope xmlns:soap="{SOAP11}">'
                    f"{wsse_header(hospital.code, hospital.password, service.clock())}<soap:Body>"
                    f'<ns:invoke xmlns:ns="http://ncms.webservice/"><requestXml>{escape(inner)}</requestXml>'
                    "</ns:invoke></soap:Body></soap:Envelope>")
        reply = httpx.post(f"{live.url}/soap/rural-ncms", content=envelope.encode(),
                           headers={"Content-Type": "text/xml; charset=utf-8"}, timeout=30)
        response = rural_response(reply.content)
        if response.findtext("head/resultCode") == "1":
            return "settled", str(response.findtext("body/D504_16"))
        return "refused", str(response.findtext("head/errorCode"))

    return {"rest": rest, "standard": standard, "legacy-gbk": legacy, "rural-ncms": rural}


def recorded(service: Service, person: str) -> int:
    with service.app.context.uow() as tx:
        return int(tx.session.execute(text("SELECT COUNT(*) FROM settlements WHERE id_number = :p"),
                                      {"p": person}).scalar_one())


def test_every_interface_refuses_a_claim_the_roster_contradicts(service: Service, live: LiveServer,
                                                                soap_hospital: SoapHospital) -> None:
    for name, settle in interfaces(service, live, soap_hospital).items():
        person = on_roster(service, "611002", "resident")
        assert settle(person, "611021", "resident", TODAY) == ("refused", "CLAIM_CONTRADICTS_ROSTER"), name
        assert settle(person, "611002", "employee", TODAY) == ("refused", "CLAIM_CONTRADICTS_ROSTER"), name
        assert recorded(service, person) == 0, name
        assert settle(person, "611002", "resident", TODAY)[0] == "settled", name  # the control: as the roster says
        # Not on the roster: settled as the hospital says, in any region and scheme (today's behaviour).
        stranger = new_id_number("611002")
        assert settle(stranger, "611021", "employee", TODAY)[0] == "settled", name
        assert recorded(service, person) == 1 and recorded(service, stranger) == 1, name


def test_every_interface_refuses_a_claim_dated_ahead(service: Service, live: LiveServer,
                                                     soap_hospital: SoapHospital) -> None:
    for name, settle in interfaces(service, live, soap_hospital).items():
        person = new_id_number("611002")
        assert settle(person, "611002", "resident", TOMORROW) == ("refused", "CLAIM_DATE_IN_FUTURE"), name
        assert recorded(service, person) == 0, name
        assert settle(person, "611002", "resident", TODAY)[0] == "settled", name


@pytest.mark.parametrize("contradiction", ["region", "scheme"])
def test_the_refusal_names_the_field_covers_quotes_and_is_kept(service: Service, live: LiveServer,
                                                              soap_hospital: SoapHospital, contradiction: str) -> None:
    person = on_roster(service, "611002", "resident")
    claim = claim_body(soap_hospital.code, "county", person)
    claim["patient"] |= {"region": "611021"} if contradiction == "region" else {"scheme": "employee"}
    key = f"T-{secrets.token_hex(6)}"
    with live.client(soap_hospital.api_key) as http:
        quoted = http.post("/v1/quotes", json={"claim": claim})
        first = http.post("/v1/settlements", json={"transaction_id": key, "claim": claim})
        # The roster is corrected to what the claim says: the key still answers its first answer.
        import_roster(service.app.context, SYSTEM, "fix.csv", (
            "id_number,name,scheme,region,category,valid_from,valid_to\n"
            f"{person},测试,{claim['patient']['scheme']},{claim['patient']['region']},dibao_rural_a,2023-01-01,\n"
        ).encode())
        again = http.post("/v1/settlements", json={"transaction_id": key, "claim": claim})
        now_agrees = http.post("/v1/settlements", json={"transaction_id": f"T-{secrets.token_hex(6)}",
                                                         "claim": claim})
    for refused in (quoted, first):
        assert refused.status_code == 422, refused.text
        body = refused.json()
        assert (body["code"], [p["path"] for p in body["problems"]]) == \
            ("CLAIM_CONTRADICTS_ROSTER", [f"patient.{contradiction}"])
        recorded_value = {"region": "611002", "scheme": "resident"}[contradiction]
        assert f"as {recorded_value}; the claim says {claim['patient'][contradiction]}" in body["detail"]
        assert person not in refused.text and "测试" not in refused.text
    assert (again.status_code, again.text, again.headers.get("idempotent-replayed")) == (422, first.text, "true")
    assert now_agrees.status_code == 201, now_agrees.text
    assert now_agrees.json()["tariff"]["region"] == {"region": "611021", "scheme": "611000"}[contradiction]
    with pytest.raises(Fault) as caught:
        zeep_client(live, service, soap_hospital).service.Quote(claim=soap_claim(
            claim | {"patient": claim["patient"] | {"id_number": on_roster(service)}}))
    assert fault_code(caught.value) == "CLAIM_CONTRADICTS_ROSTER"
    assert date.fromisoformat(claim["visit"]["discharge_date"]) == date(2024, 6, 15)
