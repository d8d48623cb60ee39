"""The same bills give the same figures on SQLite and on PostgreSQL (reliability.md: identical results)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from settlement.bootstrap import build, prepare
from settlement.services.auth import authenticate
from settlement.services.settlements import SettlementService
from settlement.wire.requests import SettleRequest
from tests.service.conftest import Clock, Service, claim_body, import_roster_rows, new_id_number, settings_for

CATALOGUE_CODES = ["XJ01CAA010A001010101107", "XA10BKA543A004010107394", "XB05AAA907A013010107590",
                   "XG04BEA228A004010103709", "C0203011010013000000", "003107010010000", "NOT-LISTED-1"]
VOLATILE = ("settlement_id", "recorded_at", "visit_id")


def random_bills(seed: int, count: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    bills = []
    for index in range(count):
        lines = []
        for number in range(rng.randint(1, 6)):
            quantity = rng.randint(1, 20)
            price = Decimal(rng.randint(1, 900_000)) / 100
            amount = price * quantity
            lines.append({"id": str(number + 1), "code": rng.choice(CATALOGUE_CODES), "name": "item",
                          "quantity": str(quantity), "unit_price": f"{price:.2f}", "amount": f"{amount:.2f}"})
        bills.append({"lines": lines, "month": 1 + index % 12})
    return bills


@pytest.fixture
def both(pg_url: str, tmp_path: Path) -> Iterator[list[Service]]:
    services = []
    for url in (f"sqlite:///{tmp_path / 'same.sqlite3'}", pg_url):
        application = build(settings_for(url, tmp_path))
        application.context.clock = Clock()
        prepare(application)
        services.append(Service(application, Clock(), tmp_path))
    yield services
    for service in services:
        service.app.engine.dispose()


def comparable(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key not in VOLATILE}


def test_a_year_of_random_bills_settles_identically(both: list[Service]) -> None:
    person = new_id_number()
    outcomes: list[list[dict[str, Any]]] = []
    for service in both:
        code, key = service.hospital("county", code="HSAMEBOTH01")
        import_roster_rows(service, [(person, "dibao_rural_a", "2024-01-01", "")])
        with service.app.context.uow() as tx:
            caller = authenticate(tx.repo, key)
        settlements = SettlementService(service.app.context)
        replies = []
        for index, bill in enumerate(random_bills(7, 30)):
            day = f"2024-{bill['month']:02d}-15"
            claim = claim_body(code, "county", person, lines=bill["lines"], discharge=day,
                               settled_at=f"{day}T10:00:00+08:00")
            claim["visit"]["id"] = f"V{index}"
            service.app.context.clock = Clock(datetime.fromisoformat(claim["visit"]["settled_at"]))  # settled then
            reply = settlements.settle(caller, SettleRequest.model_validate({"transaction_id": f"T{index}",
                                                                            "claim": claim}))
            assert reply.status == 201, reply.body
            replies.append(comparable(json.loads(reply.body)))
        outcomes.append(replies)
    sqlite_replies, postgres_replies = outcomes
    assert sqlite_replies == postgres_replies
    paid = sum(Decimal(p["paid"]) for reply in sqlite_replies for p in reply["payers"])
    assert paid > 0  # money moved: the comparison is not of empty results
