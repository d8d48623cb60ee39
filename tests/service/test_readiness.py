"""Readiness for a load balancer or an operator on call: /health/ready answers 200 only when the worker reaches
its database; /health (liveness) answers whatever the database does, which is why it cannot serve as readiness."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest
from lxml import etree
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from settlement.bootstrap import build
from settlement.services.errors import database_problem
from tests.service.conftest import LiveServer, serving, settings_for
from tests.service.test_api import assert_problem
from tests.soap.conftest import SOAP11, soap_envelope, wsse_header

STANDARD = "urn:settlement:soap:v1"
FAULT_NS = "urn:settlement:soap:fault"


@pytest.fixture
def without_database(tmp_path: Path) -> Iterator[LiveServer]:
    """The service built for a PostgreSQL server that is not there (a closed port on loopback)."""
    application = build(settings_for("postgresql://postgres@127.0.0.1:1/settlement", tmp_path), migrate=False)
    try:
        with serving(application) as live:
            yield live
    finally:
        application.dispose()


def test_ready_when_the_database_answers(live: LiveServer) -> None:
    reply = httpx.get(f"{live.url}/health/ready", timeout=10)
    assert reply.status_code == 200 and reply.json() == {"status": "ready"}


def test_not_ready_without_the_database_though_alive(without_database: LiveServer) -> None:
    reply = httpx.get(f"{without_database.url}/health/ready", timeout=30)
    problem = assert_problem(reply, 503, "DATABASE_UNAVAILABLE")
    assert problem["detail"] == "the database does not answer" and reply.headers["retry-after"] == "1"
    # The liveness answer does not look at the database: as a readiness check it would have said yes here.
    assert httpx.get(f"{without_database.url}/health", timeout=10).json() == {"status": "ok"}


def test_calls_while_the_database_is_gone_are_503_not_500(without_database: LiveServer) -> None:
    """A database outage is not a bug: the caller gets 503 DATABASE_UNAVAILABLE with Retry-After and retries with
    the same key (before, every call was a 500 INTERNAL_ERROR from the key's lookup)."""
    with without_database.client("stl_abcdef123456_notarealkeybutwellformed") as client:
        for reply in (client.post("/v1/eligibility", json={"id_number": "611002196804120038"}),
                      client.post("/v1/settlements", json={"transaction_id": "T-1", "claim": {}}),
                      client.get("/v1/settlements/ST-NOPE")):
            problem = assert_problem(reply, 503, "DATABASE_UNAVAILABLE")
            assert reply.headers["retry-after"] == "1"
            assert "resend the same request with the same key" in problem["detail"]


@pytest.mark.parametrize(("original", "code"), [
    (psycopg.errors.LockNotAvailable("lock timeout"), "DATABASE_BUSY"),  # the server answered: 55P03
    (psycopg.errors.DeadlockDetected("deadlock"), "DATABASE_BUSY"),
    (sqlite3.OperationalError("database is locked"), "DATABASE_BUSY"),
    (psycopg.OperationalError("connection refused"), "DATABASE_UNAVAILABLE"),  # no answer: no SQLSTATE
    # A terminated or shut-down backend may say so (FATAL 57P01/57P02) before its socket closes: still gone.
    (psycopg.errors.AdminShutdown("terminating connection due to administrator command"), "DATABASE_UNAVAILABLE"),
    (psycopg.errors.CrashShutdown("terminating connection because of crash"), "DATABASE_UNAVAILABLE"),
    (psycopg.errors.ConnectionFailure("connection failure"), "DATABASE_UNAVAILABLE"),  # class 08
    (psycopg.errors.QueryCanceled("canceling statement due to statement timeout"), "DATABASE_BUSY"),
])
def test_a_database_error_is_busy_when_the_server_answered_it(original: Exception, code: str) -> None:
    error = OperationalError("SELECT 1", {}, original)
    assert database_problem(error).code == code


def test_a_full_pool_is_busy() -> None:
    assert database_problem(PoolTimeoutError("QueuePool limit reached")).code == "DATABASE_BUSY"


def test_a_soap_call_while_the_database_is_gone_is_a_server_fault_to_retry(without_database: LiveServer) -> None:
    """SOAP carries the same code as REST: a Server fault DATABASE_UNAVAILABLE (it was INTERNAL_ERROR, a bug's)."""
    header = wsse_header("H61100200011", "not-checked-before-the-lookup", datetime.now(UTC))
    envelope = soap_envelope(f'<EligibilityRequest xmlns="{STANDARD}"><idNumber>611002196804120038</idNumber>'
                             "</EligibilityRequest>", header)
    reply = httpx.post(f"{without_database.url}/soap", content=envelope,
                       headers={"Content-Type": "text/xml; charset=utf-8"}, timeout=30)
    assert reply.status_code == 500, reply.text[:300]  # WS-I: a fault travels with 500
    fault = etree.fromstring(reply.content).find(f".//{{{SOAP11}}}Fault")
    assert fault is not None and fault.findtext("faultcode") == "soap:Server"
    assert fault.findtext(f".//{{{FAULT_NS}}}code") == "DATABASE_UNAVAILABLE"
    assert fault.findtext(f".//{{{FAULT_NS}}}status") == "503"
