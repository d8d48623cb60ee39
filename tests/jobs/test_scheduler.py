"""The scheduler on both databases: the catch-up runs exactly the missed dates and nothing twice, two schedulers at
once run each date once, the jobs persist in the database without copies, the nightly job takes the previous
business day of Asia/Shanghai, and the process stops cleanly."""

from __future__ import annotations

import dataclasses
import secrets
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import select, text, update

from settlement.bootstrap import build
from settlement.db.models import ReconciliationRun
from settlement.domain.claim import SHANGHAI
from settlement.insurers.config import PayerConfig
from settlement.insurers.statements import StatementError, StatementLine
from settlement.jobs.scheduler import (
    CLEARING_JOB,
    JOBS_TABLE,
    NIGHTLY_JOB,
    PURGE_JOB,
    TAKE_OVER_JOB,
    Jobs,
    Outcome,
    SchedulerProcess,
    activate,
    build_scheduler,
    default_clearing,
    nightly_reconciliation,
    soap_exchange_purge,
)
from settlement.services.reconciliation import Reconciler, engine_lines
from tests.jobs.conftest import CountingClearing, CountingFetch, jobs_for, settle_on
from tests.service.conftest import Service, settings_for

T0 = datetime(2024, 6, 15, 2, 0, tzinfo=UTC)  # 10:00 on 2024-06-15 in Shanghai
D = date(2024, 6, 15)


def days(first: date, count: int) -> list[date]:
    return [first + timedelta(days=n) for n in range(count)]


def ran(outcomes: list[Outcome]) -> set[tuple[str, date | None, str]]:
    return {(o.subject, o.day, o.status) for o in outcomes if o.job == "reconciliation" and o.action == "ran"}


def records(service: Service, payers: dict[str, PayerConfig]) -> list[tuple[str, date, str, int]]:
    """(payer, business date, status, attempts) of every run record of these payers."""
    with service.app.context.uow() as tx:
        rows = tx.session.execute(
            select(ReconciliationRun.payer, ReconciliationRun.business_date, ReconciliationRun.status,
                   ReconciliationRun.attempts)
            .where(ReconciliationRun.payer.in_(list(payers)))
            .order_by(ReconciliationRun.payer, ReconciliationRun.business_date)).all()
    return [(row[0], row[1], row[2], row[3]) for row in rows]


def every(payers: dict[str, PayerConfig], dates: list[date], status: str = "done") -> set[tuple[str, date | None, str]]:
    return {(payer, day, status) for payer in payers for day in dates}


# The catch-up


def test_catch_up_runs_exactly_the_missed_dates_and_a_second_runs_nothing(
        service: Service, payers: dict[str, PayerConfig]) -> None:
    settle_on(service, datetime(2024, 6, 15, 4, 0, tzinfo=UTC), count=2)  # 12:00 on the 15th in Shanghai
    settle_on(service, datetime(2024, 6, 16, 15, 30, tzinfo=UTC))  # 23:30 on the 16th in Shanghai
    fetch = CountingFetch(service.app.context)
    jobs = jobs_for(service.app, payers, fetch, catch_up_days=3)
    service.clock.now = T0
    assert ran(jobs.catch_up()) == every(payers, days(date(2024, 6, 12), 3))
    service.clock.now = T0 + timedelta(days=3)  # down for three nights: the 15th, 16th and 17th were missed
    assert ran(jobs.catch_up()) == every(payers, days(D, 3))
    assert fetch.calls == {(payer, day): 1 for payer in payers for day in days(date(2024, 6, 12), 6)}
    assert records(service, payers) == [(payer, day, "done", 1) for payer in sorted(payers)
                                        for day in days(date(2024, 6, 12), 6)]
    # The runs compared real money: the bills of the 15th and 16th are in their runs, nothing differs.
    basic = next(code for code in payers if code.startswith("basic"))
    for day in (D, D + timedelta(days=1)):
        result = jobs.reconciler.result(basic, day)
        assert result.engine_count > 0 and result.payer_count == result.engine_count and not result.discrepancies
    again = jobs.catch_up()
    assert ran(again) == set() and sum(fetch.calls.values()) == 12


