"""A tariff version activated while settlements run: every settlement uses exactly one version, the one in force
for its date, and records it; the recomputation of past settlements finds every amount that version would not
have paid.

The races run over real HTTP (a uvicorn server on loopback, one thread per request) on both databases. The checks
are functions returning lists of problems, so that the planted faults (a worker that caches the versions once and
never looks at the schedule's generation; a settlement computed under an altered tariff that records the real
one) can be shown to fail the very checks the engine passes.

The clock stands at 23:00 on 30 June 2024 in Asia/Shanghai; the new city version is in force from 1 July. A
1,000.00 class A bill at a county hospital pays 450.00 from fund 390100 under the shipped version (600.00 x 0.75)
and 480.00 under the new one (600.00 x 0.80).

On PostgreSQL a settlement that queues behind an activation must read the schedule after it: the lock and the read
are two statements (one statement's snapshot is taken before it waits). The queued case below found that.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from settlement.bootstrap import build, prepare
from settlement.cli.main import app as cli
from settlement.db.models import LedgerEntry, Settlement
from settlement.db.repositories import Repository, VersionRow
from settlement.domain.accumulators import Accumulators
from settlement.domain.claim import SHANGHAI, Claim
from settlement.domain.money import from_fen
from settlement.domain.settle import Settlement as Computed
from settlement.domain.settle import settle as real_settle
from settlement.domain.tariff import Tariff
from settlement.services import tariffs
from settlement.services.auth import Caller, authenticate
from settlement.services.settlements import SettlementService
from settlement.services.tariff_schedule import TariffSchedule, version_of
from settlement.tariffstore.store import TariffStore
from settlement.wire.requests import ReverseRequest, SettleRequest
from tests.service.conftest import (
    LiveServer,
    Service,
    claim_body,
    new_id_number,
    point_cli_at,
    serving,
    settings_for,
    shipped_document,
)

EVE = datetime(2024, 6, 30, 15, 0, tzinfo=UTC)  # 23:00 on 30 June, Asia/Shanghai
JUNE_30, JULY_1 = date(2024, 6, 30), date(2024, 7, 1)
PERIOD = (date(2024, 6, 1), date(2024, 7, 31))
CITY, COUNTY, DISTRICT = "611000", "611021", "611002"  # 611002 has no tariff of its own: the city's applies
SHIPPED, NEW = "2024-01-01", "2024-07-01-county-80"
BASIC, CRITICAL = "390100", "390200"
OLD_PAID, NEW_PAID = Decimal("450.00"), Decimal("480.00")
PAID_ON = {JUNE_30: OLD_PAID, JULY_1: NEW_PAID}
ALICE, BOB, CAROL = "admin:alice", "admin:bob", "admin:carol"
RUNS = 100
runner = CliRunner()


# The new version, persons and claims


def prepared_version(service: Service) -> int:
    """The shipped city version with a county-level basic rate of 0.80, in force from 1 July: imported by one
    administrator and approved by another, not yet active."""
    document = shipped_document(CITY, SHIPPED)
    document["version"] = NEW
    document["effective"] = {"from": JULY_1.isoformat()}
    basic = next(layer for layer in document["layers"] if layer["id"] == "basic_inpatient")
    basic["rate"]["by_level"]["county"] = "0.80"
    outcome = tariffs.import_document(service.app.context, document, "test", ALICE)
    version_id = int(outcome["version"]["id"])
    tariffs.approve(service.app.context, str(version_id), BOB)
    return version_id


def status_of(service: Service, version_id: int) -> str:
    with service.app.context.uow() as tx:
        row = tx.repo.tariff_version(version_id)
        assert row is not None
        return str(row.status)


def persons(count: int, region: str = DISTRICT) -> list[str]:
    """Distinct ID numbers: a second admission would lower the deductible and change what is paid."""
    found: dict[str, None] = {}
    while len(found) < count:
        found[new_id_number(region)] = None
    return list(found)


def settle_body(code: str, person: str, day: date, index: int, region: str = DISTRICT) -> dict[str, Any]:
    """A 1,000.00 class A bill at a county hospital, settled at some minute of `day` (Asia/Shanghai)."""
    minute = (index * 37) % (24 * 60)
    settled_at = f"{day.isoformat()}T{minute // 60:02d}:{minute % 60:02d}:00+08:00"
    return {"transaction_id": f"T-{day:%m%d}-{index}-{person[-6:]}",
            "claim": claim_body(code, "county", person, settled_at=settled_at, discharge=day.isoformat(),
                                region=region)}


def basic_paid(body: dict[str, Any]) -> Decimal:
    return sum((Decimal(payer["paid"]) for payer in body["payers"] if payer["eligible"] and payer["fund"] == BASIC),
               Decimal(0))


# Concurrent calls


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    key: str
    body: dict[str, Any] | None = None


def settlement_calls(key: str, bodies: Sequence[dict[str, Any]]) -> list[Call]:
    return [Call("POST", "/v1/settlements", key, body) for body in bodies]


@dataclass(frozen=True)
class Activation:
    admin_key: str
    version_id: int
    after: int  # sent once this many replies have arrived; 0: released together with the calls


@dataclass
class Storm:
    replies: list[httpx.Response]  # in call order
    activation: httpx.Response | None = None
    sent_after: int = 0  # replies received when the activation was sent
    answered_after: int = 0  # ... and when its answer came


def storm(live: LiveServer, calls: Sequence[Call], activation: Activation | None = None) -> Storm:
    """Every call at once, one thread each, released together; optionally an activation over HTTP from another
    thread, sent once `activation.after` replies have arrived."""
    together = len(calls) + (1 if activation is not None and activation.after == 0 else 0)
    barrier = threading.Barrier(together)
    lock = threading.Lock()
    reached = threading.Event()
    answered = 0
    limits = httpx.Limits(max_connections=len(calls) + 1, max_keepalive_connections=len(calls) + 1)
    with httpx.Client(base_url=live.url, limits=limits, timeout=60) as client:

        def send(call: Call) -> httpx.Response:
            nonlocal answered
            request = client.build_request(call.method, call.path, json=call.body,
                                           headers={"Authorization": f"Bearer {call.key}"})
            barrier.wait(timeout=60)
            reply = client.send(request)
            with lock:
                answered += 1
                if activation is not None and answered >= activation.after:
                    reached.set()
            return reply

        def activate(order: Activation) -> tuple[httpx.Response, int, int]:
            request = client.build_request("POST", f"/v1/admin/tariffs/{order.version_id}/activation",
                                           headers={"Authorization": f"Bearer {order.admin_key}"})
            if order.after == 0:
                barrier.wait(timeout=60)
            else:
                assert reached.wait(timeout=60), "the settlements never answered"
            with lock:
                before = answered
            reply = client.send(request)
            with lock:
                return reply, before, answered

        with ThreadPoolExecutor(max_workers=len(calls) + 1) as pool:
            pending: Future[tuple[httpx.Response, int, int]] | None = None
            if activation is not None:
                pending = pool.submit(activate, activation)
            replies = list(pool.map(send, calls))
            if pending is None:
                return Storm(replies)
            reply, before, after = pending.result(timeout=60)
            return Storm(replies, reply, before, after)


def failures(replies: Sequence[httpx.Response], expected: int) -> list[str]:
    return [f"{reply.status_code} {reply.text[:300]}" for reply in replies if reply.status_code != expected]


# What the database holds, and the checks


@dataclass(frozen=True)
class Recorded:
    public_id: str
    day: date  # the settlement date in Asia/Shanghai: the tariff date
    region: str  # the patient's
    version_id: int
    parent_id: int | None
    sha256: str
    basic_paid: Decimal  # what the settlement itself paid from fund 390100 (a reversal's mirror not counted)


def recorded(service: Service) -> list[Recorded]:
    with service.app.context.uow() as tx:
        rows = tx.session.scalars(select(Settlement).order_by(Settlement.id)).all()
        paid = dict(tx.session.execute(select(LedgerEntry.settlement_id, LedgerEntry.paid_fen)
                                       .where(LedgerEntry.fund == BASIC, LedgerEntry.reversal_id.is_(None))).all())
        return [Recorded(row.public_id, row.settled_at.astimezone(SHANGHAI).date(),
                         json.loads(row.claim)["patient"]["region"], row.tariff_version_id,
                         row.tariff_parent_version_id, row.tariff_sha256,
                         from_fen(paid.get(row.id, 0))) for row in rows]


def final_schedule(service: Service) -> TariffStore:
    """The versions in force as the database says now, read afresh (no process's cache)."""
    with service.app.context.uow() as tx:
        rows = tx.repo.tariff_versions(statuses=("active",))
        return TariffStore.of("the final schedule", [version_of(row) for row in rows])


def wrong_versions(service: Service) -> list[str]:
    """Every settlement that did not record the version (and parent) in force for its date in the final schedule,
    or whose recorded tariff hash is not that version's."""
    schedule = final_schedule(service)
    problems = []
    for row in recorded(service):
        right = schedule.resolve(row.region, row.day)
        parent = right.parent.id if right.parent is not None else None
        if (row.version_id, row.parent_id, row.sha256) != (right.version.id, parent, right.tariff.ref.sha256):
            problems.append(f"{row.public_id} of {row.day} ({row.region}) recorded version {row.version_id} "
                            f"(parent {row.parent_id}, sha256 {row.sha256[:12]}); in force is "
                            f"{right.version.label} (id {right.version.id}, parent {parent}, sha256 "
                            f"{right.tariff.ref.sha256[:12]})")
    return problems


def wrong_amounts(service: Service, expected: dict[date, Decimal]) -> list[str]:
    """Every settlement whose fund 390100 payment is not the figure of the version in force for its date (all the
    bills of a race are a first admission's 1,000.00 at a county hospital)."""
    return [f"{row.public_id} of {row.day} paid {row.basic_paid} from {BASIC}, expected {expected[row.day]}"
            for row in recorded(service) if row.basic_paid != expected[row.day]]


def verified(service: Service) -> dict[str, Any]:
    report: dict[str, Any] = tariffs.verify(service.app.context, *PERIOD, "admin:test")
    return report


@pytest.fixture(autouse=True)
def claims_dated_ahead(request: pytest.FixtureRequest) -> None:
    """The races settle bills dated up to a day after the clock (23:00 on the eve), which the service refuses
    beyond SETTLEMENT_CLAIM_CLOCK_SKEW_SECONDS (test_future_dates.py): a skew of two days lets them in, since
    settlements dated ahead (within the skew) are what an activation must be all or nothing against."""
    if "own_service" in request.fixturenames:
        request.getfixturevalue("own_service").app.context.claim_clock_skew_seconds = 2 * 86400


def prepared_race(service: Service) -> tuple[int, str, str, str]:
    """The clock on the eve, the new version approved, a county hospital and an administrator (a third one, who
    activates): (version id, hospital code, hospital key, admin key)."""
    service.clock.now = EVE
    version_id = prepared_version(service)
    code, key = service.hospital("county")
    return version_id, code, key, service.staff("admin")


# 1. Activation midway through a storm of settlements


def test_activation_midway_through_concurrent_settlements(own_service: Service) -> None:
    """100 concurrent settlements dated 30 June with the new version activated (over HTTP, from another thread)
    after the first 30 replies; then 100 dated 1 July racing reads. Every reply 201; each settlement recorded the
    version in force for its date and paid that version's figure (450.00 / 480.00, never a mix); the
    recomputation agrees with every one."""
    service = own_service
    version_id, code, key, admin = prepared_race(service)
    june_persons, july_persons = persons(RUNS), persons(RUNS)
    with serving(service.app) as live:
        june = storm(live, settlement_calls(key, [settle_body(code, person, JUNE_30, index)
                                                  for index, person in enumerate(june_persons)]),
                     Activation(admin, version_id, after=30))
        assert failures(june.replies, 201) == []
        assert june.activation is not None and june.activation.status_code == 200, june.activation
        assert 30 <= june.sent_after < RUNS, "the activation was not sent while settlements were running"
        assert {(reply.json()["tariff"]["version"], basic_paid(reply.json())) for reply in june.replies} == \
            {(SHIPPED, OLD_PAID)}
        assert status_of(service, version_id) == "active"

        reads = [Call("GET", f"/v1/settlements/{reply.json()['settlement_id']}", key) for reply in june.replies[:30]]
        reads += [Call("POST", "/v1/eligibility", key, {"id_number": person, "on": JULY_1.isoformat()})
                  for person in june_persons[:20]]
        reads += [Call("GET", f"/v1/admin/tariffs?region={CITY}", admin)] * 5
        july_calls = settlement_calls(key, [settle_body(code, person, JULY_1, index)
                                            for index, person in enumerate(july_persons)])
        july = storm(live, july_calls + reads)
    settled, read = july.replies[:RUNS], july.replies[RUNS:]
    assert failures(settled, 201) == [] and failures(read, 200) == []
    assert {(reply.json()["tariff"]["version"], basic_paid(reply.json())) for reply in settled} == {(NEW, NEW_PAID)}
    assert {reply.json()["tariff"]["version"] for reply in read[:30]} == {SHIPPED}  # read back as recorded

    rows = recorded(service)
    assert sorted(row.day for row in rows) == [JUNE_30] * RUNS + [JULY_1] * RUNS
    assert wrong_versions(service) == []
    assert wrong_amounts(service, PAID_ON) == []
    report = verified(service)
    assert (report["checked"], report["matched"], report["differences"]) == (2 * RUNS, 2 * RUNS, [])


RACE_BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres"),
]
QUEUED_BEHIND_ACTIVATION = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres"),
]


