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
    """SETTLEMENT_TARIFFS, else the shipped tariffs. Never the working directory's: which tariffs a service seeds
    must not depend on the folder it was started from."""
    configured = os.environ.get("SETTLEMENT_TARIFFS")
    return Path(configured) if configured else shipped("tariffs")


def default_adapters_dir() -> Path:
    """The shipped dialects (SETTLEMENT_ADAPTERS_DIR, read by the settings, names another folder)."""
    return shipped("adapters")


def default_payers_file() -> Path:
    """The shipped deploy/payers.yaml (SETTLEMENT_PAYERS_FILE, read by the settings, names another file)."""
    return shipped("deploy/payers.yaml")


def demo_roster_file() -> Path:
    """The roster `serve --demo` imports into an empty database."""
    return shipped("examples/roster/demo-roster.csv")
