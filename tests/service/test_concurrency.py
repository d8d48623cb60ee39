"""Concurrency and idempotency over real HTTP (docs/reliability.md, sections Concurrency and Idempotency).

Every race sends its requests from one thread each, released together by a barrier, to a uvicorn server on
loopback. The checks are written as lists of problems so that the deliberately naive implementation
(tests/service/naive.py: read, compute, write, no lock) can be shown to fail the very check the real one passes.
"""

from __future__ import annotations

import json
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import func, select, text

from settlement.db.models import Hospital, Reversal, Settlement
from settlement.db.settling import PostgresStatements
from settlement.domain.accumulators import Accumulators
from settlement.domain.money import ZERO, fmt, from_fen
from settlement.domain.settle import settle
from settlement.wire.claims import ServiceClaimIn
from settlement.wire.results import accumulators_json
from tests.factories import TARIFFS
from tests.service.conftest import (
    LiveServer,
    Service,
    claim_body,
    import_roster_rows,
    new_id_number,
    running_service,
    start_server,
)
from tests.service.naive import NAIVE_LOCK_YEAR

YEAR = 2024
DAY = "2024-06-15"
BASIC, CRITICAL, ASSISTANCE = "390100", "390200", "610100"
# The inline tariff lowers two annual caps so that they bind within a few dozen bills.
BASIC_CAP = Decimal("20000.00")  # basic_inpatient, shipped 130,000.00
ASSISTANCE_CAP_DIBAO = Decimal("10000.00")  # medical assistance for 低保, shipped 50,000.00
CRITICAL_DEDUCTIBLE_DIBAO = Decimal("5000.00")  # 大病保险: 10,000.00 halved for 低保 (shipped)
CAPPED_VERSION = "2024-01-01-capped-test"
CLASS_A = "XJ01CAA010A001010101107"  # class A, no price cap
CLASS_B = "XJ01CRA023A004010102114"  # class B, the patient pays 10% first
UNLISTED = "ZZ-NOT-IN-CATALOGUE"  # fully self-paid


# Services and races


def capped_tariffs(dest: Path) -> Path:
    """A copy of tariffs/ whose 611000 version has the lowered caps.

    The version gets its own label, so that it can never be taken for the shipped one.
    """
    root = dest / "tariffs"
    shutil.copytree(TARIFFS, root)
    path = root / "611000" / "2024-01-01.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    raw["version"] = CAPPED_VERSION
    layers = {layer["id"]: layer for layer in raw["layers"]}
    layers["basic_inpatient"]["caps"]["per_year"] = str(BASIC_CAP)
    dibao = next(rule for rule in layers["medical_assistance"]["category_rules"] if "dibao" in rule["categories"])
    dibao["caps"]["per_year"] = str(ASSISTANCE_CAP_DIBAO)
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return root


@contextmanager
def running(url: str, tmp: Path, tariffs: Path) -> Iterator[tuple[Service, LiveServer]]:
    """A service on `url` with the tariffs of `tariffs`, served on loopback (as conftest's service and live)."""
    with running_service(url, tmp, tariffs_dir=tariffs) as service:
        server = start_server(service.app)
        try:
            yield service, server
        finally:
            server.server.should_exit = True
            server.thread.join(timeout=10)


@pytest.fixture
def capped_pg(fresh_pg_url: str, tmp_path: Path) -> Iterator[tuple[Service, LiveServer]]:
    with running(fresh_pg_url, tmp_path, capped_tariffs(tmp_path)) as pair:
        yield pair


@pytest.fixture
def capped_sqlite(tmp_path: Path) -> Iterator[tuple[Service, LiveServer]]:
    with running(f"sqlite:///{tmp_path / 'settlement.sqlite3'}", tmp_path, capped_tariffs(tmp_path)) as pair:
        yield pair


