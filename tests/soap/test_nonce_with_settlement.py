"""A SOAP settlement on PostgreSQL records its message's nonce and its envelope-log row in its own transaction
(settlement.soap.gateway.Gateway._companions): the nonce is claimed in the settlement's first round trip and the
log row is written with the settlement, so they commit together or not at all. These tests hold both databases
(SQLite keeps the nonce and the log as statements of their own) to the same promises:

- a captured token on another message settles nothing, even when both are sent at once;
- a settlement whose reply cannot be made answers a fault, its nonce is spent, and a retry under the same
  message id ends in exactly one settlement whose logged reply is the reply sent.
- a settlement purges old nonces now and then, as every other call does.

The planted faults, which the checks catch: a nonce claim that always takes (it never looks at the nonces seen),
and a settlement that never purges.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from settlement.soap import gateway
from tests.service.conftest import LiveServer, Service, claim_body, new_id_number, serving
from tests.soap.conftest import SoapHospital, message_id, soap_envelope, soap_hospital_for, wsse_header
from tests.soap.test_wsse import WINDOW, counts, fault_of, post, records_nothing, settle_xml

CLAIM_THAT_ALWAYS_TAKES = "SELECT 1 WHERE %(hospital_id)s::int IS NOT NULL OR %(nonce)s::text <> '' " \
                          "OR %(seen_at)s::timestamptz IS NOT NULL"


def is_postgres(service: Service) -> bool:
    return service.app.engine.dialect.name == "postgresql"


def new_settle(hospital: SoapHospital, header: str, key: str | None = None) -> bytes:
    claim = claim_body(hospital.code, hospital.level, new_id_number())
    return soap_envelope(settle_xml(key or message_id(hospital.code), claim), header)


def check_a_captured_token_settles_nothing(service: Service, live: LiveServer, hospital: SoapHospital) -> None:
    header = wsse_header(hospital.code, hospital.password, service.clock(), os.urandom(16))
    first = post(live, new_settle(hospital, header))
    assert first.status_code == 200, first.text
    # The digest covers the nonce and the time, not the body: a captured header can be put on any message.
    with records_nothing(service):
        assert fault_of(post(live, new_settle(hospital, header))) == (401, "AUTH_NONCE_REPLAYED", 401)


def sent_at_once(live: LiveServer, envelopes: list[bytes]) -> list[httpx.Response]:
    start = threading.Barrier(len(envelopes))
    replies: list[httpx.Response] = []

    def send(envelope: bytes) -> None:
        start.wait()
        replies.append(post(live, envelope))

    threads = [threading.Thread(target=send, args=(envelope,)) for envelope in envelopes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return replies


def check_a_raced_token_settles_once(service: Service, live: LiveServer, hospital: SoapHospital) -> None:
    for _ in range(3):
        header = wsse_header(hospital.code, hospital.password, service.clock(), os.urandom(16))
        envelopes = [new_settle(hospital, header) for _ in range(2)]
        before = counts(service)
        replies = sent_at_once(live, envelopes)
        statuses = sorted(reply.status_code for reply in replies)
        assert statuses == [200, 401], [reply.text[:300] for reply in replies]
        refused = next(reply for reply in replies if reply.status_code == 401)
        assert fault_of(refused)[1] == "AUTH_NONCE_REPLAYED"
        after = counts(service)
        assert {table: after[table] - before[table] for table in after if after[table] != before[table]} == {
            "settlements": 1, "ledger_entries": after["ledger_entries"] - before["ledger_entries"],
            "idempotency_records": 1, "audit_log": 1, "soap_exchanges": 1, "wsse_nonces": 1}


def test_a_captured_token_on_another_message_settles_nothing(service: Service, live: LiveServer,
                                                             soap_hospital: SoapHospital) -> None:
    check_a_captured_token_settles_nothing(service, live, soap_hospital)


def test_two_messages_raced_under_one_token_settle_once(service: Service, live: LiveServer,
                                                        soap_hospital: SoapHospital) -> None:
    check_a_raced_token_settles_once(service, live, soap_hospital)


@pytest.mark.parametrize("check", [check_a_captured_token_settles_nothing, check_a_raced_token_settles_once])
def test_the_checks_catch_a_claim_that_always_takes(pg_service: Service, monkeypatch: pytest.MonkeyPatch,
                                                    check: Callable[[Service, LiveServer, SoapHospital], None]) -> None:
    """PostgreSQL only: there the nonce is claimed in the settlement's transaction."""
    monkeypatch.setattr("settlement.db.bookkeeping.CLAIM_NONCE", CLAIM_THAT_ALWAYS_TAKES)
    with serving(pg_service.app) as live, pytest.raises(AssertionError):
        check(pg_service, live, soap_hospital_for(pg_service))


