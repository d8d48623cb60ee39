"""Leases: which process holds a piece of work, said again by its holder every few seconds while it works.

A reconciliation run (its record's holder and heartbeat_at) and the scheduler (a row of table leases) are held
this way. A holder renews its lease from a thread of its own (Heartbeat) every sixth of the lease's length; a
lease not renewed for its whole length belongs to a process that died, froze or lost the database, and the next
process that wants the work takes it over at once. Before leases, a scheduler killed during a run left it
'running' for two hours, skipped by everyone.

Time is the application's clock (context.clock), the hosts' wall clocks in production (keep them synchronised, as
for any database client; a lease of 30 s tolerates seconds of drift).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, cast

from sqlalchemy import CursorResult, delete, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from settlement.db.models import Lease
from settlement.services.context import Context

log = logging.getLogger("settlement.leases")

DEFAULT_LEASE = timedelta(seconds=30)
_holder: tuple[int, str] = (0, "")


def this_process() -> str:
    """This process as a holder: host, process id and a token (a pid is reused after a restart)."""
    global _holder  # one identity per process, made again in a forked child
    if _holder[0] != os.getpid():
        _holder = (os.getpid(), f"{socket.gethostname()[:64]}:{os.getpid()}:{secrets.token_hex(3)}")
    return _holder[1]


def renewal_interval(lease: timedelta) -> float:
    """How often a holder renews: six times a lease, so that a renewal or two may be late without losing it."""
    return max(0.2, lease.total_seconds() / 6)


class Heartbeat:
    """Calls `renew` every `every` seconds in a thread while the block runs. `renew` returns False when the lease
    was found taken by another: `lost` is set (and `on_lost` called) and the beats stop. A renewal that fails (the
    database away) is tried again at the next beat; the lease may meanwhile expire and be taken."""

    def __init__(self, renew: Callable[[], bool], every: float, what: str,
                 on_lost: Callable[[], None] | None = None) -> None:
        self.renew = renew
        self.every = every
        self.what = what
        self.on_lost = on_lost
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat {what}", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            try:
                held = self.renew()
            except SQLAlchemyError as error:
                log.warning("could not renew the lease of %s (%s); trying again", self.what, type(error).__name__)
                continue
            if not held:
                log.error("the lease of %s was taken over by another process", self.what)
                self.lost.set()
                if self.on_lost is not None:
                    self.on_lost()
                return

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()


@dataclass(frozen=True)
class Holder:
    holder: str
    renewed_at: datetime


class NamedLease:
    """A lease by name in table leases (the scheduler's: "scheduler")."""

    def __init__(self, context: Context, name: str, length: timedelta = DEFAULT_LEASE,
                 holder: str | None = None) -> None:
        self.context = context
        self.name = name
        self.length = length
        self.holder = holder or this_process()

    def acquire(self) -> bool:
        """Take the lease when it is free, expired or already ours (one conditional statement: of two processes
        at once, one takes it)."""
        now = self.context.clock()
        try:
            with self.context.uow() as tx:
                taken = cast(CursorResult[Any], tx.session.execute(
                    update(Lease).where(Lease.name == self.name,
                                        or_(Lease.holder == self.holder, Lease.renewed_at < now - self.length))
                    .values(holder=self.holder, acquired_at=now, renewed_at=now)
                    .execution_options(synchronize_session=False))).rowcount
                if not taken:
                    if tx.session.get(Lease, self.name) is not None:
                        return False
                    tx.session.add(Lease(name=self.name, holder=self.holder, acquired_at=now, renewed_at=now))
                    tx.session.flush()
                tx.commit()
        except IntegrityError:
            return False  # another process inserted it first
        return True

    def renew(self) -> bool:
        """False when the lease is no longer ours."""
        with self.context.uow() as tx:
            renewed = cast(CursorResult[Any], tx.session.execute(
                update(Lease).where(Lease.name == self.name, Lease.holder == self.holder)
                .values(renewed_at=self.context.clock()).execution_options(synchronize_session=False))).rowcount
            tx.commit()
        return bool(renewed)

    def release(self) -> None:
        """Give the lease up (a clean stop): another process may take it at once."""
        with self.context.uow() as tx:
            tx.session.execute(delete(Lease).where(Lease.name == self.name, Lease.holder == self.holder)
                               .execution_options(synchronize_session=False))
            tx.commit()

    def current(self) -> Holder | None:
        with self.context.uow() as tx:
            row = tx.session.execute(select(Lease.holder, Lease.renewed_at).where(Lease.name == self.name)).first()
        return None if row is None else Holder(row[0], row[1])
