"""The database going away under a running service (docs/reliability.md, Faults), behind a TCP proxy the test cuts:
a settlement, REST or SOAP, is answered 503 DATABASE_UNAVAILABLE (a SOAP Server fault) within seconds, not after
the connection pool's 30-second wait, and once the database is back the hospital's retry under the same key
settles exactly once. The caller's key or credentials are cached, so the settlement (or, half a second after the
worker last read it, the read of the credentials generation) is the first to find out; either answers 503 at once,
and either tries a fresh connection once when it finds its pooled one dead."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from settlement.db import aiopool
from tests.service.conftest import LiveServer, Service, claim_body, new_id_number, running_service, serving
from tests.soap.conftest import soap_envelope, soap_hospital_for, wsse_header
from tests.soap.test_wsse import settle_xml
from tests.tcpproxy import TcpProxy

Check = Callable[[Service, LiveServer, TcpProxy, str], None]

MAX_WAIT_SECONDS = 8  # the service answers in 1 to 3 s; the pool alone would wait 30


@pytest.fixture
def behind_proxy(fresh_pg_url: str, tmp_path: Path) -> Iterator[tuple[Service, LiveServer, TcpProxy]]:
    url = make_url(fresh_pg_url)
    with TcpProxy((url.host or "127.0.0.1", url.port or 5432)) as proxy:
        proxied = url.set(port=proxy.port).render_as_string(hide_password=False)
        with running_service(proxied, tmp_path) as service, serving(service.app) as live:
            yield service, live, proxy


def settlement_count(url: str, key: str) -> int:
    with psycopg.connect(url) as connection:
        row = connection.execute("SELECT count(*) FROM settlements WHERE transaction_id = %s", (key,)).fetchone()
    assert row is not None
    return int(row[0])


def check_an_outage(service: Service, live: LiveServer, proxy: TcpProxy, url: str) -> None:
    code, key = service.hospital()
    with live.client(key) as client:
        first = client.post("/v1/settlements", json={"transaction_id": "WARM-1", "claim": claim_body(
            code, "county", new_id_number())})
        assert first.status_code == 201, first.text  # the key is cached now: nothing else touches the database
        proxy.cut()
        body = {"transaction_id": "OUTAGE-1", "claim": claim_body(code, "county", new_id_number())}
        started = time.monotonic()
        refused = client.post("/v1/settlements", json=body, timeout=25)
        waited = time.monotonic() - started
        proxy.up()
        assert refused.status_code == 503 and refused.json()["code"] == "DATABASE_UNAVAILABLE", refused.text
        assert refused.headers["retry-after"] == "1"
        assert waited < MAX_WAIT_SECONDS, waited
        assert settlement_count(url, "OUTAGE-1") == 0
        retried = client.post("/v1/settlements", json=body, timeout=25)
        assert retried.status_code == 201, retried.text
        assert client.post("/v1/settlements", json=body).headers["idempotent-replayed"] == "true"
    assert settlement_count(url, "OUTAGE-1") == 1


def check_a_soap_outage(service: Service, live: LiveServer, proxy: TcpProxy, url: str) -> None:
    hospital = soap_hospital_for(service, ["standard"])

    def settle(key: str, claim: dict[str, Any]) -> httpx.Response:
        header = wsse_header(hospital.code, hospital.password, service.clock())
        return httpx.post(f"{live.url}/soap", content=soap_envelope(settle_xml(key, claim), header),
                          headers={"Content-Type": "text/xml; charset=utf-8"}, timeout=25)

    warm = settle("SOAP-WARM-1", claim_body(hospital.code, "county", new_id_number()))
    assert warm.status_code == 200, warm.text  # the hospital's credentials are cached now
    proxy.cut()
    claim = claim_body(hospital.code, "county", new_id_number())
    started = time.monotonic()
    refused = settle("SOAP-OUTAGE-1", claim)
    waited = time.monotonic() - started
    proxy.up()
    assert refused.status_code == 500 and b"<e:code>DATABASE_UNAVAILABLE</e:code>" in refused.content, refused.text
    assert b"<faultcode>soap:Server</faultcode>" in refused.content
    assert waited < MAX_WAIT_SECONDS, waited
    assert settlement_count(url, "SOAP-OUTAGE-1") == 0
    retried = settle("SOAP-OUTAGE-1", claim)
    assert retried.status_code == 200 and b"<replayed>false</replayed>" in retried.content, retried.text
    assert b"<replayed>true</replayed>" in settle("SOAP-OUTAGE-1", claim).content
    assert settlement_count(url, "SOAP-OUTAGE-1") == 1


CHECKS = [check_an_outage, check_a_soap_outage]


@pytest.mark.parametrize("check", CHECKS)
def test_a_settlement_during_an_outage_is_refused_within_seconds_and_settles_once_after(
        behind_proxy: tuple[Service, LiveServer, TcpProxy], fresh_pg_url: str, check: Check) -> None:
    check(*behind_proxy, fresh_pg_url)


@pytest.mark.parametrize("check", CHECKS)
def test_the_checks_catch_a_pool_that_only_waits(behind_proxy: tuple[Service, LiveServer, TcpProxy],
                                                 fresh_pg_url: str, monkeypatch: pytest.MonkeyPatch,
                                                 check: Check) -> None:
    """The naive variant: the pool waits its whole timeout whatever the server's state (as before: 30 s; here 5 s,
    which the settlement's retry waits twice, past the check's bound)."""
    async def always_reachable(_: aiopool.AsyncPool) -> bool:
        return True

    monkeypatch.setattr(aiopool.AsyncPool, "_reachable", always_reachable)
    monkeypatch.setattr(aiopool, "POOL_TIMEOUT_SECONDS", MAX_WAIT_SECONDS / 2 + 1)
    with pytest.raises(AssertionError):
        check(*behind_proxy, fresh_pg_url)
