"""The unit of work: one transaction per use case, rolled back unless the use case commits."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session, sessionmaker

from settlement.db.repositories import Repository


class UnitOfWork:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.repo = Repository(session)
        self.committed = False

    def commit(self) -> None:
        self.session.commit()
        self.committed = True


class UnitOfWorkFactory:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    @contextmanager
    def __call__(self) -> Iterator[UnitOfWork]:
        session = self._sessions()
        try:
            unit = UnitOfWork(session)
            yield unit
            if not unit.committed:
                session.rollback()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()
