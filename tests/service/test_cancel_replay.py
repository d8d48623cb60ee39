"""A cancellation (the national 2601) resent with the same transaction id and body replays its first answer, byte for
byte, every time, over REST and the SOAP Cancel of every dialect, on both databases: also after faults in between
(the reversal's transaction lost once, a connection killed), and also for a cancellation whose reversal an older
version recorded under the reversal's own hash.

Before the fix, the reversal a cancellation made stored its answer under the cancellation's key with the reverse
operation's hash, so the resent cancellation found a different request under its key: 409 IDEMPOTENCY_KEY_REUSED,
and a hospital that lost the answer could not learn what happened."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from settlement.services import settlements
from settlement.services.settlements import SettlementService, canonical_hash
from tests.factories import ROOT
from tests.service.conftest import LiveServer, Service, claim_body, new_id_number
from tests.soap.conftest import SOAP11, SoapHospital, soap_hospital_for, wsse_header

CHANNELS = ["rest", "standard", "legacy-gbk", "rural-ncms"]
# The example cancellation's own message id and the one it cancels (adapters/<dialect>/examples/cancel).
EXAMPLE_KEY, EXAMPLE_ORIGINAL = "20240312113500-0003", "20240312101500-0009"
# Where each dialect says whether an answer is a replay: the only parts of a resent answer that differ (rural-ncms
# also says it in its result message).
REPLAYED = re.compile(rb"(<replayed>|prm_replayed&gt;|D504_34&gt;)(true|false|0|1)")
REPLAY_NOTE = "（重复交易，返回首次结果）".encode()

Cancel = Callable[[], httpx.Response]


def soap_cancel(service: Service, live: LiveServer, hospital: SoapHospital, dialect: str, key: str,
                original: str) -> httpx.Response:
    """The dialect's example Cancel for this hospital and these message ids, sent with a fresh digest header."""
    encoding = "gb18030" if dialect == "legacy-gbk" else "utf-8"
    body = (ROOT / "adapters" / dialect / "examples" / "cancel" / "request.xml").read_bytes().decode(encoding)
    body = body.replace(f"H61100200011-{EXAMPLE_KEY}", key).replace(f"H61100200011-{EXAMPLE_ORIGINAL}", original)
    body = body.replace("H61100200011", hospital.code)
    header = wsse_header(hospital.code, hospital.password, service.clock())
    prefix = re.search(r"<([\w-]+):Envelope", body).group(1)  # type: ignore[union-attr]
    body = body.replace(f"<{prefix}:Envelope", f'<{prefix}:Envelope xmlns:soap="{SOAP11}"', 1)
    body = re.sub(rf"<{prefix}:Header\s*/>", "", body).replace(f"<{prefix}:Body>", f"{header}<{prefix}:Body>", 1)
    charset = "GBK" if dialect == "legacy-gbk" else "UTF-8"
    return httpx.post(f"{live.url}/soap/{dialect}", content=body.encode(encoding),
                      headers={"Content-Type": f"text/xml; charset={charset}"}, timeout=30)


def canceller(service: Service, live: LiveServer, hospital: SoapHospital, channel: str, key: str,
              original: str) -> Cancel:
    if channel == "rest":
        body = {"transaction_id": key, "original_transaction_id": original, "reason": "超时未收到应答"}
        return lambda: httpx.post(f"{live.url}/v1/cancellations", json=body, timeout=30,
                                  headers={"Authorization": f"Bearer {hospital.api_key}"})
    return lambda: soap_cancel(service, live, hospital, channel, key, original)


def answer(reply: httpx.Response) -> bytes:
    """What the answer says, with the replay marker left out (the one part meant to differ)."""
    return REPLAYED.sub(rb"\1", reply.content).replace(REPLAY_NOTE, b"")


def replayed(reply: httpx.Response) -> bool:
    if reply.headers["content-type"].startswith("application/"):  # REST
        return bool(reply.headers.get("idempotent-replayed") == "true")
    found = REPLAYED.search(reply.content)
    assert found is not None, reply.text
    return found.group(2) in (b"true", b"1")


def settled(live: LiveServer, hospital: SoapHospital, key: str) -> dict[str, Any]:
    with live.client(hospital.api_key) as client:
        reply = client.post("/v1/settlements", json={"transaction_id": key, "claim": claim_body(
            hospital.code, hospital.level, new_id_number())})
    assert reply.status_code == 201, reply.text
    parsed: dict[str, Any] = reply.json()
    return parsed


def reversals(service: Service, settlement_id: str) -> int:
    with service.app.engine.connect() as connection:
        return int(connection.execute(text(
            "SELECT COUNT(*) FROM reversals r JOIN settlements s ON s.id = r.settlement_id WHERE s.public_id = :id"),
            {"id": settlement_id}).scalar_one())


def keys(hospital: SoapHospital) -> tuple[str, str]:
    return f"{hospital.code}-{secrets.token_hex(6)}", f"{hospital.code}-{secrets.token_hex(6)}"


