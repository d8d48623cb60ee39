"""The large documents of every settlement and SOAP exchange (the claim as received, the reply with its trace, the
envelopes in and out) are compressed with lz4 instead of pglz on PostgreSQL: a settlement's reply (some 8 KB) is
written once per settlement, and lz4 compresses it at several times pglz's speed for a little more space (on the
service benchmark, 15% less database CPU per settlement). Values already stored keep their compression until
rewritten (never, for these append-only tables); both are read alike. A server built without lz4 keeps pglz.
SQLite has nothing to change.

Also records a settlement's answer to its key once: from this revision the key's record of a settlement keeps an
empty response and the settlement's own reply is replayed (no schema change; earlier records keep their copy).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

DOCUMENTS = {"settlements": ("claim", "result"), "soap_exchanges": ("request", "reply")}


def _lz4_available() -> bool:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return False
    values = bind.exec_driver_sql(
        "SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'").scalar()
    return "lz4" in (values or ())


def _set_compression(method: str) -> None:
    for table, columns in DOCUMENTS.items():
        changes = ", ".join(f"ALTER COLUMN {column} SET COMPRESSION {method}" for column in columns)
        op.execute(f"ALTER TABLE {table} {changes}")


def upgrade() -> None:
    if _lz4_available():
        _set_compression("lz4")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _set_compression("DEFAULT")
