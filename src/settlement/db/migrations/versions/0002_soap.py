"""SOAP: hospitals' WS-Security credentials, their dialects, nonces seen, and the envelope log (append-only).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'soap_credentials',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('hospital_id', sa.Integer(), nullable=False),
        sa.Column('username', sa.String(length=32), nullable=False),
        sa.Column('secret_encrypted', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['hospital_id'], ['hospitals.id'],
                                name=op.f('fk_soap_credentials_hospital_id_hospitals')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_soap_credentials')),
    )
    op.create_index(op.f('ix_soap_credentials_hospital_id'), 'soap_credentials', ['hospital_id'])
    op.create_index(op.f('ix_soap_credentials_username'), 'soap_credentials', ['username'])
    op.create_table(
        'hospital_dialects',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('hospital_id', sa.Integer(), nullable=False),
        sa.Column('dialect', sa.String(length=32), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['hospital_id'], ['hospitals.id'],
                                name=op.f('fk_hospital_dialects_hospital_id_hospitals')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_hospital_dialects')),
        sa.UniqueConstraint('hospital_id', 'dialect', name=op.f('uq_hospital_dialects_hospital_id_dialect')),
    )
    op.create_table(
        'wsse_nonces',
        sa.Column('hospital_id', sa.Integer(), nullable=False),
        sa.Column('nonce', sa.String(length=64), nullable=False),
        sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('hospital_id', 'nonce', name=op.f('pk_wsse_nonces')),
    )
    op.create_index(op.f('ix_wsse_nonces_seen_at'), 'wsse_nonces', ['seen_at'])
    op.create_table(
        'soap_exchanges',
        sa.Column('id', BIG_ID, nullable=False),
        sa.Column('hospital_id', sa.Integer(), nullable=False),
        sa.Column('dialect', sa.String(length=32), nullable=False),
        sa.Column('operation', sa.String(length=32), nullable=False),
        sa.Column('code', sa.String(length=32), nullable=False),
        sa.Column('message_id', sa.String(length=64), nullable=True),
        sa.Column('settlement_id', sa.String(length=32), nullable=True),
        sa.Column('outcome', sa.String(length=64), nullable=False),
        sa.Column('request', sa.Text(), nullable=False),
        sa.Column('reply', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['hospital_id'], ['hospitals.id'],
                                name=op.f('fk_soap_exchanges_hospital_id_hospitals')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_soap_exchanges')),
    )
    op.create_index('ix_soap_exchanges_hospital_message', 'soap_exchanges', ['hospital_id', 'message_id'])
    op.create_index(op.f('ix_soap_exchanges_settlement_id'), 'soap_exchanges', ['settlement_id'])
    # The envelope log is history: append-only like the ledger (the guard function exists since 0001).
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE TRIGGER soap_exchanges_append_only BEFORE UPDATE OR DELETE ON soap_exchanges "
                   "FOR EACH ROW EXECUTE FUNCTION refuse_change()")
        op.execute("CREATE TRIGGER soap_exchanges_no_truncate BEFORE TRUNCATE ON soap_exchanges "
                   "FOR EACH STATEMENT EXECUTE FUNCTION refuse_change()")
    else:
        for operation in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER soap_exchanges_no_{operation.lower()} BEFORE {operation} ON soap_exchanges "
                       f"BEGIN SELECT RAISE(ABORT, 'APPEND_ONLY: {operation} on soap_exchanges is refused; "
                       "history is append-only'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS soap_exchanges_append_only ON soap_exchanges")
        op.execute("DROP TRIGGER IF EXISTS soap_exchanges_no_truncate ON soap_exchanges")
    else:
        for operation in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS soap_exchanges_no_{operation}")
    op.drop_table('soap_exchanges')
    op.drop_table('wsse_nonces')
    op.drop_table('hospital_dialects')
    op.drop_table('soap_credentials')
