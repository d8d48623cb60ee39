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
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout
from sqlalchemy.engine import make_url

from settlement.db import engine as engines

# How long a request waits for a pooled connection before asking whether the server can be reached at all, and
# the longest that question may take. Without it, during an outage every request waited the pool's whole timeout
# (30 s) while the pool kept failing to reconnect, and only then was answered 503.
QUICK_WAIT_SECONDS = 1.0
PROBE_TIMEOUT_SECONDS = 2
POOL_TIMEOUT_SECONDS = 30.0
# Once the server was found out of reach, how often it is asked again (a connection attempt) until it answers.
OUTAGE_PROBE_SECONDS = 0.25


def conninfo_of(url: str) -> str:
    """The libpq connection string of a database URL, read as the blocking engine's driver reads it: so that what
    SQLAlchemy accepts works here too, several hosts included (host=a:5432&host=b:5433 as SQLAlchemy writes them,
    or host=a,b&port=5432,5433 as libpq does) with target_session_attrs=read-write to find the primary."""
    parsed = make_url(url).set(drivername="postgresql+psycopg")
    _, arguments = parsed.get_dialect()().create_connect_args(parsed)
    arguments.pop("context", None)
    return make_conninfo(**{name: str(value) for name, value in arguments.items()})


class DatabaseUnreachable(psycopg.OperationalError):
    """No pooled connection came, and a fresh connection to the server failed too: the database is not there.
    Not worth retrying within the request (settlement.services.settlements answers DATABASE_UNAVAILABLE)."""


