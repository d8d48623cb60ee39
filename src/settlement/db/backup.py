"""Backups that restore: `settlement db backup`.

- PostgreSQL: `pg_dump --format=custom`, one consistent snapshot of the database taken while it serves (settlements
  go on meanwhile); with `base`, also a base backup (`pg_basebackup`, tar, compressed, with the WAL it needs), the
  starting point of a point-in-time recovery from the archived WAL (deploy/README.md, Backups that restore).
- SQLite (the embedded default): SQLite's online backup API, a consistent copy made while writers go on.

Every backup gets a manifest (what, when, schema revision, each file's size and sha256). The key files
(data_dir/secret.key and data_dir/credentials.key) are never written beside the database's backup: the credentials
key decrypts the hospitals' SOAP passwords stored in the database, so a copy of both together is a copy of every
password. They are copied, when asked, to a folder of their own (`keys_out`), which must not lie inside the
database backup's folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from settlement.config import Settings
from settlement.db.aiopool import conninfo_of

KEY_FILES = ("secret.key", "credentials.key")


class BackupError(Exception):
    pass


@dataclass
class Backup:
    folder: Path
    files: list[Path] = field(default_factory=list)
    keys: list[Path] = field(default_factory=list)
    manifest: Path | None = None
    notes: list[str] = field(default_factory=list)


def backup(settings: Settings, out: Path, at: datetime, *, keys_out: Path | None = None,
           base: bool = False) -> Backup:
    """A backup of the database in `out` (a folder made for it, named by the time), its manifest, and the key
    files copied to `keys_out` if given."""
    out = out.resolve()
    if keys_out is not None and keys_out.resolve().is_relative_to(out):
        raise BackupError("the key files must not be kept with the database's backup: choose a --keys-out folder "
                          "outside --out")
    stamp = f"{at:%Y%m%dT%H%M%SZ}"
    folder = out / f"settlement-{stamp}"
    folder.mkdir(parents=True, exist_ok=False)
    made = Backup(folder)
    url = settings.database_url
    if make_url(url).get_backend_name() == "sqlite":
        made.files.append(_sqlite(url, folder / "settlement.sqlite3"))
    else:
        made.files.append(_pg_dump(url, folder / "settlement.dump"))
        if base:
            made.files.append(_pg_basebackup(url, folder / "base"))
    if keys_out is not None:
        made.keys = _keys(settings, keys_out / f"keys-{stamp}", made.notes)
    else:
        made.notes.append("key files not copied (--keys-out): keep secret.key and credentials.key (or the "
                          "SETTLEMENT_SECRET_KEY and SETTLEMENT_CREDENTIALS_KEY settings) safe apart from this")
    made.manifest = folder / "manifest.json"
    made.manifest.write_text(json.dumps({
        "taken_at": at.isoformat(), "database": make_url(url).render_as_string(hide_password=True),
        "schema_revision": _revision(url), "files": [_described(path, folder) for path in made.files],
        "keys_kept_apart": [str(path) for path in made.keys], "notes": made.notes}, indent=2, ensure_ascii=False),
        encoding="utf-8")
    return made


def _sqlite(url: str, target: Path) -> Path:
    source_path = make_url(url).database
    if not source_path or source_path == ":memory:":
        raise BackupError("an in-memory database has nothing to back up")
    source = sqlite3.connect(source_path, timeout=30)
    try:
        copy = sqlite3.connect(target)
        try:
            source.backup(copy, pages=1024)  # in steps: writers are held up for a step, never for the whole copy
        finally:
            copy.close()
    finally:
        source.close()
    return target


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """The connection string without its password, and the environment that carries the password (a command
    line is visible to every user of the host)."""
    parts = conninfo_to_dict(conninfo_of(url))
    password = parts.pop("password", None)
    environment = dict(os.environ)
    if password:
        environment["PGPASSWORD"] = str(password)
    return make_conninfo(**{name: str(value) for name, value in parts.items()}), environment


def _program(name: str) -> str:
    """A PostgreSQL client program: SETTLEMENT_PG_BIN/<name>, else the newest server's, else from PATH."""
    configured = os.environ.get("SETTLEMENT_PG_BIN")
    candidates = [Path(configured) / name] if configured else []
    candidates += sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
                         key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0, reverse=True)
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} is not installed (the PostgreSQL client programs)")
    return found


def _pg_dump(url: str, target: Path) -> Path:
    conninfo, environment = _libpq(url)
    # The program is a PostgreSQL client found by _program; the arguments are ours, passed without a shell.
    done = subprocess.run([_program("pg_dump"), "--format=custom", "--no-owner", "--file", str(target),  # noqa: S603
                           "--dbname", conninfo], env=environment, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BackupError(f"pg_dump failed: {done.stderr.strip()[:500]}")
    return target


def _pg_basebackup(url: str, target: Path) -> Path:
    conninfo, environment = _libpq(url)
    done = subprocess.run([_program("pg_basebackup"), "--format=tar", "--gzip", "--wal-method=fetch",  # noqa: S603
                           "--checkpoint=fast", "--pgdata", str(target), "--dbname", conninfo], env=environment,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BackupError(f"pg_basebackup failed (the role needs REPLICATION): {done.stderr.strip()[:500]}")
    return target


def _keys(settings: Settings, target: Path, notes: list[str]) -> list[Path]:
    target.mkdir(parents=True, mode=0o700)
    target.chmod(0o700)
    copied = []
    for name, setting in zip(KEY_FILES, ("secret_key", "credentials_key"), strict=True):
        if getattr(settings, setting):
            notes.append(f"{name}: set in SETTLEMENT_{setting.upper()}, not in a file: keep that setting safe")
            continue
        source = settings.data_dir / name
        if not source.exists():
            notes.append(f"{name}: none in {settings.data_dir}")
            continue
        copy = target / name
        descriptor = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(source.read_bytes())
        copied.append(copy)
    return copied


def _revision(url: str) -> str | None:
    engine = create_engine(url) if make_url(url).get_backend_name() == "sqlite" else None
    if engine is None:
        import psycopg

        conninfo = conninfo_of(url)
        engine = create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(conninfo))
    try:
        with engine.connect() as connection:
            revision: str | None = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
            return revision
    finally:
        engine.dispose()


def _described(path: Path, folder: Path) -> dict[str, Any]:
    if path.is_dir():
        return {"path": str(path.relative_to(folder)), "files": [
            _described(inner, folder) for inner in sorted(path.iterdir())]}
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return {"path": str(path.relative_to(folder)), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}
