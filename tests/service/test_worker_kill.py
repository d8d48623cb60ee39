"""A server worker killed in the middle of a load (reliability.md, Faults): no acknowledged settlement is lost, no
bill is paid twice, every uncertain request is resolved by its key, and the database equals a replay of the
settlements in commit order.

The service runs as `settlement serve --workers 2` on a PostgreSQL database of its own; one worker is killed with
SIGKILL while clients settle bills for a few persons, and uvicorn's supervisor starts a new one. A client that
got no answer (the connection broke, or a 503) sends the same body under the same key again until it has one.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from settlement.db.models import Settlement
from settlement.domain.accumulators import Accumulators
from settlement.domain.settle import settle
from settlement.wire.claims import ServiceClaimIn
from tests.factories import TARIFFS
from tests.service.conftest import (
    TEST_SECRET_KEY,
    LiveServer,
    Service,
    claim_body,
    free_port,
    import_roster_rows,
    new_id_number,
    running_service,
)
from tests.service.test_concurrency import YEAR, from_accumulators, from_json, paid_by_fund, stored

PERSONS = 4
CLIENTS = 8


@dataclass
class Served:
    url: str
    process: subprocess.Popen[bytes]

    def workers(self) -> list[int]:
        """The live worker processes of the uvicorn supervisor (spawned children)."""
        try:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        except OSError:
            return []
        alive = []
        for pid in children:
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if b"spawn_main" in command and state != "Z":
                alive.append(int(pid))
        return alive

    def wait_for_workers(self, count: int, within: float = 60) -> list[int]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "the server exited"
            workers = self.workers()
            if len(workers) == count:
                try:
                    if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                        return workers
                except httpx.TransportError:
                    pass
            time.sleep(0.1)
        raise AssertionError(f"the server did not have {count} workers answering within {within} s")


@pytest.fixture
def two_workers(fresh_pg_url: str, tmp_path: Path) -> Iterator[tuple[Service, Served]]:
    """The service in a process of its own with two workers, on a database of its own (schema and tariffs put
    there by the composition root in this process, as `serve` does)."""
    with running_service(fresh_pg_url, tmp_path) as service:
        port = free_port()
        env = {name: value for name, value in os.environ.items() if not name.startswith("SETTLEMENT_")}
        env.update({"SETTLEMENT_DATABASE_URL": fresh_pg_url, "SETTLEMENT_TARIFFS": str(TARIFFS),
                    "SETTLEMENT_SECRET_KEY": TEST_SECRET_KEY, "SETTLEMENT_DATA_DIR": str(tmp_path / "served"),
                    "SETTLEMENT_DB_POOL_SIZE": "8"})
        log = (tmp_path / "serve.log").open("wb")
        process = subprocess.Popen([str(Path(sys.executable).parent / "settlement"), "serve", "--port", str(port),
                                    "--workers", "2"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        served = Served(f"http://127.0.0.1:{port}", process)
        try:
            served.wait_for_workers(2)
            yield service, served
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:  # pragma: no cover - only when shutdown hangs
                process.kill()
                process.wait()
            log.close()


@dataclass
class Calls:
    """What the clients sent and what they learned, by key."""

    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    acknowledged: dict[str, str] = field(default_factory=dict)  # key -> the reply's text
    uncertain: set[str] = field(default_factory=set)
    failed: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, client: httpx.Client, key: str) -> None:
        try:
            reply = client.post("/v1/settlements", json=self.bodies[key])
        except httpx.TransportError:  # the worker died with the request: committed or not, nobody knows
            with self.lock:
                self.uncertain.add(key)
            return
        with self.lock:
            if reply.status_code == 201:
                self.acknowledged[key] = reply.text
                self.uncertain.discard(key)
            elif reply.status_code == 503:
                self.uncertain.add(key)
            else:
                self.failed.append(f"{key}: {reply.status_code} {reply.text[:200]}")


def bill(code: str, person: str, key: str, number: int) -> dict[str, Any]:
    amount = f"{300 + 37 * (number % 11)}.00"
    return {"transaction_id": key, "claim": claim_body(code, "county", person, amount=amount)}


def load(served: Served, api_key: str, calls: Calls, code: str, persons: list[str], stop: threading.Event,
         started: threading.Event) -> list[threading.Thread]:
    def client_loop(index: int) -> None:
        with httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {api_key}"},
                          timeout=15) as client:
            number = 0
            while not stop.is_set():
                key = f"KILL-{index}-{number}"
                with calls.lock:
                    calls.bodies[key] = bill(code, persons[(index + number) % len(persons)], key, number)
                calls.send(client, key)
                number += 1
                if number == 3:
                    started.set()

    threads = [threading.Thread(target=client_loop, args=(index,)) for index in range(CLIENTS)]
    for thread in threads:
        thread.start()
    return threads


def resolve(served: Served, api_key: str, calls: Calls, within: float = 60) -> None:
    """Every uncertain call sent again, same body, same key, until it has an answer."""
    deadline = time.monotonic() + within
    with httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=15) as client:
        while calls.uncertain:
            assert time.monotonic() < deadline, f"{len(calls.uncertain)} calls still uncertain"
            for key in sorted(calls.uncertain):
                calls.send(client, key)
            if calls.uncertain:
                time.sleep(0.2)


def replay_matches(service: Service, person: str) -> int:
    """Replay the person's settlements in commit order (the id is taken under the person's lock) with the pure
    calculation; each stored split and starting figures must be the replay's. Returns how many were replayed."""
    with service.app.context.uow() as tx:
        rows = tx.session.execute(select(Settlement.id, Settlement.claim, Settlement.categories,
                                         Settlement.accumulators_before, Settlement.result)
                                  .where(Settlement.id_number == person).order_by(Settlement.id)).all()
        tariffs = service.app.context.tariffs.current(tx.repo)
    acc = Accumulators(YEAR)
    for row in rows:
        claim_in = ServiceClaimIn.model_validate_json(row.claim)
        claim = claim_in.build(claim_in.patient, tuple(json.loads(row.categories)))
        computed = settle(claim, tariffs.resolve(claim.patient.region, claim.tariff_date).tariff, acc)
        body = json.loads(row.result)
        assert from_json(json.loads(row.accumulators_before)) == from_accumulators(acc), row.id
        assert paid_by_fund(body) == computed.paid_by_fund(), row.id
        assert Decimal(body["patient_pays"]) == computed.patient_pays, row.id
        acc = computed.accumulators_after
    figures = stored(service, person)
    assert figures.year == figures.ledger == from_accumulators(acc)
    return len(rows)


