"""The baseline of the service benchmark: the same stack as the service (FastAPI, uvicorn, the same database set-up)
answering a POST by inserting one row in one transaction.

`POST /bare` reaches the database the way the service settles on PostgreSQL: an async endpoint on the event loop,
a connection of the same asyncio pool (settlement.db.settling.AsyncPipelinedSettling: same size, settings and idle
ping), and the transaction sent the way a settlement sends its own (BEGIN, INSERT, COMMIT pipelined in one round
trip). (Until 2026-12-03 the benchmark also measured the sync endpoint of earlier runs, SQLAlchemy's
`engine.begin()` in the thread pool; it was dropped when both servers began to be loaded in turn.)
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI

from settlement.api.app import NO_TELEMETRY
from settlement.api.asgi import freeze_startup_heap
from settlement.db.settling import AsyncPipelinedSettling

DDL = ("CREATE TABLE IF NOT EXISTS bench_bare (id BIGSERIAL PRIMARY KEY, transaction_id TEXT NOT NULL, "
       "payload TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL)")
INSERT = "INSERT INTO bench_bare (transaction_id, payload, created_at) VALUES (%s, %s, %s)"


def pooled_app(settling: AsyncPipelinedSettling, on_close: Callable[[], None] = lambda: None) -> FastAPI:
    """A FastAPI app set up as the service's (telemetry off) whose lifespan opens and closes `settling`'s pool."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await settling.open()
        try:
            yield
        finally:
            await settling.close()
            on_close()

    return FastAPI(lifespan=lifespan, telemetry=NO_TELEMETRY)


def create() -> FastAPI:
    url = os.environ["SETTLEMENT_DATABASE_URL"]
    size = int(os.environ.get("SETTLEMENT_DB_POOL_SIZE", "20"))
    settling = AsyncPipelinedSettling(url, size=size, lock_timeout_ms=5000)
    app = pooled_app(settling)

    @app.post("/bare", status_code=201)
    async def bare(payload: dict[str, Any]) -> dict[str, str]:
        connection = await settling.pool.connection()
        try:
            async with connection.pipeline():
                await connection.execute("BEGIN")
                await connection.execute(INSERT, (str(payload.get("transaction_id", "")), json.dumps(payload),
                                                  datetime.now(UTC)))
                await connection.execute("COMMIT")
        finally:
            await settling.pool.release(connection)
        return {"status": "ok"}

    freeze_startup_heap()  # as the service's workers do
    return app
