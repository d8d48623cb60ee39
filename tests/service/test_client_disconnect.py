"""A client that gives up (its timeout) before the service read its request is logged as what it is: one info line
naming a client disconnect, without a traceback, not an unexpected error (a fault run logged 21 to 63 of those a
run, which hid real errors among them). Real errors are still logged as errors."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from settlement.api import last_resort
from tests.service.conftest import LiveServer, Service, new_id_number

PATHS = ["/v1/settlements", "/soap"]


def give_up_mid_body(live: LiveServer, path: str, key: str) -> None:
    """A request whose body never arrives in full: the client closes the connection after half of it, as a client
    does when its timeout fires while the server is too busy to read."""
    port = int(live.url.rsplit(":", 1)[1])
    body = b'{"transaction_id": "GONE-1", "claim": {"patient": {"id_number": "' + new_id_number().encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body) * 2}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        time.sleep(0.2)


def wait_for(caplog: pytest.LogCaptureFixture, text: str, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while text not in caplog.text:
        assert time.monotonic() < deadline, caplog.text
        time.sleep(0.05)


@pytest.mark.parametrize("path", PATHS)
def test_a_client_that_gives_up_is_logged_as_a_disconnect_at_info(
        service: Service, live: LiveServer, caplog: pytest.LogCaptureFixture, path: str) -> None:
    _, key = service.hospital()
    caplog.set_level(logging.DEBUG)
    give_up_mid_body(live, path, key)
    wait_for(caplog, "client disconnected")
    disconnects = [record for record in caplog.records if "client disconnected" in record.getMessage()]
    assert [(record.levelno, record.exc_info) for record in disconnects] == [(logging.INFO, None)]
    assert f"POST {path}" in disconnects[0].getMessage()
    assert [record for record in caplog.records if record.levelno >= logging.WARNING] == []


def test_planted_fault_a_disconnect_taken_for_a_bug_is_caught(
        service: Service, live: LiveServer, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The way it was: the disconnect reaches the last resort's catch-all and is logged as an unexpected error;
    the check above sees an error record."""
    class NeverRaised(Exception):
        pass

    monkeypatch.setattr(last_resort, "ClientDisconnect", NeverRaised)
    _, key = service.hospital()
    caplog.set_level(logging.DEBUG)
    give_up_mid_body(live, "/v1/settlements", key)
    wait_for(caplog, "unexpected ClientDisconnect while handling a request")
    assert [record.levelno for record in caplog.records if "ClientDisconnect" in record.getMessage()] == [
        logging.ERROR]
