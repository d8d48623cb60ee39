"""Leases (recovery path 2): a process killed while it works a reconciliation run no longer leaves it 'running' for
two hours, skipped by the restarted scheduler, its --once and a manual run (which exited 0). The run's holder renews
its lease every few seconds; once it stops, the next manual run or scheduler takes the run over and redoes it
(asking the payer again under the same request id). A manual run that finds the lease live elsewhere exits 5 and
says so. Of two `settlement scheduler` processes on one database exactly one runs the jobs, and killing it
(SIGKILL) hands them to the other within a minute.

Real processes (the `settlement` command) on a PostgreSQL database of the test's own, against the payer simulator
answering late (so that a run is in progress when it is killed); the leases are shortened to seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from settlement.bootstrap import utc_now
from settlement.domain.claim import SHANGHAI
from settlement.insurers.config import PayerConfig, StatementSource
from settlement.insurers.simulator import Faults, PayerSimulator
from settlement.insurers.statements import StatementLine
from settlement.services import reconciliation
from settlement.services.leases import NamedLease
from settlement.services.reconciliation import Reconciler, engine_lines
from tests.factories import TARIFFS
from tests.insurers.conftest import SimulatorServer, start_simulator
from tests.service.conftest import TEST_SECRET_KEY, Service, running_service

SETTLEMENT = str(Path(sys.executable).parent / "settlement")
EXIT_HELD = 5


def yesterday() -> date:
    return datetime.now(UTC).astimezone(SHANGHAI).date() - timedelta(days=1)


@dataclass
class Setting:
    service: Service
    simulator: SimulatorServer
    payer: str
    env: dict[str, str]
    tmp: Path

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SETTLEMENT, *args], env=self.env, cwd=self.tmp, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def start(self, *args: str, log: str) -> subprocess.Popen[bytes]:
        with (self.tmp / log).open("wb") as out:
            return subprocess.Popen([SETTLEMENT, *args], env=self.env, cwd=self.tmp, stdout=out,
                                    stderr=subprocess.STDOUT)

    def record(self) -> dict[str, Any] | None:
        with psycopg.connect(self.service.app.settings.database_url) as connection:
            row = connection.execute(
                "SELECT status, attempts, holder, heartbeat_at, started_at, request_id FROM reconciliation_runs "
                "WHERE payer = %s AND business_date = %s", (self.payer, yesterday())).fetchone()
        if row is None:
            return None
        return dict(zip(("status", "attempts", "holder", "heartbeat_at", "started_at", "request_id"), row,
                        strict=True))

    def leader(self) -> str | None:
        with psycopg.connect(self.service.app.settings.database_url) as connection:
            row = connection.execute("SELECT holder FROM leases WHERE name = 'scheduler'").fetchone()
        return None if row is None else str(row[0])

    def answer_at_once(self) -> None:
        self.simulator.simulator.faults = Faults()


def wait_for(what: str, check: Callable[[], Any], within: float = 60) -> Any:
    deadline = time.monotonic() + within
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what}: not within {within} s"
        time.sleep(0.1)
    return found


@pytest.fixture
def setting(fresh_pg_url: str, tmp_path: Path) -> Iterator[Setting]:
    with running_service(fresh_pg_url, tmp_path) as service:
        simulator = start_simulator(PayerSimulator(service.app.context, {}, Faults(delay=60)))
        try:
            payer = simulator.payer(timeout=90, retries=1)
            (tmp_path / "payers.yaml").write_text(
                "payers:\n"
                f"  - {{code: {payer.code}, name: basic, funds: ['390100', '310100'], statement: "
                f"{{source: soap, wsdl: '{simulator.wsdl}', timeout_seconds: 90, retries: 1}}}}\n", encoding="utf-8")
            env = {name: value for name, value in os.environ.items() if not name.startswith("SETTLEMENT_")}
            env.update({"SETTLEMENT_DATABASE_URL": fresh_pg_url, "SETTLEMENT_TARIFFS": str(TARIFFS),
                        "SETTLEMENT_SECRET_KEY": TEST_SECRET_KEY, "SETTLEMENT_DATA_DIR": str(tmp_path / "cli"),
                        "SETTLEMENT_PAYERS_FILE": str(tmp_path / "payers.yaml"),
                        "SETTLEMENT_INBOX_DIR": str(tmp_path / "inbox"),
                        "SETTLEMENT_REPORTS_DIR": str(tmp_path / "reports"),
                        "SETTLEMENT_RECONCILE_AT": "00:00", "SETTLEMENT_CATCH_UP_DAYS": "1",
                        "SETTLEMENT_LEASE_SECONDS": "6"})
            yield Setting(service, simulator, payer.code, env, tmp_path)
        finally:
            simulator.stop()


def killed_while_running(setting: Setting, process: subprocess.Popen[bytes]) -> dict[str, Any]:
    """Wait until the process works the run and has renewed its lease, then SIGKILL it; the record as it left it."""
    running = wait_for("the run in progress, its lease renewed", lambda: (
        (record := setting.record()) is not None and record["status"] == "running" and record["heartbeat_at"]
        > record["started_at"] and record))
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    assert running["holder"].split(":")[1].startswith(str(process.pid))
    return dict(running)


@pytest.mark.parametrize("taker", ["reconcile run", "scheduler --once"])
def test_a_run_killed_midway_is_refused_while_its_lease_lives_then_taken_over(setting: Setting, taker: str) -> None:
    day = yesterday().isoformat()
    first = setting.start("reconcile", "run", "--payer", setting.payer, "--date", day, log="first.log")
    abandoned = killed_while_running(setting, first)
    # At once: the lease (6 s) is live. A manual run says who holds it and exits non-zero; it did nothing.
    held = setting.run("reconcile", "run", "--payer", setting.payer, "--date", day)
    assert held.returncode == EXIT_HELD, (held.returncode, held.stdout, held.stderr)
    assert "RUN_HELD" in held.stderr and abandoned["holder"] in held.stderr.replace("\n", "")
    assert setting.record() == {**abandoned, "heartbeat_at": setting.record()["heartbeat_at"]}  # type: ignore[index]
    # Once it has expired, the next start takes the run over and redoes it, under the same request id.
    setting.answer_at_once()
    wait_for("the lease to expire", lambda: utc_now() - setting.record()["heartbeat_at"]  # type: ignore[index]
             > timedelta(seconds=6.5), within=30)
    taken = setting.run(*taker.split(), *(("--payer", setting.payer, "--date", day) if taker == "reconcile run"
                                          else ()))
    assert taken.returncode == 0, (taken.stdout, taken.stderr)
    done = setting.record()
    assert done is not None and done["status"] == "done" and done["attempts"] == 2
    assert done["request_id"] == abandoned["request_id"]
    assert setting.simulator.simulator.requests[-1] == abandoned["request_id"]


def test_two_schedulers_one_leads_and_a_kill_hands_its_jobs_over(setting: Setting) -> None:
    first = setting.start("scheduler", log="first-scheduler.log")
    second: subprocess.Popen[bytes] | None = None
    try:
        wait_for("the first scheduler to lead", lambda: (leader := setting.leader()) and f":{first.pid}:" in leader)
        second = setting.start("scheduler", log="second-scheduler.log")
        wait_for("the second to stand by", lambda: "standby" in (setting.tmp / "second-scheduler.log").read_text())
        abandoned = killed_while_running(setting, first)
        # Until the kill, exactly one ran the jobs: one request to the payer, one attempt, nothing from the second.
        assert len(setting.simulator.simulator.requests) <= 1 and abandoned["attempts"] == 1
        assert "reconciling" not in (setting.tmp / "second-scheduler.log").read_text()
        setting.answer_at_once()
        killed_at = time.monotonic()
        done = wait_for("the run taken over and done", lambda: (
            (record := setting.record()) is not None and record["status"] == "done" and record), within=60)
        handed_over = time.monotonic() - killed_at
        assert handed_over < 60, handed_over
        assert done["attempts"] == 2 and done["request_id"] == abandoned["request_id"]
        assert f":{second.pid}:" in str(setting.leader())
        assert "leading" in (setting.tmp / "second-scheduler.log").read_text()
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
        assert setting.leader() is None  # given up on a clean stop: a standby would take the lead at once
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


# In one process, on both databases: the lease's rules.


def test_a_named_lease_is_held_renewed_taken_once_expired_and_given_up(service: Service) -> None:
    ours = NamedLease(service.app.context, "test-lease", timedelta(seconds=30), holder="a:1:x")
    theirs = NamedLease(service.app.context, "test-lease", timedelta(seconds=30), holder="b:2:y")
    assert ours.acquire() and not theirs.acquire() and ours.renew()
    service.clock.now += timedelta(seconds=29)
    assert not theirs.acquire()
    service.clock.now += timedelta(seconds=2)  # 31 s without a renewal: expired
    assert theirs.acquire() and not ours.renew() and not ours.acquire()
    theirs.release()
    assert ours.acquire()


def slow_fetch(context: Any, seconds: float) -> Callable[..., list[StatementLine]]:
    def fetch(payer: PayerConfig, day: date, request_id: str, inbox: Path) -> list[StatementLine]:
        time.sleep(seconds)
        return engine_lines(context, payer, day)
    return fetch


def race_a_long_run(service: Service) -> tuple[reconciliation.RunResult, reconciliation.RunResult, int]:
    """A run whose fetch lasts 3 s under a lease of 1 s, and a second start 1.5 s in: (first, second, fetches)."""
    service.app.context.clock = utc_now  # leases are about real time here
    payer = PayerConfig(code=f"lease-{os.getpid()}-{time.monotonic_ns() % 10**6}", name="basic",
                        funds=["390100"], statement=StatementSource(source="file", format="csv"))
    calls: list[int] = []

    def counted(*args: Any) -> list[StatementLine]:
        calls.append(1)
        return slow_fetch(service.app.context, 3.0)(*args)

    first_runs, second_runs = (Reconciler(service.app.context, {payer.code: payer}, service.tmp, fetch=counted,
                                          lease=timedelta(seconds=1)) for _ in range(2))
    results: list[reconciliation.RunResult] = []
    worker = threading.Thread(target=lambda: results.append(first_runs.run(payer.code, yesterday())))
    worker.start()
    time.sleep(1.5)
    second = second_runs.run(payer.code, yesterday())
    worker.join()
    return results[0], second, len(calls)


def test_a_run_that_renews_its_lease_is_not_taken_over(service: Service) -> None:
    first, second, fetches = race_a_long_run(service)
    assert second.already_running and fetches == 1
    assert first.status == "done" and not first.already_running


def test_planted_fault_a_lease_nobody_renews_is_taken_over_while_its_run_works(
        service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """The naive variant: no heartbeat. The second start finds the lease expired 1.5 s into a 3 s run and works it
    too (two fetches); the first's findings are then refused by the fence (its lease is no longer its own)."""
    class Silent:
        def __init__(self, *_: Any, **__: Any) -> None:
            pass

        def __enter__(self) -> Silent:
            return self

        def __exit__(self, *_: Any) -> None:
            return None

    monkeypatch.setattr(reconciliation, "Heartbeat", Silent)
    first, second, fetches = race_a_long_run(service)
    assert fetches == 2 and not second.already_running and second.status == "done"
    assert first.already_running  # taken over while it worked: what it found was not recorded
