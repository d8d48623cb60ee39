"""`settlement db backup`: the database's backup, and the key files kept apart (settlement.db.backup)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from settlement.cli.main import console, db_app, errors

EXIT_BACKUP_FAILED = 6


@db_app.command("backup")
def db_backup(
    out: Annotated[Path, typer.Option("--out", help="folder for the database's backup (a dated folder is made in it)")],
    keys_out: Annotated[Path | None, typer.Option(
        "--keys-out", help="folder for copies of secret.key and credentials.key: never inside --out")] = None,
    base: Annotated[bool, typer.Option(
        "--base", help="PostgreSQL: also a base backup, for point-in-time recovery with archived WAL")] = False,
) -> None:
    """Back up SETTLEMENT_DATABASE_URL while the service runs: pg_dump (custom format) on PostgreSQL, the online
    backup API on SQLite; a manifest with each file's sha256. Restore: deploy/README.md (Backups that restore)."""
    from settlement.bootstrap import utc_now
    from settlement.config import Settings
    from settlement.db.backup import BackupError, backup

    try:
        made = backup(Settings(), out, utc_now(), keys_out=keys_out, base=base)
    except (BackupError, OSError) as error:
        errors.print(f"[bold red]BACKUP_FAILED[/]: {escape(str(error))}", highlight=False)
        raise typer.Exit(EXIT_BACKUP_FAILED) from None
    for path in made.files:
        console.print(f"database: {path}", highlight=False, markup=False)
    console.print(f"manifest: {made.manifest}", highlight=False, markup=False)
    for path in made.keys:
        console.print(f"key file (kept apart): {path}", highlight=False, markup=False)
    for note in made.notes:
        console.print(f"note: {note}", highlight=False, markup=False)