def new_person() -> str:
    """An ID number unique in the run (conftest's varies only 3 digits; the PostgreSQL database is shared)."""
    birth = f"{1940 + secrets.randbelow(60)}{1 + secrets.randbelow(12):02d}{1 + secrets.randbelow(28):02d}"
    return new_id_number(birth=birth)


@dataclass(frozen=True)
class Call:
    path: str
    body: dict[str, Any]
    key: str


def race(live: LiveServer, calls: Sequence[Call]) -> list[httpx.Response]:
    """POST every call at once, one thread each, released together; the replies in call order."""
    barrier = threading.Barrier(len(calls))
    limits = httpx.Limits(max_connections=len(calls), max_keepalive_connections=len(calls))
    with httpx.Client(base_url=live.url, limits=limits, timeout=60) as client:  # may be shared between threads

        def send(call: Call) -> httpx.Response:
            request = client.build_request("POST", call.path, json=call.body,
                                           headers={"Authorization": f"Bearer {call.key}"})
            barrier.wait(timeout=60)
            return client.send(request)

        with ThreadPoolExecutor(max_workers=len(calls)) as pool:
            return list(pool.map(send, calls))


@contextmanager
def holding(service: Service, statement: str, **parameters: Any) -> Iterator[Callable[[int], None]]:
    """Run `statement` in a transaction held open until the block ends (on SQLite the BEGIN IMMEDIATE alone holds
    the write lock); the function yielded waits until `count` transactions are queued behind it (PostgreSQL)."""
    engine = service.app.engine
    postgres = engine.dialect.name == "postgresql"
    with engine.connect() as holder, holder.begin():

        def wait_for(count: int) -> None:
            if not postgres:  # SQLite cannot show who waits: give the requests time to queue
                time.sleep(0.5)
                return
            deadline = time.monotonic() + 3  # well inside lock_timeout (5 s)
            with engine.connect() as probe:
                while time.monotonic() < deadline:
                    waiting = probe.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                                "current_database() AND wait_event_type = 'Lock'"))
                    probe.rollback()
                    if waiting is not None and waiting >= count:
                        return
                    time.sleep(0.01)
            raise AssertionError(f"{count} requests never waited for the held lock together")

        if postgres:
            holder.execute(text(statement), parameters)
        yield wait_for


def holding_year(service: Service, person: str) -> AbstractContextManager[Callable[[int], None]]:
    """Hold the person's year as a settlement does (PostgreSQL: its row lock; SQLite: the write lock)."""
    return holding(service, "SELECT 1 FROM person_years WHERE id_number = :person AND year = :year FOR UPDATE",
                   person=person, year=YEAR)


def settle_call(key: str, code: str, level: str, person: str, transaction_id: str, **claim: Any) -> Call:
    return Call("/v1/settlements", {"transaction_id": transaction_id,
                                    "claim": claim_body(code, level, person, **claim)}, key)


def failures(replies: Sequence[httpx.Response], expected: int = 201) -> list[str]:
    """Every reply that is not `expected`, with its code: a 5xx, a busy database or a leaked lock error."""
    return [f"{reply.status_code} {reply.text[:300]}" for reply in replies if reply.status_code != expected]


# Figures


Figures = dict[str, Any]


def nonzero(table: Mapping[str, Decimal]) -> dict[str, Decimal]:
    return {fund: amount for fund, amount in sorted(table.items()) if amount}


def from_json(year_to_date: Mapping[str, Any]) -> Figures:
    """Year figures from the wire (accumulators JSON); a fund at 0.00 is the same as a fund not shown."""
    return {"admissions": year_to_date["admissions"],
            **{name: nonzero({fund: Decimal(v) for fund, v in year_to_date[name].items()})
               for name in ("paid", "deductible_used", "cumulative")}}


def from_fen_table(admissions: int, funds: Mapping[str, tuple[int, int, int]]) -> Figures:
    """Year figures from the database: fund_years (or ledger sums), fund -> (paid, deductible, cumulative) fen."""
    return {"admissions": admissions,
            **{name: nonzero({fund: from_fen(values[index]) for fund, values in funds.items()})
               for index, name in enumerate(("paid", "deductible_used", "cumulative"))}}


