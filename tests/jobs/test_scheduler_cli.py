"""`settlement scheduler`: the catch-up alone (--once) in-process, and the process itself started, caught up,
scheduled and stopped with SIGTERM, on a SQLite file with payers whose statements arrive as inbox files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from settlement.cli.main import app as cli
from settlement.domain.claim import SHANGHAI
from settlement.insurers.statements import CSV_COLUMNS
from settlement.jobs.scheduler import CLEARING_JOB, JOBS_TABLE, NIGHTLY_JOB, PURGE_JOB
from tests.factories import TARIFFS
from tests.service.conftest import TEST_SECRET_KEY

runner = CliRunner()
PAYERS = """payers:
  - code: critical
    name: 大病保险承办机构
    funds: ["390200"]
    statement: {source: file, format: csv}
"""


def environment(tmp: Path) -> dict[str, str]:
    (tmp / "payers.yaml").write_text(PAYERS, encoding="utf-8")
    return {"SETTLEMENT_DATABASE_URL": f"sqlite:///{tmp / 'scheduler.sqlite3'}", "SETTLEMENT_TARIFFS": str(TARIFFS),
            "SETTLEMENT_DATA_DIR": str(tmp / "var"), "SETTLEMENT_SECRET_KEY": TEST_SECRET_KEY,
            "SETTLEMENT_PAYERS_FILE": str(tmp / "payers.yaml"), "SETTLEMENT_INBOX_DIR": str(tmp / "inbox"),
            "SETTLEMENT_REPORTS_DIR": str(tmp / "reports"), "SETTLEMENT_CATCH_UP_DAYS": "2"}


def empty_statements(tmp: Path) -> None:
    """An empty statement (no settlements that day) for each of the last three days, Asia/Shanghai."""
    today = datetime.now(UTC).astimezone(SHANGHAI).date()
    folder = tmp / "inbox" / "critical"
    folder.mkdir(parents=True, exist_ok=True)
    for back in range(1, 4):
        (folder / f"{today - timedelta(days=back)}.csv").write_text(",".join(CSV_COLUMNS) + "\n", encoding="utf-8")


def runs(tmp: Path) -> list[tuple[str, str]]:
    engine = create_engine(f"sqlite:///{tmp / 'scheduler.sqlite3'}")
    try:
        with engine.connect() as connection:
            return [(str(row[0]), str(row[1])) for row in connection.execute(text(
                "SELECT business_date, status FROM reconciliation_runs ORDER BY business_date"))]
    finally:
        engine.dispose()


def test_once_catches_up_and_exits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("SETTLEMENT_")]:
        monkeypatch.delenv(name)
    for name, value in environment(tmp_path).items():
        monkeypatch.setenv(name, value)
    missing = runner.invoke(cli, ["scheduler", "--once"])
    assert missing.exit_code == 1, missing.output  # no statement files yet: the runs failed, and say so
    assert "failed" in missing.output
    empty_statements(tmp_path)
    caught_up = runner.invoke(cli, ["scheduler", "--once"])
    assert caught_up.exit_code == 0, caught_up.output
    due = runs(tmp_path)
    assert due and {status for _, status in due} == {"done"}
    assert f"catch-up: {len(due)} runs" in caught_up.output
    again = runner.invoke(cli, ["scheduler", "--once"])
    assert again.exit_code == 0 and "catch-up: 0 runs" in again.output, again.output


def test_the_process_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("SETTLEMENT_")}
    env.update(environment(tmp_path))
    empty_statements(tmp_path)
    log = tmp_path / "scheduler.log"
    executable = Path(sys.executable).parent / "settlement"
    with log.open("wb") as output:
        process = subprocess.Popen([str(executable), "scheduler"], cwd=tmp_path, env=env, stdout=output,
                                   stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while "next at" not in log.read_text(encoding="utf-8"):
                assert process.poll() is None, log.read_text(encoding="utf-8")
                assert time.monotonic() < deadline, "the scheduler did not start in 30 s"
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=15) == 0, log.read_text(encoding="utf-8")
        finally:
            if process.poll() is None:  # pragma: no cover - only when shutdown hangs
                process.kill()
                process.wait()
    printed = log.read_text(encoding="utf-8")
    assert "stopping (SIGTERM)" in printed and "Scheduler has been shut down" in printed
    assert "catch-up at start, missed: no run recorded" in printed  # why each run was made
    due = runs(tmp_path)
    assert due and {status for _, status in due} == {"done"}
    engine = create_engine(f"sqlite:///{tmp_path / 'scheduler.sqlite3'}")
    try:
        with engine.connect() as connection:
            stored = {row[0] for row in connection.execute(text(f"SELECT id FROM {JOBS_TABLE}"))}
    finally:
        engine.dispose()
    assert stored == {NIGHTLY_JOB, CLEARING_JOB, PURGE_JOB}