def assert_replays(first: httpx.Response, cancel: Cancel, times: int = 3) -> None:
    for _ in range(times):
        again = cancel()
        assert again.status_code == first.status_code, again.text
        assert answer(again) == answer(first)
        assert replayed(again)


@pytest.mark.parametrize("channel", CHANNELS)
def test_a_cancellation_that_reversed_replays_its_first_answer(service: Service, live: LiveServer,
                                                                channel: str) -> None:
    hospital = soap_hospital_for(service)
    original, key = keys(hospital)
    settlement = settled(live, hospital, original)
    cancel = canceller(service, live, hospital, channel, key, original)
    first = cancel()
    assert first.status_code in (200, 201), first.text
    assert b"reversed" in first.content and not replayed(first)
    assert_replays(first, cancel)
    assert reversals(service, settlement["settlement_id"]) == 1


@pytest.mark.parametrize("channel", ["rest", "standard"])
def test_a_cancellation_whose_reversal_was_lost_once_then_replays(service: Service, live: LiveServer,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 channel: str) -> None:
    """The fault in between: the cancellation decided to reverse, and its reversal's transaction could not reach
    the database (503: outcome unknown). Resent, it reverses; resent again, it replays that answer."""
    hospital = soap_hospital_for(service)
    original, key = keys(hospital)
    settlement = settled(live, hospital, original)
    reverse = SettlementService._reverse
    failing = [True]

    def lost_once(self: SettlementService, *args: Any, **kwargs: Any) -> Any:
        if failing and failing.pop():
            raise OperationalError("COMMIT", {}, psycopg.OperationalError("server closed the connection"))
        return reverse(self, *args, **kwargs)

    monkeypatch.setattr(SettlementService, "_reverse", lost_once)
    monkeypatch.setattr(settlements, "RETRIES", 1)
    cancel = canceller(service, live, hospital, channel, key, original)
    lost = cancel()
    assert b"DATABASE_UNAVAILABLE" in lost.content, lost.text
    assert reversals(service, settlement["settlement_id"]) == 0
    first = cancel()
    assert first.status_code in (200, 201) and b"reversed" in first.content, first.text
    assert not replayed(first)
    assert_replays(first, cancel)
    assert reversals(service, settlement["settlement_id"]) == 1


def test_a_cancellation_replays_after_its_connections_were_killed(pg_service: Service) -> None:
    from tests.service.conftest import serving

    service = pg_service
    with serving(service.app) as live:
        hospital = soap_hospital_for(service)
        original, key = keys(hospital)
        settled(live, hospital, original)
        cancel = canceller(service, live, hospital, "rest", key, original)
        first = cancel()
        assert first.status_code == 201, first.text
        with psycopg.connect(service.app.settings.database_url, autocommit=True) as outsider:
            outsider.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        assert_replays(first, cancel)


def test_a_cancellation_recorded_by_the_earlier_version_replays_too(service: Service, live: LiveServer) -> None:
    """A database written before the fix holds the cancellation's answer under the reversal's operation and hash;
    the resent cancellation recognises it as its own."""
    hospital = soap_hospital_for(service)
    original, key = keys(hospital)
    settlement = settled(live, hospital, original)
    cancel = canceller(service, live, hospital, "rest", key, original)
    first = cancel()
    assert first.status_code == 201, first.text
    legacy = canonical_hash("reverse", [settlement["settlement_id"],
                                        {"transaction_id": key, "reason": "超时未收到应答"}])
    with service.app.engine.begin() as connection:
        connection.execute(text("UPDATE idempotency_records SET operation = 'reverse', request_hash = :hash "
                                "WHERE key = :key"), {"hash": legacy, "key": key})
    assert_replays(first, cancel)
    # A different cancellation under that key is still a conflict.
    other = canceller(service, live, hospital, "rest", key, f"{hospital.code}-{secrets.token_hex(6)}")()
    assert other.status_code == 409 and other.json()["code"] == "IDEMPOTENCY_KEY_REUSED", other.text


def test_planted_fault_the_reversals_hash_under_the_cancellations_key_is_caught(
        service: Service, live: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The code before the fix, kept as the naive variant: the reversal stores the answer with its own operation and
    hash, and the cancellation does not recognise it; the check above sees the resent cancellation refused."""
    reverse = SettlementService._reverse

    def as_before(self: SettlementService, caller: Any, settlement_id: str, request: Any, operation: str,
                  request_hash: str) -> Any:
        return reverse(self, caller, settlement_id, request, "reverse",
                       canonical_hash("reverse", [settlement_id, request.model_dump(mode="json")]))

    monkeypatch.setattr(SettlementService, "_reverse", as_before)
    monkeypatch.setattr(SettlementService, "_reversed_before_the_fix", staticmethod(lambda *_: False))
    hospital = soap_hospital_for(service)
    original, key = keys(hospital)
    settled(live, hospital, original)
    cancel = canceller(service, live, hospital, "rest", key, original)
    first = cancel()
    assert first.status_code == 201, first.text
    again = cancel()
    assert again.status_code == 409 and again.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
    with pytest.raises(AssertionError):
        assert_replays(first, cancel, times=1)
