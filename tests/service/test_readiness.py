"""Readiness for a load balancer or an operator on call: /health/ready answers 200 only when the worker reaches
its database; /health (liveness) answers whatever the database does, which is why it cannot serve as readiness."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from settlement.bootstrap import build
from tests.service.conftest import LiveServer, serving, settings_for
from tests.service.test_api import assert_problem


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
