"""The fault run (issue 20): many clients settle over REST while the service and its database are hurt, then every
call whose outcome was unknown is resolved under its key and the money invariants are checked from the database.

The run starts a PostgreSQL cluster of its own (so that it can crash, restart and freeze it; tests/pgcluster.py)
and `settlement serve --workers 2` on it, with the tariff's annual caps lowered so that they bind. 56 clients settle
bills for 24 persons of the roster; every fifth call of a client gives up after 2 s (a client timeout). Meanwhile,
spread over the run: a server worker killed with SIGKILL (twice), every backend of the service terminated
(pg_terminate_backend, twice), the database crashed (SIGKILL to all its processes) and restarted, and frozen
(SIGSTOP) for 5 s then thawed. Afterwards every uncertain call (no answer, or 503) is resent, same body, same key,
until it has an answer, and the invariants are checked (tests/invariants.py): nothing acknowledged lost, every key
settled once, nothing paid twice, no cap passed, the year figures equal the ledger, every 503 with Retry-After, no
500. The server's log is read for errors too: an unexpected error is a finding, a client's disconnect is not.

`--plant new-keys` is the planted fault: the clients resend uncertain calls under new keys (as new money) and
their client timeout is far shorter; the check must find bills paid twice, and the run then succeeds only if it did.

Run: `make chaos` (50 s), `.venv/bin/python -m benchmarks.chaos --seconds 30` (CI), `--plant new-keys`.
Exit status: 0 when every invariant holds (with --plant: when the planted fault was caught), 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from tests import pgcluster
from tests.invariants import Calls, bill, load, problems
from tests.service.conftest import claim_body, new_id_number, roster_csv
from tests.service.test_concurrency import ASSISTANCE, ASSISTANCE_CAP_DIBAO, BASIC, BASIC_CAP, capped_tariffs

from settlement.bootstrap import SYSTEM, build, prepare
from settlement.config import Settings
from settlement.services.admin import add_hospital
from settlement.services.roster import import_roster

SETTLEMENT = str(Path(sys.executable).parent / "settlement")
CAPS = {BASIC: BASIC_CAP, ASSISTANCE: ASSISTANCE_CAP_DIBAO}
PERSONS = 24
HOSPITAL = "HCHAOS000001"
# The service's own line for a bug ("unexpected KeyError while handling a request"), not a driver's words.
UNEXPECTED = re.compile(r"\bunexpected [A-Z]\w* while\b")


@dataclass
class Faults:
    """What was done to the service and the database, and when (seconds into the load)."""

    done: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def note(self, what: str) -> None:
        line = f"{time.monotonic() - self.started:5.1f} s  {what}"
        self.done.append(line)
        print(f"  {line}", flush=True)


def workers(server: subprocess.Popen[bytes]) -> list[int]:
    """The live worker processes of `settlement serve --workers N` (its spawned children)."""
    try:
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    except OSError:
        return []
    alive = []
    for pid in children:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"spawn_main" in command and state != "Z":
            alive.append(int(pid))
    return alive


def kill_a_worker(server: subprocess.Popen[bytes], faults: Faults) -> None:
    alive = workers(server)
    if alive:
        victim = random.choice(alive)
        os.kill(victim, signal.SIGKILL)
        faults.note(f"worker {victim} killed (SIGKILL)")


def terminate_backends(cluster: pgcluster.Cluster, faults: Faults) -> None:
    with psycopg.connect(cluster.url("settlement"), autocommit=True) as connection:
        row = connection.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = "
                                 "'settlement' AND pid <> pg_backend_pid()").fetchone()
    faults.note(f"{row[0] if row else 0} backends terminated (pg_terminate_backend)")


def crash_and_restart(cluster: pgcluster.Cluster, faults: Faults, down: float = 2.0) -> None:
    cluster.kill()
    faults.note("database crashed (SIGKILL to every PostgreSQL process)")
    time.sleep(down)
    cluster.start()
    faults.note("database restarted (crash recovery done)")


def pause(cluster: pgcluster.Cluster, faults: Faults, seconds: float = 5.0) -> None:
    cluster.pause()
    faults.note(f"database frozen (SIGSTOP) for {seconds:g} s")
    time.sleep(seconds)
    cluster.resume()
    faults.note("database thawed (SIGCONT)")


def schedule(seconds: float) -> list[tuple[float, str]]:
    """When each fault strikes, as fractions of the run: the same shape for a short run and a long one."""
    return [(0.10, "worker"), (0.22, "backends"), (0.34, "crash"), (0.55, "pause"), (0.78, "worker"),
            (0.88, "backends")]


def serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        server = subprocess.Popen([SETTLEMENT, "serve", "--port", str(port), "--workers", "2"], env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while len(workers(server)) < 2 or not _answers(f"http://127.0.0.1:{port}/health/ready"):
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the service did not start: see {log}")
        time.sleep(0.2)
    return server


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def setting_up(cluster: pgcluster.Cluster, tmp: Path, tariffs: Path) -> tuple[str, list[str], dict[str, str]]:
    """The schema, the tariffs, a hospital and its key, and the roster: (API key, persons, the service's env)."""
    url = cluster.create_database("settlement")
    secret = secrets.token_urlsafe(48)
    env = {name: value for name, value in os.environ.items() if not name.startswith("SETTLEMENT_")}
    env.update({"SETTLEMENT_DATABASE_URL": url, "SETTLEMENT_TARIFFS": str(tariffs),
                "SETTLEMENT_SECRET_KEY": secret, "SETTLEMENT_DATA_DIR": str(tmp / "data"),
                "SETTLEMENT_DB_POOL_SIZE": "8"})
    application = build(Settings(database_url=url, tariffs_dir=tariffs, secret_key=secret, data_dir=tmp / "data"))
    try:
        prepare(application)
        key = add_hospital(application.context, HOSPITAL, "故障演练医院", "county", "611002", "chaos")
        persons = [new_id_number() for _ in range(PERSONS)]
        import_roster(application.context, SYSTEM, "chaos.csv",
                      roster_csv([(person, "dibao_rural_a", "2024-01-01", "") for person in persons]))
    finally:
        application.dispose()
    return key, persons, env


def run(seconds: float, clients: int, plant: str | None, keep: bool) -> int:
    if not pgcluster.available():
        print("no PostgreSQL server binaries to start a cluster with", file=sys.stderr)
        return 1
    planted = plant == "new-keys"
    print(f"fault run: {clients} clients, {seconds:g} s of load" + (" (planted fault: uncertain calls resent under "
                                                                     "new keys)" if planted else ""), flush=True)
    made = pgcluster.Clusters(prefix="settlement-chaos-")
    server: subprocess.Popen[bytes] | None = None
    try:
        tmp = made.root
        cluster = made.create(settings={"max_connections": "300"})
        cluster.start()
        tariffs = capped_tariffs(Path(tempfile_dir(tmp)))
        api_key, persons, env = setting_up(cluster, Path(tempfile_dir(tmp)), tariffs)
        port = pgcluster.free_port()
        log = Path(tempfile_dir(tmp)) / "serve.log"
        server = serve(env, port, log)
        base = f"http://127.0.0.1:{port}"
        print(f"  PostgreSQL cluster on port {cluster.port}; settlement serve --workers 2 on port {port}", flush=True)
        calls = Calls(new_key_on_resend=planted)
        patience = 0.05 if planted else 2.0

        def client(timeout: float = 15.0) -> Callable[[], httpx.Client]:
            return lambda: httpx.Client(base_url=base, headers={"Authorization": f"Bearer {api_key}"},
                                        timeout=timeout, limits=httpx.Limits(max_keepalive_connections=1))

        def make(index: int, number: int) -> tuple[str, dict[str, Any]]:
            key = f"C{index:02d}-{number:05d}-{secrets.token_hex(3)}"
            person = persons[(index * 7 + number) % len(persons)]
            return key, bill(HOSPITAL, person, key, number, claim_body)

        stop = threading.Event()
        faults = Faults()
        threads = load(calls, client(), make, clients, stop, timeout_every=5, timeout_client=client(patience))
        try:
            for at, fault in schedule(seconds):
                time.sleep(max(0.0, faults.started + at * seconds - time.monotonic()))
                if fault == "worker":
                    kill_a_worker(server, faults)
                elif fault == "backends":
                    terminate_backends(cluster, faults)
                elif fault == "crash":
                    crash_and_restart(cluster, faults)
                else:
                    pause(cluster, faults)
            time.sleep(max(0.0, faults.started + seconds - time.monotonic()))
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
        loaded = time.monotonic() - faults.started
        during_load = dict(calls.statuses)
        sent = len(calls.bodies)
        uncertain = len(calls.uncertain)
        resolving = time.monotonic()
        resent = calls.resolve(client(30.0), within=180)
        resolved_in = time.monotonic() - resolving
        found = problems(cluster.url("settlement"), HOSPITAL, calls, CAPS)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        logged = log.read_text(encoding="utf-8", errors="replace")
        unexpected = [line for line in logged.splitlines() if UNEXPECTED.search(line) or "Traceback" in line]
        found += [f"log: {line}" for line in unexpected]
        with psycopg.connect(cluster.url("settlement")) as connection:
            rows = connection.execute("SELECT (SELECT count(*) FROM settlements), (SELECT count(*) FROM "
                                      "ledger_entries), (SELECT count(*) FROM idempotency_records)").fetchone()
        report(calls, during_load, loaded, sent, uncertain, resent, resolved_in, rows, logged, found)
        if planted:
            caught = any(problem.startswith("paid twice") for problem in found)
            print(f"planted fault {'caught' if caught else 'NOT caught'}: "
                  f"{sum(problem.startswith('paid twice') for problem in found)} bills paid twice", flush=True)
            return 0 if caught else 1
        return 0 if not found else 1
    finally:
        if server is not None and server.poll() is None:
            server.kill()
            server.wait()
        if keep:
            print(f"kept: {made.root} and {tempfile_dir(made.root)}")
        else:
            made.close()
            shutil.rmtree(tempfile_dir(made.root), ignore_errors=True)


def tempfile_dir(root: Path) -> str:
    """A folder of the run's own beside the clusters (readable by this user)."""
    folder = Path(f"{root}-work")
    folder.mkdir(exist_ok=True)
    return str(folder)


def report(calls: Calls, during_load: dict[str, int], loaded: float, sent: int, uncertain: int, resent: int,
           resolved_in: float, rows: Any, logged: str, found: list[str]) -> None:
    print(f"load: {loaded:.1f} s, {sum(during_load.values())} calls answered or not ({sent} keys), "
          f"{during_load.get('201', 0) / loaded:.0f} settlements/s")
    for status, count in sorted(during_load.items(), key=lambda item: -item[1]):
        print(f"  {status:32} {count:6}")
    after = {status: count - during_load.get(status, 0) for status, count in calls.statuses.items()
             if count != during_load.get(status, 0)}
    print(f"resolution: {uncertain} calls uncertain at the end of the load, {resent} resends in {resolved_in:.1f} s: "
          + ", ".join(f"{status} {count}" for status, count in sorted(after.items())))
    print(f"database: {rows[0]} settlements, {rows[1]} ledger entries, {rows[2]} answers kept under keys")
    print(f"acknowledged (201) in all: {len(calls.acknowledged)}; 503 without Retry-After: "
          f"{calls.without_retry_after}; 500: {len(calls.server_errors)}")
    print(f"server log: {logged.count('client disconnected')} client disconnects (info), "
          f"{sum(bool(UNEXPECTED.search(line)) for line in logged.splitlines())} unexpected errors")
    checks = ["nothing acknowledged lost", "every key settled once", "nothing paid twice", "no cap passed",
              "year figures equal the ledger", "every 503 with Retry-After, no 500", "no unexpected error logged"]
    prefixes = [("lost:", "changed:"), ("twice:", "unresolved:"), ("paid twice",), ("cap:",), ("figures:",),
                ("retry-after:", "500:"), ("log:",)]
    for name, kinds in zip(checks, prefixes, strict=True):
        failing = [problem for problem in found if problem.startswith(kinds)]
        print(f"  {'ok  ' if not failing else 'FAIL'} {name}" + (f": {len(failing)}, e.g. {failing[0]}"
                                                                 if failing else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=50.0, help="how long the load runs (default 50)")
    parser.add_argument("--clients", type=int, default=56, help="concurrent clients (default 56)")
    parser.add_argument("--plant", choices=["new-keys"], help="the planted fault, which the check must catch")
    parser.add_argument("--keep", action="store_true", help="keep the cluster's folder and the server's log")
    arguments = parser.parse_args()
    return run(arguments.seconds, arguments.clients, arguments.plant, arguments.keep)


if __name__ == "__main__":
    sys.exit(main())
