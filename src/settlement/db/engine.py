"""Engines for PostgreSQL (production) and SQLite (the embedded default), set up for safe concurrency."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError

from settlement.files import private_sqlite_file

# A pooled connection idle for longer than this is pinged before it is handed out (one round trip); one in steady
# use is not. A connection that died while in use fails its next statement instead: SQLAlchemy then replaces
# every connection of the pool, and settlements, reversals and cancellations retry once more on a new one.
PING_AFTER_IDLE_SECONDS = 10.0


def make_engine(url: str, *, pool_size: int = 20, lock_timeout_ms: int = 5000, connect_timeout_seconds: int = 5,
                statement_timeout_ms: int = 0) -> Engine:
    """`connect_timeout_seconds` bounds making a connection (a stalled server accepts the socket and never answers);
    `statement_timeout_ms` each statement, on the server (0: none)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, lock_timeout_ms)
    engine = create_engine(
        parsed.set(drivername="postgresql+psycopg") if parsed.drivername == "postgresql" else parsed,
        pool_size=pool_size,
        max_overflow=pool_size,
        hide_parameters=True,  # SQL errors would otherwise print ID numbers and names into logs
        connect_args={"connect_timeout": connect_timeout_seconds},
    )

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_from"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_after_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_from = record.info.get("idle_from")
        if idle_from is None or time.monotonic() - idle_from < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise DisconnectionError("a pooled connection no longer answers") from error  # the pool reconnects

    @event.listens_for(engine, "connect")
    def _session_settings(dbapi_connection: Any, _record: Any) -> None:
        # A request never waits forever for another's row lock; the service answers 503 and the caller retries
        # with the same key.
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET lock_timeout = {int(lock_timeout_ms)}")
            cursor.execute(f"SET statement_timeout = {int(statement_timeout_ms)}")
            cursor.execute("SET TIME ZONE 'UTC'")
        dbapi_connection.commit()

    return engine


def make_bookkeeping_engine(url: str, *, pool_size: int = 10, connect_timeout_seconds: int = 5,
                            statement_timeout_ms: int = 0) -> Engine | None:
    """PostgreSQL only: an engine for bookkeeping rows (WS-Security nonces, the SOAP envelope log) that stand
    alone: each statement commits by itself (one round trip, no BEGIN/COMMIT) and does not wait for the disk
    (synchronous_commit off: a crash may lose the last fraction of a second of them, never money, which is
    written by the main engine with full durability). SQLite has no such mode worth having: None."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return None
    return create_engine(
        parsed.set(drivername="postgresql+psycopg") if parsed.drivername == "postgresql" else parsed,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=300,  # no ping per checkout: a stale connection fails one statement, which is retried
        hide_parameters=True,
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": connect_timeout_seconds,
                      "options": "-c synchronous_commit=off -c TimeZone=UTC -c lock_timeout=5000 "
                                 f"-c statement_timeout={int(statement_timeout_ms)}"},
    )


def _sqlite_engine(url: str, lock_timeout_ms: int) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        private_sqlite_file(Path(database))
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": lock_timeout_ms / 1000},
                           hide_parameters=True)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so that every transaction starts with BEGIN IMMEDIATE: the
        # write lock is taken up front, so concurrent settlements queue instead of failing on lock upgrade.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(lock_timeout_ms)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
