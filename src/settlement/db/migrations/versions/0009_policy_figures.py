"""The year figures the policy rules of issue 16 need, kept like the funds' (always the sum of history):

- a person's year counts its inpatient admissions by hospital level as well (person_years.admissions_<level>),
  for deductibles that step down per admission at the same level. Existing years are filled in from the
  settlements (the level of the claim as received) and their reversals.
- payments against a limit inside a fund (门诊统筹 a year, 门诊慢特病 per disease): `limit_entries`, one per
  settlement and limit, append-only, a reversal adding its negative mirror, like the ledger; and `limit_years`,
  the running total per person, year, fund and limit, updated under the person's year lock.
- the roster says who is retired (persons.retired, the employee scheme's 退休), and a settlement records what it
  used (settlements.retired; empty before this revision, read as not retired), so that it recomputes.

Revision ID: 0009
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0012'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
TS = sa.DateTime(timezone=True)
LEVELS = ("township", "county", "city", "provincial")


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table('person_years') as batch_op:
        for level in LEVELS:
            batch_op.add_column(sa.Column(f'admissions_{level}', sa.Integer(), nullable=False,
                                          server_default='0'))
    level = ("CAST(settlement.claim AS json) -> 'hospital' ->> 'level'" if postgres
             else "json_extract(settlement.claim, '$.hospital.level')")
    for name in LEVELS:
        op.execute(f"""
            UPDATE person_years SET admissions_{name} = (
                SELECT COALESCE(SUM(settlement.admissions + COALESCE(reversal.admissions, 0)), 0)
                FROM settlements AS settlement LEFT JOIN reversals AS reversal
                     ON reversal.settlement_id = settlement.id
                WHERE settlement.id_number = person_years.id_number
                  AND settlement.insurance_year = person_years.year AND {level} = '{name}')
            WHERE admissions <> 0
        """)  # noqa: S608 - constant SQL
    with op.batch_alter_table('persons') as batch_op:
        batch_op.add_column(sa.Column('retired', sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table('settlements') as batch_op:
        batch_op.add_column(sa.Column('retired', sa.Boolean(), nullable=True))

    op.create_table(
        'limit_years',
        sa.Column('id_number', sa.String(length=18), nullable=False),
        sa.Column('year', sa.Integer(), nullable=False),
        sa.Column('fund', sa.String(length=6), nullable=False),
        sa.Column('name', sa.String(length=130), nullable=False),
        sa.Column('paid_fen', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id_number', 'year', 'fund', 'name', name=op.f('pk_limit_years')),
    )
    op.create_table(
        'limit_entries',
        sa.Column('id', BIG_ID, nullable=False),
        sa.Column('settlement_id', BIG_ID, nullable=False),
        sa.Column('reversal_id', BIG_ID, nullable=True),
        sa.Column('reverses_entry_id', BIG_ID, nullable=True),
        sa.Column('hospital_id', sa.Integer(), nullable=False),
        sa.Column('id_number', sa.String(length=18), nullable=False),
        sa.Column('insurance_year', sa.Integer(), nullable=False),
        sa.Column('fund', sa.String(length=6), nullable=False),
        sa.Column('name', sa.String(length=130), nullable=False),
        sa.Column('paid_fen', sa.BigInteger(), nullable=False),
        sa.Column('created_at', TS, nullable=False),
        sa.ForeignKeyConstraint(['settlement_id'], ['settlements.id'],
                                name=op.f('fk_limit_entries_settlement_id_settlements')),
        sa.ForeignKeyConstraint(['reversal_id'], ['reversals.id'],
                                name=op.f('fk_limit_entries_reversal_id_reversals')),
        sa.ForeignKeyConstraint(['reverses_entry_id'], ['limit_entries.id'],
                                name=op.f('fk_limit_entries_reverses_entry_id_limit_entries')),
        sa.ForeignKeyConstraint(['hospital_id'], ['hospitals.id'],
                                name=op.f('fk_limit_entries_hospital_id_hospitals')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_limit_entries')),
    )
    op.create_index(op.f('ix_limit_entries_settlement_id'), 'limit_entries', ['settlement_id'])
    op.create_index('ix_limit_entries_person_year', 'limit_entries', ['id_number', 'insurance_year'])
    # History, like the ledger (revision 0001's guards).
    if postgres:
        op.execute("CREATE TRIGGER limit_entries_append_only BEFORE UPDATE OR DELETE ON limit_entries "
                   "FOR EACH ROW EXECUTE FUNCTION refuse_change()")
        op.execute("CREATE TRIGGER limit_entries_no_truncate BEFORE TRUNCATE ON limit_entries "
                   "FOR EACH STATEMENT EXECUTE FUNCTION refuse_change()")
    else:
        for operation in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER limit_entries_no_{operation.lower()} BEFORE {operation} ON limit_entries "
                       f"BEGIN SELECT RAISE(ABORT, 'APPEND_ONLY: {operation} on limit_entries is refused; "
                       f"history is append-only'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS limit_entries_append_only ON limit_entries")
        op.execute("DROP TRIGGER IF EXISTS limit_entries_no_truncate ON limit_entries")
    else:
        for operation in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS limit_entries_no_{operation}")
    op.drop_index('ix_limit_entries_person_year', table_name='limit_entries')
    op.drop_index(op.f('ix_limit_entries_settlement_id'), table_name='limit_entries')
    op.drop_table('limit_entries')
    op.drop_table('limit_years')
    # Not a batch operation: on SQLite that copies the table, and the copy would lose its append-only triggers.
    op.execute("ALTER TABLE settlements DROP COLUMN retired")
    with op.batch_alter_table('persons') as batch_op:
        batch_op.drop_column('retired')
    with op.batch_alter_table('person_years') as batch_op:
        for level in LEVELS:
            batch_op.drop_column(f'admissions_{level}')