def from_accumulators(acc: Accumulators) -> Figures:
    return from_json(accumulators_json(acc))


@dataclass(frozen=True)
class Stored:
    year: Figures  # person_years and fund_years
    ledger: Figures  # the sum of the ledger (admissions taken from the year: the ledger has none)
    settlements: int  # settlement rows of the person


def stored(service: Service, person: str) -> Stored:
    with service.app.context.uow() as tx:
        year = tx.repo.read_year(person, YEAR)
        ledger = tx.repo.ledger_totals(person, YEAR)
        count = tx.session.scalar(select(func.count()).select_from(Settlement)
                                  .where(Settlement.id_number == person))
    return Stored(from_fen_table(year.admissions, year.funds), from_fen_table(year.admissions, ledger), count or 0)


def eligibility(client: httpx.Client, person: str) -> Figures:
    reply = client.post("/v1/eligibility", json={"id_number": person, "on": DAY})
    assert reply.status_code == 200, reply.text
    return from_json(reply.json()["year_to_date"])


def paid_by_fund(body: Mapping[str, Any]) -> dict[str, Decimal]:
    funds: dict[str, Decimal] = {}
    for payer in body["payers"]:
        if payer["eligible"]:
            funds[payer["fund"]] = funds.get(payer["fund"], ZERO) + Decimal(payer["paid"])
    return funds


# 1-3. One person, one annual cap


def cap_problems(service: Service, live: LiveServer, key: str, person: str,
                 replies: Sequence[httpx.Response]) -> list[str]:
    """What breaks the promise of one person's race against one annual cap; empty when it holds.

    Each problem starts with its kind: "cap:" (paid over or short of the cap), "chain:" (two settlements
    computed from the same figures), "ledger:" (the year figures, the ledger and the replies disagree).
    """
    bodies = [reply.json() for reply in replies if reply.status_code == 201]
    problems: list[str] = []
    total = sum((paid_by_fund(body).get(BASIC, ZERO) for body in bodies), ZERO)
    if total > BASIC_CAP:
        problems.append(f"cap: fund {BASIC} paid {total} over {len(bodies)} replies, over its cap {BASIC_CAP}")
    elif total != BASIC_CAP:
        problems.append(f"cap: fund {BASIC} paid {total} over {len(bodies)} replies; the cap {BASIC_CAP} "
                        "was not reached")
    over = [body["settlement_id"] for body in bodies
            if Decimal(body["year_to_date"]["after"]["paid"].get(BASIC, "0")) > BASIC_CAP]
    if over:
        problems.append(f"cap: year-to-date {BASIC} over its cap after {len(over)} settlements")
    # Under the lock each settlement starts from the figures the previous one left: admissions before are
    # 0, 1, 2 ... and each "before" is the previous "after".
    chain = sorted(bodies, key=lambda body: int(body["year_to_date"]["before"]["admissions"]))
    starts = [body["year_to_date"]["before"]["admissions"] for body in chain]
    if starts != list(range(len(chain))):
        repeated = len(starts) - len(set(starts))
        problems.append(f"chain: {repeated} settlements started from the same admissions count as another")
    else:
        for previous, current in pairwise(chain):
            if from_json(current["year_to_date"]["before"]) != from_json(previous["year_to_date"]["after"]):
                problems.append(f"chain: {current['settlement_id']} did not start from the figures "
                                f"{previous['settlement_id']} left")
                break
    now = stored(service, person)
    if now.year != now.ledger:
        problems.append(f"ledger: the year figures {now.year} differ from the sum of the ledger {now.ledger}")
    replied = nonzero({fund: sum((paid_by_fund(body).get(fund, ZERO) for body in bodies), ZERO)
                       for fund in (BASIC, CRITICAL, ASSISTANCE)})
    if now.ledger["paid"] != replied:
        problems.append(f"ledger: the ledger paid {now.ledger['paid']}, the replies {replied}")
    if now.year["admissions"] != len(bodies) or now.settlements != len(bodies):
        problems.append(f"ledger: {len(bodies)} settlements answered, {now.settlements} rows and "
                        f"{now.year['admissions']} admissions recorded")
    with live.client(key) as client:
        shown = eligibility(client, person)
    if shown != now.year:
        problems.append(f"ledger: eligibility shows {shown}, the year figures are {now.year}")
    return problems


