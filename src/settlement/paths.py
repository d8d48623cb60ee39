"""Where the data the service runs on lives when no setting says otherwise.

The checkout's top-level folders (adapters/, tariffs/, deploy/payers.yaml, examples/roster/) are the ones to edit.
A wheel carries copies of them inside the package, in settlement/shipped/ under the same relative paths (setup.py
copies them when the wheel is built), so an installed service finds them wherever it runs; an editable install
has no copies and reads the checkout's folders themselves.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
SHIPPED = _PACKAGE / "shipped"
_CHECKOUT = _PACKAGE.parents[1]


def shipped(relative: str) -> Path:
    """A shipped folder or file by its path in the checkout ("adapters", "deploy/payers.yaml"): the wheel's copy,
    else the checkout's."""
    packaged = SHIPPED / relative
    return packaged if packaged.exists() else _CHECKOUT / relative


def default_tariffs_dir() -> Path:
    """SETTLEMENT_TARIFFS, else ./tariffs, else the shipped tariffs."""
    configured = os.environ.get("SETTLEMENT_TARIFFS")
    if configured:
        return Path(configured)
    local = Path.cwd() / "tariffs"
    return local if local.is_dir() else shipped("tariffs")


def default_adapters_dir() -> Path:
    """./adapters when it holds dialects, else the shipped dialects."""
    local = Path.cwd() / "adapters"
    return local if any(local.glob("*/manifest.yaml")) else shipped("adapters")


def default_payers_file() -> Path:
    """./payers.yaml when present, else the shipped deploy/payers.yaml."""
    local = Path.cwd() / "payers.yaml"
    return local if local.is_file() else shipped("deploy/payers.yaml")


def demo_roster_file() -> Path:
    """The roster `serve --demo` imports into an empty database."""
    return shipped("examples/roster/demo-roster.csv")
