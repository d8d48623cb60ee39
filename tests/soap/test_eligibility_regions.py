"""Eligibility answers each person's own region and scheme, as the roster records them (issue 15, item 1: every
answer said 611021, the last tariff region loaded, because a loop over the tariff regions replaced the person's
region). Persons of three regions and schemes and one not on the roster, asked over REST and over every SOAP
dialect: standard through zeep, legacy-gbk (trade code 03) and rural-ncms (B010001) as their hospitals post them.
The rule that keeps the bug from coming back is tests/unit/test_loop_rebinding.py."""

from __future__ import annotations

from datetime import date
from xml.sax.saxutils import escape

import httpx
from lxml import etree

from settlement.bootstrap import SYSTEM
from settlement.services.roster import import_roster
from tests.service.conftest import LiveServer, Service, new_id_number
from tests.soap.conftest import SOAP11, SoapHospital, message_id, wsse_header
from tests.soap.test_gbk_roundtrip import GBK, legacy_envelope, legacy_output, succeeded
from tests.soap.test_zeep_interop import plain, zeep_client

RURAL_NS = "http://ncms.webservice/"
SAFE = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
ON = date(2024, 6, 15)
# (region, scheme, scheme as the legacy and rural dialects code it, category): the last region loaded is 611021,
# so the first and third persons are the ones the old answer got wrong.
PEOPLE = [("611002", "resident", "390", "dibao_rural_a"), ("611021", "employee", "310", "jiandang"),
          ("611024", "resident", "390", "tekun_dispersed")]


def roster(service: Service) -> dict[str, tuple[str, str, str, str]]:
    """Three persons of three regions on the roster; their ID numbers -> (region, scheme, code, category)."""
    people = {new_id_number(region): (region, scheme, code, category) for region, scheme, code, category in PEOPLE}
    rows = "".join(f"{person},测试,{scheme},{region},{category},2023-01-01,\n"
                   for person, (region, scheme, _, category) in people.items())
    report = import_roster(service.app.context, SYSTEM, "regions.csv",
                           ("id_number,name,scheme,region,category,valid_from,valid_to\n" + rows).encode())
    assert report.accepted == len(PEOPLE), report
    return people


def rural_eligibility(live: LiveServer, service: Service, hospital: SoapHospital, person: str) -> etree._Element:
    inner = (f'<?xml version="1.0" encoding="UTF-8"?><request><head><version>2000</version>'
             f'<functionNo>B010001</functionNo><healthcareprovider identity="{hospital.code}"/></head>'
             f"<body><D504_05>{person}</D504_05><D504_15>{ON:%Y%m%d}</D504_15></body></request>")
    envelope = (f'<?xml version="1.0" encoding="UTF-8"?>\n<soap:Envelope xmlns:soap="{SOAP11}">'
                f"{wsse_header(hospital.code, hospital.password, service.clock())}<soap:Body>"
                f'<ns:invoke xmlns:ns="{RURAL_NS}"><requestXml>{escape(inner)}</requestXml></ns:invoke>'
                "</soap:Body></soap:Envelope>")
    reply = httpx.post(f"{live.url}/soap/rural-ncms", content=envelope.encode(),
                       headers={"Content-Type": "text/xml; charset=utf-8"}, timeout=30)
    assert reply.status_code == 200, reply.text[:600]
    holder = etree.fromstring(reply.content, SAFE).find(f".//{{{RURAL_NS}}}invokeResponse/return")
    assert holder is not None and holder.text
    response = etree.fromstring(holder.text.split("?>", 1)[1].encode(), SAFE)
    assert response.findtext("head/resultCode") == "1", holder.text[:600]
    return response


def legacy_eligibility(live: LiveServer, service: Service, hospital: SoapHospital, person: str) -> etree._Element:
    inner = ('<?xml version="1.0" encoding="GBK"?><input>'
             f"<prm_msgid>{message_id(hospital.code)}</prm_msgid><prm_akb020>{hospital.code}</prm_akb020>"
             f"<prm_aac002>{person}</prm_aac002><prm_aae036>{ON:%Y%m%d}101000</prm_aae036></input>")
    envelope = legacy_envelope("03", inner, wsse_header(hospital.code, hospital.password, service.clock()))
    reply = httpx.post(f"{live.url}/soap", content=envelope.encode("gbk"), headers={"Content-Type": GBK},
                       timeout=30)
    return succeeded(legacy_output(reply))


def test_every_interface_answers_each_persons_own_region(service: Service, live: LiveServer,
                                                         soap_hospital: SoapHospital) -> None:
    people = roster(service)
    stranger = new_id_number("611002")
    client = zeep_client(live, service, soap_hospital)
    answers: dict[str, dict[str, tuple[object, ...]]] = {}
    with live.client(soap_hospital.api_key) as rest:
        for person in [*people, stranger]:
            asked = rest.post("/v1/eligibility", json={"id_number": person, "on": ON.isoformat()})
            assert asked.status_code == 200, asked.text
            by_rest = asked.json()
            standard = plain(client.service.Eligibility(idNumber=person, on=ON))
            legacy = legacy_eligibility(live, service, soap_hospital, person)
            rural = rural_eligibility(live, service, soap_hospital, person)
            answers[person] = {
                "rest": (by_rest["in_roster"], by_rest["region"], by_rest["scheme"]),
                "standard": (standard["inRoster"], standard["region"], standard["scheme"]),
                "legacy-gbk": (legacy.findtext("prm_inroster") == "1", legacy.findtext("prm_aab301"),
                               legacy.findtext("prm_aae140")),
                "rural-ncms": (rural.findtext("body/D504_35") == "1", rural.findtext("body/D504_06"),
                               rural.findtext("body/D504_07")),
            }
    for person, (region, scheme, code, _) in people.items():
        assert answers[person] == {"rest": (True, region, scheme), "standard": (True, region, scheme),
                                   "legacy-gbk": (True, region, code), "rural-ncms": (True, region, code)}, person
    # Not on the roster: no region and no scheme, in every interface (the old code said 611021 here too).
    assert answers[stranger] == {"rest": (False, None, None), "standard": (False, None, None),
                                 "legacy-gbk": (False, None, None), "rural-ncms": (False, None, None)}