def cap_race(service: Service, live: LiveServer, count: int, amount: str) -> tuple[str, str, list[httpx.Response]]:
    """`count` settlements of one person at a county hospital, each a new transaction id and an `amount` bill."""
    code, key = service.hospital("county")
    person = new_person()
    calls = [settle_call(key, code, "county", person, f"CAP-{index}", amount=amount) for index in range(count)]
    return key, person, race(live, calls)


def test_cap_race_postgres(capped_pg: tuple[Service, LiveServer]) -> None:
    """200 concurrent settlements, one person, one annual cap on PostgreSQL: all 201, the cap holds exactly."""
    service, live = capped_pg
    # (800.00 - deductible 400/320/240) x 75% = 300.00 ... 420.00 a bill: the cap binds after about 48 bills.
    key, person, replies = cap_race(service, live, 200, "800.00")
    assert failures(replies) == []
    assert cap_problems(service, live, key, person, replies) == []


def test_cap_race_sqlite(capped_sqlite: tuple[Service, LiveServer]) -> None:
    """The same race on SQLite (BEGIN IMMEDIATE) with 50 settlements of a larger bill (the cap binds at ~23)."""
    service, live = capped_sqlite
    key, person, replies = cap_race(service, live, 50, "1400.00")
    assert failures(replies) == []
    assert cap_problems(service, live, key, person, replies) == []


@pytest.mark.parametrize("lock_year", ["real", "naive"])
def test_cap_race_read_before_write(capped_pg: tuple[Service, LiveServer], monkeypatch: pytest.MonkeyPatch,
                                    lock_year: str) -> None:
    """The check above can fail: a person is settled to just under the cap, then several settlements are made to
    meet at their write (the test holds the fund figures' table). With the year lock they have queued one behind
    the other and the cap holds; without it (tests/service/naive.py: read, compute, write) each has read the same
    figures and the fund pays over its cap, every time."""
    service, live = capped_pg
    if lock_year == "naive":
        monkeypatch.setattr(PostgresStatements, "lock_year", NAIVE_LOCK_YEAR)
    code, key = service.hospital("county")
    person = new_person()
    settled: list[httpx.Response] = []
    left = BASIC_CAP
    with live.client(key) as client:
        while left >= Decimal("420.00"):  # a bill of 800.00 pays the basic fund 300.00 to 420.00
            reply = client.post("/v1/settlements", json=settle_call(key, code, "county", person,
                                                                    f"NEAR-{len(settled)}", amount="800.00").body)
            assert reply.status_code == 201, reply.text
            settled.append(reply)
            left = BASIC_CAP - Decimal(reply.json()["year_to_date"]["after"]["paid"].get(BASIC, "0"))
    assert left > ZERO  # what is left is less than one bill's share: two bills reading it both pay into the cap
    calls = [settle_call(key, code, "county", person, f"CAP-{index}", amount="800.00") for index in range(8)]
    with ThreadPoolExecutor(max_workers=1) as pool:
        with holding(service, "LOCK TABLE fund_years IN EXCLUSIVE MODE") as wait_for:  # reads pass, writes wait
            pending = pool.submit(race, live, calls)
            wait_for(2)
        replies = pending.result()
    monkeypatch.undo()
    assert failures(replies) == []
    problems = cap_problems(service, live, key, person, settled + replies)
    if lock_year == "real":
        assert problems == []
    else:
        assert any(problem.startswith("cap:") for problem in problems), problems


# 4. Retry storm


