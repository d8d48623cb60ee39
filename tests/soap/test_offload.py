"""On PostgreSQL a large SOAP message is worked on in threads, not on the worker's event loop.

The pipeline runs on the event loop there; a 4,000-line quote held the loop for a quarter of a second at a time and
every other request of the worker waited (issue 15: health-check p99 from 5 ms to 253 ms). A message above
SETTLEMENT_SOAP_OFFLOAD_BYTES is now parsed, mapped, checked, answered and masked for the envelope log in threads
(a settlement computed by the blocking transaction in a thread); a small one stays on the loop, where it is faster.
Which thread did the work is observed directly, on a real server. The naive variant (the threshold past any body:
everything on the loop, as before) fails the same check. The answers are the same either way, and a large
settlement settles once, its nonce spent and its exchange logged.

The latency this buys is measured by benchmarks/bench_soap_loop.py (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from lxml import etree
from sqlalchemy import text

from settlement.soap import gateway
from tests.service.conftest import LiveServer, Service, claim_body, new_id_number, running_service, serving
from tests.soap.conftest import message_id, soap_envelope, soap_hospital_for, wsse_header
from tests.soap.test_wsse import fault_of, post, settle_xml

NS = "urn:settlement:soap:v1"
ON_THE_LOOP = 64 * 1024 * 1024  # the naive variant: past any body the service takes
WATCHED = ("parse_envelope", "read_message", "render_reply", "masked_request")


def lines(count: int) -> list[dict[str, str]]:
    return [{"id": str(n), "code": "XJ01CAA010A001010101107", "name": "阿莫西林胶囊", "quantity": "1",
             "unit_price": "1.00", "amount": "1.00"} for n in range(1, count + 1)]


def quote_xml(claim: dict[str, Any]) -> str:
    """A standard-dialect QuoteRequest for a REST claim (the settle element, renamed and without a message id)."""
    element = settle_xml("M", claim).replace("<messageId>M</messageId>", "", 1)
    return element.replace("<SettleRequest", "<QuoteRequest", 1).replace("</SettleRequest>", "</QuoteRequest>")


@contextmanager
def watched(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, bool]]]:
    """(step, ran on an event loop) of every watched step of the pipeline, while the block runs."""
    seen: list[tuple[str, bool]] = []

    def watch(name: str, work: Callable[..., Any]) -> Callable[..., Any]:
        def step(*args: Any, **kwargs: Any) -> Any:
            try:
                asyncio.get_running_loop()
                on_loop = True
            except RuntimeError:
                on_loop = False
            seen.append((name, on_loop))
            return work(*args, **kwargs)
        return step

    for name in WATCHED:
        monkeypatch.setattr(gateway, name, watch(name, getattr(gateway, name)))
    yield seen
    monkeypatch.undo()


@pytest.fixture
def served(fresh_pg_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Service, LiveServer]]:
    """A service on PostgreSQL with the given threshold (the default unless the test is parametrized)."""
    overrides = {"soap_offload_bytes": request.param} if hasattr(request, "param") else {}
    with running_service(fresh_pg_url, tmp_path, **overrides) as service, serving(service.app) as live:
        yield service, live


def where_it_ran(service: Service, live: LiveServer, monkeypatch: pytest.MonkeyPatch,
                 line_count: int) -> tuple[httpx.Response, list[tuple[str, bool]]]:
    hospital = soap_hospital_for(service)
    claim = claim_body(hospital.code, hospital.level, new_id_number(), lines=lines(line_count))
    envelope = soap_envelope(quote_xml(claim), wsse_header(hospital.code, hospital.password, service.clock()))
    with watched(monkeypatch) as seen:
        reply = post(live, envelope)
    assert reply.status_code == 200, reply.text[:500]
    return reply, seen


def assert_off_the_loop(seen: list[tuple[str, bool]]) -> None:
    assert {name for name, _ in seen} == set(WATCHED), seen
    assert [name for name, on_loop in seen if on_loop] == [], seen


def assert_on_the_loop(seen: list[tuple[str, bool]]) -> None:
    assert {name for name, _ in seen} == set(WATCHED), seen
    assert all(on_loop for _, on_loop in seen), seen


def test_a_large_message_is_worked_on_off_the_loop_and_a_small_one_on_it(
        served: tuple[Service, LiveServer], monkeypatch: pytest.MonkeyPatch) -> None:
    service, live = served
    assert service.app.settings.soap_offload_bytes == gateway.DEFAULT_OFFLOAD_BYTES
    large, seen = where_it_ran(service, live, monkeypatch, 2000)
    assert len(large.request.content) > gateway.DEFAULT_OFFLOAD_BYTES
    assert_off_the_loop(seen)
    small, seen = where_it_ran(service, live, monkeypatch, 24)
    assert len(small.request.content) < gateway.DEFAULT_OFFLOAD_BYTES
    assert_on_the_loop(seen)


@pytest.mark.parametrize("served", [ON_THE_LOOP], indirect=True)
def test_control_with_the_threshold_past_every_body_a_large_message_holds_the_loop(
        served: tuple[Service, LiveServer], monkeypatch: pytest.MonkeyPatch) -> None:
    service, live = served
    _, seen = where_it_ran(service, live, monkeypatch, 2000)
    assert_on_the_loop(seen)
    with pytest.raises(AssertionError):
        assert_off_the_loop(seen)


def _answer(reply: httpx.Response) -> bytes:
    """A reply without what differs from call to call (the quote's id and expiry)."""
    root = etree.fromstring(reply.content)
    for element in root.iter(f"{{{NS}}}quoteId", f"{{{NS}}}expiresAt"):
        element.text = ""
    return etree.tostring(root)


@pytest.mark.parametrize("served", [0], indirect=True)
def test_the_answers_are_the_same_in_a_thread_and_on_the_loop(served: tuple[Service, LiveServer]) -> None:
    service, live = served
    hospital = soap_hospital_for(service)
    claim = claim_body(hospital.code, hospital.level, new_id_number(), lines=lines(30))
    app = live.server.config.app
    assert isinstance(app, FastAPI)
    answers = []
    for threshold in (0, ON_THE_LOOP):  # every message off the loop, then none
        app.state.soap.offload_bytes = threshold
        header = wsse_header(hospital.code, hospital.password, service.clock())
        reply = post(live, soap_envelope(quote_xml(claim), header))
        assert reply.status_code == 200, reply.text[:500]
        answers.append(_answer(reply))
    assert answers[0] == answers[1]


def test_a_large_settlement_settles_once_off_the_loop(served: tuple[Service, LiveServer],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    service, live = served
    hospital = soap_hospital_for(service)
    key = message_id(hospital.code)
    claim = claim_body(hospital.code, hospital.level, new_id_number(), lines=lines(600))
    header = wsse_header(hospital.code, hospital.password, service.clock(), os.urandom(16))
    envelope = soap_envelope(settle_xml(key, claim), header)
    assert len(envelope) > gateway.DEFAULT_OFFLOAD_BYTES
    with watched(monkeypatch) as seen:
        first = post(live, envelope)
    assert first.status_code == 200 and b"<status>settled</status>" in first.content, first.text[:500]
    assert_off_the_loop(seen)
    assert fault_of(post(live, envelope))[1] == "AUTH_NONCE_REPLAYED"  # its nonce is spent
    again = post(live, soap_envelope(settle_xml(key, claim), wsse_header(hospital.code, hospital.password,
                                                                         service.clock())))
    assert again.status_code == 200 and b"<replayed>true</replayed>" in again.content, again.text[:500]
    with service.app.engine.connect() as connection:
        settled = connection.execute(text(
            "SELECT s.public_id FROM settlements s JOIN hospitals h ON h.id = s.hospital_id "
            "WHERE h.code = :code AND s.transaction_id = :key"), {"code": hospital.code, "key": key}).scalars().all()
        assert len(settled) == 1
        logged = connection.execute(text("SELECT count(*) FROM soap_exchanges WHERE settlement_id = :id"),
                                    {"id": settled[0]}).scalar_one()
    assert logged == 2  # the settlement and its replay, masked like every exchange


def test_threads_and_the_loop_are_told_apart() -> None:
    """The control of the observation itself: a call on a loop and a call in a thread are recorded as such."""
    seen: list[bool] = []

    def record() -> None:
        try:
            asyncio.get_running_loop()
            seen.append(True)
        except RuntimeError:
            seen.append(False)

    async def both() -> None:
        record()
        await asyncio.to_thread(record)

    asyncio.run(both())
    thread = threading.Thread(target=record)
    thread.start()
    thread.join()
    assert seen == [True, False, False]
