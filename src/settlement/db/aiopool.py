"""Pools of psycopg AsyncConnections for the web application's event loop (PostgreSQL only).

Each web application opens its pools with itself and closes them on shutdown: a pool belongs to one event loop.
The connections are in autocommit mode, so that BEGIN and COMMIT are statements sent with the others (pipeline
mode) instead of round trips of their own.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import make_url

from settlement.db import engine as engines


class AsyncPool:
    def __init__(self, url: str, *, size: int, options: str) -> None:
        conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        # Since when each connection has been idle: made or given back (forgotten with the connection).
        self._idle: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], float] = weakref.WeakKeyDictionary()
        self.pool = AsyncConnectionPool(
            conninfo, min_size=min(4, size), max_size=size, open=False, timeout=30,
            # No `reset` hook: with one, every connection given back goes through the pool's worker task (a queue
            # and a task switch per request); `release` notes the idle time itself.
            configure=self._idle_from,
            kwargs={"autocommit": True, "options": f"{options} -c TimeZone=UTC"})

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()

    async def connection(self) -> psycopg.AsyncConnection[Any]:
        """A connection of the pool (give it back with `release`). As the blocking engine does, one idle for a
        while is pinged first and one in steady use is not (a dead one then fails a statement, and the work is
        retried). A failed ping has the pool check all its idle connections at once (after a restart they are
        all dead), with no back-off."""
        for _ in range(3):
            connection = await self.pool.getconn()
            idle_from = self._idle.get(connection)
            if idle_from is None or time.monotonic() - idle_from < engines.PING_AFTER_IDLE_SECONDS:
                return connection
            try:
                await connection.execute("SELECT 1")
            except psycopg.Error:
                await self.pool.putconn(connection)  # broken: the pool discards it
                await self.pool.check()
            else:
                return connection
        raise psycopg.OperationalError("no pooled connection answers")

    async def release(self, connection: psycopg.AsyncConnection[Any]) -> None:
        self._idle[connection] = time.monotonic()
        await self.pool.putconn(connection)

    async def replace_idle(self) -> None:
        """After a connection was found dead: the idle ones are likely dead too (a restart); replace them now."""
        await self.pool.check()

    async def _idle_from(self, connection: psycopg.AsyncConnection[Any]) -> None:  # a new connection
        self._idle[connection] = time.monotonic()
