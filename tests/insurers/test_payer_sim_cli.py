"""`settlement payer-sim`: serving the statement service from the configured database, and `payer-sim write`
dropping a file payer's statement into the inbox."""

from __future__ import annotations

import logging
import stat
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from settlement.cli.main import app as cli
from settlement.insurers.statements import read_csv, read_xml
from tests.insurers.conftest import serve, sqlite_only
from tests.insurers.helpers import at, cashier
from tests.service.conftest import Service, import_roster_rows, new_id_number

runner = CliRunner()
DAY = date(2024, 6, 15)
PAYERS = """payers:
  - code: basic
    name: 基本医疗保险
    funds: ["390100", "310100"]
    statement: {source: soap, wsdl: "http://127.0.0.1:8810/statements?wsdl"}
  - code: critical
    name: 大病保险
    funds: ["390200"]
    statement: {source: file, format: csv}
  - code: assistance
    name: 医疗救助
    funds: ["610100", "610102", "610103", "640100"]
    statement: {source: file, format: xml}
"""


@pytest.fixture
def payers_env(cli_env: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Service:
    payers = tmp_path / "payers.yaml"
    payers.write_text(PAYERS, encoding="utf-8")
    monkeypatch.setenv("SETTLEMENT_PAYERS_FILE", str(payers))
    monkeypatch.setenv("SETTLEMENT_INBOX_DIR", str(tmp_path / "default-inbox"))
    return cli_env


def test_write_drops_a_file_statement_into_the_inbox(payers_env: Service, tmp_path: Path) -> None:
    desk = cashier(payers_env)
    people = [new_id_number() for _ in range(3)]
    import_roster_rows(payers_env, [(person, "dibao_rural_a", "2024-01-01", "") for person in people])
    for hour, person in enumerate(people, start=9):
        desk.settle(at(DAY, hour), amount="80000.00", person=person)

    clean = runner.invoke(cli, ["payer-sim", "write", "--payer", "critical", "--date", "2024-06-15"])
    assert clean.exit_code == 0, clean.output
    written = tmp_path / "default-inbox" / "critical" / "2024-06-15.csv"
    assert str(written) in clean.output.replace("\n", "") and "a clean statement" in " ".join(clean.output.split())
    rows = read_csv(written.read_bytes())
    assert len(rows) >= 3 and {row.fund for row in rows} == {"390200"}
    assert stat.S_IMODE(written.stat().st_mode) == 0o600  # the inbox is private (issue 15, item 13)
    assert {stat.S_IMODE(folder.stat().st_mode) for folder in (written.parent, written.parent.parent)} == {0o700}

    inbox = tmp_path / "elsewhere"
    damaged = runner.invoke(cli, ["payer-sim", "write", "--payer", "assistance", "--date", "2024-06-15",
                                  "--inbox", str(inbox), "--drop", "1", "--extra", "2", "--seed", "9"])
    assert damaged.exit_code == 0, damaged.output
    assert "drop 1, extra 2 (seed 9)" in " ".join(damaged.output.split())
    xml_rows = read_xml((inbox / "assistance" / "2024-06-15.xml").read_bytes())
    assert len(xml_rows) >= 3 - 1 + 2 and {row.fund for row in xml_rows} <= {"610100", "610102", "610103", "640100"}


@sqlite_only
def test_write_refuses_what_it_cannot_write(payers_env: Service) -> None:
    soap = runner.invoke(cli, ["payer-sim", "write", "--payer", "basic", "--date", "2024-06-15"])
    assert soap.exit_code == 2 and "over SOAP" in soap.output
    unknown = runner.invoke(cli, ["payer-sim", "write", "--payer", "nobody", "--date", "2024-06-15"])
    assert unknown.exit_code == 2 and "NOT_FOUND" in unknown.output
    bad_date = runner.invoke(cli, ["payer-sim", "write", "--payer", "critical", "--date", "15.06.2024"])
    assert bad_date.exit_code == 2 and "not a date" in bad_date.output
    negative = runner.invoke(cli, ["payer-sim", "write", "--payer", "critical", "--date", "2024-06-15",
                                   "--drop", "-1"])
    assert negative.exit_code == 2


@sqlite_only
def test_payer_sim_serves_the_configured_payers(payers_env: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    served: dict[str, Any] = {}

    def run(app: Any, **options: Any) -> None:  # instead of blocking in uvicorn
        served.update(options, app=app)

    monkeypatch.setattr(uvicorn, "run", run)
    calls = logging.getLogger("settlement.insurers.simulator")
    handlers, level = list(calls.handlers), calls.level
    try:
        result = runner.invoke(cli, ["payer-sim", "--port", "18810", "--midnight", "2", "--timeout-first", "1",
                                     "--hang", "20", "--seed", "4"])
    finally:  # the command logs the calls to the terminal it was given: not to the next tests'
        calls.handlers[:] = handlers
        calls.setLevel(level)
    assert result.exit_code == 0, result.output
    assert (served["host"], served["port"]) == ("127.0.0.1", 18810)
    printed = " ".join(result.output.split())
    assert "http://127.0.0.1:18810/statements?wsdl for basic, critical, assistance" in printed
    assert "midnight 2, timeout-first 1, hang 20s (seed 4)" in printed
    url, server, thread = serve(served["app"])  # what uvicorn would have served
    try:
        wsdl = httpx.get(f"{url}/statements?wsdl")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert wsdl.status_code == 200 and f'location="{url}/statements"' in wsdl.text


def test_the_help_names_every_option() -> None:
    result = runner.invoke(cli, ["payer-sim", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--host", "--port", "--drop", "--shift", "--extra", "--midnight", "--phantom-reversals",
                   "--delay", "--timeout-first", "--hang", "--seed", "write"):
        assert option in result.output
    written = runner.invoke(cli, ["payer-sim", "write", "--help"], env={"COLUMNS": "200"})
    for option in ("--payer", "--date", "--inbox", "--drop", "--seed"):
        assert option in written.output
