"""The REST routes' body limit over a real server: a body past its route's limit is refused (413
BODY_TOO_LARGE, problem+json) before it is held, whether its size is declared or streamed, and nothing is recorded;
the uploads have room for their files and SOAP keeps its own limit and faults."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from settlement.api.app import ROSTER_BODY_BYTES
from settlement.api.limits import BodyLimit, BodyTooLarge
from tests.rawhttp import chunked, raw_http
from tests.service.conftest import (
    LiveServer,
    Service,
    claim_body,
    new_id_number,
    roster_csv,
    running_service,
    serve_on_loopback,
    serving,
)
from tests.service.test_api import assert_problem, counts, delta

LIMIT = 8 * 1024  # small, so that a settle body passes it with a few KiB of padding


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[tuple[Service, LiveServer]]:
    with running_service(f"sqlite:///{tmp_path / 'limited.sqlite3'}", tmp_path, max_body_bytes=LIMIT) as service, \
            serving(service.app) as live:
        yield service, live


def padded_settle_body(code: str, size: int) -> bytes:
    """A valid settle body of exactly `size` bytes (JSON allows trailing white space)."""
    body = json.dumps({"transaction_id": f"BL-{secrets.token_hex(4)}",
                       "claim": claim_body(code, "county", new_id_number())}).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


def port_of(live: LiveServer) -> int:
    return int(live.url.rsplit(":", 1)[1])


def head(live: LiveServer, path: str, extra: str, key: str | None = None) -> bytes:
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port_of(live)}\r\nContent-Type: application/json\r\n"
            f"Connection: close\r\n{auth}{extra}\r\n").encode("ascii")


def assert_too_large(status: int, body: bytes, limit: int) -> None:
    assert status == 413, body[:300]
    problem = json.loads(body)
    assert problem["code"] == "BODY_TOO_LARGE" and problem["status"] == 413, problem
    assert problem["detail"] == f"the request body is larger than {limit} bytes"


def test_a_body_at_the_limit_is_read_and_one_byte_more_is_refused_recording_nothing(
        limited: tuple[Service, LiveServer]) -> None:
    service, live = limited
    code, key = service.hospital()
    with live.client(key) as client:
        client.headers["content-type"] = "application/json"
        at_limit = client.post("/v1/settlements", content=padded_settle_body(code, LIMIT))
        assert at_limit.status_code == 201, at_limit.text
        over = padded_settle_body(code, LIMIT + 1)
        before = counts(service)
        problem = assert_problem(client.post("/v1/settlements", content=over), 413, "BODY_TOO_LARGE")
        assert problem["detail"] == f"the request body is larger than {LIMIT} bytes"
        assert delta(before, counts(service)) == {}
        # The refusal is not kept under the key: the same transaction, sent within the limit, settles.
        assert client.post("/v1/settlements", content=over.rstrip()).status_code == 201
        # Every JSON route has the limit, quote and eligibility too.
        assert_problem(client.post("/v1/quotes", content=b" " * (LIMIT + 1)), 413, "BODY_TOO_LARGE")
        assert_problem(client.post("/v1/eligibility", content=b" " * (LIMIT + 1)), 413, "BODY_TOO_LARGE")
        # Other HTTP errors are problems with codes of their own (tests/service/test_http_problems.py).
        assert_problem(client.get("/v1/nowhere"), 404, "NOT_FOUND")
        documented = client.get("/openapi.json").json()["paths"]["/v1/settlements"]["post"]["responses"]
        assert "413" in documented


def test_a_declared_oversize_body_is_refused_before_it_is_sent(limited: tuple[Service, LiveServer]) -> None:
    service, live = limited
    code, key = service.hospital()
    before = counts(service)
    for who in (key, None):  # with or without a key: the size is checked first, nothing is read
        status, body, elapsed = raw_http(port_of(live), head(live, "/v1/settlements",
                                                             f"Content-Length: {100 * 1024 * 1024}\r\n", who),
                                         [padded_settle_body(code, 1024)])
        assert_too_large(status, body, LIMIT)
        assert elapsed < 2, "the server waited for a body it had already refused"
    assert delta(before, counts(service)) == {}
    assert httpx.get(f"{live.url}/health", timeout=10).status_code == 200


def test_a_chunked_oversize_body_is_refused_as_it_streams(limited: tuple[Service, LiveServer]) -> None:
    service, live = limited
    code, key = service.hospital()
    before = counts(service)
    status, body, _ = raw_http(port_of(live), head(live, "/v1/settlements", "Transfer-Encoding: chunked\r\n", key),
                               chunked(padded_settle_body(code, 4 * LIMIT), 1024))
    assert_too_large(status, body, LIMIT)
    assert delta(before, counts(service)) == {}
    # Within the limit, a chunked body is read as any other.
    status, body, _ = raw_http(port_of(live), head(live, "/v1/settlements", "Transfer-Encoding: chunked\r\n", key),
                               chunked(padded_settle_body(code, LIMIT), 1024))
    assert status == 201, body[:300]


def test_the_uploads_have_room_for_their_files(limited: tuple[Service, LiveServer]) -> None:
    service, live = limited
    admin = service.staff("admin")
    rows = [(new_id_number(), "dibao", "2024-01-01", "") for _ in range(500)]
    data = roster_csv(rows)
    assert len(data) > 3 * LIMIT
    with live.client(admin) as client:
        report = client.post("/v1/admin/roster", files={"file": ("roster.csv", data, "text/csv")})
        assert report.status_code == 200, report.text
        assert report.json()["accepted"] == 500
    status, body, elapsed = raw_http(port_of(live), head(live, "/v1/admin/roster",
                                                         f"Content-Length: {ROSTER_BODY_BYTES + 1}\r\n", admin),
                                     [b"--x\r\n"])
    assert_too_large(status, body, ROSTER_BODY_BYTES)
    assert elapsed < 2


def test_soap_keeps_its_own_limit_and_answers_with_faults(limited: tuple[Service, LiveServer]) -> None:
    _, live = limited
    padding = "<!--" + "x" * (4 * LIMIT) + "-->"
    envelope = ('<?xml version="1.0" encoding="UTF-8"?><soap:Envelope '
                'xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
                f"{padding}</soap:Body></soap:Envelope>").encode()
    reply = httpx.post(f"{live.url}/soap", content=envelope, headers={"Content-Type": "text/xml; charset=utf-8"},
                       timeout=10)
    assert reply.status_code == 500 and reply.headers["content-type"].startswith("text/xml"), reply.text[:300]
    assert b"Fault" in reply.content and b"BODY_TOO_LARGE" not in reply.content


# The middleware alone, beside a naive variant that trusts the declared length (and so lets a chunked body through)


class DeclaredLengthOnly(BodyLimit):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and int(declared) > self.default:
            await send({"type": "http.response.start", "status": 413, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)


async def read_everything(scope: Scope, receive: Receive, send: Send) -> None:
    """An endpoint that holds the whole body in memory, as a JSON parser does, and answers its size."""
    size = 0
    more = True
    while more:
        message: Message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    answer = str(size).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})


async def refuse_as_the_service_does(scope: Scope, receive: Receive, send: Send) -> None:
    try:
        await read_everything(scope, receive, send)
    except BodyTooLarge as error:  # in the service, the application's handler answers it (problem+json)
        await send({"type": "http.response.start", "status": error.status_code, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.mark.parametrize(("limiter", "refused"), [(BodyLimit, True), (DeclaredLengthOnly, False)],
                         ids=["counting", "naive-declared-only"])
def test_a_limiter_must_count_what_arrives(limiter: Any, refused: bool) -> None:
    app = limiter(refuse_as_the_service_does, default=LIMIT, by_path={}, exempt_prefix="/soap")
    url, server, thread = serve_on_loopback(app, "the limiter")
    try:
        port = int(url.rsplit(":", 1)[1])
        request = (f"POST /v1/anything HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n").encode("ascii")
        status, body, _ = raw_http(port, request, chunked(b"x" * (4 * LIMIT), 1024))
        if refused:
            assert status == 413
        else:  # the naive variant fails the check the service passes: it read every byte
            assert status == 200 and body == str(4 * LIMIT).encode()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
