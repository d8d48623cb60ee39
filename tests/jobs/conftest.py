"""Fixtures for the scheduler: the service fixtures (real SQLite and PostgreSQL), payers with codes of their own
(PostgreSQL is one database per test run, so run records must not collide between tests), a statement fetch that
answers with the ledger's own lines and counts its calls, and bills settled on chosen days."""

from __future__ import annotations

import secrets
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from settlement.bootstrap import Application
from settlement.insurers.config import PayerConfig, StatementSource
from settlement.insurers.statements import StatementLine
from settlement.jobs.scheduler import Clearing, Jobs
from settlement.services.auth import authenticate
from settlement.services.context import Context
from settlement.services.reconciliation import Reconciler, engine_lines
from settlement.services.settlements import SettlementService
from settlement.wire.requests import SettleRequest
from tests.service.conftest import (  # noqa: F401 - fixtures shared with the service tests
    Clock,
    Service,
    claim_body,
    database_url,
    fresh_pg_url,
    import_roster_rows,
    new_id_number,
    pg_url,
    service,
)


def payers_for_test() -> dict[str, PayerConfig]:
    """Two payers with codes of their own: basic insurance and medical assistance."""
    token = secrets.token_hex(4)
    file_source = StatementSource(source="file", format="csv")
    return {code: PayerConfig(code=code, name=name, funds=funds, statement=file_source)
            for code, name, funds in ((f"basic-{token}", "基本医疗保险", ["390100", "310100"]),
                                      (f"assist-{token}", "医疗救助", ["610100", "610102", "610103", "640100"]))}


@pytest.fixture
def payers() -> dict[str, PayerConfig]:
    return payers_for_test()


@dataclass
class CountingFetch:
    """A payer that agrees with the engine: the statement is the ledger's own lines; every call is counted."""

    context: Context
    delay: float = 0.0
    calls: Counter[tuple[str, date]] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, payer: PayerConfig, day: date, request_id: str, inbox: Path) -> list[StatementLine]:
        with self.lock:
            self.calls[(payer.code, day)] += 1
        if self.delay:
            threading.Event().wait(self.delay)
        return engine_lines(self.context, payer, day)


@dataclass
class CountingClearing:
    calls: Counter[str] = field(default_factory=Counter)

    def __call__(self, context: Context, month: str, reports_dir: Path) -> dict[str, Any]:
        self.calls[month] += 1
        return {"month": month, "files": []}


def jobs_for(app: Application, payers: dict[str, PayerConfig], fetch: CountingFetch, *,
             clearing: Clearing | None = None, catch_up_days: int = 3) -> Jobs:
    reconciler = Reconciler(app.context, payers, app.settings.inbox_dir, fetch=fetch)
    return Jobs(app.context, reconciler, app.settings.reports_dir, catch_up_days=catch_up_days,
                clearing=clearing or CountingClearing())


def settle_on(target: Service, when: datetime, count: int = 1) -> None:
    """Bills settled with the clock at `when` (their ledger entries carry that instant)."""
    code, key = target.hospital()
    person = new_id_number()
    import_roster_rows(target, [(person, "dibao_rural_a", "2024-01-01", "")])
    with target.app.context.uow() as tx:
        caller = authenticate(tx.repo, key)
    settlements = SettlementService(target.app.context)
    saved = target.clock.now
    target.clock.now = when
    try:
        for index in range(count):
            local = when + timedelta(hours=8)
            claim = claim_body(code, "county", person, discharge=f"{local:%Y-%m-%d}",
                               settled_at=f"{local:%Y-%m-%dT%H:%M:%S}+08:00")
            reply = settlements.settle(caller, SettleRequest.model_validate(
                {"transaction_id": f"T{secrets.token_hex(4)}-{index}", "claim": claim}))
            assert reply.status == 201, reply.body
    finally:
        target.clock.now = saved
