"""A deliberately naive year lock, kept so that the concurrency checks are shown to fail without the real one.

`naive_lock_year` has the signature of Repository.lock_year but takes no lock: it creates the person's year row
if needed and reads the figures as a display would (read, compute, write). A test patches it over
Repository.lock_year for one race and asserts that the cap and ledger checks then break.

It uses only the model and Repository.read_year, not the repository's private helpers, so that it keeps
working while the repository's SQL changes.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite

from settlement.db.models import PersonYear
from settlement.db.repositories import Repository, YearFigures


def naive_lock_year(self: Repository, id_number: str, year: int) -> YearFigures:
    dialect = self.session.get_bind().dialect.name
    insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # The row must exist for move_year; ON CONFLICT DO NOTHING takes no lock on an existing row.
    self.session.execute(insert(PersonYear.__table__).values(id_number=id_number, year=year, admissions=0)
                         .on_conflict_do_nothing(index_elements=["id_number", "year"]))
    return self.read_year(id_number, year)
