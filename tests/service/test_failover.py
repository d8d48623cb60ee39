"""A standby that takes over: PostgreSQL streaming replication to a synchronous standby (two clusters this test
starts on this machine), the service connecting with a multi-host URL that targets the primary
(host=...&host=...&target_session_attrs=read-write). During load (several clients settling over REST) the network
between the two is cut, the primary is killed a moment later (SIGKILL to every one of its processes) and the
standby promoted;
the service finds the new primary by itself, and every call whose outcome was unknown is resent under its key.
Then, checked on the new primary: zero acknowledged settlements lost (every 201 is stored byte for byte), every
key settled once, nothing paid twice, the year figures equal the ledger, no cap passed, every 503 with
Retry-After and no 500.

The planted fault: the same run with an asynchronous standby. The primary then acknowledges commits the cut-off
standby never received, and the check finds them lost after the promotion."""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import pgcluster
from tests.invariants import Calls, bill, load, problems
from tests.service.conftest import claim_body, import_roster_rows, new_id_number
from tests.service.test_concurrency import ASSISTANCE, ASSISTANCE_CAP_DIBAO, BASIC, BASIC_CAP, capped_tariffs, running
from tests.tcpproxy import TcpProxy

CLIENTS = 6
PERSONS = 4
CAPS = {BASIC: BASIC_CAP, ASSISTANCE: ASSISTANCE_CAP_DIBAO}


@pytest.fixture
def clusters() -> Iterator[pgcluster.Clusters]:
    if not pgcluster.available():
        if os.environ.get("CI"):
            pytest.fail("no PostgreSQL server binaries to start clusters with: CI must run the failover test")
        pytest.skip("no PostgreSQL server binaries here (CI has them)")
    with pgcluster.Clusters() as made:
        yield made


def multi_host_url(primary: pgcluster.Cluster, standby: pgcluster.Cluster) -> str:
    """As SQLAlchemy writes several hosts; libpq's host=a,b&port=p,q works as well (tests/service/test_failover)."""
    return (f"postgresql://postgres@/settlement?host=127.0.0.1:{primary.port}&host=127.0.0.1:{standby.port}"
            "&target_session_attrs=read-write")


def fail_over_under_load(made: pgcluster.Clusters, tmp: Path, synchronous: bool) -> tuple[list[str], dict[str, Any]]:
    primary = made.create()
    primary.start()
    link = TcpProxy(("127.0.0.1", primary.port))  # the network between the standby and the primary
    standby = made.standby_of(primary, synchronous=synchronous, upstream_port=link.port)
    standby.start()
    primary.create_database("settlement")
    url = multi_host_url(primary, standby)
    figures: dict[str, Any] = {}
    with running(url, tmp, capped_tariffs(tmp)) as (service, live):
        code, api_key = service.hospital()
        persons = [new_id_number() for _ in range(PERSONS)]
        import_roster_rows(service, [(person, "dibao_rural_a", "2024-01-01", "") for person in persons])
        calls = Calls()

        def client() -> httpx.Client:
            return httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=20)

        def make(index: int, number: int) -> tuple[str, dict[str, Any]]:
            key = f"FO-{index}-{number}-{secrets.token_hex(2)}"
            return key, bill(code, persons[(index + number) % PERSONS], key, number, claim_body)

        stop = threading.Event()
        threads = load(calls, client, make, CLIENTS, stop)
        try:
            wait_for(lambda: len(calls.acknowledged) >= 40, "the load to start")
            link.cut()  # the standby hears nothing more: a synchronous primary now waits, an asynchronous one does not
            time.sleep(1.5)
            before_kill = len(calls.acknowledged)
            primary.kill()
            killed = time.monotonic()
            standby.promote()
            promoted = time.monotonic()
            wait_for(lambda: len(calls.acknowledged) >= before_kill + 40, "settlements on the new primary", 60)
            figures["resumed after promotion (s)"] = round(time.monotonic() - promoted, 2)
            figures["promoted after the kill (s)"] = round(promoted - killed, 2)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
            link.cut()
        figures["resent"] = calls.resolve(client)
        figures["acknowledged"] = len(calls.acknowledged)
        figures["statuses"] = dict(calls.statuses)
    return problems(standby.url("settlement"), code, calls, CAPS), figures


def wait_for(check: Any, what: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {within} s"
        time.sleep(0.05)


@pytest.mark.postgres
def test_the_standby_takes_over_and_no_acknowledged_settlement_is_lost(clusters: pgcluster.Clusters,
                                                                       tmp_path: Path) -> None:
    found, figures = fail_over_under_load(clusters, tmp_path, synchronous=True)
    print(figures)  # the run's figures, in the log of a failing run
    assert found == [], found
    assert figures["resumed after promotion (s)"] < 30


@pytest.mark.postgres
def test_planted_fault_an_asynchronous_standby_loses_acknowledged_settlements(clusters: pgcluster.Clusters,
                                                                              tmp_path: Path) -> None:
    found, _ = fail_over_under_load(clusters, tmp_path, synchronous=False)
    assert any(problem.startswith("lost:") for problem in found), found


@pytest.mark.parametrize("form", ["sqlalchemy", "libpq"])
def test_a_multi_host_url_reaches_the_primary_through_every_pool(fresh_pg_url: str, tmp_path: Path,
                                                                  form: str) -> None:
    """Both ways of writing several hosts, the first one down: the blocking engine, the event loop's pools (REST
    settlements) and readiness all find the server. (The event loop's pools rendered the URL for libpq as it was,
    and libpq does not read SQLAlchemy's host=a:5432&host=b:5433.)"""
    from sqlalchemy.engine import make_url

    from tests.service.conftest import running_service, serving

    target = make_url(fresh_pg_url)
    dead = pgcluster.free_port()
    hosts = (f"host=127.0.0.1:{dead}&host={target.host}:{target.port}" if form == "sqlalchemy"
             else f"host=127.0.0.1,{target.host}&port={dead},{target.port}")
    url = f"postgresql://{target.username}@/{target.database}?{hosts}&target_session_attrs=read-write"
    with running_service(url, tmp_path) as service, serving(service.app) as live:
        code, key = service.hospital()
        with live.client(key) as client:
            settled = client.post("/v1/settlements", json={"transaction_id": "MULTI-1",
                                                           "claim": claim_body(code, "county", new_id_number())})
            assert settled.status_code == 201, settled.text
            assert client.get("/health/ready").status_code == 200
