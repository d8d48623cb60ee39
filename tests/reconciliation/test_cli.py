"""The finance commands, as an operator runs them, against the test's database: reconcile a payer whose
statement is a CSV file in the inbox, list the queue as JSON, resolve one discrepancy, and write the month's
clearing statement."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from settlement.cli.main import app as cli
from settlement.insurers import statements
from tests.factories import TARIFFS
from tests.reconciliation.helpers import (
    as_items,
    change,
    check_found,
    day_lines,
    drop,
    item_of,
    new_payer,
    run_records,
    scalar,
    seed_day,
)
from tests.service.conftest import TEST_SECRET_KEY, Service, act_as

D = date(2024, 6, 14)
runner = CliRunner()


@pytest.fixture
def finance_env(files_service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Service:
    """The command line pointed at the test's database, inbox and payers file."""
    settings = files_service.app.settings
    monkeypatch.setenv("SETTLEMENT_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("SETTLEMENT_TARIFFS", str(TARIFFS))
    monkeypatch.setenv("SETTLEMENT_DATA_DIR", str(tmp_path / "cli-data"))
    monkeypatch.setenv("SETTLEMENT_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("SETTLEMENT_INBOX_DIR", str(settings.inbox_dir))
    monkeypatch.setenv("SETTLEMENT_PAYERS_FILE", str(settings.payers_file))
    monkeypatch.setenv("SETTLEMENT_REPORTS_DIR", str(tmp_path / "cli-reports"))
    monkeypatch.delenv("SETTLEMENT_DEMO", raising=False)
    monkeypatch.delenv("SETTLEMENT_KEY", raising=False)
    return files_service


def test_reconcile_list_resolve_and_clear_from_the_command_line(finance_env: Service, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    service = finance_env
    officer = act_as(service, monkeypatch, "finance")  # resolving and clearing record the key's holder
    _, seeded = seed_day(service, D, 6, hospitals=2, patients=3)
    payer = new_payer()
    service.app.settings.payers_file.write_text(yaml.safe_dump(
        {"payers": [payer.model_dump(exclude_none=True)]}, allow_unicode=True), encoding="utf-8")
    engine = day_lines(service, payer, D)
    line = {row.settlement_id: row for row in engine}
    gone, shifted = seeded[0].settlement_id, seeded[3].settlement_id
    inbox = statements.inbox_file(service.app.settings.inbox_dir, payer, D)
    inbox.parent.mkdir(parents=True)
    inbox.write_bytes(statements.write_csv(change(drop(engine, [gone]), {shifted: Decimal("-1.10")})))

    ran = runner.invoke(cli, ["reconcile", "run", "--payer", payer.code, "--date", str(D), "--json"])
    assert ran.exit_code == 0, ran.output
    result = json.loads(ran.stdout)
    assert (result["status"], result["discrepancies"]) == ("done", {"engine_only": 1, "amount_differs": 1})
    plain = runner.invoke(cli, ["reconcile", "run", "--payer", payer.code, "--date", str(D)])
    assert plain.exit_code == 0, plain.output
    assert f"{payer.code} {D}: done" in plain.output and "amount_differs 1, engine_only 1" in plain.output
    assert len(run_records(service, payer.code)) == 1

    listed = runner.invoke(cli, ["discrepancies", "list", "--payer", payer.code, "--json"])
    assert listed.exit_code == 0, listed.output
    items = json.loads(listed.stdout)["items"]
    check_found(as_items(items), sorted([
        item_of("engine_only", False, line[gone], line[gone].amount_fen, None),
        item_of("amount_differs", False, line[shifted], line[shifted].amount_fen, line[shifted].amount_fen - 110)]))
    target = next(item["id"] for item in items if item["kind"] == "engine_only")

    resolved = runner.invoke(cli, ["discrepancies", "resolve", str(target), "--action", "write_off", "--note",
                                   "付款方确认漏记，核销"])
    assert resolved.exit_code == 0, resolved.output
    assert f"discrepancy {target} resolved (write_off)" in resolved.output
    assert scalar(service, "SELECT resolved_by FROM discrepancies WHERE id = :id", id=target) == officer
    assert scalar(service, "SELECT COUNT(*) FROM audit_log WHERE action = 'discrepancy.write_off' "
                           "AND entity_id = :id", id=str(target)) == 1
    twice = runner.invoke(cli, ["discrepancies", "resolve", str(target), "--action", "write_off", "--note", "x"])
    assert twice.exit_code == 2 and "DISCREPANCY_CLOSED" in twice.output
    still = runner.invoke(cli, ["discrepancies", "list", "--payer", payer.code, "--json"])
    assert [item["settlement_id"] for item in json.loads(still.stdout)["items"]] == [shifted]
    wrong_kind = runner.invoke(cli, ["discrepancies", "list", "--kind", "timing"])
    assert wrong_kind.exit_code == 2 and "REQUEST_MALFORMED" in wrong_kind.output

    out = tmp_path / "clearing-out"
    cleared = runner.invoke(cli, ["clearing", "run", "--month", "2024-06", "--out", str(out)])
    assert cleared.exit_code == 0, cleared.output
    written = sorted(path.name for path in (out / "clearing").iterdir())
    assert written == ["clearing-2024-06.csv", "clearing-2024-06.xlsx"]
    assert "390100: " in cleared.output
    assert scalar(service, "SELECT COUNT(*) FROM clearing_runs WHERE month = '2024-06'") == 1
    assert scalar(service, "SELECT actor FROM audit_log WHERE action = 'clearing.run' AND entity_id = '2024-06' "
                           "ORDER BY id DESC LIMIT 1") == officer
    bad_month = runner.invoke(cli, ["clearing", "run", "--month", "2024-6", "--out", str(out)])
    assert bad_month.exit_code == 2 and "REQUEST_MALFORMED" in bad_month.output


def test_a_run_without_its_statement_file_exits_4(finance_env: Service) -> None:
    payer = new_payer()
    finance_env.app.settings.payers_file.write_text(yaml.safe_dump(
        {"payers": [payer.model_dump(exclude_none=True)]}, allow_unicode=True), encoding="utf-8")
    failed = runner.invoke(cli, ["reconcile", "run", "--payer", payer.code, "--date", str(D), "--json"])
    assert failed.exit_code == 4, failed.output
    assert json.loads(failed.stdout)["status"] == "failed"
    unknown = runner.invoke(cli, ["reconcile", "run", "--payer", "nobody", "--date", str(D)])
    assert unknown.exit_code == 2 and "NOT_FOUND" in unknown.output
