"""A floor for the service benchmark: a settlement's database work with its computation taken away.

`POST /floor` takes the settle request the service takes and runs the service's own transaction on PostgreSQL
(settlement.db.settling.AsyncPipelinedSettling, the same pool, statements and parameters: the schedule's shared
lock, the person's year lock, the read, then the write of the settlement, its ledger entries, the year figures,
the key's record and the audit row, and COMMIT), but with rows made once: the first request is settled by the real
service and its rows are read back; each later request reuses them under its own transaction id, patient and
public id. Nothing is validated, computed or built; the reply is the stored one. No figure it writes is meant to
be right: it answers how fast the service could be if a settlement cost nothing but its database work.

Started by `benchmarks/bench_service.py --floor` beside the service and the baseline (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from fastapi import FastAPI, Request, Response

from benchmarks.bare_app import pooled_app
from settlement.api.asgi import freeze_startup_heap
from settlement.bootstrap import build
from settlement.config import Settings
from settlement.db.settling import AsyncPipelinedSettling, SettlementKey, SettlementRows
from settlement.services.auth import authenticate
from settlement.services.settlements import SettlementService
from settlement.wire.requests import SettleRequest

COLUMNS = ("public_id", "hospital_id", "transaction_id", "id_number", "insurance_year", "visit_id", "visit_type",
           "settled_at", "created_at", "tariff_version_id", "tariff_sha256", "tariff_parent_version_id", "total_fen",
           "out_of_catalogue_fen", "over_price_limit_fen", "pre_self_pay_fen", "in_scope_fen", "patient_fen",
           "admissions", "categories", "retired", "accumulators_before", "claim", "result")


def create() -> FastAPI:
    url = os.environ["SETTLEMENT_DATABASE_URL"]
    application = build(Settings(), migrate=False)
    settling = AsyncPipelinedSettling(url, size=application.settings.db_pool_size,
                                      lock_timeout_ms=application.settings.lock_timeout_ms)
    made: list[tuple[SettlementRows, SettlementKey]] = []
    first = asyncio.Lock()

    def settle_for_real(body: bytes, key: str) -> tuple[SettlementRows, SettlementKey]:
        with application.context.uow() as unit:
            caller = authenticate(unit.repo, key)
        reply = SettlementService(application.context).settle(caller, SettleRequest.model_validate_json(body))
        assert reply.status == 201, reply.body
        public_id = orjson.loads(reply.body)["settlement_id"]
        with psycopg.connect(url) as connection:
            row = connection.execute(f"SELECT {', '.join(COLUMNS)} FROM settlements WHERE public_id = %s",
                                     (public_id,)).fetchone()
            assert row is not None
            movements = connection.execute(
                "SELECT fund, paid_fen, deductible_fen, cumulative_fen FROM ledger_entries AS entry "
                "JOIN settlements AS settlement ON settlement.id = entry.settlement_id "
                "WHERE settlement.public_id = %s ORDER BY entry.id", (public_id,)).fetchall()
            request_hash = connection.execute(
                "SELECT request_hash FROM idempotency_records WHERE hospital_id = %s AND key = %s",
                (row[1], row[2])).fetchone()
        assert request_hash is not None
        values = dict(zip(COLUMNS, row, strict=True))
        rows = SettlementRows(settlement=values, movements={fund: (p, d, c) for fund, p, d, c in movements},
                              request_hash=request_hash[0], actor=f"hospital:{values['hospital_id']}",
                              audit_details=orjson.dumps({"transaction_id": values["transaction_id"]}).decode(),
                              level=orjson.loads(values["claim"])["hospital"]["level"])
        day = values["settled_at"].date()
        locked = SettlementKey(values["hospital_id"], values["transaction_id"], values["id_number"],
                               values["insurance_year"], day, day)
        return rows, locked

    app = pooled_app(settling, on_close=application.dispose)

    @app.post("/floor", status_code=201)
    async def floor(request: Request) -> Response:
        body = await request.body()
        if not made:
            async with first:
                if not made:  # this request is the one settled for real
                    key = request.headers.get("authorization", "").removeprefix("Bearer ")
                    made.append(await asyncio.to_thread(settle_for_real, body, key))
                    return Response(made[0][0].settlement["result"], status_code=201, media_type="application/json")
        template, locked = made[0]
        parsed: dict[str, Any] = orjson.loads(body)  # what is read from the request: its key and patient
        transaction_id, id_number = parsed["transaction_id"], parsed["claim"]["patient"]["id_number"]
        rows = replace(template, settlement={
            **template.settlement, "public_id": f"FL{secrets.token_hex(8).upper()}",
            "transaction_id": transaction_id, "id_number": id_number, "created_at": datetime.now(UTC)})
        async with settling.begin(locked._replace(transaction_id=transaction_id, id_number=id_number)) as tx:
            await tx.record(rows)
            await tx.commit()
        return Response(template.settlement["result"], status_code=201, media_type="application/json")

    freeze_startup_heap()  # as the service's workers do
    return app