def test_planted_fault_a_catch_up_without_the_done_check_runs_again(
        service: Service, payers: dict[str, PayerConfig], monkeypatch: pytest.MonkeyPatch) -> None:
    fetch = CountingFetch(service.app.context)
    jobs = jobs_for(service.app, payers, fetch, catch_up_days=2)
    service.clock.now = T0
    jobs.catch_up()
    # The naive catch-up: no look at the run records (no done check, no reservation), run() for every date.
    monkeypatch.setattr(jobs, "reconciliation_state", lambda payer, day: None)
    monkeypatch.setattr(jobs, "reserve", lambda payer, day, since: True)
    assert ran(jobs.catch_up()) == every(payers, days(date(2024, 6, 13), 2))  # run again: the test has teeth
    assert set(fetch.calls.values()) == {2}
    assert {attempts for *_, attempts in records(service, payers)} == {2}


@pytest.mark.parametrize("check_then_run", [False, True], ids=["reserved", "planted-fault-check-then-run"])
def test_a_date_finished_elsewhere_between_the_check_and_the_run_is_not_run_again(
        service: Service, payers: dict[str, PayerConfig], monkeypatch: pytest.MonkeyPatch,
        check_then_run: bool) -> None:
    """Scheduler B reads the record (not done), then A works the whole date, then B goes on. Reconciler.run
    claims any record that is not running, so a plain check-then-run would fetch and compare the date again;
    the reservation refuses the done record."""
    service.clock.now = T0
    fetch = CountingFetch(service.app.context)
    first = jobs_for(service.app, payers, fetch, catch_up_days=1)
    second = jobs_for(service.app, payers, fetch, catch_up_days=1)
    reserve = second.reserve
    interleaved: list[bool] = []

    def let_the_other_finish_then_reserve(payer: str, day: date, since: datetime) -> bool:
        if not interleaved:  # B has read the record (not done); now A works the whole date
            interleaved.append(True)
            first.catch_up()
        return True if check_then_run else reserve(payer, day, since)

    monkeypatch.setattr(second, "reserve", let_the_other_finish_then_reserve)
    outcomes = second.catch_up()
    yesterday = D - timedelta(days=1)
    first_payer = next(iter(payers))
    if check_then_run:  # the fault is caught: the date is fetched twice and claimed twice
        assert fetch.calls[(first_payer, yesterday)] == 2
        assert (first_payer, yesterday, "done", 2) in records(service, payers)
        return
    assert ran(outcomes) == set()
    assert [(o.subject, o.status, o.reason) for o in outcomes if o.job == "reconciliation"] == [
        (first_payer, "running", "taken by another process")]
    assert fetch.calls == {(payer, yesterday): 1 for payer in payers}
    assert records(service, payers) == [(payer, yesterday, "done", 1) for payer in sorted(payers)]


def test_a_failed_run_is_retried_and_a_crashed_one_is_taken_over_when_its_lease_expires(
        service: Service, payers: dict[str, PayerConfig]) -> None:
    fetch = CountingFetch(service.app.context)
    failing = {next(iter(payers))}
    asked: dict[str, list[str]] = {payer: [] for payer in payers}  # request ids, per payer

    def flaky(payer: PayerConfig, day: date, request_id: str, inbox: Path) -> list[StatementLine]:
        asked[payer.code].append(request_id)
        if payer.code in failing:
            raise StatementError("the payer's statement is not there yet")
        return fetch(payer, day, request_id, inbox)

    jobs = Jobs(service.app.context, Reconciler(service.app.context, payers, service.tmp, fetch=flaky),
                service.tmp, catch_up_days=1, clearing=CountingClearing())
    service.clock.now = T0
    first = jobs.catch_up()
    failed_payer = next(iter(failing))
    assert {(o.subject, o.status) for o in first if o.job == "reconciliation"} == {
        (failed_payer, "failed"), *((p, "done") for p in payers if p != failed_payer)}
    failing.clear()
    assert ran(jobs.catch_up()) == set()  # failed during this pass (the clock has not moved): not retried in it
    service.clock.now += timedelta(minutes=1)
    retried = jobs.catch_up()
    assert ran(retried) == {(failed_payer, D - timedelta(days=1), "done")}
    assert "failed" in retried[0].reason
    first_ask, retry = asked[failed_payer]
    assert retry == first_ask  # a failed attempt is asked again under its request id (the payer may have booked it)
    # A run left "running" by a crashed process: left alone while its lease is live (renewed in the last 30 s),
    # taken over once it has expired (it was two hours, whatever the lease).
    other = next(p for p in payers if p != failed_payer)
    with service.app.context.uow() as tx:
        tx.session.execute(update(ReconciliationRun).where(ReconciliationRun.payer == other)
                           .values(status="running", started_at=T0 - timedelta(minutes=5), holder="elsewhere:1:x",
                                   heartbeat_at=service.clock.now - timedelta(seconds=29)))
        tx.commit()
    assert ran(jobs.catch_up()) == set()
    with service.app.context.uow() as tx:
        tx.session.execute(update(ReconciliationRun).where(ReconciliationRun.payer == other)
                           .values(heartbeat_at=service.clock.now - timedelta(seconds=31)))
        tx.commit()
    taken = jobs.catch_up()
    assert ran(taken) == {(other, D - timedelta(days=1), "done")} and "taken over" in taken[0].reason
    assert asked[other][-1] == asked[other][0]  # the abandoned attempt's request id, again