def test_a_reply_that_cannot_be_made_spends_the_nonce_and_a_retry_settles_once(
        service: Service, live: LiveServer, soap_hospital: SoapHospital, monkeypatch: pytest.MonkeyPatch) -> None:
    made = gateway.render_reply

    def broken(*args: Any, **kwargs: Any) -> gateway.Answer:
        raise RuntimeError("the reply mapping failed")

    key = message_id(soap_hospital.code)
    claim = claim_body(soap_hospital.code, soap_hospital.level, new_id_number())
    header = wsse_header(soap_hospital.code, soap_hospital.password, service.clock(), os.urandom(16))
    before = counts(service)
    monkeypatch.setattr(gateway, "render_reply", broken)
    failed = post(live, soap_envelope(settle_xml(key, claim), header))
    monkeypatch.setattr(gateway, "render_reply", made)
    assert fault_of(failed) == (500, "INTERNAL_ERROR", 500)
    after = counts(service)
    assert after["wsse_nonces"] - before["wsse_nonces"] == 1  # spent: the same envelope cannot come again
    assert after["soap_exchanges"] - before["soap_exchanges"] == 1  # the failure is logged
    if is_postgres(service):  # the reply is made before the settlement commits: nothing of it was recorded
        assert after["settlements"] == before["settlements"]
        assert after["idempotency_records"] == before["idempotency_records"]
    assert fault_of(post(live, soap_envelope(settle_xml(key, claim), header)))[1] == "AUTH_NONCE_REPLAYED"

    retry = post(live, soap_envelope(settle_xml(key, claim), wsse_header(soap_hospital.code, soap_hospital.password,
                                                                         service.clock())))
    assert retry.status_code == 200, retry.text
    with service.app.engine.connect() as connection:
        settled = connection.execute(text(
            "SELECT s.public_id FROM settlements s JOIN hospitals h ON h.id = s.hospital_id "
            "WHERE h.code = :code AND s.transaction_id = :key"), {"code": soap_hospital.code, "key": key}).all()
        assert len(settled) == 1
        logged = connection.execute(text(
            "SELECT reply FROM soap_exchanges WHERE settlement_id = :id ORDER BY id DESC"),
            {"id": settled[0][0]}).scalars().first()
    assert logged == retry.content.decode("utf-8")


def check_old_nonces_are_purged_after_a_settlement(service: Service, live: LiveServer, hospital: SoapHospital,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Nonces older than two windows are purged now and then (one call in 256; here always), by a settlement as by
    any other call: afterwards the old nonce is accepted again in a token with a fresh Created."""
    from settlement.services import soap_access

    always = SimpleNamespace(randbelow=lambda _: 0, token_urlsafe=secrets.token_urlsafe)
    start = service.clock()
    nonce = os.urandom(16)
    assert post(live, new_settle(hospital, wsse_header(hospital.code, hospital.password, start, nonce))
                ).status_code == 200
    monkeypatch.setattr(soap_access, "secrets", always)
    service.clock.now = start + 2 * WINDOW + timedelta(seconds=1)
    purging = post(live, new_settle(hospital, wsse_header(hospital.code, hospital.password, service.clock())))
    assert purging.status_code == 200, purging.text
    again = post(live, new_settle(hospital, wsse_header(hospital.code, hospital.password, service.clock(), nonce)))
    assert again.status_code == 200, again.text


def test_old_nonces_are_purged_after_a_settlement(service: Service, live: LiveServer, soap_hospital: SoapHospital,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    check_old_nonces_are_purged_after_a_settlement(service, live, soap_hospital, monkeypatch)


def test_the_purge_check_catches_a_settlement_that_never_purges(pg_service: Service,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL only: there a settlement records its nonce in its own transaction and purges on its own."""
    async def never(*_: Any) -> None:
        return None

    monkeypatch.setattr(gateway.Gateway, "_purge_nonces", never)
    with serving(pg_service.app) as live, pytest.raises(AssertionError):
        check_old_nonces_are_purged_after_a_settlement(pg_service, live, soap_hospital_for(pg_service), monkeypatch)
