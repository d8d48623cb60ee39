"""The defaults of the shipped data do not depend on the folder a command runs in: a `tariffs/`, `adapters/` or
`payers.yaml` there (an operator's home, a checkout of another version) is never picked up unasked."""

from __future__ import annotations

from pathlib import Path

import pytest

from settlement.config import Settings
from settlement.paths import shipped


def test_defaults_ignore_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TARIFFS", "TARIFFS_DIR", "ADAPTERS_DIR", "PAYERS_FILE"):
        monkeypatch.delenv(f"SETTLEMENT_{name}", raising=False)
    (tmp_path / "tariffs" / "611000").mkdir(parents=True)
    (tmp_path / "tariffs" / "611000" / "2024-01-01.yaml").write_text("region: '611000'\n", encoding="utf-8")
    (tmp_path / "adapters" / "other").mkdir(parents=True)
    (tmp_path / "adapters" / "other" / "manifest.yaml").write_text("name: other\n", encoding="utf-8")
    (tmp_path / "payers.yaml").write_text("payers: []\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert (settings.tariffs_dir, settings.adapters_dir, settings.payers_file) == (
        shipped("tariffs"), shipped("adapters"), shipped("deploy/payers.yaml"))
    assert (settings.adapters_dir / "standard" / "manifest.yaml").is_file()
    # A setting still names another folder.
    monkeypatch.setenv("SETTLEMENT_TARIFFS", str(tmp_path / "tariffs"))
    assert Settings().tariffs_dir == tmp_path / "tariffs"