def test_two_catch_ups_at_once_do_not_retry_each_others_failures(
        service: Service, payers: dict[str, PayerConfig], tmp_path: Path) -> None:
    """A payer whose statement is not there: one attempt per date for the two schedulers together; the next
    pass (later) retries each once."""
    calls: dict[tuple[str, date], int] = {}
    lock = threading.Lock()

    def missing(payer: PayerConfig, day: date, request_id: str, inbox: Path) -> list[StatementLine]:
        with lock:
            calls[(payer.code, day)] = calls.get((payer.code, day), 0) + 1
        raise StatementError("no statement file yet")

    second = build(settings_for(service.app.settings.database_url, tmp_path / "second"))
    second.context.clock = service.clock
    try:
        pair = [Jobs(app.context, Reconciler(app.context, payers, service.tmp, fetch=missing), service.tmp,
                     catch_up_days=2, clearing=CountingClearing()) for app in (service.app, second)]
        service.clock.now = T0
        for passes in (1, 2):
            first, other = _at_once(pair[0].catch_up, pair[1].catch_up)
            assert ran(first) | ran(other) == every(payers, days(date(2024, 6, 13), 2), "failed")
            assert not ran(first) & ran(other)
            assert set(calls.values()) == {passes}
            service.clock.now += timedelta(hours=1)
        assert {(status, attempts) for *_, status, attempts in records(service, payers)} == {("failed", 2)}
    finally:
        second.dispose()


def test_a_run_in_progress_elsewhere_is_left_to_it(service: Service, payers: dict[str, PayerConfig]) -> None:
    """While one scheduler works a date, another's catch-up skips it (no second fetch, no second claim)."""
    service.clock.now = T0
    fetch = CountingFetch(service.app.context)
    elsewhere = jobs_for(service.app, payers, fetch, catch_up_days=1)
    seen: list[Outcome] = []

    def fetch_while_another_catches_up(payer: PayerConfig, day: date, request_id: str,
                                       inbox: Path) -> list[StatementLine]:
        if not seen:
            seen.extend(elsewhere.catch_up())
        return fetch(payer, day, request_id, inbox)

    first_payer = next(iter(payers))
    jobs = Jobs(service.app.context, Reconciler(service.app.context, payers, service.tmp,
                                                fetch=fetch_while_another_catches_up),
                service.tmp, catch_up_days=1, clearing=CountingClearing())
    outcomes = jobs.catch_up()
    yesterday = D - timedelta(days=1)
    assert [(o.subject, o.action, o.status) for o in seen if o.subject == first_payer] == [
        (first_payer, "skipped", "running")]
    assert ran(outcomes) == {(first_payer, yesterday, "done")}  # the other payer was done by the other one
    assert fetch.calls == {(payer, yesterday): 1 for payer in payers}


