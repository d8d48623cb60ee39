"""Service benchmark: settlements per second through the REST API on PostgreSQL, 32 concurrent clients.

Beside it, in the same run and on the same stack, the baseline: a bare endpoint inserting one row in one
transaction, the way the service reaches the database (benchmarks/bare_app.py: an async endpoint, the service's
asyncio connection pool, BEGIN, INSERT and COMMIT pipelined). Both servers are up together and loaded in turn, in
slices of a few seconds, so that the machine's drift falls on both alike. Prints throughput, p50 and p99 latency
of each, the ratio, and the ratio slice by slice. Targets (issue 3): settle at least half the baseline's
throughput, p99 under 50 ms.

Run: `.venv/bin/python benchmarks/bench_service.py [--seconds 20 --slice 5 --clients 32 --workers 2 --floor]`
(`--floor` also loads benchmarks/floor_app.py: the settlement's database work alone, nothing computed). It creates and
drops its own database on the PostgreSQL server named by SETTLEMENT_BENCH_PG (default
postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import copy
import http.client
import itertools
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("SETTLEMENT_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def bench_database() -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL database for one benchmark run, dropped after it; yields the service's environment."""
    name = f"settlement_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    data_dir = ROOT / "var" / "bench"
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield {**os.environ, "SETTLEMENT_DATABASE_URL": PG_ADMIN.rsplit("/", 1)[0] + f"/{name}",
               "SETTLEMENT_TARIFFS": str(ROOT / "tariffs"), "SETTLEMENT_SECRET_KEY": secrets.token_urlsafe(48),
               "SETTLEMENT_DATA_DIR": str(data_dir), "SETTLEMENT_DB_POOL_SIZE": "20", "PYTHONPATH": str(ROOT)}
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def admin_key(env: dict[str, str]) -> str:
    """The first administrator's key, made as an operator makes it on a new database (no key needed yet)."""
    added = subprocess.run([sys.executable, "-m", "settlement.cli.main", "keys", "add", "admin", "bench"], env=env,
                           check=True, capture_output=True, text=True)
    return added.stdout.strip().split()[-1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(factory: str, env: dict[str, str], workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", factory, "--factory", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers), "--log-level", "warning", "--no-access-log", "--backlog", "2048"],
        env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/docs", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{factory} did not start")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


Builder = Callable[[int], tuple[bytes, dict[str, str]]]
# One sequence for the whole run: a transaction id is never sent twice, whichever slice sends it.
REQUEST_NUMBERS = itertools.count()
BASELINE = "baseline (bare insert, async)"
FLOOR = "floor (database work only)"


def drive(url: str, path: str, build: Builder, expected: int, clients: int,
          seconds: float, warmup: float) -> dict[str, Any]:
    """`clients` threads, each a keep-alive connection sending one request after another (http.client: the
    cheapest Python client, so that the load generator takes little of the machine's two cores). `build(n)` gives
    the n-th request's body and headers."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors: list[int] = []
    counter = REQUEST_NUMBERS
    start_at = time.perf_counter()
    measure_from = start_at + warmup
    stop_at = measure_from + seconds

    def worker() -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        mine: list[float] = []
        while True:
            if time.perf_counter() >= stop_at:
                break
            body, headers = build(next(counter))
            sent = time.perf_counter()
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            done = time.perf_counter()
            if response.status != expected:
                errors.append(response.status)
                if len(errors) <= 3:
                    print(f"  unexpected {response.status}: {payload[:300]!r}", file=sys.stderr)
            elif sent >= measure_from and done <= stop_at:
                mine.append(done - sent)
        connection.close()
        latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {**figures(latencies, seconds), "errors": len(errors)}


def figures(latencies: list[float], seconds: float) -> dict[str, Any]:
    """Throughput, p50 and p99 of requests measured over `seconds`."""
    latencies = sorted(latencies)
    count = len(latencies)
    return {
        "rps": count / seconds if seconds else 0.0,
        "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": 1000 * latencies[min(count - 1, int(count * 0.99))] if latencies else float("nan"),
        "count": count,
        "latencies": latencies,
    }


def combined(slices: list[dict[str, Any]], seconds_each: float) -> dict[str, Any]:
    """The figures of several slices of one target's load, as if measured in one; `rounds`: each slice's rate."""
    every = [latency for one in slices for latency in one["latencies"]]
    return {**figures(every, seconds_each * len(slices)), "errors": sum(one["errors"] for one in slices),
            "rounds": [one["rps"] for one in slices]}


def rest_requests(bodies: list[dict[str, Any]], headers: dict[str, str]) -> Builder:
    """The n-th JSON settle request: the bodies in turn, each with a new transaction id."""
    encoded = [json.dumps(body, ensure_ascii=False) for body in bodies]
    all_headers = {"Content-Type": "application/json", **headers}

    def build(number: int) -> tuple[bytes, dict[str, str]]:
        text = encoded[number % len(encoded)].replace('"transaction_id": "', f'"transaction_id": "B{number:09d}', 1)
        return text.encode("utf-8"), all_headers

    return build


def load(url: str, path: str, bodies: list[dict[str, Any]], headers: dict[str, str], clients: int,
         seconds: float, warmup: float) -> dict[str, Any]:
    return drive(url, path, rest_requests(bodies, headers), 201, clients, seconds, warmup)


def measure_interleaved(targets: tuple[tuple[str, str, str, dict[str, str]], ...], env: dict[str, str],
                        bodies: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Every server is started at once (an idle one costs nothing) and they are loaded in turn, a slice of
    `--slice` seconds each, until each had `--seconds`: the machine's speed drifts by a third within a minute
    on these shared cores, and a baseline measured minutes before the settlements would carry that drift into
    the ratio. Per target: throughput over all its slices, p50 and p99 over all its requests, and the ratio of
    each round, to show the spread."""
    started = [start(factory, env, args.workers) for _, factory, _, _ in targets]
    try:
        for (_, _, path, headers), (_, url) in zip(targets, started, strict=True):
            load(url, path, bodies, headers, args.clients, 0.0, args.warmup)
        rounds = max(1, round(args.seconds / args.slice))
        slices: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _, _ in targets}
        for _ in range(rounds):
            for (label, _, path, headers), (_, url) in zip(targets, started, strict=True):
                slices[label].append(load(url, path, bodies, headers, args.clients, args.slice, 0.5))
    finally:
        for process, _ in started:
            stop(process)
    return {label: combined(measured, args.slice) for label, measured in slices.items()}


