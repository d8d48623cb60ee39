"""Leases: a reconciliation run is held by the process working it, which renews its lease (heartbeat_at) every few
seconds; a run whose holder stopped renewing is taken over at once (it was left for two hours). The scheduler
process holds a lease of its own (table leases, one row per name), so that of several schedulers on one database
exactly one runs the jobs, and another takes over when it stops renewing.

Revision ID: 0012
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0007'
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Plain ADD COLUMN on both databases (a batch on SQLite would copy the table).
    op.add_column('reconciliation_runs', sa.Column('holder', sa.String(length=96), nullable=True))
    op.add_column('reconciliation_runs', sa.Column('heartbeat_at', TS, nullable=True))
    op.create_table(
        'leases',
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('holder', sa.String(length=96), nullable=False),
        sa.Column('acquired_at', TS, nullable=False),
        sa.Column('renewed_at', TS, nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_leases')),
    )


def downgrade() -> None:
    op.drop_table('leases')
    op.drop_column('reconciliation_runs', 'heartbeat_at')
    op.drop_column('reconciliation_runs', 'holder')
