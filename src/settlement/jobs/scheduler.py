"""The scheduler process: nightly reconciliation, monthly clearing and the catch-up of missed runs.

`settlement scheduler` runs this in a process of its own, never inside the API workers. APScheduler 3 keeps the
two jobs in the application's database (table scheduler_jobs), added with replace_existing so that a restart
updates them instead of adding copies:

- nightly reconciliation at settings.reconcile_at (Asia/Shanghai) of the previous business day for every
  configured payer, followed by the daily catch-up;
- monthly clearing of the previous month on the 1st at 03:00 (Asia/Shanghai);
- the purge of the SOAP envelope log's rows past their retention, nightly at 04:30 (Asia/Shanghai).

Catch-up (when the process starts or takes the lead, and daily after the nightly run): every business date of the
last settings.catch_up_days days whose nightly time has passed, for every payer, whose run is not done (none
recorded, failed, or abandoned: its holder stopped renewing its lease), and the last month whose clearing time
has passed if its clearing is not done. Every few seconds the leading scheduler also takes over any run of the
window whose lease expired (a process killed while it worked one).

Several schedulers may run on one database (one per host): they share a lease named "scheduler" (table leases),
and only its holder runs the jobs; the others wait, asking for the lease every few seconds, and the first to find
it expired (its holder killed, frozen or cut off) takes the lead and catches up. A scheduler that finds its lease
taken (it was frozen for longer than the lease) stops with exit status 3 and is restarted as a standby.

What decides whether a run is done is still the run records: before a run, a scheduler takes the (payer, date)
record with one conditional statement that refuses a done run and one held under a live lease by another process
(Jobs.reserve); Reconciler.run then claims it with its own conditional UPDATE. So a manual `reconcile run` beside
the scheduler, or two schedulers during a hand-over, fetch and compare each date once, and a done run is never run
again by them.

"Today" comes from the application's clock (context.clock), so tests move time instead of waiting.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, cast

from apscheduler.events import EVENT_SCHEDULER_STARTED  # type: ignore[import-untyped]
from apscheduler.executors.pool import ThreadPoolExecutor  # type: ignore[import-untyped]
from apscheduler.jobstores.memory import MemoryJobStore  # type: ignore[import-untyped]
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore  # type: ignore[import-untyped]
from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]
from apscheduler.schedulers.base import BaseScheduler  # type: ignore[import-untyped]
from apscheduler.schedulers.blocking import BlockingScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]
from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError

from settlement.bootstrap import Application
from settlement.db.models import ClearingRun, ReconciliationRun
from settlement.domain.claim import SHANGHAI
from settlement.insurers.config import load_payers
from settlement.services.context import Context
from settlement.services.leases import Heartbeat, NamedLease, renewal_interval
from settlement.services.reconciliation import Reconciler
from settlement.services.soap_access import purge_exchanges

log = logging.getLogger("settlement.jobs")

TIMEZONE = "Asia/Shanghai"
JOBS_TABLE = "scheduler_jobs"
NIGHTLY_JOB = "nightly-reconciliation"
CLEARING_JOB = "monthly-clearing"
CLEARING_AT = time(3, 0)  # on the 1st of the month, Asia/Shanghai: after the month's last nightly reconciliation
PURGE_JOB = "soap-exchange-purge"
PURGE_AT = time(4, 30)  # nightly, Asia/Shanghai: after the reconciliation and the clearing
TAKE_OVER_JOB = "take-over-expired-runs"  # every few seconds, in memory: runs whose holder stopped renewing
LEADER_LEASE = "scheduler"
EXIT_LEASE_LOST = 3
# A job that could not fire on time (process busy or suspended) still runs within this many seconds, once
# (coalesce); a longer outage is handled by the catch-up when the process starts again.
MISFIRE_GRACE_SECONDS = 3600

# run_clearing(context, "YYYY-MM", reports_dir) -> summary (one clearing record per month, idempotent)
Clearing = Callable[[Context, str, Path], dict[str, Any]]


# Dates


def parse_time(value: str) -> time:
    """settings.reconcile_at, "HH:MM"."""
    try:
        hours, minutes = (int(part) for part in value.split(":"))
        return time(hours, minutes)
    except ValueError:
        raise ValueError(f"reconcile_at must be HH:MM (24-hour clock), not {value!r}") from None


def shanghai(instant: datetime) -> datetime:
    if instant.tzinfo is None:
        raise ValueError("the clock must give aware instants")
    return instant.astimezone(SHANGHAI)


def previous_business_day(instant: datetime) -> date:
    """The business day (Asia/Shanghai) before the one `instant` falls on."""
    return shanghai(instant).date() - timedelta(days=1)


def month_of(day: date) -> str:
    return f"{day:%Y-%m}"


def previous_month(instant: datetime) -> str:
    """The month (Asia/Shanghai) before the one `instant` falls on, YYYY-MM."""
    return month_of(shanghai(instant).date().replace(day=1) - timedelta(days=1))


# The work


@dataclass(frozen=True)
class Outcome:
    """What one step of a job did: ran (status done | failed | error) or skipped (status says why)."""

    job: str  # reconciliation | clearing | exchange-purge
    subject: str  # the payer code, or the month
    day: date | None
    action: str  # ran | skipped
    status: str
    reason: str


@dataclass(frozen=True)
class RunState:
    """A reconciliation run record as the scheduler reads it."""

    status: str  # pending | running | done | failed
    started_at: datetime | None
    finished_at: datetime | None
    holder: str | None = None  # the process holding its lease (pending or running)
    heartbeat_at: datetime | None = None  # when it last renewed it


def default_clearing() -> Clearing | None:
    """The monthly clearing service, looked up when a job needs it: run_clearing of settlement.services.clearing
    if that module exists, else of settlement.services.finance (where it is now)."""
    for name in ("settlement.services.clearing", "settlement.services.finance"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
            continue
        found = getattr(module, "run_clearing", None)
        if callable(found):
            return cast(Clearing, found)
    return None


class Jobs:
    """What the scheduler runs, as plain methods (tests call them directly, with the clock where they like)."""

    def __init__(self, context: Context, reconciler: Reconciler, reports_dir: Path, *,
                 reconcile_at: time = time(2, 0), catch_up_days: int = 7,
                 clearing: Clearing | None = None,
                 clearing_at: time = CLEARING_AT, exchange_retention_days: int = 180) -> None:
        if catch_up_days < 1:
            raise ValueError("catch_up_days must be at least 1")
        self.context = context
        self.reconciler = reconciler
        self.reports_dir = reports_dir
        self.reconcile_at = reconcile_at
        self.catch_up_days = catch_up_days
        self._clearing = clearing
        self.clearing_at = clearing_at
        self.exchange_retention_days = exchange_retention_days
        self.stop = threading.Event()  # set on SIGTERM/SIGINT: the current run finishes, no other starts

    @classmethod
    def for_application(cls, app: Application, **overrides: Any) -> Jobs:
        settings = app.settings
        reconciler = Reconciler(app.context, load_payers(settings.payers_file), settings.inbox_dir,
                                timedelta(seconds=settings.timing_window_seconds),
                                lease=timedelta(seconds=settings.lease_seconds))
        options: dict[str, Any] = {"reconcile_at": parse_time(settings.reconcile_at),
                                   "catch_up_days": settings.catch_up_days,
                                   "exchange_retention_days": settings.soap_exchange_retention_days, **overrides}
        return cls(app.context, reconciler, settings.reports_dir, **options)

    @property
    def payers(self) -> list[str]:
        return list(self.reconciler.payers)

    def clearing(self) -> Clearing | None:
        """The clearing given, else the clearing service (looked up when due, so a missing one fails only
        the clearing)."""
        return self._clearing if self._clearing is not None else default_clearing()

    # What is due

    def due_dates(self, now: datetime | None = None) -> list[date]:
        """Business dates of the catch-up window (the last catch_up_days days up to yesterday) whose nightly
        time has passed, oldest first."""
        local = shanghai(now or self.context.clock())
        yesterday = local.date() - timedelta(days=1)
        days = [yesterday - timedelta(days=back) for back in range(self.catch_up_days - 1, -1, -1)]
        return [day for day in days
                if local >= datetime.combine(day + timedelta(days=1), self.reconcile_at, SHANGHAI)]

    def due_month(self, now: datetime | None = None) -> str:
        """The last month whose clearing time (the 1st of the following month at clearing_at) has passed."""
        local = shanghai(now or self.context.clock())
        first = local.date().replace(day=1)
        if local < datetime.combine(first, self.clearing_at, SHANGHAI):
            first = (first - timedelta(days=1)).replace(day=1)
        return month_of(first - timedelta(days=1))

    # The run records

    def reconciliation_state(self, payer: str, day: date) -> RunState | None:
        """The run record of a payer's business date, or None when there is none."""
        runs = ReconciliationRun
        with self.context.uow() as tx:
            row = tx.session.execute(select(runs.status, runs.started_at, runs.finished_at, runs.holder,
                                            runs.heartbeat_at)
                                     .where(runs.payer == payer, runs.business_date == day)).first()
        return None if row is None else RunState(row[0], row[1], row[2], row[3], row[4])

    def clearing_status(self, month: str) -> str | None:
        with self.context.uow() as tx:
            status: str | None = tx.session.execute(
                select(ClearingRun.status).where(ClearingRun.month == month)).scalar()
        return status

    # The steps

    def reserve(self, payer: str, day: date, since: datetime) -> bool:
        """Take a business date for this pass unless its run is done or another process holds it.

        The check and the taking are one statement, so of two schedulers at once one takes the date: a missing
        record is inserted as pending (of two inserts one fails on the unique key); a failed record, or one left
        pending or running by a process that stopped renewing its lease, is taken by setting its finished_at to
        now where it is before `since`, the start of this pass (of two such updates one matches; a record
        finished or taken since then is another process's attempt of this very pass and is left to the next
        catch-up). Either way the record's lease becomes this scheduler's reconciler's. Its status stays as it
        is, so that Reconciler.run claims it as it would anyway: a failed or abandoned attempt is asked again under
        its request id. Without this a check followed by run() lets a scheduler that saw the date not done claim it
        again after another has finished it (the claim refuses only a run held under a live lease).
        """
        now = self.context.clock()
        runs = ReconciliationRun
        holder = self.reconciler.holder
        try:
            with self.context.uow() as tx:
                taken = tx.session.execute(
                    update(runs).where(
                        runs.payer == payer, runs.business_date == day,
                        or_(runs.status == "failed",
                            and_(runs.status.in_(("pending", "running")),
                                 or_(runs.heartbeat_at.is_(None), runs.heartbeat_at < now - self.lease))),
                        or_(runs.finished_at.is_(None), runs.finished_at < since))
                    .values(finished_at=now, holder=holder, heartbeat_at=now).returning(runs.id)
                    .execution_options(synchronize_session=False)).first()
                if taken is None:
                    if tx.session.execute(select(runs.id).where(runs.payer == payer, runs.business_date == day)
                                          ).first() is not None:
                        return False
                    tx.session.add(runs(payer=payer, business_date=day, status="pending", request_id="",
                                        started_at=now, attempts=0, engine_count=0, engine_total_fen=0,
                                        payer_count=0, payer_total_fen=0, discrepancies=0, totals="[]",
                                        holder=holder, heartbeat_at=now))
                    tx.session.flush()
                tx.commit()
        except IntegrityError:
            return False  # another process inserted the record first
        return True

    def reconcile(self, payer: str, day: date, why: str, since: datetime | None = None) -> Outcome:
        """Reconcile a payer's business date unless its run is done, held by another process, or failed during
        this pass (since: when the pass began; default now)."""
        since = since or self.context.clock()
        state = self.reconciliation_state(payer, day)
        if state is not None and state.status == "done":
            return Outcome("reconciliation", payer, day, "skipped", "done", "already done")
        if state is not None and state.status in ("pending", "running") and not self._expired(state):
            log.info("reconciliation of %s for %s: %s elsewhere since %s (lease held by %s, renewed at %s), left to "
                     "it", payer, day, state.status, state.started_at, state.holder, state.heartbeat_at)
            return Outcome("reconciliation", payer, day, "skipped", "running", "running elsewhere")
        if state is not None and state.status == "failed" and state.finished_at is not None \
                and state.finished_at >= since:
            log.info("reconciliation of %s for %s: tried by another process at %s during this pass; left to it, "
                     "or to the next catch-up", payer, day, state.finished_at)
            return Outcome("reconciliation", payer, day, "skipped", "failed", "tried elsewhere during this pass")
        if state is not None and state.status in ("pending", "running"):
            why = (f"{why}; the run started at {state.started_at} did not finish: its holder {state.holder} last "
                   f"renewed its lease at {state.heartbeat_at} (taken over)")
        elif state is not None:
            why = f"{why}; the last run {state.status}"
        if not self.reserve(payer, day, since):
            log.info("reconciliation of %s for %s: taken by another process first, left to it", payer, day)
            return Outcome("reconciliation", payer, day, "skipped", "running", "taken by another process")
        log.info("reconciling %s for %s: %s", payer, day, why)
        try:
            result = self.reconciler.run(payer, day)
        except Exception:
            log.exception("reconciliation of %s for %s stopped with an error (the next catch-up retries it)",
                          payer, day)
            return Outcome("reconciliation", payer, day, "ran", "error", why)
        if result.already_running:
            log.info("reconciliation of %s for %s: claimed by another process first, left to it", payer, day)
            return Outcome("reconciliation", payer, day, "skipped", "running", "running elsewhere")
        if result.status == "done":
            log.info("reconciled %s for %s: %d engine entries, %d statement rows, %d discrepancies", payer, day,
                     result.engine_count, result.payer_count, sum(result.discrepancies.values()))
        else:
            log.warning("reconciliation of %s for %s %s: %s (the next catch-up retries it)", payer, day,
                        result.status, result.error)
        return Outcome("reconciliation", payer, day, "ran", result.status, why)

    def clear(self, month: str, why: str) -> Outcome:
        """The clearing of a month unless it is done."""
        if self.clearing_status(month) == "done":
            return Outcome("clearing", month, None, "skipped", "done", "already done")
        clearing = self.clearing()
        if clearing is None:
            log.error("clearing of %s is due (%s) but no clearing service is installed", month, why)
            return Outcome("clearing", month, None, "skipped", "unavailable", "no clearing service")
        log.info("clearing %s: %s", month, why)
        try:
            summary = clearing(self.context, month, self.reports_dir)
        except Exception:
            log.exception("clearing of %s stopped with an error (the next catch-up retries it)", month)
            return Outcome("clearing", month, None, "ran", "error", why)
        log.info("cleared %s: %s", month, ", ".join(str(path) for path in summary.get("files", [])) or "done")
        return Outcome("clearing", month, None, "ran", "done", why)

    def purge_exchanges(self) -> Outcome:
        """The SOAP envelope log's rows past their retention. Idempotent: a missed night is made up by the next."""
        try:
            purged = purge_exchanges(self.context, self.exchange_retention_days)
        except Exception:
            log.exception("the purge of the SOAP envelope log stopped with an error (the next night retries it)")
            return Outcome("exchange-purge", "soap_exchanges", None, "ran", "error", "nightly purge")
        return Outcome("exchange-purge", "soap_exchanges", None, "ran", "done",
                       f"{purged.rows} rows recorded before {purged.cutoff.isoformat()}")

    @property
    def lease(self) -> timedelta:
        return self.reconciler.lease

    def _expired(self, state: RunState) -> bool:
        """Whether the run's holder stopped renewing its lease (none recorded: an earlier version's run)."""
        return state.heartbeat_at is None or state.heartbeat_at < self.context.clock() - self.lease

    def take_over_expired(self) -> list[Outcome]:
        """Every run of the catch-up window left pending or running by a holder that stopped renewing its lease,
        run again now (taking over its request id)."""
        now = self.context.clock()
        runs = ReconciliationRun
        days = self.due_dates(now)
        if not days:
            return []
        with self.context.uow() as tx:
            abandoned = tx.session.execute(
                select(runs.payer, runs.business_date).where(
                    runs.business_date >= days[0], runs.payer.in_(self.payers),
                    runs.status.in_(("pending", "running")),
                    or_(runs.heartbeat_at.is_(None), runs.heartbeat_at < now - self.lease))
                .order_by(runs.business_date, runs.payer)).all()
        return [self.reconcile(payer, day, "its holder stopped renewing its lease", now)
                for payer, day in abandoned if not self.stop.is_set()]

    # The jobs

    def nightly(self) -> list[Outcome]:
        """The previous business day for every payer, then the daily catch-up of anything still missing."""
        since = self.context.clock()
        day = previous_business_day(since)
        outcomes = [self.reconcile(payer, day, "nightly run of the previous business day", since)
                    for payer in self._while_running(self.payers)]
        return outcomes + self.catch_up(skip={day}, trigger="daily catch-up", since=since)

    def monthly(self) -> Outcome | None:
        month = previous_month(self.context.clock())
        return None if self.stop.is_set() else self.clear(month, "monthly clearing of the previous month")

    def catch_up(self, *, skip: Iterable[date] = (), trigger: str = "catch-up at start",
                 since: datetime | None = None) -> list[Outcome]:
        """Every due business date of the window and payer whose run is not done (and did not fail during this
        pass); the last due month's clearing if it is not done."""
        since = since or self.context.clock()
        skipped = set(skip)
        days = [day for day in self.due_dates(since) if day not in skipped]
        log.info("%s: business dates %s, payers %s", trigger,
                 f"{days[0]} to {days[-1]}" if days else "none due", ", ".join(self.payers))
        outcomes: list[Outcome] = []
        for day in days:
            for payer in self._while_running(self.payers):
                state = self.reconciliation_state(payer, day)
                if state is not None and state.status == "done":
                    continue
                why = ("missed: no run recorded (the scheduler was down at the nightly time)" if state is None
                       else "run again")
                outcomes.append(self.reconcile(payer, day, f"{trigger}, {why}", since))
        month = self.due_month(since)
        if not self.stop.is_set() and self.clearing_status(month) != "done":
            outcomes.append(self.clear(month, f"{trigger}, missed: no finished clearing recorded"))
        ran = [outcome for outcome in outcomes if outcome.action == "ran"]
        log.info("%s: %d runs (%s)", trigger, len(ran), ", ".join(
            f"{o.subject} {o.day} {o.status}" if o.day else f"{o.subject} {o.status}" for o in ran)
            or "nothing was missing")
        return outcomes

    def _while_running(self, items: list[str]) -> Iterator[str]:
        for item in items:
            if self.stop.is_set():
                log.info("stopping: the remaining runs are left to the next catch-up")
                return
            yield item


