"""Building a ledger for the payers' tests (settlements made by a hospital at given instants of the service's
settable clock) and reading what a reconciliation run stored."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime
from datetime import time as dt_time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text

from settlement.services.auth import Caller, authenticate
from settlement.services.settlements import SettlementService
from settlement.wire.requests import ReverseRequest, SettleRequest
from tests.service.conftest import Service, claim_body, new_id_number

SHANGHAI = ZoneInfo("Asia/Shanghai")


def at(day: date, hour: int, minute: int = 0) -> datetime:
    """An instant of a business day, Shanghai time."""
    return datetime.combine(day, dt_time(hour, minute), SHANGHAI)


@dataclass
class Cashier:
    service: Service
    code: str
    caller: Caller

    def settle(self, when: datetime, *, amount: str = "1000.00", person: str | None = None) -> str:
        """A settlement recorded at `when` (the service clock); its public id."""
        self.service.clock.now = when.astimezone(UTC)
        body = claim_body(self.code, "county", person or new_id_number(), amount=amount,
                          settled_at=when.isoformat(), discharge=when.date().isoformat())
        reply = SettlementService(self.service.app.context).settle(self.caller, SettleRequest.model_validate(
            {"transaction_id": f"T-{secrets.token_hex(6)}", "claim": body}))
        assert reply.status == 201, reply.body
        settlement_id: str = reply.json()["settlement_id"]
        return settlement_id

    def reverse(self, when: datetime, settlement_id: str) -> None:
        self.service.clock.now = when.astimezone(UTC)
        reply = SettlementService(self.service.app.context).reverse(
            self.caller, settlement_id, ReverseRequest(transaction_id=f"R-{secrets.token_hex(6)}", reason="test"))
        assert reply.status == 201, reply.body


def cashier(service: Service) -> Cashier:
    code, key = service.hospital()
    with service.app.context.uow() as tx:
        return Cashier(service, code, authenticate(tx.repo, key))


@dataclass(frozen=True)
class Found:
    kind: str
    settlement_id: str
    entry_kind: str
    fund: str
    timing: bool
    status: str
    engine_fen: int | None
    payer_fen: int | None

    @property
    def key(self) -> tuple[str, str, str, str]:
        return self.kind, self.settlement_id, self.entry_kind, self.fund


def discrepancies(service: Service, run_id: int) -> list[Found]:
    """The run's discrepancies as stored (cleared ones left out)."""
    with service.app.engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT kind, settlement_id, entry_kind, fund, timing, status, engine_fen, payer_fen FROM discrepancies "
            "WHERE run_id = :run AND status <> 'cleared' ORDER BY id"), {"run": run_id}).all()
    return [Found(str(kind), str(sid), str(entry), str(fund), bool(timing), str(status),
                  None if engine is None else int(engine), None if payer is None else int(payer))
            for kind, sid, entry, fund, timing, status, engine, payer in rows]


def run_record(service: Service, run_id: int) -> dict[str, Any]:
    with service.app.engine.connect() as connection:
        row = connection.execute(text("SELECT status, request_id, attempts, error FROM reconciliation_runs "
                                      "WHERE id = :run"), {"run": run_id}).one()
    return {"status": row[0], "request_id": row[1], "attempts": int(row[2]), "error": row[3]}
