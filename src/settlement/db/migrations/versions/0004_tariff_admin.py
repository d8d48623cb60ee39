"""Tariff administration: versions live in the database with their life (draft, approved, active, withdrawn);
their documents never change (triggers refuse it); the schedule's generation; settlements name the inherited
(city) version as well as their own region's.

Versions recorded before this revision were resolved tariffs recorded on first use: each becomes an active,
self-contained version (its content already has its city's rules merged in), approved by "system". Such a county
version therefore does not follow its city's later versions; to make it inherit again, import a new version of
the county (with `inherits`) from the date it should.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
DOCUMENT_COLUMNS = ("region", "version", "sha256", "content", "effective_from", "effective_to", "inherits",
                    "created_by", "loaded_at")


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    # Plain nullable columns (or with a server default): SQLite adds them in place, so no table is rebuilt and
    # the settlements' append-only triggers stay as they are.
    for column in (
        sa.Column('inherits', sa.String(length=6), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False, server_default='active'),
        sa.Column('origin', sa.String(length=256), nullable=False, server_default='recorded on first use'),
        sa.Column('based_on_id', sa.Integer(), nullable=True),
        sa.Column('created_by', sa.String(length=128), nullable=False, server_default='system'),
        sa.Column('approved_by', sa.String(length=128), nullable=True),
        sa.Column('approved_at', TS, nullable=True),
        sa.Column('activated_by', sa.String(length=128), nullable=True),
        sa.Column('activated_at', TS, nullable=True),
        sa.Column('withdrawn_by', sa.String(length=128), nullable=True),
        sa.Column('withdrawn_at', TS, nullable=True),
        sa.Column('note', sa.Text(), nullable=True),
    ):
        op.add_column('tariff_versions', column)
    op.execute("UPDATE tariff_versions SET approved_by = 'system', approved_at = loaded_at, "
               "activated_by = 'system', activated_at = loaded_at")
    op.add_column('settlements', sa.Column('tariff_parent_version_id', sa.Integer(), nullable=True))
    if postgres:
        op.create_foreign_key(op.f('fk_tariff_versions_based_on_id_tariff_versions'), 'tariff_versions',
                              'tariff_versions', ['based_on_id'], ['id'])
        op.create_foreign_key(op.f('fk_settlements_tariff_parent_version_id_tariff_versions'), 'settlements',
                              'tariff_versions', ['tariff_parent_version_id'], ['id'])
    op.create_table(
        'tariff_schedule',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('generation', sa.BigInteger(), nullable=False),
        sa.Column('changed_at', TS, nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_tariff_schedule')),
    )
    op.execute("INSERT INTO tariff_schedule (id, generation) VALUES (1, 1)")
    _immutable_documents(postgres)


def _immutable_documents(postgres: bool) -> None:
    """A version's document is history: never edited, never deleted. Its life moves forward only: an active or
    withdrawn version never goes back to draft or approved."""
    if postgres:
        changed = " OR ".join(f"NEW.{column} IS DISTINCT FROM OLD.{column}" for column in DOCUMENT_COLUMNS)
        op.execute(f"""
            CREATE FUNCTION refuse_tariff_edit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP = 'DELETE' THEN
                    RAISE EXCEPTION 'TARIFF_IMMUTABLE: tariff versions are never deleted; withdraw one instead'
                        USING ERRCODE = 'insufficient_privilege';
                END IF;
                IF {changed} THEN
                    RAISE EXCEPTION 'TARIFF_IMMUTABLE: a tariff version is never edited; record a new version'
                        USING ERRCODE = 'insufficient_privilege';
                END IF;
                IF OLD.status = 'withdrawn' OR (OLD.status = 'active' AND NEW.status NOT IN ('active', 'withdrawn'))
                THEN
                    RAISE EXCEPTION 'TARIFF_IMMUTABLE: a % version cannot become %', OLD.status, NEW.status
                        USING ERRCODE = 'insufficient_privilege';
                END IF;
                RETURN NEW;
            END $$;
        """)
        op.execute("CREATE TRIGGER tariff_versions_immutable BEFORE UPDATE OR DELETE ON tariff_versions "
                   "FOR EACH ROW EXECUTE FUNCTION refuse_tariff_edit()")
        op.execute("CREATE TRIGGER tariff_versions_no_truncate BEFORE TRUNCATE ON tariff_versions "
                   "FOR EACH STATEMENT EXECUTE FUNCTION refuse_change()")
        return
    op.execute(f"CREATE TRIGGER tariff_versions_no_edit BEFORE UPDATE OF {', '.join(DOCUMENT_COLUMNS)} "
               "ON tariff_versions BEGIN SELECT RAISE(ABORT, 'TARIFF_IMMUTABLE: a tariff version is never edited; "
               "record a new version'); END")
    op.execute("CREATE TRIGGER tariff_versions_no_delete BEFORE DELETE ON tariff_versions BEGIN SELECT "
               "RAISE(ABORT, 'TARIFF_IMMUTABLE: tariff versions are never deleted; withdraw one instead'); END")
    op.execute("CREATE TRIGGER tariff_versions_forward_only BEFORE UPDATE OF status ON tariff_versions "
               "WHEN OLD.status = 'withdrawn' OR (OLD.status = 'active' AND NEW.status NOT IN ('active', "
               "'withdrawn')) BEGIN SELECT RAISE(ABORT, 'TARIFF_IMMUTABLE: an active or withdrawn version "
               "does not go back'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS tariff_versions_immutable ON tariff_versions")
        op.execute("DROP TRIGGER IF EXISTS tariff_versions_no_truncate ON tariff_versions")
        op.execute("DROP FUNCTION IF EXISTS refuse_tariff_edit()")
        op.drop_constraint(op.f('fk_settlements_tariff_parent_version_id_tariff_versions'), 'settlements',
                           type_='foreignkey')
        op.drop_constraint(op.f('fk_tariff_versions_based_on_id_tariff_versions'), 'tariff_versions',
                           type_='foreignkey')
    else:
        for trigger in ("no_edit", "no_delete", "forward_only"):
            op.execute(f"DROP TRIGGER IF EXISTS tariff_versions_{trigger}")
    op.drop_table('tariff_schedule')
    with op.batch_alter_table('settlements') as batch:
        batch.drop_column('tariff_parent_version_id')
    with op.batch_alter_table('tariff_versions') as batch:
        for column in ('note', 'withdrawn_at', 'withdrawn_by', 'activated_at', 'activated_by', 'approved_at',
                       'approved_by', 'created_by', 'based_on_id', 'origin', 'status', 'inherits'):
            batch.drop_column(column)
