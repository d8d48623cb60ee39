"""The SOAP endpoint answers a raw, authenticated standard-dialect call on a live server (both databases)."""

from __future__ import annotations

import httpx

from tests.service.conftest import LiveServer, Service, new_id_number
from tests.soap.conftest import SoapHospital, soap_envelope, wsse_header

NS = "urn:settlement:soap:v1"


def test_eligibility_over_raw_soap(service: Service, live: LiveServer, soap_hospital: SoapHospital) -> None:
    header = wsse_header(soap_hospital.code, soap_hospital.password, service.clock())
    body = f'<EligibilityRequest xmlns="{NS}"><idNumber>{new_id_number()}</idNumber></EligibilityRequest>'
    reply = httpx.post(f"{live.url}/soap", content=soap_envelope(body, header),
                       headers={"Content-Type": "text/xml; charset=utf-8"})
    assert reply.status_code == 200, reply.text
    assert b"<inRoster>false</inRoster>" in reply.content


def test_a_wrong_password_is_a_401_fault(service: Service, live: LiveServer, soap_hospital: SoapHospital) -> None:
    header = wsse_header(soap_hospital.code, soap_hospital.password + "x", service.clock())
    body = f'<EligibilityRequest xmlns="{NS}"><idNumber>{new_id_number()}</idNumber></EligibilityRequest>'
    reply = httpx.post(f"{live.url}/soap", content=soap_envelope(body, header),
                       headers={"Content-Type": "text/xml; charset=utf-8"})
    assert reply.status_code == 401
    assert b"<e:code>AUTH_INVALID</e:code>" in reply.content
    assert b"soap:Client" in reply.content
