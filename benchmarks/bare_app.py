"""The baseline of the service benchmark: the same stack (FastAPI, uvicorn, SQLAlchemy, the same engine set-up
and database) answering a POST by inserting one row in one transaction."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from sqlalchemy import text

from settlement.api.asgi import freeze_startup_heap
from settlement.db.engine import make_engine

DDL = ("CREATE TABLE IF NOT EXISTS bench_bare (id BIGSERIAL PRIMARY KEY, transaction_id TEXT NOT NULL, "
       "payload TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL)")


def create() -> FastAPI:
    engine = make_engine(os.environ["SETTLEMENT_DATABASE_URL"], pool_size=int(os.environ.get(
        "SETTLEMENT_DB_POOL_SIZE", "20")))
    app = FastAPI()

    @app.post("/bare", status_code=201)
    def bare(payload: dict[str, Any]) -> dict[str, str]:
        # A sync endpoint in the thread pool, as the settlement endpoints are.
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO bench_bare (transaction_id, payload, created_at) "
                                    "VALUES (:t, :p, :c)"),
                               {"t": str(payload.get("transaction_id", "")), "p": json.dumps(payload),
                                "c": datetime.now(UTC)})
        return {"status": "ok"}

    freeze_startup_heap()  # as the service's workers do
    return app
