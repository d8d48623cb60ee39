"""Alembic environment: run against the connection handed in by settlement.db.migrate."""

from __future__ import annotations

from alembic import context

from settlement.db.models import Base

connection = context.config.attributes["connection"]


def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """The scheduler's job table belongs to APScheduler, not to these migrations."""
    return not (type_ == "table" and name == "scheduler_jobs")


context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                  include_object=include_object)
with context.begin_transaction():
    context.run_migrations()