def test_a_worker_killed_under_load_loses_nothing_and_pays_nothing_twice(
        two_workers: tuple[Service, Served]) -> None:
    service, served = two_workers
    code, api_key = service.hospital()
    persons = [new_id_number() for _ in range(PERSONS)]
    import_roster_rows(service, [(person, "dibao_rural_a", "2024-01-01", "") for person in persons])
    calls = Calls()
    stop, started = threading.Event(), threading.Event()
    threads = load(served, api_key, calls, code, persons, stop, started)
    try:
        assert started.wait(30), "the load did not start"
        time.sleep(0.5)
        victim = served.workers()[0]
        before_kill = len(calls.acknowledged)
        os.kill(victim, signal.SIGKILL)
        time.sleep(2.5)  # the other worker carries the load while the supervisor starts a new one
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert calls.failed == []
    assert len(calls.acknowledged) > before_kill, "no settlement was acknowledged after the kill"
    assert victim not in served.wait_for_workers(2), "the killed worker was not replaced"
    resolve(served, api_key, calls)

    # Nothing acknowledged is lost: each reply is the stored one, byte for byte.
    hospital = hospital_id(service, code)
    with service.app.context.uow() as tx:
        stored_results = dict(tx.session.execute(select(Settlement.transaction_id, Settlement.result)
                                                 .where(Settlement.hospital_id == hospital)).all())
    assert set(stored_results) == set(calls.bodies), "every key sent has exactly one settlement"
    for key, text in calls.acknowledged.items():
        assert stored_results[key] == text, key
    # Nothing paid twice: one settlement per bill; and the figures are a replay of the settlements.
    visits = Counter(body["claim"]["visit"]["id"] for body in calls.bodies.values())
    assert set(visits.values()) == {1}
    assert double_payments(service, code) == {}
    assert sum(replay_matches(service, person) for person in persons) == len(calls.bodies)


def hospital_id(service: Service, code: str) -> int:
    with service.app.context.uow() as tx:
        hospital = tx.repo.hospital_by_code(code)
        assert hospital is not None
        return int(hospital.id)


def double_payments(service: Service, code: str) -> dict[str, int]:
    """The hospital's bills (visit ids) with more than one settlement."""
    hospital = hospital_id(service, code)
    with service.app.context.uow() as tx:
        visits = tx.session.scalars(select(Settlement.visit_id).where(Settlement.hospital_id == hospital)).all()
    return {visit: count for visit, count in Counter(visits).items() if count > 1}


def test_resending_an_unanswered_bill_under_a_new_key_is_caught_as_a_double_payment(
        service: Service, live: LiveServer) -> None:
    """The planted fault for the check above: a client that resends a call whose answer it lost under a new key
    (instead of its own) pays the bill twice when the first call had committed, and `double_payments` sees it."""
    code, api_key = service.hospital()
    person = new_id_number()
    body = bill(code, person, f"LOST-{secrets.token_hex(4)}", 1)
    with live.client(api_key) as client:
        assert client.post("/v1/settlements", json=body).status_code == 201  # committed; say the reply was lost
        assert client.post("/v1/settlements", json=body).headers["idempotent-replayed"] == "true"  # by its key
        assert double_payments(service, code) == {}
        naive = {**body, "transaction_id": f"NEW-{secrets.token_hex(4)}"}
        assert client.post("/v1/settlements", json=naive).status_code == 201  # by a new key: settled again
    assert double_payments(service, code) == {body["claim"]["visit"]["id"]: 2}