def _at_once(*calls: Callable[[], list[Outcome]]) -> list[list[Outcome]]:
    barrier = threading.Barrier(len(calls))
    results: list[list[Outcome]] = [[] for _ in calls]
    failures: list[BaseException] = []

    def work(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[index] = calls[index]()
        except BaseException as error:  # re-raised below, in the test's thread
            failures.append(error)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if failures:
        raise failures[0]
    return results


def test_two_catch_ups_at_once_run_each_date_once(service: Service, payers: dict[str, PayerConfig],
                                                  tmp_path: Path) -> None:
    """Two scheduler processes (two applications, two connection pools) starting together: one run record per
    (payer, date), each statement fetched once, each record claimed once."""
    settle_on(service, datetime(2024, 6, 14, 4, 0, tzinfo=UTC))
    second = build(settings_for(service.app.settings.database_url, tmp_path / "second"))
    second.context.clock = service.clock
    try:
        fetch = CountingFetch(service.app.context)
        one = jobs_for(service.app, payers, fetch, catch_up_days=3)
        two = jobs_for(second, payers, fetch, catch_up_days=3)
        service.clock.now = T0
        expected: set[tuple[str, date | None, str]] = set()
        for rounds in range(3):
            first, other = _at_once(one.catch_up, two.catch_up)
            dates = days(date(2024, 6, 12) + timedelta(days=3 * rounds), 3)
            assert ran(first) | ran(other) == every(payers, dates)
            assert not ran(first) & ran(other)
            expected |= every(payers, dates)
            service.clock.now += timedelta(days=3)
        assert fetch.calls == {(payer, day): 1 for payer, day, _ in expected}
        assert records(service, payers) == sorted((payer, day, status, 1) for payer, day, status in expected)
    finally:
        second.dispose()


# The nightly job


@pytest.mark.parametrize(("instant", "previous"), [
    (datetime(2024, 6, 15, 17, 30, tzinfo=UTC), date(2024, 6, 15)),  # 01:30 on the 16th in Shanghai
    (datetime(2024, 6, 15, 15, 59, tzinfo=UTC), date(2024, 6, 14)),  # 23:59 on the 15th in Shanghai
    (datetime(2024, 6, 15, 16, 0, tzinfo=UTC), date(2024, 6, 15)),  # midnight in Shanghai
    (datetime(2024, 3, 1, 1, 0, tzinfo=SHANGHAI), date(2024, 2, 29)),
])
def test_the_previous_business_day_is_that_of_shanghai(instant: datetime, previous: date) -> None:
    from settlement.jobs.scheduler import previous_business_day

    assert previous_business_day(instant) == previous


def test_the_nightly_job_reconciles_the_previous_business_day_of_shanghai(
        service: Service, payers: dict[str, PayerConfig]) -> None:
    service.clock.now = datetime(2024, 6, 15, 17, 30, tzinfo=UTC)  # 2024-06-16 01:30 in Shanghai
    fetch = CountingFetch(service.app.context)
    jobs = jobs_for(service.app, payers, fetch, catch_up_days=2)
    activate(jobs)
    try:
        nightly_reconciliation()  # as APScheduler calls it, by reference
    finally:
        activate(None)
    # The 15th; the daily catch-up then finds the 14th missing (its nightly time has passed), not the 16th.
    assert set(fetch.calls) == {(payer, day) for payer in payers for day in (D, D - timedelta(days=1))}
    assert {(payer, day, status) for payer, day, status, _ in records(service, payers)} == every(
        payers, [D - timedelta(days=1), D])


def _jobs_without_database(**options: Any) -> Jobs:
    return Jobs(cast(Any, None), cast(Any, None), Path(), clearing=CountingClearing(), **options)


def test_what_is_due_follows_the_nightly_and_clearing_times() -> None:
    from datetime import time

    jobs = _jobs_without_database(catch_up_days=3, reconcile_at=time(2, 0))
    before = datetime(2024, 6, 16, 1, 59, tzinfo=SHANGHAI)
    assert jobs.due_dates(before) == [date(2024, 6, 13), date(2024, 6, 14)]  # the 15th is due at 02:00
    assert jobs.due_dates(before + timedelta(minutes=1)) == days(date(2024, 6, 13), 3)
    assert jobs.due_month(datetime(2024, 3, 1, 2, 59, tzinfo=SHANGHAI)) == "2024-01"
    assert jobs.due_month(datetime(2024, 3, 1, 3, 0, tzinfo=SHANGHAI)) == "2024-02"
    assert jobs.due_month(datetime(2024, 1, 10, 0, 0, tzinfo=SHANGHAI)) == "2023-12"
    from settlement.jobs.scheduler import parse_time, previous_month

    assert previous_month(datetime(2024, 1, 1, 0, 30, tzinfo=SHANGHAI)) == "2023-12"
    assert previous_month(datetime(2023, 12, 31, 16, 30, tzinfo=UTC)) == "2023-12"  # 2024-01-01 00:30 there
    assert parse_time("02:00").hour == 2
    with pytest.raises(ValueError, match="HH:MM"):
        parse_time("2 am")


# The monthly clearing


def test_the_catch_up_clears_the_last_due_month_once(service: Service) -> None:
    clearing = default_clearing()
    if clearing is None:  # pragma: no cover - until the clearing service lands
        pytest.skip("settlement.services.clearing.run_clearing is not there yet")
    # A month of its own: PostgreSQL is one database per test run and clearing records are one per month.
    year = 2040 + secrets.randbelow(50)
    service.clock.now = datetime(year, 3, 1, 19, 0, tzinfo=UTC)  # 03:00 on 2 March in Shanghai
    fetch = CountingFetch(service.app.context)
    jobs = Jobs(service.app.context, Reconciler(service.app.context, {}, service.tmp, fetch=fetch),
                service.tmp / "reports", catch_up_days=1)
    first = [o for o in jobs.catch_up() if o.job == "clearing"]
    assert [(o.subject, o.action, o.status) for o in first] == [(f"{year}-02", "ran", "done")]
    assert jobs.clearing_status(f"{year}-02") == "done"
    assert any((service.tmp / "reports").rglob(f"*{year}-02*"))
    assert [o for o in jobs.catch_up() if o.job == "clearing"] == []
    monthly = jobs.monthly()
    assert monthly is not None and (monthly.action, monthly.status) == ("skipped", "done")


def test_a_clearing_that_breaks_fails_only_the_clearing(service: Service,
                                                           payers: dict[str, PayerConfig]) -> None:
    def unavailable(context: Any, month: str, reports: Path) -> dict[str, Any]:
        raise RuntimeError("the clearing broke")

    fetch = CountingFetch(service.app.context)
    jobs = jobs_for(service.app, payers, fetch, clearing=unavailable, catch_up_days=1)
    service.clock.now = datetime(2061, 5, 2, 4, 0, tzinfo=UTC)
    outcomes = jobs.catch_up()
    assert ran(outcomes) == every(payers, [date(2061, 5, 1)])
    assert [(o.job, o.subject, o.status) for o in outcomes if o.job == "clearing"] == [
        ("clearing", "2061-04", "error")]


# The job store and the process


def stored_jobs(service: Service) -> dict[str, float]:
    with service.app.engine.connect() as connection:
        rows = connection.execute(text(f"SELECT id, next_run_time FROM {JOBS_TABLE}")).all()
    return {row[0]: row[1] for row in rows}


def test_the_jobs_are_kept_in_the_database_and_a_restart_does_not_duplicate_them(service: Service) -> None:
    first = build_scheduler(service.app, blocking=False)
    first.start(paused=True)
    jobs = {job.id: job for job in first.get_jobs(jobstore="default")}
    in_memory = [job.id for job in first.get_jobs(jobstore="memory")]
    first.shutdown()
    assert set(stored_jobs(service)) == {NIGHTLY_JOB, CLEARING_JOB, PURGE_JOB}
    assert in_memory == [TAKE_OVER_JOB]  # every few seconds: kept in memory, not in the database
    nightly, clearing = jobs[NIGHTLY_JOB], jobs[CLEARING_JOB]
    assert nightly.coalesce and clearing.coalesce and nightly.misfire_grace_time > 0
    assert nightly.func is nightly_reconciliation
    at = nightly.next_run_time.astimezone(SHANGHAI)
    assert (at.hour, at.minute) == (2, 0)
    cleared = clearing.next_run_time.astimezone(SHANGHAI)
    assert (cleared.day, cleared.hour, cleared.minute) == (1, 3, 0)
    purge = jobs[PURGE_JOB]
    assert purge.func is soap_exchange_purge and purge.coalesce
    purged = purge.next_run_time.astimezone(SHANGHAI)
    assert (purged.hour, purged.minute) == (4, 30)
    # Restarted with another nightly time: the same three rows, the nightly one updated.
    moved = dataclasses.replace(service.app, settings=service.app.settings.model_copy(update={"reconcile_at": "03:30"}))
    for _ in range(2):
        again = build_scheduler(moved, blocking=False)
        again.start(paused=True)
        restarted = {job.id: job for job in again.get_jobs(jobstore="default")}
        again.shutdown()
        assert set(restarted) == {NIGHTLY_JOB, CLEARING_JOB, PURGE_JOB}
        at = restarted[NIGHTLY_JOB].next_run_time.astimezone(SHANGHAI)
        assert (at.hour, at.minute) == (3, 30)
    stored = stored_jobs(service)
    assert len(stored) == 3
    assert datetime.fromtimestamp(stored[NIGHTLY_JOB], SHANGHAI).time().isoformat() == "03:30:00"


def test_the_process_catches_up_then_schedules_and_stops_cleanly(
        service: Service, payers: dict[str, PayerConfig]) -> None:
    service.clock.now = T0
    fetch = CountingFetch(service.app.context)
    jobs = jobs_for(service.app, payers, fetch, catch_up_days=2)
    scheduler = build_scheduler(service.app, blocking=False)
    process = SchedulerProcess(jobs, scheduler)
    try:
        outcomes = process.run()
        assert ran(outcomes) == every(payers, days(date(2024, 6, 13), 2))
        assert scheduler.running
        assert {job.id for job in scheduler.get_jobs(jobstore="default")} == {NIGHTLY_JOB, CLEARING_JOB, PURGE_JOB}
    finally:
        process.request_stop()
        assert process._stopper is not None
        process._stopper.join(timeout=10)
        activate(None)
    assert not scheduler.running and jobs.stop.is_set()
    process.request_stop()  # a second request changes nothing
    assert len(records(service, payers)) == 4  # the database is still usable after the job store let go


def test_a_stop_during_the_catch_up_leaves_the_rest_and_does_not_start(
        service: Service, payers: dict[str, PayerConfig]) -> None:
    service.clock.now = T0
    scheduler = build_scheduler(service.app, blocking=False)
    process: list[SchedulerProcess] = []

    def fetch_then_stop(payer: PayerConfig, day: date, request_id: str, inbox: Path) -> list[StatementLine]:
        process[0].request_stop()
        return engine_lines(service.app.context, payer, day)

    jobs = Jobs(service.app.context, Reconciler(service.app.context, payers, service.tmp, fetch=fetch_then_stop),
                service.tmp, catch_up_days=3, clearing=CountingClearing())
    process.append(SchedulerProcess(jobs, scheduler))
    try:
        outcomes = process[0].run()
    finally:
        activate(None)
    assert len(ran(outcomes)) == 1 and not scheduler.running
    assert [o for o in outcomes if o.job == "clearing"] == []  # stopped: the clearing waits for the next start
    assert len(records(service, payers)) == 1


def test_a_second_application_on_the_same_database_sees_the_same_jobs(service: Service, tmp_path: Path) -> None:
    """What a second scheduler process finds: the jobs the first stored, still two."""
    first = build_scheduler(service.app, blocking=False)
    first.start(paused=True)
    first.shutdown()
    other = build(settings_for(service.app.settings.database_url, tmp_path / "other"))
    try:
        scheduler = build_scheduler(other, blocking=False)
        scheduler.start(paused=True)
        assert sorted(job.id for job in scheduler.get_jobs(jobstore="default")) == sorted(
            [NIGHTLY_JOB, CLEARING_JOB, PURGE_JOB])
        scheduler.shutdown()
    finally:
        other.dispose()
    assert len(stored_jobs(service)) == 3


@pytest.mark.parametrize("blocking", [False, True], ids=["background", "blocking"])
def test_a_stop_between_the_catch_up_and_the_start_still_shuts_the_scheduler_down(
        service: Service, payers: dict[str, PayerConfig], monkeypatch: pytest.MonkeyPatch, blocking: bool) -> None:
    service.clock.now = T0
    jobs = jobs_for(service.app, payers, CountingFetch(service.app.context), catch_up_days=1)
    scheduler = build_scheduler(service.app, blocking=blocking)
    process = SchedulerProcess(jobs, scheduler)
    start = scheduler.start

    def stop_then_start(*args: Any, **kwargs: Any) -> None:
        process.request_stop()  # the scheduler is not running yet: nothing to shut down here
        start(*args, **kwargs)

    monkeypatch.setattr(scheduler, "start", stop_then_start)
    watchdog = threading.Timer(10, lambda: scheduler.running and scheduler.shutdown(wait=False))
    watchdog.start()  # a blocking start that never ends would otherwise hang the test run
    try:
        process.run()
    finally:
        watchdog.cancel()
        activate(None)
    assert process._stopper is not None
    process._stopper.join(timeout=10)
    assert not scheduler.running and not process._stopper.is_alive()