def test_retry_storm_settles_once(service: Service, live: LiveServer) -> None:
    """50 concurrent identical POSTs (same transaction id, same body): one settlement, 50 identical 201s."""
    code, key = service.hospital("county")
    person = new_person()
    call = settle_call(key, code, "county", person, "STORM-1", amount="2500.00")
    replies = race(live, [call] * 50)
    assert failures(replies) == []
    first = replies[0].content
    assert [reply.content for reply in replies] == [first] * 50
    assert sum(reply.headers.get("idempotent-replayed") == "true" for reply in replies) == 49
    with service.app.context.uow() as tx:
        results = tx.session.scalars(select(Settlement.result).join(Hospital, Hospital.id == Settlement.hospital_id)
                                     .where(Hospital.code == code)).all()
    assert len(results) == 1
    assert results[0].encode("utf-8") == first
    now = stored(service, person)
    assert now.year == now.ledger and now.year["admissions"] == 1


# 5. Two reversals of one settlement


def test_concurrent_reversals_one_wins(service: Service, live: LiveServer) -> None:
    """Two concurrent reversals with different transaction ids, three rounds: one 201 and one 409
    SETTLEMENT_ALREADY_REVERSED each; the year figures return to exactly what they were before the bill."""
    code, key = service.hospital("city")
    person = new_person()
    import_roster_rows(service, [(person, "dibao_rural_a", "2024-01-01", "")])
    with live.client(key) as client:
        # A kept settlement first, so that the figures to return to are not all zero.
        kept = client.post("/v1/settlements", json=settle_call(key, code, "city", person, "KEEP",
                                                               amount="3000.00").body)
        assert kept.status_code == 201, kept.text
        for round_ in range(3):
            before = eligibility(client, person)
            settled = client.post("/v1/settlements", json=settle_call(key, code, "city", person, f"S-{round_}",
                                                                      amount=f"{4000 + 700 * round_}.00").body)
            assert settled.status_code == 201, settled.text
            settlement_id = settled.json()["settlement_id"]
            assert eligibility(client, person) != before  # the bill moved the figures
            path = f"/v1/settlements/{settlement_id}/reversal"
            calls = [Call(path, {"transaction_id": f"RV-{round_}-{side}"}, key) for side in "ab"]
            with ThreadPoolExecutor(max_workers=1) as pool:
                # Both reversals are queued behind the person's lock before either may take it.
                with holding_year(service, person) as wait_for:
                    pending = pool.submit(race, live, calls)
                    wait_for(2)
                replies = pending.result()
            assert sorted(reply.status_code for reply in replies) == [201, 409], [r.text for r in replies]
            won = next(reply for reply in replies if reply.status_code == 201).json()
            lost = next(reply for reply in replies if reply.status_code == 409).json()
            assert won["settlement_id"] == settlement_id and won["status"] == "reversed"
            assert lost["code"] == "SETTLEMENT_ALREADY_REVERSED"
            assert eligibility(client, person) == before
            assert client.get(f"/v1/settlements/{settlement_id}").json()["reversal"]["reversal_id"] == \
                won["reversal_id"]
    now = stored(service, person)
    assert now.year == now.ledger and now.year["admissions"] == 1
    with service.app.context.uow() as tx:
        reversals = tx.session.scalar(select(func.count()).select_from(Reversal)
                                      .join(Settlement, Settlement.id == Reversal.settlement_id)
                                      .where(Settlement.id_number == person))
    assert reversals == 3


# 6. Five hospitals, every payer, replayed in commit order


def bill_lines(hospital: int, bill: int) -> list[dict[str, str]]:
    """A class A drug, a class B drug and an item not in the catalogue, in amounts varying by bill."""
    amounts = [Decimal(1800 + 613 * bill + 271 * hospital), Decimal(300 + 97 * hospital + 41 * bill),
               Decimal(120 + 17 * bill)]
    return [{"id": str(index + 1), "code": code, "name": code, "quantity": "1", "unit_price": fmt(amount),
             "amount": fmt(amount)} for index, (code, amount) in enumerate(zip((CLASS_A, CLASS_B, UNLISTED),
                                                                                 amounts, strict=True))]