@pytest.mark.parametrize("own_database_url", RACE_BACKENDS, indirect=True)
def test_activation_racing_future_dated_settlements_is_all_or_nothing(own_service: Service) -> None:
    """The activation released together with 100 settlements dated 1 July (after today: the clock is on the eve).
    Either outcome is right, but only whole: activated, and every settlement recorded the new version and paid
    480.00; or refused as TARIFF_RETROACTIVE (a settlement of 1 July committed first under the shipped version),
    the version still approved, and every settlement recorded the shipped version and paid 450.00."""
    service = own_service
    version_id, code, key, admin = prepared_race(service)
    with serving(service.app) as live:
        run = storm(live, settlement_calls(key, [settle_body(code, person, JULY_1, index)
                                                 for index, person in enumerate(persons(RUNS))]),
                    Activation(admin, version_id, after=0))
    assert failures(run.replies, 201) == []
    assert run.activation is not None
    if run.activation.status_code == 200:
        expected = (NEW, NEW_PAID, "active")
    else:
        assert (run.activation.status_code, run.activation.json()["code"]) == (409, "TARIFF_RETROACTIVE"), \
            run.activation.text
        expected = (SHIPPED, OLD_PAID, "approved")
    assert {(reply.json()["tariff"]["version"], basic_paid(reply.json())) for reply in run.replies} == \
        {expected[:2]}
    assert status_of(service, version_id) == expected[2]
    assert wrong_versions(service) == []
    assert wrong_amounts(service, {JULY_1: expected[1]}) == []
    assert verified(service)["differences"] == []


