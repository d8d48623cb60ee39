"""Database connections that die (docs/reliability.md, Faults): the pool pings a connection only after it was
idle for a while, so a connection killed in steady use fails one statement, and the settlement is retried on a
new connection; nothing is lost or paid twice."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import text

from settlement.db import engine as engines
from settlement.services import settlements
from settlement.services.auth import Caller, authenticate
from settlement.services.errors import ServiceCode, ServiceError
from settlement.services.settlements import SettlementService
from settlement.wire.requests import SettleRequest
from tests.service.conftest import LiveServer, Service, claim_body, new_id_number


def kill_connections(service: Service) -> None:
    """Terminate every backend of the database, as a restart or a network cut would, from outside the pool."""
    with psycopg.connect(service.app.settings.database_url, autocommit=True) as outsider:
        killed = outsider.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                  "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()
    assert killed is not None and killed[0] >= 1  # the pooled connection the first settlement used


def fill_pool(service: Service, size: int) -> None:
    with ExitStack() as stack:
        for _ in range(size):
            stack.enter_context(service.app.engine.connect()).execute(text("SELECT 1"))


def hospital(service: Service) -> tuple[str, Caller]:
    code, key = service.hospital()
    with service.app.context.uow() as tx:
        return code, authenticate(tx.repo, key)


def request(code: str, key: str) -> SettleRequest:
    return SettleRequest.model_validate({"transaction_id": key, "claim": claim_body(code, "county", new_id_number())})


def settle(service: Service, caller: Caller, request: SettleRequest) -> int:
    return SettlementService(service.app.context).settle(caller, request).status


def settlement_count(service: Service, key: str) -> int:
    """Counted on a connection of its own (the service's pools may hold dead connections still)."""
    with psycopg.connect(service.app.settings.database_url) as connection:
        row = connection.execute("SELECT count(*) FROM settlements WHERE transaction_id = %s", (key,)).fetchone()
    assert row is not None
    return int(row[0])


def test_a_connection_killed_while_idle_is_pinged_and_replaced(pg_service: Service,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    code, caller = hospital(pg_service)
    assert settle(pg_service, caller, request(code, "IDLE-1")) == 201
    kill_connections(pg_service)
    monkeypatch.setattr(engines, "PING_AFTER_IDLE_SECONDS", 0.0)  # every pooled connection counts as idle
    monkeypatch.setattr(settlements, "RETRIES", 1)  # the ping alone must save it, without a retry
    assert settle(pg_service, caller, request(code, "IDLE-2")) == 201
    assert settlement_count(pg_service, "IDLE-2") == 1


def test_a_connection_killed_in_steady_use_costs_one_retry_not_the_settlement(pg_service: Service,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    code, caller = hospital(pg_service)
    assert settle(pg_service, caller, request(code, "BUSY-1")) == 201
    fill_pool(pg_service, 6)  # more dead connections than attempts: the first failure must replace them all
    monkeypatch.setattr(engines, "PING_AFTER_IDLE_SECONDS", 3600.0)  # no ping: as under load
    kill_connections(pg_service)
    assert settle(pg_service, caller, request(code, "BUSY-2")) == 201
    assert settlement_count(pg_service, "BUSY-2") == 1


def test_without_the_retry_a_killed_connection_fails_the_call_and_records_nothing(
        pg_service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """The control of the test above: with a single attempt the dead connection's failure reaches the caller
    (as the service's 503 DATABASE_UNAVAILABLE: the server gave no answer, it is no lock wait), and nothing is
    recorded under the key, so its retry settles once."""
    code, caller = hospital(pg_service)
    assert settle(pg_service, caller, request(code, "ONCE-1")) == 201
    monkeypatch.setattr(engines, "PING_AFTER_IDLE_SECONDS", 3600.0)
    monkeypatch.setattr(settlements, "RETRIES", 1)
    kill_connections(pg_service)
    retried = request(code, "ONCE-2")
    with pytest.raises(ServiceError) as refused:
        settle(pg_service, caller, retried)
    assert refused.value.code == ServiceCode.DATABASE_UNAVAILABLE
    assert settlement_count(pg_service, "ONCE-2") == 0
    assert settle(pg_service, caller, retried) == 201  # the caller's retry, same key and body
    assert settlement_count(pg_service, "ONCE-2") == 1


# The same over HTTP: the service settles on its event loop, with a pool of asyncio connections of its own.


def bill(code: str, transaction_id: str) -> dict[str, Any]:
    return {"transaction_id": transaction_id, "claim": claim_body(code, "county", new_id_number())}


def post(live: LiveServer, key: str, body: dict[str, Any]) -> httpx.Response:
    with live.client(key) as client:
        return client.post("/v1/settlements", json=body)


def warm(live: LiveServer, key: str, code: str, count: int) -> None:
    """Several settlements at once, so that the service's pool holds several connections."""
    with ThreadPoolExecutor(count) as pool:
        replies = list(pool.map(lambda n: post(live, key, bill(code, f"WARM-{n}")), range(count)))
    assert [reply.status_code for reply in replies] == [201] * count


def test_over_http_connections_killed_in_use_cost_a_retry_not_the_settlement(
        pg_service: Service, pg_live: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    code, key = pg_service.hospital()
    warm(pg_live, key, code, 6)  # more dead connections than attempts: the first failure must replace them all
    monkeypatch.setattr(engines, "PING_AFTER_IDLE_SECONDS", 3600.0)  # no ping: as under load
    kill_connections(pg_service)
    body = bill(code, "HTTP-1")
    assert post(pg_live, key, body).status_code == 201
    again = post(pg_live, key, body)
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true", again.text
    assert settlement_count(pg_service, "HTTP-1") == 1


def test_over_http_an_idle_connection_is_pinged_before_use(pg_service: Service, pg_live: LiveServer,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    code, key = pg_service.hospital()
    warm(pg_live, key, code, 3)
    kill_connections(pg_service)
    monkeypatch.setattr(engines, "PING_AFTER_IDLE_SECONDS", 0.0)
    monkeypatch.setattr(settlements, "RETRIES", 1)  # the ping alone must save it
    assert post(pg_live, key, bill(code, "PING-1")).status_code == 201


def test_over_http_without_the_retry_the_call_fails_with_503_and_records_nothing(
        pg_service: Service, pg_live: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The control of the two tests above: no ping, a single attempt: the dead connection's failure reaches the
    caller as 503 DATABASE_UNAVAILABLE, nothing is recorded, and the caller's retry settles once."""
    code, key = pg_service.hospital()
    warm(pg_live, key, code, 3)
    monkeypatch.setattr(engines, "PING_AFTER_IDLE_SECONDS", 3600.0)
    monkeypatch.setattr(settlements, "RETRIES", 1)
    kill_connections(pg_service)
    body = bill(code, "NORETRY-1")
    refused = post(pg_live, key, body)
    assert refused.status_code == 503 and refused.json()["code"] == "DATABASE_UNAVAILABLE"
    assert settlement_count(pg_service, "NORETRY-1") == 0
    assert post(pg_live, key, body).status_code == 201
    assert settlement_count(pg_service, "NORETRY-1") == 1