def test_five_hospitals_replay_in_commit_order(capped_pg: tuple[Service, LiveServer]) -> None:
    """Five hospitals (township, county, city) settle one 低保 person at once, eight bills each: no payer passes
    its cap or deductible, and every stored split equals a replay of settle() in commit order."""
    service, live = capped_pg
    person = new_person()
    import_roster_rows(service, [(person, "dibao_rural_a", "2024-01-01", "")])
    hospitals = [(level, *service.hospital(level)) for level in ("township", "county", "city", "county", "city")]
    calls = [settle_call(key, code, level, person, f"B-{h}-{bill}", lines=bill_lines(h, bill))
             for h, (level, code, key) in enumerate(hospitals) for bill in range(8)]
    replies = race(live, calls)
    assert failures(replies) == []
    answered = {reply.json()["settlement_id"]: reply.text for reply in replies}

    with service.app.context.uow() as tx:  # the id is taken under the person's lock: commit order
        rows = tx.session.execute(select(Settlement.id, Settlement.public_id, Settlement.claim,
                                         Settlement.categories, Settlement.tariff_sha256,
                                         Settlement.accumulators_before, Settlement.result)
                                  .where(Settlement.id_number == person).order_by(Settlement.id)).all()
    assert sorted(row.public_id for row in rows) == sorted(answered)

    with service.app.context.uow() as tx:
        tariffs = service.app.context.tariffs.current(tx.repo)
    acc = Accumulators(YEAR)
    for row in rows:
        claim_in = ServiceClaimIn.model_validate_json(row.claim)
        claim = claim_in.build(claim_in.patient, tuple(json.loads(row.categories)))
        assert claim.patient.categories == ("dibao_rural_a",)
        resolved = tariffs.resolve(claim.patient.region, claim.tariff_date)
        assert resolved.tariff.ref.sha256 == row.tariff_sha256
        assert resolved.tariff.ref.version == CAPPED_VERSION
        computed = settle(claim, resolved.tariff, acc)
        body = json.loads(row.result)
        assert row.result == answered[row.public_id]  # the client got what is stored
        where = f"settlement {row.id} ({claim.hospital.level}, bill {claim.visit.id})"
        assert from_json(json.loads(row.accumulators_before)) == from_accumulators(acc), where
        assert paid_by_fund(body) == computed.paid_by_fund(), where
        assert Decimal(body["patient_pays"]) == computed.patient_pays, where
        assert [(p["layer"], p["eligible"], p["deductible"], p["paid"]) for p in body["payers"]] == \
            [(p.layer_id, p.eligible, fmt(p.deductible), fmt(p.paid)) for p in computed.payers], where
        assert from_json(body["year_to_date"]["after"]) == from_accumulators(computed.accumulators_after), where
        acc = computed.accumulators_after
        assert acc.paid_by(BASIC) <= BASIC_CAP, where
        assert acc.paid_by(ASSISTANCE) <= ASSISTANCE_CAP_DIBAO, where
        assert acc.deductible_used.get(CRITICAL, ZERO) <= CRITICAL_DEDUCTIBLE_DIBAO, where
        assert acc.deductible_used.get(ASSISTANCE, ZERO) == ZERO, where  # waived for 低保

    # The caps and the deductible were reached, so the race ran where they bind.
    assert (acc.paid_by(BASIC), acc.paid_by(ASSISTANCE)) == (BASIC_CAP, ASSISTANCE_CAP_DIBAO)
    assert acc.deductible_used[CRITICAL] == CRITICAL_DEDUCTIBLE_DIBAO
    assert acc.paid_by(CRITICAL) > ZERO
    now = stored(service, person)
    assert now.year == now.ledger == from_accumulators(acc)
    with live.client(hospitals[0][2]) as client:
        assert eligibility(client, person) == now.year