# The jobs as APScheduler calls them: by reference (settlement.jobs.scheduler:nightly_reconciliation), so that
# the job store keeps a name, not a pickled application; the process installs its Jobs with activate().

_active: Jobs | None = None


def activate(jobs: Jobs | None) -> None:
    global _active  # one Jobs per scheduler process
    _active = jobs


def active() -> Jobs:
    if _active is None:
        raise RuntimeError("no scheduler jobs in this process: the jobs run in `settlement scheduler`")
    return _active


def nightly_reconciliation() -> None:
    active().nightly()


def monthly_clearing() -> None:
    active().monthly()


def soap_exchange_purge() -> None:
    active().purge_exchanges()


def take_over_expired_runs() -> None:
    active().take_over_expired()


def build_scheduler(app: Application, *, blocking: bool = True) -> BaseScheduler:
    """A scheduler with its job store in the application's database and its three jobs (replace_existing: a
    restart updates the stored jobs, never adds copies), and in memory the take-over of abandoned runs every
    renewal interval. Jobs run one at a time in one worker thread."""
    reconcile_at = parse_time(app.settings.reconcile_at)
    kind = BlockingScheduler if blocking else BackgroundScheduler
    scheduler = kind(
        jobstores={"default": SQLAlchemyJobStore(engine=app.engine, tablename=JOBS_TABLE),
                   "memory": MemoryJobStore()},
        executors={"default": ThreadPoolExecutor(max_workers=1)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": MISFIRE_GRACE_SECONDS},
        timezone=TIMEZONE,
    )
    scheduler.add_job(f"{__name__}:nightly_reconciliation",
                      CronTrigger(hour=reconcile_at.hour, minute=reconcile_at.minute, timezone=TIMEZONE),
                      id=NIGHTLY_JOB, name="nightly reconciliation of the previous business day",
                      replace_existing=True)
    scheduler.add_job(f"{__name__}:monthly_clearing",
                      CronTrigger(day=1, hour=CLEARING_AT.hour, minute=CLEARING_AT.minute, timezone=TIMEZONE),
                      id=CLEARING_JOB, name="monthly clearing of the previous month", replace_existing=True)
    scheduler.add_job(f"{__name__}:soap_exchange_purge",
                      CronTrigger(hour=PURGE_AT.hour, minute=PURGE_AT.minute, timezone=TIMEZONE),
                      id=PURGE_JOB, name="purge of the SOAP envelope log past its retention", replace_existing=True)
    scheduler.add_job(f"{__name__}:take_over_expired_runs",
                      IntervalTrigger(seconds=renewal_interval(timedelta(seconds=app.settings.lease_seconds))),
                      id=TAKE_OVER_JOB, name="take-over of runs whose holder stopped renewing its lease",
                      jobstore="memory", misfire_grace_time=None)
    return scheduler


class SchedulerProcess:
    """The catch-up, then the scheduler until SIGTERM or SIGINT: the run in progress finishes, no other starts,
    and the scheduler shuts down (a second signal stops at once).

    With a leader lease (the `settlement scheduler` command), the process first waits as a standby until it holds
    the lease, renews it while it runs, and gives it up when it stops; if it finds the lease taken (it did not renew
    it in time), it stops (`lost`) so that it cannot run a job beside the new leader."""

    def __init__(self, jobs: Jobs, scheduler: BaseScheduler, leader: NamedLease | None = None) -> None:
        self.jobs = jobs
        self.scheduler = scheduler
        self.leader = leader
        self.lost = False  # the lease was taken by another scheduler while this one held it
        self._heartbeat: Heartbeat | None = None
        self._stopper: threading.Thread | None = None
        self._lock = threading.Lock()
        # start() blocks until shut down (BackgroundScheduler subclasses BlockingScheduler but does not block)
        self._blocking = isinstance(scheduler, BlockingScheduler) and not isinstance(scheduler, BackgroundScheduler)

    def request_stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        if self.jobs.stop.is_set():
            if signum is not None:  # the second signal: stop at once (a run in progress is taken over later)
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
            return
        log.info("stopping (%s): the run in progress finishes, no other starts",
                 signal.Signals(signum).name if signum is not None else "requested")
        self.jobs.stop.set()
        if self.scheduler.running:
            self._shut_down()

    def _shut_down(self) -> None:
        """In a thread of its own, not in the signal handler: shutting down waits for the running job."""
        with self._lock:
            if self._stopper is None:
                self._stopper = threading.Thread(target=self._stop_all, name="scheduler-stop", daemon=True)
                self._stopper.start()

    def _stop_all(self) -> None:
        self.scheduler.shutdown()
        self._step_down()

    def _step_down(self) -> None:
        """Stop renewing the lease and give it up (unless it was taken): a standby takes the lead at once."""
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            heartbeat.__exit__(None, None, None)
            if self.leader is not None and not self.lost:
                self.leader.release()
                log.info("gave up the scheduler's lease")

    def _lease_lost(self) -> None:
        log.error("another scheduler took this one's lease (it was not renewed within %s): stopping",
                  self.leader.length if self.leader else "-")
        self.lost = True
        self.request_stop()

    def _lead(self) -> bool:
        """Wait as a standby until this process holds the scheduler's lease; False when stopped first."""
        if self.leader is None:
            return True
        waiting = False
        while not self.jobs.stop.is_set():
            if self.leader.acquire():
                log.info("leading: this scheduler (%s) holds the lease and runs the jobs", self.leader.holder)
                self._heartbeat = Heartbeat(self.leader.renew, renewal_interval(self.leader.length), "the scheduler",
                                            on_lost=self._lease_lost).__enter__()
                return True
            if not waiting:
                current = self.leader.current()
                log.info("standby: the scheduler %s leads (lease renewed at %s); this one takes over when it stops "
                         "renewing", current.holder if current else "-", current.renewed_at if current else "-")
                waiting = True
            self.jobs.stop.wait(renewal_interval(self.leader.length))
        return False

    @contextmanager
    def _signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {number: signal.signal(number, self.request_stop) for number in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def run(self, *, once: bool = False) -> list[Outcome]:
        """The start-up catch-up, then (unless once) the scheduler: blocks until stopped with a BlockingScheduler,
        returns once started with a BackgroundScheduler (stop it with request_stop). With a leader lease, waits
        as a standby first (not with once: a one-off catch-up is guarded by the runs' own leases)."""
        activate(self.jobs)
        with self._signals():
            if not once and not self._lead():
                return []
            try:
                outcomes = self.jobs.catch_up()
                if once or self.jobs.stop.is_set():
                    self._step_down()
                    return outcomes
                self.scheduler.add_listener(self._started, EVENT_SCHEDULER_STARTED)
                self.scheduler.start()  # a BlockingScheduler returns when it has been shut down
            except BaseException:
                self._step_down()
                raise
        if not self._blocking:
            if self.jobs.stop.is_set():  # a stop between the catch-up and the start
                self._shut_down()
            return outcomes
        if self._stopper is not None:
            self._stopper.join()
        self._step_down()
        return outcomes

    def _started(self, _event: object) -> None:
        for job in self.scheduler.get_jobs():
            log.info("job %s (%s): next at %s", job.id, job.name, job.next_run_time)
        if self.jobs.stop.is_set() and self._blocking:
            self._shut_down()  # a signal between the catch-up and the start (the blocking loop then ends)
