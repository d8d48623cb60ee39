"""Bookkeeping rows on the web application's event loop (PostgreSQL): WS-Security nonces and the SOAP envelope
log. Like the blocking bookkeeping engine (settlement.db.engine.make_bookkeeping_engine), each statement commits
alone and does not wait for the disk (synchronous_commit off: a crash may lose the last fraction of a second of
these rows, never money)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg_pool import PoolClosed, PoolTimeout
from sqlalchemy.engine import Engine

from settlement.db.aiopool import AsyncPool
from settlement.db.settling import Companion, database_error

T = TypeVar("T")
ADD_EXCHANGE = """
INSERT INTO soap_exchanges (hospital_id, dialect, operation, code, message_id, settlement_id, outcome, request, reply,
    created_at, request_bytes, request_sha256, reply_bytes, reply_sha256)
VALUES (%(hospital_id)s, %(dialect)s, %(operation)s, %(code)s, %(message_id)s, %(settlement_id)s, %(outcome)s,
    %(request)s, %(reply)s, %(created_at)s, %(request_bytes)s, %(request_sha256)s, %(reply_bytes)s, %(reply_sha256)s)
"""
# A nonce claimed inside a settlement's transaction: a row when it was new, none when it was seen already (or is
# being claimed by another transaction, which this one then waits for).
CLAIM_NONCE = """
INSERT INTO wsse_nonces (hospital_id, nonce, seen_at) VALUES (%(hospital_id)s, %(nonce)s, %(seen_at)s)
ON CONFLICT DO NOTHING RETURNING 1
"""
PURGE_NONCES = "DELETE FROM wsse_nonces WHERE seen_at < %s"


class AsyncBookkeeping:
    def __init__(self, url: str, *, size: int, connect_timeout_seconds: int = 5, statement_timeout_ms: int = 0) -> None:
        self.pool = AsyncPool(url, size=size, connect_timeout=connect_timeout_seconds,
                              options="-c synchronous_commit=off -c lock_timeout=5000 "
                                      f"-c statement_timeout={int(statement_timeout_ms)}")

    async def open(self) -> None:
        await self.pool.open()

    async def close(self) -> None:
        await self.pool.close()

    async def _run(self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        """Once more on a new connection when the first was found dead. The driver's errors are raised as
        SQLAlchemy's, as the blocking bookkeeping raises them, so that callers answer an outage with 503."""
        try:
            for attempt in (1, 2):
                connection = await self.pool.connection()
                try:
                    return await work(connection)
                except psycopg.OperationalError:
                    if not (connection.broken or connection.closed) or attempt == 2:
                        raise
                    await self.pool.replace_idle()
                finally:
                    await self.pool.release(connection)
        except (PoolTimeout, PoolClosed) as error:
            raise database_error(psycopg.OperationalError(str(error))) from None
        except psycopg.Error as error:
            raise database_error(error) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def add_nonce(self, hospital_id: int, nonce: str, seen_at: datetime, purge_before: datetime | None) -> bool:
        """False when the nonce was seen already; `purge_before` also forgets the nonces seen before it."""
        async def work(connection: psycopg.AsyncConnection[Any]) -> bool:
            try:
                await connection.execute("INSERT INTO wsse_nonces (hospital_id, nonce, seen_at) VALUES (%s, %s, %s)",
                                         (hospital_id, nonce, seen_at))
            except psycopg.errors.UniqueViolation:
                return False
            if purge_before is not None:
                await connection.execute(PURGE_NONCES, (purge_before,))
            return True

        return await self._run(work)

    async def purge_nonces(self, before: datetime) -> None:
        async def work(connection: psycopg.AsyncConnection[Any]) -> None:
            await connection.execute(PURGE_NONCES, (before,))

        await self._run(work)

    @staticmethod
    def nonce_claim(hospital_id: int, nonce: str, seen_at: datetime) -> Companion:
        """`add_nonce` as a statement of a settlement's transaction (settlement.db.settling.Companion)."""
        return Companion(CLAIM_NONCE, {"hospital_id": hospital_id, "nonce": nonce, "seen_at": seen_at})

    @staticmethod
    def exchange_companion(values: dict[str, Any]) -> Companion:
        """`add_exchange` as a statement of a settlement's transaction."""
        return Companion(ADD_EXCHANGE, values)

    async def add_exchange(self, values: dict[str, Any]) -> None:
        async def work(connection: psycopg.AsyncConnection[Any]) -> None:
            await connection.execute(ADD_EXCHANGE, values)

        await self._run(work)


def async_bookkeeping_for(engine: Engine, *, size: int, connect_timeout_seconds: int = 5,
                          statement_timeout_ms: int = 0) -> AsyncBookkeeping | None:
    if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg":
        return AsyncBookkeeping(engine.url.render_as_string(hide_password=False), size=size,
                                connect_timeout_seconds=connect_timeout_seconds,
                                statement_timeout_ms=statement_timeout_ms)
    return None
