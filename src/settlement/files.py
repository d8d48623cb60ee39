"""The service's own files are its own: folders it creates are 0700, files 0600 (the SQLite database and its -wal
and -shm, the secrets, the reports, the inbox). The command line also sets the umask to 077 when it starts, so
that anything else it creates is private too."""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_UMASK = 0o077
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def restrict_umask() -> None:
    os.umask(PRIVATE_UMASK)


def private_dir(path: Path) -> Path:
    """`path`, with every missing folder on the way created 0700 (folders that exist keep their mode)."""
    missing: list[Path] = []
    folder = path
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:  # made meanwhile by another process
            continue
        folder.chmod(PRIVATE_DIR)  # mkdir's mode passes through the umask, which may be looser
    return path


def write_private(path: Path, data: str | bytes) -> None:
    """A file created readable by its owner only (never briefly readable by others)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data.encode("utf-8") if isinstance(data, str) else data)
    path.chmod(PRIVATE_FILE)  # an existing file keeps its old mode through O_CREAT


def private_sqlite_file(database: Path) -> None:
    """The SQLite database file created 0600 before SQLite opens it (SQLite then gives its -wal and -shm the same
    mode); a database made earlier with a looser mode, and its -wal and -shm, are set to 0600."""
    private_dir(database.parent)
    if not database.exists():
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE))  # an empty file is an empty database
    for path in (database, database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm")):
        try:
            if path.stat().st_mode & 0o777 != PRIVATE_FILE:
                path.chmod(PRIVATE_FILE)
        except (FileNotFoundError, PermissionError):  # gone, or another user's file: leave it as it is
            continue