class AsyncPool:
    """A psycopg_pool AsyncConnectionPool, with what an outage needs on top of it.

    While the server cannot be reached, psycopg_pool keeps trying to reconnect with an exponential back-off (1, 2,
    4, 8... seconds); when the server returns, the pool waits out its current delay, and settlements went on failing
    for up to 14 s while readiness already said 200. So once a request finds the server out of reach, the pool is
    in an outage: every request asks the server directly (one connection attempt at a time, its answer shared by
    the requests that asked meanwhile) instead of waiting on the pool, and a watcher asks four times a second when
    no request does. The first answer ends the outage: a fresh pool, whose connections are made at once, takes the
    place of the one in back-off. Connections still out go back to the pool they came from (closed by then: they
    are closed too)."""

    def __init__(self, url: str, *, size: int, options: str, connect_timeout: int = PROBE_TIMEOUT_SECONDS) -> None:
        self._conninfo = conninfo_of(url)
        self._size = size
        self._options = options
        self._connect_timeout = connect_timeout
        # One probe of the server at a time, its answer shared for a second by every request waiting meanwhile.
        self._probe_lock = asyncio.Lock()
        self._probed: tuple[float, bool] = (float("-inf"), True)  # (when the last probe began, its answer)
        # Since when each connection has been idle: made or given back (forgotten with the connection).
        self._idle: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], float] = weakref.WeakKeyDictionary()
        # The pool each connection given out came from (the pool may have been replaced since).
        self._owner: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], AsyncConnectionPool[Any]] = \
            weakref.WeakKeyDictionary()
        self._out = 0  # connections given out and not given back
        self._outage = False  # the server was found out of reach and has not answered since
        self._watcher: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._closed = False
        self._renewing = False
        self.pool = self._new_pool()

    def _new_pool(self) -> AsyncConnectionPool[Any]:
        return AsyncConnectionPool(
            self._conninfo, min_size=min(4, self._size), max_size=self._size, open=False,
            timeout=POOL_TIMEOUT_SECONDS,
            # No `reset` hook: with one, every connection given back goes through the pool's worker task (a queue
            # and a task switch per request); `release` notes the idle time itself.
            configure=self._idle_from,
            kwargs={"autocommit": True, "connect_timeout": self._connect_timeout,
                    "options": f"{self._options} -c TimeZone=UTC"})

    async def open(self) -> None:
        await self.pool.open(wait=False)

    async def close(self) -> None:
        self._closed = True
        if self._watcher is not None:
            self._watcher.cancel()
        await self.pool.close()
        for task in list(self._retiring):
            await task

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
                await self._give_back(connection)  # broken: the pool discards it
                await self.pool.check()
            else:
                return connection
        raise psycopg.OperationalError("no pooled connection answers")

    async def _getconn(self) -> psycopg.AsyncConnection[Any]:
        """A pooled connection; when none comes quickly, the wait goes on only if the server can be reached (the
        pool is then merely full), else DatabaseUnreachable is raised at once, as it is while the server is
        known to be out of reach."""
        if self._outage:
            if not await self._reachable(max_age=0.0):
                raise DatabaseUnreachable("the database server cannot be reached")
            await self._end_outage()
        pool = self.pool
        try:
            return self._given(await pool.getconn(timeout=QUICK_WAIT_SECONDS), pool)
        except PoolTimeout:
            pass
        if not await self._reachable():
            raise DatabaseUnreachable("the database server cannot be reached")
        if pool is self.pool and self._out < self._size:
            # The server answers and the pool could give more, yet gave nothing: it is waiting out a reconnection
            # back-off (an outage no request saw). Start afresh.
            await self._renew()
        deadline = time.monotonic() + POOL_TIMEOUT_SECONDS - QUICK_WAIT_SECONDS
        while True:
            pool = self.pool
            try:
                return self._given(await pool.getconn(timeout=max(0.0, deadline - time.monotonic())), pool)
            except PoolClosed:
                if pool is self.pool:  # closed for good, not replaced
                    raise

    def _given(self, connection: psycopg.AsyncConnection[Any],
               pool: AsyncConnectionPool[Any]) -> psycopg.AsyncConnection[Any]:
        self._owner[connection] = pool
        self._out += 1
        return connection

    async def _reachable(self, max_age: float = 1.0) -> bool:
        """Whether the server accepts a connection: a probe begun since the question was asked, or within
        `max_age` seconds, answers it."""
        asked_at = time.monotonic()
        async with self._probe_lock:
            began, reachable = self._probed
            if began >= asked_at or time.monotonic() - began < max_age:
                return reachable
            began = time.monotonic()
            reachable = await self._probe()
            self._probed = (began, reachable)
            if not reachable and not self._outage and not self._closed:
                self._outage = True
                self._watcher = asyncio.get_running_loop().create_task(self._watch())
            return reachable

    async def _probe(self) -> bool:
        try:
            probe = await psycopg.AsyncConnection.connect(self._conninfo, connect_timeout=PROBE_TIMEOUT_SECONDS)
        except psycopg.Error:
            return False
        await probe.close()
        return True

    async def _watch(self) -> None:
        """Ask the server until it answers (or a request found it back), then end the outage."""
        while self._outage:
            await asyncio.sleep(OUTAGE_PROBE_SECONDS)
            if self._outage and await self._reachable(max_age=OUTAGE_PROBE_SECONDS):
                await self._end_outage()

    async def _end_outage(self) -> None:
        if self._outage:
            self._outage = False
            await self._renew()

    async def _renew(self) -> None:
        """A fresh pool in place of the current one, which is closed in the background (requests waiting on it
        move to the fresh one)."""
        if self._closed or self._renewing:
            return
        self._renewing = True
        try:
            fresh = self._new_pool()
            await fresh.open(wait=False)
            old, self.pool = self.pool, fresh
        finally:
            self._renewing = False
        retiring = asyncio.get_running_loop().create_task(old.close(timeout=1.0))
        self._retiring.add(retiring)
        retiring.add_done_callback(self._retiring.discard)

    async def release(self, connection: psycopg.AsyncConnection[Any]) -> None:
        self._idle[connection] = time.monotonic()
        await self._give_back(connection)

    async def _give_back(self, connection: psycopg.AsyncConnection[Any]) -> None:
        self._out -= 1
        await self._owner.pop(connection, self.pool).putconn(connection)

    async def replace_idle(self) -> None:
        """After a connection was found dead: the idle ones are likely dead too (a restart); replace them now."""
        await self.pool.check()

    async def _idle_from(self, connection: psycopg.AsyncConnection[Any]) -> None:  # a new connection
        self._idle[connection] = time.monotonic()
