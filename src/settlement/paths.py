"""Where shipped data lives when no setting says otherwise."""

from __future__ import annotations

import os
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]


def default_tariffs_dir() -> Path:
    """SETTLEMENT_TARIFFS, else ./tariffs, else the tariffs/ folder of the source checkout."""
    configured = os.environ.get("SETTLEMENT_TARIFFS")
    if configured:
        return Path(configured)
    local = Path.cwd() / "tariffs"
    return local if local.is_dir() else _REPO / "tariffs"


def default_adapters_dir() -> Path:
    """./adapters when it holds dialects, else the adapters/ folder of the source checkout."""
    local = Path.cwd() / "adapters"
    return local if any(local.glob("*/manifest.yaml")) else _REPO / "adapters"


def default_payers_file() -> Path:
    """./payers.yaml when present, else deploy/payers.yaml of the source checkout."""
    local = Path.cwd() / "payers.yaml"
    return local if local.is_file() else _REPO / "deploy" / "payers.yaml"
