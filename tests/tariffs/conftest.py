"""Fixtures for the tariff administration tests: the service fixtures (real SQLite and PostgreSQL, a settable
clock, a service on a database of its own for tests that put tariff versions in force)."""

from __future__ import annotations

from tests.service.conftest import *  # noqa: F403 - every fixture of the service tests
from tests.service.conftest import (  # noqa: F401 - the fixtures these tests use, named
    Clock,
    Service,
    claim_body,
    fresh_pg_url,
    new_id_number,
    own_database_url,
    own_service,
    pg_url,
    put_in_force,
    shipped_document,
)
