"""Two starts of the same (payer, business date) at once: one run record, the statement fetched once (the other
start answers already_running) or, if they happened to run one after the other, still no duplicates."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import bindparam, text

from settlement.db.models import Timestamp
from settlement.insurers.config import PayerConfig
from settlement.insurers.statements import StatementLine
from settlement.services.reconciliation import Reconciler, RunResult
from tests.reconciliation.helpers import (
    FakePayer,
    as_items,
    change,
    check_found,
    day_lines,
    drop,
    item_of,
    listed,
    new_payer,
    reconciler,
    run_records,
    scalar,
    seed_day,
)
from tests.service.conftest import Service

DAY = date(2024, 6, 14)


def race(runs: Sequence[Reconciler], payer: str) -> list[RunResult | BaseException]:
    barrier = threading.Barrier(len(runs))
    outcomes: list[RunResult | BaseException] = [RuntimeError("did not run")] * len(runs)

    def start(index: int) -> None:
        barrier.wait()
        try:
            outcomes[index] = runs[index].run(payer, DAY)
        except BaseException as error:
            outcomes[index] = error

    threads = [threading.Thread(target=start, args=(n,)) for n in range(len(runs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def check_fetched_once(fetch: FakePayer) -> None:
    assert len(fetch.calls) == 1, "a start during a half-second fetch finds the run in progress"


class EveryStartWorks(Reconciler):
    """Planted fault: a claim that records the run but never asks whether another start is working it."""

    def _claim(self, payer: PayerConfig, day: date) -> tuple[int, str] | None:
        super()._claim(payer, day)
        run_id = scalar_of(self, "SELECT id FROM reconciliation_runs WHERE payer = :payer AND business_date = :day",
                           payer=payer.code, day=day)
        return int(str(run_id)), "naive"


def scalar_of(runs: Reconciler, sql: str, **params: object) -> object:
    with runs.context.uow() as tx:
        return tx.session.connection().execute(text(sql), params).scalar()


@pytest.mark.parametrize("pause", [0.5, 0.0], ids=["slow-fetch", "fast-fetch"])
def test_two_starts_at_once_give_one_run_and_no_duplicates(service: Service, pause: float) -> None:
    _, seeded = seed_day(service, DAY, 20, hospitals=2, patients=8)
    payer = new_payer()
    engine = day_lines(service, payer, DAY)
    ours = {line.settlement_id: line for line in engine}
    gone, shifted = seeded[2].settlement_id, seeded[9].settlement_id
    fetch = FakePayer({DAY: change(drop(engine, [gone]), {shifted: Decimal("-3.30")})}, pause=pause)
    # Two reconcilers (as two processes would have), one fake payer counting the fetches.
    outcomes = race([reconciler(service, payer, fetch), reconciler(service, payer, fetch)], payer.code)
    errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    assert not errors, errors
    results = [outcome for outcome in outcomes if isinstance(outcome, RunResult)]
    assert len(run_records(service, payer.code)) == 1
    assert len({result.run_id for result in results}) == 1
    waiting = [result for result in results if result.already_running]
    if len(fetch.calls) == 1:
        assert len(waiting) == 1, "the start that did not fetch says the run is in progress"
    else:  # both ran, one after the other
        assert len(fetch.calls) == 2 and not waiting
    if pause:
        check_fetched_once(fetch)
    worker = next(result for result in results if not result.already_running)
    assert worker.status == "done" and worker.discrepancies == {"engine_only": 1, "amount_differs": 1}
    found = as_items(listed(service, payer.code))
    check_found(found, sorted([item_of("engine_only", False, ours[gone], ours[gone].amount_fen, None),
                               item_of("amount_differs", False, ours[shifted], ours[shifted].amount_fen,
                                       ours[shifted].amount_fen - 330)]))
    assert scalar(service, "SELECT request_id FROM reconciliation_runs WHERE payer = :payer",
                  payer=payer.code) == fetch.calls[-1][2], "the record keeps the request id of the fetch it used"


def test_control_a_claim_that_never_checks_lets_both_starts_fetch(service: Service) -> None:
    seed_day(service, DAY, 3, hospitals=1, patients=3)
    payer = new_payer()
    fetch = FakePayer({DAY: day_lines(service, payer, DAY)}, pause=0.5)
    naive = [EveryStartWorks(service.app.context, {payer.code: payer}, service.tmp, fetch=fetch) for _ in range(2)]
    outcomes = race(naive, payer.code)
    # Both starts work the run. On PostgreSQL their transactions overlap, and the second one's statement rows
    # then collide with the first's on the statement's key (run, line) and that start fails: the key keeps a run
    # from storing two statements at once. Either way both fetched.
    assert all(isinstance(outcome, RunResult) or "pk_statement_rows" in str(outcome) for outcome in outcomes), \
        outcomes
    with pytest.raises(AssertionError, match="in progress"):
        check_fetched_once(fetch)


def test_a_run_left_running_by_a_crashed_process_is_taken_over_when_its_lease_expires(service: Service) -> None:
    seed_day(service, DAY, 3, hospitals=1, patients=3)
    payer = new_payer()
    fetch = FakePayer({DAY: day_lines(service, payer, DAY)})
    runs = reconciler(service, payer, fetch)
    first = runs.run(payer.code, DAY)
    assert first.status == "done" and len(fetch.calls) == 1
    crashed_at = datetime(2024, 6, 15, 2, 0, tzinfo=UTC)
    with service.app.engine.begin() as connection:  # as a process that died while fetching leaves it
        connection.execute(text("UPDATE reconciliation_runs SET status = 'running', started_at = :at, "
                                "heartbeat_at = :at, holder = 'elsewhere:1:x' WHERE id = :run").bindparams(
                                    bindparam("at", type_=Timestamp)), {"at": crashed_at, "run": first.run_id})
    service.clock.now = crashed_at + timedelta(seconds=29)  # its lease (30 s) is live: left to it
    waiting = runs.run(payer.code, DAY)
    assert waiting.already_running and waiting.status == "running" and len(fetch.calls) == 1
    assert waiting.held_by == "elsewhere:1:x"
    service.clock.now = crashed_at + timedelta(seconds=31)  # expired: taken over at once (it was two hours)
    taken = runs.run(payer.code, DAY)
    assert not taken.already_running and taken.status == "done" and len(fetch.calls) == 2
    assert taken.run_id == first.run_id and len(run_records(service, payer.code)) == 1
    assert scalar(service, "SELECT attempts FROM reconciliation_runs WHERE id = :run", run=first.run_id) == 2


def test_a_fetch_that_raises_fails_the_run_which_a_later_start_completes(service: Service) -> None:
    seed_day(service, DAY, 2, hospitals=1, patients=2)
    payer = new_payer()

    def broken(*_: object) -> list[StatementLine]:
        raise ConnectionResetError("the payer hung up")

    runs = Reconciler(service.app.context, {payer.code: payer}, service.tmp, fetch=broken)
    with pytest.raises(ConnectionResetError):
        runs.run(payer.code, DAY)
    (record,) = run_records(service, payer.code)
    assert record[2] == "failed"
    assert scalar(service, "SELECT error FROM reconciliation_runs WHERE id = :run", run=record[0]) == \
        "unexpected ConnectionResetError"
    done = reconciler(service, payer, FakePayer({DAY: day_lines(service, payer, DAY)})).run(payer.code, DAY)
    assert done.status == "done" and done.run_id == record[0] and done.error is None
