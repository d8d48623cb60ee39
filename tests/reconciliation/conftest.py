"""Fixtures for reconciliation and clearing: the service fixtures (real SQLite and PostgreSQL, a settable clock,
a live uvicorn on loopback), plus an application whose settings name an inbox, a payers file and a reports
folder of the test's own (for the REST and CLI tests, which read the payers and statements from files)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.conftest import (  # noqa: F401 - fixtures shared with the service tests
    Clock,
    LiveServer,
    Service,
    claim_body,
    database_url,
    fresh_pg_url,
    import_roster_rows,
    live,
    new_id_number,
    own_database_url,
    pg_url,
    running_service,
    service,
    serving,
    settings_for,
)


@pytest.fixture
def files_service(database_url: str, tmp_path: Path) -> Iterator[Service]:
    """A service whose payers file, inbox and reports folder are under the test's temporary folder."""
    with running_service(database_url, tmp_path, payers_file=tmp_path / "payers.yaml") as running:
        yield running


@pytest.fixture
def files_live(files_service: Service) -> Iterator[LiveServer]:
    with serving(files_service.app) as running:
        yield running
