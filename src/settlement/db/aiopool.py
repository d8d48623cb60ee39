"""Pools of psycopg AsyncConnections for the web application's event loop (PostgreSQL only).

Each web application opens its pools with itself and closes them on shutdown: a pool belongs to one event loop.
The connections are in autocommit mode, so that BEGIN and COMMIT are statements sent with the others (pipeline
mode) instead of round trips of their own.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from sqlalchemy.engine import make_url

from settlement.db import engine as engines

# How long a request waits for a pooled connection before asking whether the server can be reached at all, and
# the longest that question may take. Without it, during an outage every request waited the pool's whole timeout
# (30 s) while the pool kept failing to reconnect, and only then was answered 503.
QUICK_WAIT_SECONDS = 1.0
PROBE_TIMEOUT_SECONDS = 2
POOL_TIMEOUT_SECONDS = 30.0


class DatabaseUnreachable(psycopg.OperationalError):
    """No pooled connection came, and a fresh connection to the server failed too: the database is not there.
    Not worth retrying within the request (settlement.services.settlements answers DATABASE_UNAVAILABLE)."""


class AsyncPool:
    def __init__(self, url: str, *, size: int, options: str) -> None:
        conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._conninfo = conninfo
        # One probe of the server at a time, its answer shared for a second by every request waiting meanwhile.
        self._probe_lock = asyncio.Lock()
        self._probed: tuple[float, bool] = (float("-inf"), True)
        # Since when each connection has been idle: made or given back (forgotten with the connection).
        self._idle: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], float] = weakref.WeakKeyDictionary()
        self.pool = AsyncConnectionPool(
            conninfo, min_size=min(4, size), max_size=size, open=False, timeout=POOL_TIMEOUT_SECONDS,
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
            connection = await self._getconn()
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

    async def _getconn(self) -> psycopg.AsyncConnection[Any]:
        """A pooled connection; when none comes quickly, the wait goes on only if the server can be reached (the
        pool is then merely full), else DatabaseUnreachable is raised at once."""
        try:
            return await self.pool.getconn(timeout=QUICK_WAIT_SECONDS)
        except PoolTimeout:
            pass
        if not await self._reachable():
            raise DatabaseUnreachable("the database server cannot be reached")
        return await self.pool.getconn(timeout=POOL_TIMEOUT_SECONDS - QUICK_WAIT_SECONDS)

    async def _reachable(self) -> bool:
        async with self._probe_lock:
            probed_at, reachable = self._probed
            if time.monotonic() - probed_at < 1.0:
                return reachable
            try:
                probe = await psycopg.AsyncConnection.connect(self._conninfo, connect_timeout=PROBE_TIMEOUT_SECONDS)
            except psycopg.Error:
                reachable = False
            else:
                await probe.close()
                reachable = True
            self._probed = (time.monotonic(), reachable)
            return reachable

    async def release(self, connection: psycopg.AsyncConnection[Any]) -> None:
        self._idle[connection] = time.monotonic()
        await self.pool.putconn(connection)

    async def replace_idle(self) -> None:
        """After a connection was found dead: the idle ones are likely dead too (a restart); replace them now."""
        await self.pool.check()

    async def _idle_from(self, connection: psycopg.AsyncConnection[Any]) -> None:  # a new connection
        self._idle[connection] = time.monotonic()
