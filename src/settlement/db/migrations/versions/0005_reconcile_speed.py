"""Reconciliation speed: a payer's statement rows keyed by (run, line) instead of a surrogate id with an index of
its own; a small partial index that finds a day's correction entries without reading the day's ledger.

Statement rows had a sequence-numbered id (the primary key) and a separate index on the run: two b-tree
insertions and a sequence call per row, most of the cost of storing a million-row statement. Every query selects
them by run, so the primary key is now (run_id, line), the line being the row's position in the statement as
received (from 1): one index, which serves the queries by run as the old one did. Existing rows are numbered in
the order of their old ids.

Correction entries are few, but the comparison reads them grouped per settlement and fund: without an index of
their own every reconciliation scanned the whole day of the ledger once more to find none. The partial index
holds only the correction entries, so it costs the settlement path nothing (its entries are not in it). It is
built with a plain CREATE INDEX, which holds writes to the ledger for the time of one scan of the table.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
TS = sa.DateTime(timezone=True)
CORRECTIONS_INDEX = 'ix_ledger_entries_correction_created_at'
ROW_COLUMNS = "settlement_id, entry_kind, fund, hospital_code, amount_fen, occurred_at"


def _row_columns() -> list[sa.Column[object]]:
    return [
        sa.Column('settlement_id', sa.String(length=32), nullable=False),
        sa.Column('entry_kind', sa.String(length=16), nullable=False),
        sa.Column('fund', sa.String(length=6), nullable=False),
        sa.Column('hospital_code', sa.String(length=32), nullable=False),
        sa.Column('amount_fen', sa.BigInteger(), nullable=False),
        sa.Column('occurred_at', TS, nullable=True),
    ]


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:  # constraint names are per schema in PostgreSQL: free the name for the new table's key
        op.execute("ALTER TABLE statement_rows RENAME CONSTRAINT pk_statement_rows TO pk_statement_rows_0003")
    op.create_table(
        'statement_rows_0005',
        sa.Column('run_id', BIG_ID, nullable=False),
        sa.Column('line', sa.Integer(), nullable=False),
        *_row_columns(),
        # Still no foreign key to the run (a run replaces a million of these rows at once).
        sa.PrimaryKeyConstraint('run_id', 'line', name=op.f('pk_statement_rows')),
    )
    op.execute(f"INSERT INTO statement_rows_0005 (run_id, line, {ROW_COLUMNS}) "  # noqa: S608 - constant SQL
               f"SELECT run_id, ROW_NUMBER() OVER (PARTITION BY run_id ORDER BY id), {ROW_COLUMNS} "
               "FROM statement_rows")
    op.drop_table('statement_rows')
    op.rename_table('statement_rows_0005', 'statement_rows')
    op.create_index(CORRECTIONS_INDEX, 'ledger_entries', ['created_at'],
                    postgresql_where=sa.text('correction_id IS NOT NULL'),
                    sqlite_where=sa.text('correction_id IS NOT NULL'))


def downgrade() -> None:
    op.drop_index(CORRECTIONS_INDEX, 'ledger_entries')
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute("ALTER TABLE statement_rows RENAME CONSTRAINT pk_statement_rows TO pk_statement_rows_0005")
    op.create_table(
        'statement_rows_0003',
        sa.Column('id', BIG_ID, nullable=False),
        sa.Column('run_id', BIG_ID, nullable=False),
        *_row_columns(),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_statement_rows')),
    )
    op.execute(f"INSERT INTO statement_rows_0003 (run_id, {ROW_COLUMNS}) "  # noqa: S608 - constant SQL
               f"SELECT run_id, {ROW_COLUMNS} FROM statement_rows ORDER BY run_id, line")
    op.drop_table('statement_rows')
    op.rename_table('statement_rows_0003', 'statement_rows')
    if postgres:  # the sequence keeps the name of the table it was made for
        op.execute("ALTER SEQUENCE statement_rows_0003_id_seq RENAME TO statement_rows_id_seq")
    op.create_index('ix_statement_rows_run_id', 'statement_rows', ['run_id'])