def patient_bodies(persons: int) -> list[dict[str, Any]]:
    """The example bill for `persons` distinct patients."""
    from settlement.domain.idcard import check_character

    template = json.loads((ROOT / "examples/requests/settle-dibao-county.json").read_text(encoding="utf-8"))
    bodies = []
    for index in range(persons):
        body = copy.deepcopy(template)
        first17 = f"611002{1950 + index % 50}0101{index // 50:03d}"
        body["claim"]["patient"]["id_number"] = first17 + check_character(first17)
        bodies.append(body)
    return bodies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20, help="measured per target, in slices")
    parser.add_argument("--slice", type=float, default=5, help="seconds of one target's load before the next's")
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--persons", type=int, default=2000, help="distinct patients the bills are spread over")
    parser.add_argument("--floor", action="store_true",
                        help="also load benchmarks/floor_app.py: a settlement's database work with nothing computed")
    args = parser.parse_args()

    with bench_database() as env:
        # Both servers stay up together (measure_interleaved): 20 connections per server, shared among its
        # workers, as with one worker.
        env["SETTLEMENT_DB_POOL_SIZE"] = str(max(4, 20 // args.workers))
        # Schema, tariffs, one hospital and its key, through the real commands.
        subprocess.run([sys.executable, "-m", "settlement.cli.main", "db", "upgrade"], env=env, check=True,
                       capture_output=True)
        env["SETTLEMENT_KEY"] = admin_key(env)  # the commands that record something act as a person
        added = subprocess.run([sys.executable, "-m", "settlement.cli.main", "hospitals", "add", "H61100200011",
                                "商州区人民医院", "--level", "county", "--region", "611002"], env=env, check=True,
                               capture_output=True, text=True)
        key = added.stdout.strip().split()[-1]
        with psycopg.connect(env["SETTLEMENT_DATABASE_URL"], autocommit=True) as connection:
            connection.execute(
                "CREATE TABLE IF NOT EXISTS bench_bare (id BIGSERIAL PRIMARY KEY, transaction_id TEXT NOT NULL, "
                "payload TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL)")
        bodies = patient_bodies(args.persons)
        auth = {"Authorization": f"Bearer {key}"}
        targets: tuple[tuple[str, str, str, dict[str, str]], ...] = (
            (BASELINE, "benchmarks.bare_app:create", "/bare", {}),
            ("settle", "settlement.api.asgi:create", "/v1/settlements", auth),
        )
        if args.floor:
            targets += ((FLOOR, "benchmarks.floor_app:create", "/floor", auth),)
        results = measure_interleaved(targets, env, bodies, args)

    print(f"{args.clients} concurrent clients, {args.workers} uvicorn workers, {args.seconds:.0f}s measured, "
          f"PostgreSQL, 24-line bills over {args.persons} patients")
    for label, figures in results.items():
        print(f"{label:34} {figures['rps']:8.1f} req/s   p50 {figures['p50_ms']:6.1f} ms   "
              f"p99 {figures['p99_ms']:6.1f} ms   errors {figures['errors']:.0f}")
    base, settle = results[BASELINE], results["settle"]
    ratio = settle["rps"] / base["rps"]
    print(f"ratio settle / baseline: {ratio:.2f} (target >= 0.50: {'met' if ratio >= 0.5 else 'NOT met'}); "
          f"settle p99 {settle['p99_ms']:.1f} ms (target < 50: {'met' if settle['p99_ms'] < 50 else 'NOT met'})")
    settle_rounds: list[float] = settle["rounds"]
    base_rounds: list[float] = base["rounds"]
    per_round = [f"{ours / theirs:.2f}" for ours, theirs in zip(settle_rounds, base_rounds, strict=True)]
    print(f"ratio settle / baseline slice by slice ({args.slice:.0f} s each, in turn): {', '.join(per_round)}")
    if FLOOR in results:
        floor_rounds: list[float] = results[FLOOR]["rounds"]
        print(f"ratio floor / baseline: {results[FLOOR]['rps'] / base['rps']:.2f}; slice by slice: "
              + ", ".join(f"{ours / theirs:.2f}" for ours, theirs in zip(floor_rounds, base_rounds, strict=True)))


if __name__ == "__main__":
    main()
