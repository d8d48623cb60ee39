"""An install whose settings point at nothing the service runs on (no dialect, no tariff version, no payers file)
refuses to start, with the setting and the path named, before it touches the database; `settlement soap dialects`
with no dialect is an error, not an empty table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from settlement.bootstrap import missing_data
from settlement.cli.main import app as cli
from settlement.config import Settings
from settlement.paths import shipped
from tests.factories import TARIFFS
from tests.service.conftest import free_port

SETTLEMENT = str(Path(sys.executable).parent / "settlement")


def complete(tmp_path: Path) -> dict[str, Path]:
    return {"adapters_dir": shipped("adapters"), "tariffs_dir": TARIFFS, "payers_file": shipped("deploy/payers.yaml"),
            "data_dir": tmp_path / "data"}


def faults(tmp_path: Path) -> dict[str, tuple[str, Path, str]]:
    """Each planted fault: (setting, a path that has nothing the service can use, the reason expected)."""
    empty = tmp_path / "empty"
    empty.mkdir(exist_ok=True)
    readme_only = tmp_path / "tariffs-readme-only"
    (readme_only / "611000").mkdir(parents=True, exist_ok=True)
    (readme_only / "README.md").write_text("tariffs\n", encoding="utf-8")
    (readme_only / "611000" / "catalogue-2024-01-01.csv").write_text("code,name,class\n", encoding="utf-8")
    return {
        "adapters missing": ("adapters_dir", tmp_path / "nowhere", "SETTLEMENT_ADAPTERS_DIR {}: no such folder"),
        "adapters empty": ("adapters_dir", empty, "SETTLEMENT_ADAPTERS_DIR {}: no dialect in it"),
        "tariffs missing": ("tariffs_dir", tmp_path / "nowhere", "SETTLEMENT_TARIFFS {}: no such folder"),
        "tariffs without versions": ("tariffs_dir", readme_only, "SETTLEMENT_TARIFFS {}: no tariff version in it"),
        "payers missing": ("payers_file", tmp_path / "payers.yaml", "SETTLEMENT_PAYERS_FILE {}: no such file"),
        "payers a folder": ("payers_file", empty, "SETTLEMENT_PAYERS_FILE {}: no such file"),
    }


def test_a_complete_install_has_nothing_missing(tmp_path: Path) -> None:
    assert missing_data(Settings(**complete(tmp_path))) == []  # type: ignore[arg-type]


@pytest.mark.parametrize("fault", ["adapters missing", "adapters empty", "tariffs missing",
                                   "tariffs without versions", "payers missing", "payers a folder"])
def test_each_missing_piece_is_named(tmp_path: Path, fault: str) -> None:
    setting, path, reason = faults(tmp_path)[fault]
    problems = missing_data(Settings(**{**complete(tmp_path), setting: path}))  # type: ignore[arg-type]
    assert len(problems) == 1 and problems[0].startswith(reason.format(path)), problems


def environment(tmp_path: Path, **settings: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("SETTLEMENT_")}
    fields = {**complete(tmp_path), **settings}
    env.update({"SETTLEMENT_ADAPTERS_DIR": str(fields["adapters_dir"]),
                "SETTLEMENT_TARIFFS": str(fields["tariffs_dir"]), "SETTLEMENT_PAYERS_FILE": str(fields["payers_file"]),
                "SETTLEMENT_DATA_DIR": str(fields["data_dir"]),
                "SETTLEMENT_DATABASE_URL": f"sqlite:///{tmp_path / 'data' / 'settlement.sqlite3'}",
                "SETTLEMENT_SECRET_KEY": "test-secret"})
    return env


@pytest.mark.parametrize(("command", "fault"), [
    (["serve"], "adapters empty"), (["serve"], "tariffs without versions"), (["serve"], "payers missing"),
    (["scheduler", "--once"], "tariffs missing"), (["scheduler", "--once"], "adapters empty"),
])
def test_serve_and_scheduler_refuse_to_start(tmp_path: Path, command: list[str], fault: str) -> None:
    setting, path, reason = faults(tmp_path)[fault]
    arguments = [SETTLEMENT, *command] + (["--port", str(free_port())] if command == ["serve"] else [])
    try:
        # Before the check, serve started and served without SOAP: the timeout is that failure.
        done = subprocess.run(arguments, cwd=tmp_path, env=environment(tmp_path, **{setting: path}),
                              capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(command)} started with {fault}")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "SETTINGS_INVALID" in done.stderr and reason.format(path) in done.stderr, done.stderr
    assert not (tmp_path / "data").exists()  # refused before the database, the keys or anything else was made


def test_soap_dialects_without_a_dialect_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SETTLEMENT_ADAPTERS_DIR", str(tmp_path))
    result = CliRunner().invoke(cli, ["soap", "dialects"])
    assert result.exit_code == 3, result.output
    assert f"DIALECT_INVALID: {tmp_path}: no dialect" in result.output
    monkeypatch.setenv("SETTLEMENT_ADAPTERS_DIR", str(shipped("adapters")))
    listed = CliRunner().invoke(cli, ["soap", "dialects"])
    assert listed.exit_code == 0 and all(name in listed.output for name in ("standard", "legacy-gbk", "rural-ncms"))
