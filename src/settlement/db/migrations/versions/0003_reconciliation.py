"""Reconciliation and clearing: runs, payers' statement rows, discrepancies, corrections (append-only, linked to
their ledger entries), monthly clearing runs.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        'reconciliation_runs',
        sa.Column('id', BIG_ID, nullable=False),
        sa.Column('payer', sa.String(length=32), nullable=False),
        sa.Column('business_date', sa.Date(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('request_id', sa.String(length=64), nullable=False),
        sa.Column('started_at', TS, nullable=True),
        sa.Column('finished_at', TS, nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('engine_count', sa.Integer(), nullable=False),
        sa.Column('engine_total_fen', sa.BigInteger(), nullable=False),
        sa.Column('payer_count', sa.Integer(), nullable=False),
        sa.Column('payer_total_fen', sa.BigInteger(), nullable=False),
        sa.Column('discrepancies', sa.Integer(), nullable=False),
        sa.Column('totals', sa.Text(), nullable=False),
        sa.Column('error', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_reconciliation_runs')),
        sa.UniqueConstraint('payer', 'business_date', name=op.f('uq_reconciliation_runs_payer_business_date')),
    )
    op.create_table(
        'statement_rows',
        sa.Column('id', BIG_ID, nullable=False),
        sa.Column('run_id', BIG_ID, nullable=False),
        sa.Column('settlement_id', sa.String(length=32), nullable=False),
        sa.Column('entry_kind', sa.String(length=16), nullable=False),
        sa.Column('fund', sa.String(length=6), nullable=False),
        sa.Column('hospital_code', sa.String(length=32), nullable=False),
        sa.Column('amount_fen', sa.BigInteger(), nullable=False),
        sa.Column('occurred_at', TS, nullable=True),
        # No foreign key and one narrow index: a run replaces a million of these rows at once, and every query
        # selects them by run (a per-row key check and a wide random index cost more than the whole compare).
        sa.PrimaryKeyConstraint('id', name=op.f('pk_statement_rows')),
    )
    op.create_index('ix_statement_rows_run_id', 'statement_rows', ['run_id'])
    op.create_table(
        'discrepancies',
        sa.Column('id', BIG_ID, nullable=False),
        sa.Column('run_id', BIG_ID, nullable=False),
        sa.Column('payer', sa.String(length=32), nullable=False),
        sa.Column('business_date', sa.Date(), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('timing', sa.Boolean(), nullable=False),
        sa.Column('settlement_id', sa.String(length=32), nullable=False),
        sa.Column('entry_kind', sa.String(length=16), nullable=False),
        sa.Column('fund', sa.String(length=6), nullable=False),
        sa.Column('hospital_code', sa.String(length=32), nullable=False),
        sa.Column('engine_fen', sa.BigInteger(), nullable=True),
        sa.Column('payer_fen', sa.BigInteger(), nullable=True),
        sa.Column('created_at', TS, nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('action', sa.String(length=32), nullable=True),
        sa.Column('note', sa.Text(), nullable=True),
        sa.Column('resolved_by', sa.String(length=128), nullable=True),
        sa.Column('resolved_at', TS, nullable=True),
        sa.Column('correction_id', BIG_ID, nullable=True),
        sa.ForeignKeyConstraint(['run_id'], ['reconciliation_runs.id'],
                                name=op.f('fk_discrepancies_run_id_reconciliation_runs')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_discrepancies')),
        sa.UniqueConstraint('run_id', 'settlement_id', 'entry_kind', 'fund',
                            name=op.f('uq_discrepancies_run_id_settlement_id_entry_kind_fund')),
    )
    op.create_index('ix_discrepancies_status_payer', 'discrepancies', ['status', 'payer'])
    op.create_table(
        'corrections',
        sa.Column('id', BIG_ID, nullable=False),
        sa.Column('public_id', sa.String(length=32), nullable=False),
        sa.Column('discrepancy_id', BIG_ID, nullable=True),
        sa.Column('settlement_id', BIG_ID, nullable=False),
        sa.Column('fund', sa.String(length=6), nullable=False),
        sa.Column('amount_fen', sa.BigInteger(), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('actor', sa.String(length=128), nullable=False),
        sa.Column('created_at', TS, nullable=False),
        sa.ForeignKeyConstraint(['discrepancy_id'], ['discrepancies.id'],
                                name=op.f('fk_corrections_discrepancy_id_discrepancies')),
        sa.ForeignKeyConstraint(['settlement_id'], ['settlements.id'],
                                name=op.f('fk_corrections_settlement_id_settlements')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_corrections')),
        sa.UniqueConstraint('public_id', name=op.f('uq_corrections_public_id')),
    )
    op.create_table(
        'clearing_runs',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('month', sa.String(length=7), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('created_at', TS, nullable=False),
        sa.Column('finished_at', TS, nullable=True),
        sa.Column('totals', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_clearing_runs')),
        sa.UniqueConstraint('month', name=op.f('uq_clearing_runs_month')),
    )
    # A correction is a ledger entry of its own, linked to the correction that explains it. (A plain nullable
    # column: SQLite adds it in place, so the ledger's append-only triggers stay as they are.)
    op.add_column('ledger_entries', sa.Column('correction_id', BIG_ID, nullable=True))
    op.create_index('ix_ledger_entries_created_at', 'ledger_entries', ['created_at'])
    if op.get_bind().dialect.name == "postgresql":
        op.create_foreign_key(op.f('fk_ledger_entries_correction_id_corrections'), 'ledger_entries', 'corrections',
                              ['correction_id'], ['id'])
        op.execute("CREATE TRIGGER corrections_append_only BEFORE UPDATE OR DELETE ON corrections "
                   "FOR EACH ROW EXECUTE FUNCTION refuse_change()")
    else:
        for operation in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER corrections_no_{operation.lower()} BEFORE {operation} ON corrections "
                       f"BEGIN SELECT RAISE(ABORT, 'APPEND_ONLY: {operation} on corrections is refused; "
                       "history is append-only'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS corrections_append_only ON corrections")
        op.drop_constraint(op.f('fk_ledger_entries_correction_id_corrections'), 'ledger_entries', type_='foreignkey')
    else:
        for operation in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS corrections_no_{operation}")
    op.drop_index('ix_ledger_entries_created_at', 'ledger_entries')
    with op.batch_alter_table('ledger_entries') as batch:
        batch.drop_column('correction_id')
    op.drop_table('clearing_runs')
    op.drop_table('corrections')
    op.drop_table('discrepancies')
    op.drop_table('statement_rows')
    op.drop_table('reconciliation_runs')