def waiting_for_schedule(service: Service, count: int) -> int:
    """How many transactions wait for the schedule lock once `count` do, or 3 seconds passed (well inside the
    5-second lock timeout). SQLite cannot show who waits: give the requests time to queue."""
    engine = service.app.engine
    if engine.dialect.name != "postgresql":
        time.sleep(0.5)
        return count
    deadline = time.monotonic() + 3
    waiting = 0
    with engine.connect() as probe:
        while time.monotonic() < deadline:
            waiting = probe.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                        "AND wait_event_type = 'Lock' AND wait_event = 'advisory'")) or 0
            probe.rollback()
            if waiting >= count:
                break
            time.sleep(0.01)
    return waiting


@pytest.mark.parametrize("own_database_url", QUEUED_BEHIND_ACTIVATION, indirect=True)
def test_settlements_queued_behind_an_activation_use_the_new_version(own_service: Service,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The activation takes the schedule lock first and holds it while 100 settlements dated 1 July queue behind
    it (PostgreSQL: on its advisory lock, some 39 of them, one per free connection; SQLite: on the write lock);
    once it commits, every one of them must see the new schedule: the new version recorded, 480.00 paid."""
    service = own_service
    version_id, code, key, _ = prepared_race(service)
    locked, go = threading.Event(), threading.Event()
    take_lock = Repository.lock_tariff_schedule

    def lock_and_hold(repo: Repository, now: datetime) -> int:
        generation = take_lock(repo, now)
        locked.set()
        assert go.wait(timeout=30)
        return generation

    monkeypatch.setattr(Repository, "lock_tariff_schedule", lock_and_hold)
    calls = settlement_calls(key, [settle_body(code, person, JULY_1, index)
                                   for index, person in enumerate(persons(RUNS))])
    with serving(service.app) as live, ThreadPoolExecutor(max_workers=2) as pool:
        activation = pool.submit(tariffs.activate, service.app.context, str(version_id), CAROL)
        try:
            assert locked.wait(timeout=10), "the activation never took the schedule lock"
            run = pool.submit(storm, live, calls)
            queued = waiting_for_schedule(service, 30)
        finally:
            go.set()
        assert activation.result(timeout=30)["status"] == "active"
        replies = run.result(timeout=120).replies
    monkeypatch.undo()
    assert queued > 0, "no settlement waited for the activation"
    assert failures(replies, 201) == []
    assert wrong_versions(service) == []
    assert wrong_amounts(service, {JULY_1: NEW_PAID}) == []
    assert {(reply.json()["tariff"]["version"], basic_paid(reply.json())) for reply in replies} == {(NEW, NEW_PAID)}


# 2. Planted fault: a worker that never looks at the schedule's generation again


class FirstStoreForever(TariffSchedule):
    """A naive worker's schedule: the versions in force as first read, kept for the life of the process."""

    def __init__(self) -> None:
        super().__init__()
        self.first: TariffStore | None = None

    def at(self, generation: int, active_versions: Callable[[], Sequence[VersionRow]]) -> TariffStore:
        if self.first is None:
            self.first = super().at(generation, active_versions)
        return self.first


@contextmanager
def second_worker(service: Service, name: str, schedule: TariffSchedule) -> Iterator[LiveServer]:
    """Another application on the same database, as another uvicorn worker process would be, on the same clock."""
    application = build(settings_for(service.app.settings.database_url, service.tmp / name))
    application.context.clock = service.clock
    application.context.claim_clock_skew_seconds = service.app.context.claim_clock_skew_seconds
    application.context.tariffs = schedule
    prepare(application)
    try:
        with serving(application) as live:
            yield live
    finally:
        application.dispose()


def test_naive_worker_caching_the_versions_is_caught(own_service: Service) -> None:
    """Three workers on one database, each having settled before the activation: the one that activates, another
    with the engine's schedule, and a naive one that caches the versions forever. After the activation a bill of
    1 July is right on the first two (new version, 480.00); the naive worker settles it under the shipped version
    (450.00), and the check of recorded versions names exactly that settlement."""
    service = own_service
    version_id, code, key, _ = prepared_race(service)
    july_persons = persons(3)
    with serving(service.app) as first, \
            second_worker(service, "worker-real", TariffSchedule()) as real, \
            second_worker(service, "worker-naive", FirstStoreForever()) as naive:
        workers = [first, real, naive]
        for index, (worker, person) in enumerate(zip(workers, persons(3), strict=True)):
            with worker.client(key) as client:  # each caches the versions in force before the activation
                reply = client.post("/v1/settlements", json=settle_body(code, person, JUNE_30, index))
            assert reply.status_code == 201 and basic_paid(reply.json()) == OLD_PAID, reply.text
        assert wrong_versions(service) == []
        tariffs.activate(service.app.context, str(version_id), CAROL)
        after: list[dict[str, Any]] = []
        for index, (worker, person) in enumerate(zip(workers, july_persons, strict=True)):
            with worker.client(key) as client:
                reply = client.post("/v1/settlements", json=settle_body(code, person, JULY_1, index))
            assert reply.status_code == 201, reply.text
            after.append(reply.json())
    assert [(body["tariff"]["version"], basic_paid(body)) for body in after] == \
        [(NEW, NEW_PAID), (NEW, NEW_PAID), (SHIPPED, OLD_PAID)]
    naive_id = after[2]["settlement_id"]
    problems = wrong_versions(service)
    assert len(problems) == 1 and problems[0].startswith(f"{naive_id} of {JULY_1}"), problems
    assert wrong_amounts(service, PAID_ON) == [f"{naive_id} of {JULY_1} paid {OLD_PAID} from {BASIC}, expected "
                                               f"{NEW_PAID}"]
    # `settlement settlements verify` finds it too: the version it recorded is not the one in force on its date.
    report = tariffs.verify(service.app.context, date(2024, 6, 30), date(2024, 7, 1), "test")
    assert [(d["settlement_id"], d["kind"]) for d in report["differences"]] == [(naive_id, "version_not_in_force")]


# 3. The recomputation of past settlements


def hospital_caller(service: Service, key: str) -> Caller:
    with service.app.context.uow() as tx:
        return authenticate(tx.repo, key)


def settle_now(service: Service, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
    reply = SettlementService(service.app.context).settle(caller, SettleRequest.model_validate(body))
    assert reply.status == 201, reply.body
    return reply.json()


def lower_county_rate(tariff: Tariff) -> Tariff:
    """The same tariff (same name, same sha256) with the county-level basic inpatient rate at 0.60."""
    layers = []
    for layer in tariff.layers:
        if layer.id == "basic_inpatient" and layer.rates is not None:
            layer = replace(layer, rates=replace(layer.rates, by_level={**layer.rates.by_level,
                                                                        "county": Decimal("0.60")}))
        layers.append(layer)
    return replace(tariff, layers=tuple(layers))


def test_verify_recomputes_every_settlement_and_names_the_one_paid_wrong(own_service: Service,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Settlements of both versions (first and second admissions, patients of the district and of the county that
    inherits the city's version, some reversed): verify recomputes every one and finds no difference. One more,
    computed under an altered tariff while recording the real version and hash: verify names exactly it, with
    fund 390100 paid and recomputed; so does `settlement settlements verify`, which exits 1."""
    service = own_service
    context = service.app.context
    version_id, code, key, _ = prepared_race(service)
    caller = hospital_caller(service, key)
    district, county = persons(6), persons(4, COUNTY)
    bodies = {JUNE_30: [settle_body(code, person, JUNE_30, index) for index, person in enumerate(district[:3])]
              + [settle_body(code, person, JUNE_30, 10 + index, COUNTY) for index, person in enumerate(county[:2])],
              JULY_1: [settle_body(code, person, JULY_1, index) for index, person in enumerate(district[3:])]
              + [settle_body(code, person, JULY_1, 10 + index, COUNTY) for index, person in enumerate(county[2:])]}
    # Second admissions: the deductible falls by 20% (400.00 -> 320.00), once under each version.
    bodies[JUNE_30].append(settle_body(code, district[0], JUNE_30, 20))
    bodies[JULY_1].append(settle_body(code, district[1], JULY_1, 21))
    bodies[JULY_1].append(settle_body(code, county[0], JULY_1, 22, COUNTY))
    june = [settle_now(service, caller, body) for body in bodies[JUNE_30]]
    tariffs.activate(context, str(version_id), CAROL)
    july = [settle_now(service, caller, body) for body in bodies[JULY_1]]
    assert [basic_paid(body) for body in june] == [OLD_PAID] * 5 + [Decimal("510.00")]  # 680.00 x 0.75
    assert [basic_paid(body) for body in july] == [NEW_PAID] * 5 + [Decimal("544.00")] * 2  # 680.00 x 0.80
    assert {body["tariff"]["version"] for body in july[3:5]} == {f"{SHIPPED}+{CITY}@{NEW}"}
    use_cases = SettlementService(context)
    for index, body in enumerate([june[1], june[3], july[0], july[4]]):
        reversal = use_cases.reverse(caller, body["settlement_id"],
                                    ReverseRequest(transaction_id=f"RV-{index}", reason="test"))
        assert reversal.status == 201, reversal.body
    count = len(june) + len(july)
    assert wrong_versions(service) == []
    report = verified(service)
    assert (report["checked"], report["matched"], report["differences"]) == (count, count, [])

    def altered(claim: Claim, tariff: Tariff, accumulators: Accumulators) -> Computed:
        return real_settle(claim, lower_county_rate(tariff), accumulators)

    with monkeypatch.context() as patched:
        patched.setattr("settlement.services.settlements.settle", altered)
        planted = settle_now(service, caller, settle_body(code, persons(1)[0], JULY_1, 30))
    assert basic_paid(planted) == Decimal("360.00")  # 600.00 x 0.60
    assert planted["tariff"]["version"] == NEW  # the real version and hash are recorded
    assert wrong_versions(service) == []  # so the check of recorded versions cannot see it: verify must

    report = verified(service)
    assert (report["checked"], report["matched"]) == (count + 1, count)
    assert [(item["settlement_id"], item["kind"]) for item in report["differences"]] == \
        [(planted["settlement_id"], "amounts_differ")]
    (difference,) = report["differences"]
    # The basic fund paid 120.00 short; the patient's larger share also used more of the critical illness
    # deductible (paid nothing either way).
    assert [(fund["fund"], fund["paid"], fund["recomputed"], fund["deductible"]) for fund in difference["funds"]] == \
        [(BASIC, "360.00", "480.00", ["0.00", "0.00"]), (CRITICAL, "0.00", "0.00", ["640.00", "520.00"])]
    assert difference["detail"] == "patient paid 640.00, recomputed 520.00"
    assert difference["tariff"] == f"{CITY}/{NEW}"

    point_cli_at(service, service.tmp, monkeypatch)
    period = ["--from", PERIOD[0].isoformat(), "--to", PERIOD[1].isoformat()]
    shown = runner.invoke(cli, ["settlements", "verify", *period])
    assert shown.exit_code == 1, shown.output
    assert planted["settlement_id"] in shown.output and "amounts_differ" in shown.output, shown.output
    assert f"fund {BASIC}: paid 360.00, recomputed 480.00" in shown.output, shown.output
    as_json = runner.invoke(cli, ["settlements", "verify", *period, "--json"])
    assert as_json.exit_code == 1, as_json.output
    parsed = json.loads(as_json.stdout)
    assert (parsed["checked"], parsed["matched"]) == (count + 1, count)
    assert [item["settlement_id"] for item in parsed["differences"]] == [planted["settlement_id"]]
