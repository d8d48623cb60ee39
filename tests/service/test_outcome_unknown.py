"""A 503 does not mean that nothing was recorded: a settlement whose COMMIT went through but whose answer was lost
(the database then out of reach) is answered 503, and it is in the database. The API says so (the OpenAPI
description of every 503, the problem's detail, the SOAP fault's text), and the same request resent under the same
key gets the settlement that was made, once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import psycopg
import pytest

from settlement.db.aiopool import DatabaseUnreachable
from settlement.db.settling import AsyncPipelinedSettling, SettlementKey, database_error
from settlement.services.errors import OUTCOME_UNKNOWN
from tests.service.conftest import LiveServer, Service, claim_body, new_id_number
from tests.soap.conftest import soap_envelope, soap_hospital_for, wsse_header
from tests.soap.test_wsse import settle_xml

KEYED = [("/v1/settlements", "post"), ("/v1/settlements/{settlement_id}/reversal", "post"),
         ("/v1/cancellations", "post")]


@pytest.mark.parametrize(("path", "method"), KEYED)
def test_the_openapi_document_says_a_503_is_an_unknown_outcome(live: LiveServer, path: str, method: str) -> None:
    document = httpx.get(f"{live.url}/openapi.json", timeout=10).json()
    described = document["paths"][path][method]["responses"]["503"]["description"]
    assert "Outcome unknown" in described and "same transaction id" in described
    assert "does not mean that nothing was recorded" in described


def lose_the_answer_after_commit(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The next settlement commits, then its answer is lost and the database is out of reach (as when the server
    or the network goes away between COMMIT and its reply). Returns the switch (empty once used)."""
    begin = AsyncPipelinedSettling.begin
    armed = [True]

    @asynccontextmanager
    async def committed_then_lost(self: AsyncPipelinedSettling, key: SettlementKey,
                                  claim: Any = None) -> AsyncIterator[Any]:
        async with begin(self, key, claim) as transaction:
            yield transaction
        if transaction.committed and armed:
            armed.clear()
            raise database_error(DatabaseUnreachable("the database server cannot be reached"))

    monkeypatch.setattr(AsyncPipelinedSettling, "begin", committed_then_lost)
    return armed


def stored(url: str, key: str) -> list[str]:
    with psycopg.connect(url) as connection:
        return [row[0] for row in connection.execute(
            "SELECT public_id FROM settlements WHERE transaction_id = %s", (key,)).fetchall()]


def test_a_503_after_the_commit_was_recorded_and_the_resend_gets_it(
        pg_service: Service, pg_live: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    code, key = pg_service.hospital()
    body = {"transaction_id": "LOST-ANSWER-1", "claim": claim_body(code, "county", new_id_number())}
    armed = lose_the_answer_after_commit(monkeypatch)
    with pg_live.client(key) as client:
        lost = client.post("/v1/settlements", json=body)
        assert not armed
        assert lost.status_code == 503 and lost.headers["retry-after"] == "1", lost.text
        problem = lost.json()
        assert problem["code"] == "DATABASE_UNAVAILABLE" and OUTCOME_UNKNOWN in problem["detail"]
        made = stored(pg_service.app.settings.database_url, "LOST-ANSWER-1")
        assert len(made) == 1  # recorded, though the caller was told 503
        resent = client.post("/v1/settlements", json=body)
        assert resent.status_code == 201 and resent.headers["idempotent-replayed"] == "true", resent.text
        assert resent.json()["settlement_id"] == made[0]
    assert stored(pg_service.app.settings.database_url, "LOST-ANSWER-1") == made


def test_a_soap_fault_after_the_commit_says_the_outcome_is_unknown(
        pg_service: Service, pg_live: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    hospital = soap_hospital_for(pg_service, ["standard"])
    claim = claim_body(hospital.code, "county", new_id_number())

    def settle() -> httpx.Response:
        header = wsse_header(hospital.code, hospital.password, pg_service.clock())
        return httpx.post(f"{pg_live.url}/soap", content=soap_envelope(settle_xml("SOAP-LOST-1", claim), header),
                          headers={"Content-Type": "text/xml; charset=utf-8"}, timeout=30)

    lose_the_answer_after_commit(monkeypatch)
    lost = settle()
    assert lost.status_code == 500 and b"<faultcode>soap:Server</faultcode>" in lost.content, lost.text
    assert f"DATABASE_UNAVAILABLE: the database does not answer; {OUTCOME_UNKNOWN}".encode() in lost.content
    made = stored(pg_service.app.settings.database_url, "SOAP-LOST-1")
    assert len(made) == 1
    resent = settle()
    assert resent.status_code == 200 and b"<replayed>true</replayed>" in resent.content, resent.text
    assert made[0].encode() in resent.content
