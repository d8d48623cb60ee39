"""The simulator's statement service as a payer's would be: the WSDL at its own address, GetStatement through
zeep (the engine's own client), idempotency by request id, slow answers, and Client faults for bad requests that
book nothing. Also the simulator's own rules: reproducible victims, and faults that are refused."""

from __future__ import annotations

import time
from datetime import date, timedelta

import httpx
import pytest
from lxml import etree

from settlement.insurers.simulator import Faults, PayerSimulator
from settlement.insurers.statements import NAMESPACE, fetch_soap
from settlement.services.errors import ServiceError
from tests.insurers.conftest import SimulatorServer, sqlite_only
from tests.insurers.helpers import at, cashier
from tests.service.conftest import Service

DAY = date(2024, 6, 15)
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"


def envelope(body: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="{SOAP11}"><soap:Body>{body}'
            "</soap:Body></soap:Envelope>").encode()


def get_statement(request_id: str, payer: str, day: str) -> str:
    return (f'<p:GetStatementRequest xmlns:p="{NAMESPACE}"><p:requestId>{request_id}</p:requestId>'
            f"<p:payer>{payer}</p:payer><p:businessDate>{day}</p:businessDate></p:GetStatementRequest>")


def fault_code(response: httpx.Response) -> tuple[str, str]:
    """(faultcode, the stable code in the detail) of a SOAP fault."""
    root = etree.fromstring(response.content)
    fault = root.find(f"{{{SOAP11}}}Body/{{{SOAP11}}}Fault")
    assert fault is not None, response.text
    code = fault.find(".//{urn:settlement:soap:fault}code")
    assert code is not None
    return fault.findtext("faultcode") or "", code.text or ""


@sqlite_only
def test_the_wsdl_gives_the_simulators_own_address(service: Service, payer_sim: SimulatorServer) -> None:
    reply = httpx.get(payer_sim.wsdl)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/xml")
    assert f'location="{payer_sim.url}/statements"' in reply.text and "SOAP_ADDRESS" not in reply.text
    assert "POST SOAP 1.1 here" in httpx.get(f"{payer_sim.url}/statements").text


def test_a_repeated_request_id_is_answered_the_statement_already_prepared(service: Service,
                                                                          payer_sim: SimulatorServer) -> None:
    desk = cashier(service)
    for hour in (9, 10, 11):
        desk.settle(at(DAY, hour))
    payer = payer_sim.payer(timeout=5, retries=1)
    first = fetch_soap(payer, DAY, "REQ-1")
    assert len(first) >= 3 and all(line.occurred_at is not None for line in first)
    # The payer's mood changes and the ledger grows: a repeated request id still gets what was prepared.
    payer_sim.simulator.faults = Faults(drop=2, extra=1)
    desk.settle(at(DAY, 12))
    assert fetch_soap(payer, DAY, "REQ-1") == first
    assert payer_sim.simulator.requests == ["REQ-1", "REQ-1"]
    assert payer_sim.simulator.bookings == {(payer.code, DAY): 1}
    fresh = fetch_soap(payer, DAY, "REQ-2")  # a new request id is a new booking, with today's faults
    assert len(fresh) == len(first) + 1 - 2 + 1
    assert payer_sim.simulator.bookings == {(payer.code, DAY): 2}


@sqlite_only
def test_a_slow_payer_answers_late_but_answers(service: Service, payer_sim: SimulatorServer) -> None:
    payer = payer_sim.payer(timeout=5, retries=1)
    payer_sim.simulator.faults = Faults(delay=0.4)
    started = time.monotonic()
    fetch_soap(payer, DAY, "REQ-SLOW")
    assert time.monotonic() - started >= 0.4
    assert payer_sim.simulator.bookings == {(payer.code, DAY): 1}


BAD_REQUESTS = [
    (b"not xml at all", 500, "XML_MALFORMED"),
    (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]><x>&e;</x>', 500, "XML_FORBIDDEN"),
    (b"<statement/>", 500, "SOAP_INVALID"),
    (envelope(f'<p:GetSettlement xmlns:p="{NAMESPACE}"/>'), 500, "OPERATION_UNKNOWN"),
    (envelope(get_statement("", "PAYER", "2024-06-15")), 500, "MESSAGE_INVALID"),
    (envelope(get_statement("R-1", "PAYER", "15/06/2024")), 500, "MESSAGE_INVALID"),
    (envelope(get_statement("R-1", "nobody", "2024-06-15")), 500, "NOT_FOUND"),
    (envelope(get_statement("R" * 129, "PAYER", "2024-06-15")), 500, "MESSAGE_INVALID"),
    (b"<x>" + b" " * (70 * 1024) + b"</x>", 413, "XML_TOO_LARGE"),
]


@sqlite_only
def test_a_bad_request_is_a_client_fault_and_books_nothing(service: Service, payer_sim: SimulatorServer) -> None:
    payer = payer_sim.payer()
    with httpx.Client(base_url=payer_sim.url, headers={"Content-Type": "text/xml; charset=utf-8"}) as client:
        for body, status, code in BAD_REQUESTS:
            reply = client.post("/statements", content=body.replace(b"PAYER", payer.code.encode()))
            assert (reply.status_code, *fault_code(reply)) == (status, "soap:Client", code), body[:80]
    assert payer_sim.simulator.bookings == {} and payer_sim.simulator.requests == []


def test_a_request_id_reused_for_another_statement_is_refused(service: Service, payer_sim: SimulatorServer) -> None:
    payer = payer_sim.payer()
    url = f"{payer_sim.url}/statements"
    assert httpx.post(url, content=envelope(get_statement("R-9", payer.code, "2024-06-15"))).status_code == 200
    other_day = httpx.post(url, content=envelope(get_statement("R-9", payer.code, "2024-06-16")))
    assert fault_code(other_day) == ("soap:Client", "IDEMPOTENCY_KEY_REUSED")
    assert "was used for the statement of" in other_day.text
    assert payer_sim.simulator.bookings == {(payer.code, DAY): 1}


def test_the_same_faults_damage_the_same_rows(service: Service, payer_sim: SimulatorServer) -> None:
    desk = cashier(service)
    for hour in range(8, 16):
        desk.settle(at(DAY, hour))
    for minute in (52, 56):
        desk.settle(at(DAY - timedelta(days=1), 23, minute))
    payer = payer_sim.payer()
    faults = Faults(seed=42, drop=1, shift=2, extra=1, phantom_reversals=1, midnight=1)
    one = PayerSimulator(service.app.context, {payer.code: payer}, faults).statement(payer.code, DAY)
    two = PayerSimulator(service.app.context, {payer.code: payer}, faults).statement(payer.code, DAY)
    assert one == two
    assert len(one.applied.discrepancies()) == 6  # every damaged row gives one discrepancy: pools are disjoint
    seeds = {PayerSimulator(service.app.context, {payer.code: payer}, Faults(seed=seed, drop=1))
             .statement(payer.code, DAY).applied.dropped for seed in range(8)}
    assert len(seeds) > 1


@sqlite_only
def test_faults_that_make_no_sense_are_refused(service: Service, payer_sim: SimulatorServer) -> None:
    for wrong in ({"drop": -1}, {"delay": -0.5}, {"shift_fen": 0}, {"midnight_window": timedelta(0)}):
        with pytest.raises(ValueError, match="must"):
            Faults(**wrong)
    payer = payer_sim.payer()
    with pytest.raises(ServiceError, match="over SOAP"):
        payer_sim.simulator.write_inbox(payer.code, DAY, service.tmp / "inbox")
