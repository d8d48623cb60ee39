"""Alembic environment: run against the connection handed in by settlement.db.migrate."""

from __future__ import annotations

from alembic import context

from settlement.db.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
