"""Fixtures for the payers' side: the service fixtures (real SQLite and PostgreSQL) plus the payer simulator
serving its statement service from a uvicorn server on a loopback port, in this process."""

from __future__ import annotations

import secrets
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvicorn
from starlette.types import ASGIApp

from settlement.insurers import statements
from settlement.insurers.config import PayerConfig, StatementSource
from settlement.insurers.simulator import Faults, PayerSimulator
from tests.service.conftest import (  # noqa: F401 - fixtures shared with the service tests
    Service,
    cli_env,
    database_url,
    pg_url,
    serve_on_loopback,
    service,
)

BASIC_FUNDS = ["390100", "310100"]
# For what does not depend on the database (the SOAP protocol, the command line's checks): SQLite only.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@dataclass
class SimulatorServer:
    url: str
    simulator: PayerSimulator
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def wsdl(self) -> str:
        return f"{self.url}/statements?wsdl"

    def payer(self, *, timeout: float = 5.0, retries: int = 3, funds: list[str] | None = None) -> PayerConfig:
        """A SOAP payer served here, under a code of its own: on PostgreSQL the tests share one database, and a
        reconciliation run is one record per (payer, business date)."""
        payer = PayerConfig(code=f"basic-{secrets.token_hex(4)}", name="基本医疗保险（模拟）",
                            funds=funds or BASIC_FUNDS,
                            statement=StatementSource(source="soap", wsdl=self.wsdl, timeout_seconds=timeout,
                                                      retries=retries))
        self.simulator.payers[payer.code] = payer
        return payer

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def serve(app: ASGIApp) -> tuple[str, uvicorn.Server, threading.Thread]:
    """An ASGI app in a uvicorn server on a free loopback port, in this process: (url, server, thread)."""
    return serve_on_loopback(app, "the payer simulator")


def start_simulator(simulator: PayerSimulator) -> SimulatorServer:
    url, server, thread = serve(simulator.asgi())
    return SimulatorServer(url, simulator, server, thread)


@pytest.fixture
def payer_sim(service: Service) -> Iterator[SimulatorServer]:  # noqa: F811 - the shared fixture
    running = start_simulator(PayerSimulator(service.app.context, {}, Faults()))
    yield running
    running.stop()


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """The statement client's pauses between attempts (1 s, 2 s) shortened twentyfold: the attempts, their
    timeouts and their request id are what is tested, not the pause."""
    real = time.sleep
    monkeypatch.setattr(statements, "time", types.SimpleNamespace(sleep=lambda seconds: real(seconds / 20)))

