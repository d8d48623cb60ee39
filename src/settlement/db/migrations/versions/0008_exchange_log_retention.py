"""The SOAP envelope log gets the size and sha256 of each envelope (a refused message is kept only as those and a
short masked prefix, a long one truncated), an index on its time, and a retention: rows older than a cutoff may
be deleted by the purge, and by nothing else.

- PostgreSQL: purge_soap_exchanges(cutoff, batch) deletes up to `batch` rows recorded before `cutoff` and
  returns how many; the guard refuses UPDATE, TRUNCATE and every DELETE but the purge's, and the purge refuses a
  cutoff later than 30 days ago (MIN_RETENTION_DAYS, by the database's clock).
- SQLite: the purge writes its cutoff into soap_exchange_purges inside its transaction (SQLite has one writer:
  no other connection sees it) and removes it before committing; the guard lets a DELETE through only for a row
  older than such a cutoff, itself older than 30 days.

Revision ID: 0008
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0006'
branch_labels = None
depends_on = None

MIN_RETENTION_DAYS = 30
COLUMNS = (lambda: sa.Column('request_bytes', sa.BigInteger(), nullable=True),
           lambda: sa.Column('request_sha256', sa.String(length=64), nullable=True),
           lambda: sa.Column('reply_bytes', sa.BigInteger(), nullable=True),
           lambda: sa.Column('reply_sha256', sa.String(length=64), nullable=True))
REFUSED = ("'APPEND_ONLY: % on % is refused; history is append-only (rows past the retention go by "
           "purge_soap_exchanges)'")


def upgrade() -> None:
    # Plain ADD COLUMN on both databases (a batch on SQLite could copy the table and lose its triggers).
    for column in COLUMNS:
        op.add_column('soap_exchanges', column())
    op.create_index(op.f('ix_soap_exchanges_created_at'), 'soap_exchanges', ['created_at'])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"""
            CREATE FUNCTION guard_soap_exchanges() RETURNS trigger LANGUAGE plpgsql AS $$
            DECLARE
                purging text := current_setting('settlement.purge_soap_exchanges_before', true);
            BEGIN
                IF TG_OP = 'DELETE' AND coalesce(purging, '') <> ''
                        AND purging::timestamptz <= now() - interval '{MIN_RETENTION_DAYS} days'
                        AND OLD.created_at < purging::timestamptz THEN
                    RETURN OLD;
                END IF;
                RAISE EXCEPTION {REFUSED}, TG_OP, TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
            END $$;
        """)
        op.execute(f"""
            CREATE FUNCTION purge_soap_exchanges(cutoff timestamptz, batch integer) RETURNS bigint
            LANGUAGE plpgsql AS $$
            DECLARE
                purged bigint;
            BEGIN
                IF cutoff > now() - interval '{MIN_RETENTION_DAYS} days' THEN
                    RAISE EXCEPTION 'RETENTION_TOO_SHORT: the envelope log keeps at least {MIN_RETENTION_DAYS} days'
                        USING ERRCODE = 'insufficient_privilege';
                END IF;
                PERFORM set_config('settlement.purge_soap_exchanges_before', cutoff::text, true);
                DELETE FROM soap_exchanges WHERE id IN (
                    SELECT id FROM soap_exchanges WHERE created_at < cutoff ORDER BY created_at LIMIT batch);
                GET DIAGNOSTICS purged = ROW_COUNT;
                PERFORM set_config('settlement.purge_soap_exchanges_before', '', true);
                RETURN purged;
            END $$;
        """)  # noqa: S608 - a constant, not input
        op.execute("DROP TRIGGER soap_exchanges_append_only ON soap_exchanges")
        op.execute("CREATE TRIGGER soap_exchanges_append_only BEFORE UPDATE OR DELETE ON soap_exchanges "
                   "FOR EACH ROW EXECUTE FUNCTION guard_soap_exchanges()")
    else:
        op.create_table('soap_exchange_purges',
                        sa.Column('purge_before', sa.DateTime(timezone=True), nullable=False))
        op.execute("DROP TRIGGER IF EXISTS soap_exchanges_no_delete")
        op.execute(
            "CREATE TRIGGER soap_exchanges_no_delete BEFORE DELETE ON soap_exchanges WHEN NOT EXISTS ("  # noqa: S608
            "SELECT 1 FROM soap_exchange_purges p WHERE OLD.created_at < p.purge_before "
            f"AND p.purge_before <= strftime('%Y-%m-%d %H:%M:%f', 'now', '-{MIN_RETENTION_DAYS} days')) "
            "BEGIN SELECT RAISE(ABORT, 'APPEND_ONLY: DELETE on soap_exchanges is refused; history is append-only "
            "(rows past the retention go by the purge)'); END")


def downgrade() -> None:
    names = ('reply_sha256', 'reply_bytes', 'request_sha256', 'request_bytes')
    op.drop_index(op.f('ix_soap_exchanges_created_at'), table_name='soap_exchanges')
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER soap_exchanges_append_only ON soap_exchanges")
        op.execute("CREATE TRIGGER soap_exchanges_append_only BEFORE UPDATE OR DELETE ON soap_exchanges "
                   "FOR EACH ROW EXECUTE FUNCTION refuse_change()")
        op.execute("DROP FUNCTION purge_soap_exchanges(timestamptz, integer)")
        op.execute("DROP FUNCTION guard_soap_exchanges()")
        for name in names:
            op.drop_column('soap_exchanges', name)
        return
    op.drop_table('soap_exchange_purges')
    for operation in ("update", "delete"):
        op.execute(f"DROP TRIGGER IF EXISTS soap_exchanges_no_{operation}")
    with op.batch_alter_table('soap_exchanges') as table:  # SQLite copies the table: its triggers are made again
        for name in names:
            table.drop_column(name)
    for operation in ("UPDATE", "DELETE"):
        op.execute(f"CREATE TRIGGER soap_exchanges_no_{operation.lower()} BEFORE {operation} ON soap_exchanges "
                   f"BEGIN SELECT RAISE(ABORT, 'APPEND_ONLY: {operation} on soap_exchanges is refused; history is "
                   "append-only'); END")
