"""Keys and passwords get a life: hospitals can be disabled, a person holds one active key per role, and a
credentials generation moves on with every change to keys, hospitals, SOAP passwords and dialect bindings.

The generation is moved by triggers, so a change made by SQL (an operator revoking a key by hand) counts as much
as one made by a command: each worker re-reads it at most every half second and drops what it cached of older
generations, so a revocation or rotation reaches every worker within a second.

Before this revision one person could hold several active keys (`keys add` twice). The unique index needs one:
of each person's active keys the newest stays, the older ones are revoked, each with an audit row
("principal.revoke" by "system", reason "duplicate"). `settlement keys list --all` shows them.

Revision ID: 0007
Revises: 0008 (this branch was numbered before 0008 reached main; it now follows it)
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0008'
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
# The tables whose rows decide who may call, and what each change means for a cached answer.
WATCHED = {
    "principals": ("UPDATE", "DELETE"),  # a new key needs no bump: nothing cached it
    "hospitals": ("UPDATE", "DELETE"),  # disabled or enabled
    "soap_credentials": ("INSERT", "UPDATE", "DELETE"),  # a new password replaces the cached one
    "hospital_dialects": ("INSERT", "UPDATE", "DELETE"),
}


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.add_column('hospitals', sa.Column('disabled_at', TS, nullable=True))
    op.create_table(
        'credentials_generation',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('generation', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_credentials_generation')),
    )
    op.execute("INSERT INTO credentials_generation (id, generation) VALUES (1, 1)")
    _one_active_key_per_person()
    op.create_index('uq_principals_active_name', 'principals', ['kind', 'name'], unique=True,
                    postgresql_where=sa.text('revoked_at IS NULL'), sqlite_where=sa.text('revoked_at IS NULL'))
    if postgres:
        op.execute("""
            CREATE FUNCTION bump_credentials_generation() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                UPDATE credentials_generation SET generation = generation + 1 WHERE id = 1;
                RETURN NULL;
            END $$;
        """)
        for table, operations in WATCHED.items():
            op.execute(f"CREATE TRIGGER {table}_credentials_changed AFTER {' OR '.join(operations)} OR TRUNCATE "
                       f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION bump_credentials_generation()")
        return
    for table, operations in WATCHED.items():
        for operation in operations:
            op.execute(f"CREATE TRIGGER {table}_credentials_{operation.lower()} AFTER {operation} ON {table} "  # noqa: S608
                       "BEGIN UPDATE credentials_generation SET generation = generation + 1 WHERE id = 1; END")


def _one_active_key_per_person() -> None:
    bind = op.get_bind()
    duplicates = bind.execute(sa.text(
        "SELECT id, kind, name FROM principals p WHERE revoked_at IS NULL AND id < (SELECT MAX(id) FROM "
        "principals q WHERE q.kind = p.kind AND q.name = p.name AND q.revoked_at IS NULL) ORDER BY id")).all()
    if not duplicates:
        return
    now = datetime.now(UTC)
    stamp = now.replace(tzinfo=None) if bind.dialect.name == "sqlite" else now  # as the models store instants
    for key_id, kind, name in duplicates:
        bind.execute(sa.text("UPDATE principals SET revoked_at = :now WHERE id = :id").bindparams(
            sa.bindparam("now", type_=TS)), {"now": stamp, "id": key_id})
        bind.execute(sa.text("INSERT INTO audit_log (at, actor, action, entity, entity_id, details) VALUES "
                             "(:now, 'system', 'principal.revoke', 'principal', :id, :details)").bindparams(
            sa.bindparam("now", type_=TS)),
                     {"now": stamp, "id": str(key_id), "details": json.dumps(
                         {"kind": kind, "name": name, "reason": "duplicate: a newer active key of the same person "
                                                               "stays (migration 0007)"}, ensure_ascii=False)})


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in WATCHED:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_credentials_changed ON {table}")
        op.execute("DROP FUNCTION IF EXISTS bump_credentials_generation()")
    else:
        for table, operations in WATCHED.items():
            for operation in operations:
                op.execute(f"DROP TRIGGER IF EXISTS {table}_credentials_{operation.lower()}")
    op.drop_index('uq_principals_active_name', 'principals')
    op.drop_table('credentials_generation')
    with op.batch_alter_table('hospitals') as batch:
        batch.drop_column('disabled_at')
