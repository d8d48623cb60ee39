"""Reading a settlement shows its corrections (issue 15, item 4), over REST and every SOAP dialect's query:
GetSettlement (standard, through zeep, with the settlement's `net` after its corrections), 09 (legacy-gbk) and
B020014 (rural-ncms, its reply checked against the dialect's reply.xsd). Each must name the correction, its
fund, its amount and the patient's share it moved."""

from __future__ import annotations

import secrets
from decimal import Decimal
from xml.sax.saxutils import escape

import httpx
from lxml import etree

from settlement.paths import default_adapters_dir
from settlement.services.finance import resolve
from tests.reconciliation.helpers import FINANCE
from tests.reconciliation.test_balance import BASIC, open_discrepancy
from tests.service.conftest import LiveServer, Service, claim_body, new_id_number
from tests.soap.conftest import SOAP11, SoapHospital, message_id, wsse_header
from tests.soap.test_gbk_roundtrip import GBK, legacy_envelope, legacy_message, legacy_output, rural_response
from tests.soap.test_zeep_interop import plain, zeep_client


def test_every_interface_reads_a_settlements_corrections(service: Service, live: LiveServer,
                                                         soap_hospital: SoapHospital) -> None:
    claim = claim_body(soap_hospital.code, soap_hospital.level, new_id_number())
    with live.client(soap_hospital.api_key) as client:
        settled = client.post("/v1/settlements", json={"transaction_id": f"T-{secrets.token_hex(6)}",
                                                       "claim": claim}).json()
        sid = settled["settlement_id"]
        assert client.get(f"/v1/settlements/{sid}").json()["corrections"] == []
        paid = next(p for p in settled["payers"] if p["fund"] == BASIC and Decimal(p["paid"]))["paid"]
        engine = int(Decimal(paid) * 100)
        item = open_discrepancy(service, sid, BASIC, engine, engine + 20)
        correction = resolve(service.app.context, FINANCE, item, "accept_payer", "the payer's figure")["correction"]
        read = client.get(f"/v1/settlements/{sid}").json()
    assert [(c["correction_id"], c["fund"], c["amount"], c["patient_pays"]) for c in read["corrections"]] == \
        [(correction["correction_id"], BASIC, "0.20", "-0.20")]
    net = read["net"]
    assert Decimal(net["paid"][BASIC]) == Decimal(paid) + Decimal("0.20")
    assert sum(Decimal(v) for v in net["paid"].values()) + Decimal(net["patient_pays"]) == Decimal(net["total"])

    standard = plain(zeep_client(live, service, soap_hospital).service.GetSettlement(settlementId=sid))
    assert [(c["correctionId"], c["fund"], c["amount"], c["patientPays"])
            for c in standard["corrections"]["correction"]] == \
        [(correction["correction_id"], BASIC, Decimal("0.20"), Decimal("-0.20"))]
    assert {f["fund"]: f["amount"] for f in standard["net"]["paid"]["fundAmount"]}[BASIC] == Decimal(net["paid"][BASIC])
    assert standard["net"]["patientPays"] == Decimal(net["patient_pays"])

    header = wsse_header(soap_hospital.code, soap_hospital.password, service.clock())
    inner = legacy_message({"prm_msgid": message_id(soap_hospital.code), "prm_akb020": soap_hospital.code,
                            "prm_yka103": sid}, case="get-settlement")
    legacy = legacy_output(httpx.post(f"{live.url}/soap", content=legacy_envelope("09", inner, header).encode("gbk"),
                                      headers={"Content-Type": GBK}, timeout=30))
    rows = [(row.findtext("prm_correctionid"), row.findtext("prm_fundtype"), row.findtext("prm_fundpay"),
             row.findtext("prm_akb067")) for row in legacy.iterfind("correctiondetail/row")]
    assert rows == [(correction["correction_id"], BASIC, "0.20", "-0.20")]

    request = (f'<?xml version="1.0" encoding="UTF-8"?><request><head><version>2000</version>'
               f'<functionNo>B020014</functionNo><healthcareprovider identity="{soap_hospital.code}"/>'
               f"<msgId>{message_id(soap_hospital.code)}</msgId></head><body><D504_16>{sid}</D504_16></body>"
               "</request>")
    envelope = (f'<?xml version="1.0" encoding="UTF-8"?>\n<soap:Envelope xmlns:soap="{SOAP11}">'
                f"{wsse_header(soap_hospital.code, soap_hospital.password, service.clock())}<soap:Body>"
                f'<ns:invoke xmlns:ns="http://ncms.webservice/"><requestXml>{escape(request)}</requestXml>'
                "</ns:invoke></soap:Body></soap:Envelope>")
    rural = rural_response(httpx.post(f"{live.url}/soap/rural-ncms", content=envelope.encode(),
                                      headers={"Content-Type": "text/xml; charset=utf-8"}, timeout=30).content)
    assert rural.findtext("head/resultCode") == "1"
    schema = etree.XMLSchema(etree.parse(str(default_adapters_dir() / "rural-ncms" / "reply.xsd")))
    assert schema.validate(rural), schema.error_log
    assert [(c.findtext("id"), c.findtext("fund"), c.findtext("amount"), c.findtext("patientPays"))
            for c in rural.iterfind("body/corrections/correction")] == \
        [(correction["correction_id"], BASIC, "0.20", "-0.20")]
