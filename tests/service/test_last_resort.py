"""A bug's exception over a real server: the caller gets a 500 problem+json, and neither the service's log nor the
server's (uvicorn writes tracebacks to stderr) holds the exception's message, which may carry an ID number.
Beside it, the way the service answered before (an exception handler, after which Starlette raises the exception
to the server) is kept as the naive variant: the same check finds the ID number in the server's log."""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from settlement.api.last_resort import INTERNAL_ERROR
from settlement.services.settlements import SettlementService
from tests.service.conftest import LiveServer, Service, new_id_number, serve_on_loopback
from tests.service.test_api import assert_problem


def leaky(_: SettlementService, __: Any, id_number: str, ___: date) -> dict[str, Any]:
    raise RuntimeError(f'duplicate key value; DETAIL: Key (id_number)=({id_number}) already exists')


def test_a_bugs_message_stays_out_of_every_log(service: Service, live: LiveServer, caplog: pytest.LogCaptureFixture,
                                               capfd: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SettlementService, "eligibility", leaky)
    person = new_id_number()
    _, key = service.hospital()
    caplog.set_level(logging.DEBUG)
    with live.client(key) as client:
        reply = client.post("/v1/eligibility", json={"id_number": person})
        assert_problem(reply, 500, "INTERNAL_ERROR")
        assert person not in reply.text
        assert client.get("/health").status_code == 200  # the worker goes on
    captured = capfd.readouterr()
    assert "unexpected RuntimeError while handling a request" in caplog.text  # the log line is there, and named
    assert person not in caplog.text and person not in captured.err and person not in captured.out


def test_the_way_it_was_answered_before_leaks_the_message_to_the_servers_log(
        capfd: pytest.CaptureFixture[str]) -> None:
    app = FastAPI()
    person = new_id_number()

    @app.exception_handler(Exception)
    async def _bug(_: Request, error: Exception) -> JSONResponse:
        return JSONResponse(INTERNAL_ERROR, status_code=500)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError(f"DETAIL: Key (id_number)=({person}) already exists")

    url, server, thread = serve_on_loopback(app, "the naive app")
    try:
        assert httpx.get(f"{url}/boom", timeout=10).status_code == 500
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert person in capfd.readouterr().err  # uvicorn's traceback, message and all
