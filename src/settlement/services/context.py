"""What the use cases need, built once by the composition root (settlement.bootstrap)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine

from settlement.db.settling import Settling
from settlement.services.tariff_schedule import TariffSchedule
from settlement.services.uow import UnitOfWorkFactory


@dataclass
class Context:
    uow: UnitOfWorkFactory
    tariffs: TariffSchedule  # the versions in force, as the database says
    secret: bytes
    clock: Callable[[], datetime]
    settling: Settling  # a settlement's own transaction (settlement.db.settling)
    quote_ttl_seconds: int = 15 * 60
    claim_clock_skew_seconds: int = 300  # how far a claim's dates may lie after the clock (config.Settings)
    # Stand-alone bookkeeping rows (nonces, envelope log): statements that commit alone, without waiting for the
    # disk, where the database offers it (see settlement.db.engine.make_bookkeeping_engine); else `uow`.
    bookkeeping: Engine | None = None

    @contextmanager
    def bookkeeping_connection(self) -> Iterator[Connection]:
        """A connection whose statements are committed when the block ends without an error."""
        if self.bookkeeping is not None:
            with self.bookkeeping.connect() as connection:  # autocommit: each statement commits alone
                yield connection
            return
        with self.uow() as tx:
            yield tx.session.connection()
            tx.commit()
