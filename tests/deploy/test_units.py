"""The systemd units of deploy/: systemd itself reads them without a complaint (systemd-analyze verify, the
executable pointed at this environment's), and every path settlement.env.example makes the service write is
writable under the units' ProtectSystem=strict: inside the state directory or a ReadWritePaths entry."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import ROOT

DEPLOY = ROOT / "deploy"
UNITS = ("settlement.service", "settlement-scheduler.service")
INSTALLED = "/opt/settlement/.venv/bin/settlement"  # deploy/README.md, step 3
WRITTEN = ("SETTLEMENT_DATA_DIR", "SETTLEMENT_INBOX_DIR", "SETTLEMENT_REPORTS_DIR")


def service_section(text: str) -> dict[str, list[str]]:
    """The [Service] section; a key given several times keeps every value."""
    values: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values.setdefault(key, []).append(value)
    return values


def environment_example(text: str) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string("[env]\n" + text)
    return dict(parser["env"])


def unwritable(unit: str, env: dict[str, str]) -> list[str]:
    service = service_section(unit)
    writable = [f"/var/lib/{name}" for value in service.get("StateDirectory", []) for name in value.split()]
    writable += [path for value in service.get("ReadWritePaths", []) for path in value.split()]
    return [f"{name} {env[name]}" for name in WRITTEN
            if not any(env[name] == root or env[name].startswith(root.rstrip("/") + "/") for root in writable)]


@pytest.mark.parametrize("name", UNITS)
def test_the_units_let_the_service_write_where_the_settings_say(name: str) -> None:
    unit = (DEPLOY / name).read_text(encoding="utf-8")
    env = environment_example((DEPLOY / "settlement.env.example").read_text(encoding="utf-8"))
    service = service_section(unit)
    assert service["ProtectSystem"] == ["strict"] and service["EnvironmentFile"] == ["/etc/settlement/settlement.env"]
    assert service["ExecStart"][0].split()[0] == INSTALLED
    assert unwritable(unit, env) == []
    # The check itself: reports moved out of the state directory, or a unit without it, are caught.
    moved = {**env, "SETTLEMENT_REPORTS_DIR": "/srv/reports"}
    assert unwritable(unit, moved) == ["SETTLEMENT_REPORTS_DIR /srv/reports"]
    assert len(unwritable(unit.replace("StateDirectory=settlement", ""), env)) == len(WRITTEN)


def paths_to_nothing(env: dict[str, str], readme: str) -> list[str]:
    """Settings of the example naming a path that an install following deploy/README.md does not have: only the
    state directory (made by the units) and the files the README puts in /etc/settlement exist."""
    installed = set(re.findall(r"/etc/settlement/[\w.-]+", readme))
    return [f"{name}={value}" for name, value in env.items() if value.startswith("/")
            and not value.startswith("/var/lib/settlement") and value not in installed]


def test_the_environment_example_names_only_what_the_install_makes() -> None:
    env = environment_example((DEPLOY / "settlement.env.example").read_text(encoding="utf-8"))
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    assert paths_to_nothing(env, readme) == []
    # Before: the tariffs and dialects "in the checkout next to the venv", which a wheel install does not have.
    planted = {**env, "SETTLEMENT_TARIFFS": "/opt/settlement/tariffs"}
    assert paths_to_nothing(planted, readme) == ["SETTLEMENT_TARIFFS=/opt/settlement/tariffs"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_reads_the_units_without_a_complaint(tmp_path: Path) -> None:
    executable = str(Path(sys.executable).parent / "settlement")
    for name in UNITS:
        (tmp_path / name).write_text((DEPLOY / name).read_text(encoding="utf-8").replace(INSTALLED, executable),
                                     encoding="utf-8")
    (tmp_path / "planted.service").write_text(
        (tmp_path / UNITS[0]).read_text(encoding="utf-8").replace("StateDirectoryMode=", "StateDirMode="),
        encoding="utf-8")
    verified = subprocess.run(["systemd-analyze", "verify", *(str(tmp_path / name) for name in UNITS)],
                              capture_output=True, text=True, timeout=60, check=False)
    assert verified.returncode == 0 and verified.stdout + verified.stderr == "", verified.stderr
    planted = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "planted.service")],
                             capture_output=True, text=True, timeout=60, check=False)
    assert "Unknown key 'StateDirMode'" in planted.stderr  # a misspelt setting is what it would catch
