"""Throwaway PostgreSQL clusters on this machine, for what the shared server cannot be put through: killed,
frozen, restarted, replicated to a standby and promoted. Each has a port and a data folder of its own in a temporary
folder, removed afterwards. PostgreSQL refuses to run as root: as root the commands run as the postgres OS user
(runuser), who then owns the folder.

Used by the failover and backup tests and by the fault run (benchmarks/chaos.py)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

import psycopg


def bin_dir() -> Path | None:
    """The newest PostgreSQL server's binaries (/usr/lib/postgresql/<version>/bin), or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda path: int(path.parts[-3])
                   if path.parts[-3].isdigit() else 0)
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def available() -> bool:
    if bin_dir() is None:
        return False
    return os.geteuid() != 0 or _postgres_user() is not None


def _postgres_user() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Cluster:
    """One PostgreSQL cluster: `Cluster.create(...)`, or `primary.standby(...)`, then start/stop/kill/pause."""

    def __init__(self, root: Path, name: str, port: int) -> None:
        self.root = root
        self.name = name
        self.port = port
        self.data = root / name
        self.log = root / f"{name}.log"

    # Making one

    @classmethod
    def create(cls, root: Path, name: str = "primary", port: int | None = None,
               settings: dict[str, str] | None = None) -> Cluster:
        cluster = cls(root, name, port or free_port())
        cluster._run("initdb", "-D", str(cluster.data), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                     "--locale=C.UTF-8", "--no-sync")
        cluster.configure({"listen_addresses": "'127.0.0.1'", "port": str(cluster.port),
                           "unix_socket_directories": f"'{root}'", "fsync": "on", "wal_level": "replica",
                           "max_wal_senders": "5", "max_connections": "200", "shared_buffers": "64MB",
                           **(settings or {})})
        return cluster

    def standby(self, name: str = "standby", port: int | None = None, synchronous: bool = True,
                upstream_port: int | None = None) -> Cluster:
        """A streaming replica of this (running) cluster, made by pg_basebackup; with `synchronous`, this cluster
        waits for it on every commit (synchronous_standby_names), so an acknowledged commit is on both.
        `upstream_port`: where the replica streams from (a proxy in front of this cluster), if not its port."""
        replica = Cluster(self.root, name, port or free_port())
        self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-D",
                  str(replica.data), "-X", "stream", "-R", "--checkpoint=fast", "--no-sync")
        replica.configure({"port": str(replica.port), "primary_conninfo":
                           f"'host=127.0.0.1 port={upstream_port or self.port} user=postgres "
                           f"application_name={name}'"})
        if synchronous:
            self.configure({"synchronous_standby_names": f"'{name}'"})
            self.reload()
        return replica

    def configure(self, settings: dict[str, str]) -> None:
        with (self.data / "postgresql.auto.conf").open("a", encoding="utf-8") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    # Running it

    def start(self, wait: bool = True) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), *(["-w"] if wait else ["-W"]), "start")
        if wait:
            self.wait_ready()

    def wait_ready(self, within: float = 60) -> None:
        deadline = time.monotonic() + within
        while True:
            try:
                with psycopg.connect(self.url(), connect_timeout=2) as connection:
                    connection.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        if self.pid() is not None:
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def reload(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "reload")

    def promote(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "promote")

    def pid(self) -> int | None:
        """The postmaster's process id, while it runs."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 0)
        except (OSError, ValueError, IndexError):
            return None
        return pid

    def processes(self) -> list[int]:
        """The postmaster and its children (backends, checkpointer, WAL sender...)."""
        pid = self.pid()
        if pid is None:
            return []
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            children = []
        return [pid, *(int(child) for child in children)]

    def kill(self) -> None:
        """A crash: SIGKILL to the postmaster and every child at once (nothing flushed, nothing said)."""
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.05)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP to every process): connections stay open, nothing answers."""
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A PostgreSQL program (pg_dump, psql...) run as the cluster's owner."""
        return self._run(program, *args, check=check)

    def _run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        binaries = bin_dir()
        assert binaries is not None, "no PostgreSQL binaries on this machine"
        return subprocess.run(as_owner([str(binaries / program), *args]), capture_output=True, text=True,
                              check=check, timeout=300)


def as_owner(command: Sequence[str]) -> list[str]:
    """The command as the postgres OS user when run as root (PostgreSQL refuses root), else as it is."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return list(command)


class Clusters:
    """A temporary folder for clusters, every cluster in it stopped and the folder removed at the end."""

    def __init__(self, prefix: str = "settlement-pg-") -> None:
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        user = _postgres_user()
        if os.geteuid() == 0 and user is not None:
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.root.chmod(0o700)
        self.clusters: list[Cluster] = []

    def create(self, name: str = "primary", settings: dict[str, str] | None = None) -> Cluster:
        cluster = Cluster.create(self.root, name, settings=settings)
        self.clusters.append(cluster)
        return cluster

    def standby_of(self, primary: Cluster, name: str = "standby", synchronous: bool = True,
                   upstream_port: int | None = None) -> Cluster:
        replica = primary.standby(name, synchronous=synchronous, upstream_port=upstream_port)
        self.clusters.append(replica)
        return replica

    def close(self) -> None:
        for cluster in self.clusters:
            cluster.resume()
            cluster.stop("immediate")
            if cluster.pid() is not None:
                cluster.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Clusters:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


@contextlib.contextmanager
def clusters() -> Iterator[Clusters]:
    with Clusters() as made:
        yield made
