"""Event-loop benchmark: the health check's latency while large legal SOAP messages are handled, on PostgreSQL.

On PostgreSQL the SOAP pipeline runs on the worker's event loop. A large message's parse, XSLT mappings, schema
check, reply and envelope-log masking took the loop for a quarter of a second at a time, so every other request
of that worker waited behind it (issue 15: health-check p99 from 5 ms to 253 ms while two clients sent 4,000-line
quotes). Messages above SETTLEMENT_SOAP_OFFLOAD_BYTES now do that work in a thread.

Two servers (one worker each) are up together: the service as configured, and the same service with the threshold
set past the body limit (everything on the loop: the old behaviour). Each is loaded in turn, in slices: `--senders`
clients send `--lines`-line quotes (standard dialect, a fresh WS-Security digest each) back to back while one
client asks GET /health every 10 ms. Printed per server: the health check's p50, p99 and worst latency, idle and
under load, and the quotes per second; then the ratio of the p99s under load.

Run: `.venv/bin/python -m benchmarks.bench_soap_loop [--seconds 20 --slice 5 --senders 2 --lines 4000]`.
It creates and drops its own database (SETTLEMENT_BENCH_PG, default postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import statistics
import threading
import time
from datetime import UTC, datetime

from benchmarks.bench_service import admin_key, bench_database, start, stop
from benchmarks.bench_soap import cli
from settlement.soap.wsse import DIGEST_TYPE, WSSE, WSU, password_digest

STANDARD = "urn:settlement:soap:v1"
LINE = ("<line><id>{n}</id><code>XJ01CAA010A001010101107</code><name>阿莫西林胶囊</name><quantity>1</quantity>"
        "<unitPrice>1.00</unitPrice><amount>1.00</amount></line>")
ON_THE_LOOP = str(64 * 1024 * 1024)  # past any body the service takes: nothing is offloaded


def quote_envelope(code: str, username: str, password: str, lines: int) -> bytes:
    nonce = os.urandom(16)
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = base64.b64encode(password_digest(nonce, created, password)).decode()
    header = (f'<soap:Header><wsse:Security xmlns:wsse="{WSSE}" xmlns:wsu="{WSU}"><wsse:UsernameToken>'
              f'<wsse:Username>{username}</wsse:Username><wsse:Password Type="{DIGEST_TYPE}">{digest}'
              f"</wsse:Password><wsse:Nonce>{base64.b64encode(nonce).decode()}</wsse:Nonce>"
              f"<wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security></soap:Header>")
    body = (f'<QuoteRequest xmlns="{STANDARD}"><claim><hospital><code>{code}</code><level>county</level></hospital>'
            "<visit><id>ZY-LOAD</id><type>inpatient</type><admissionDate>2024-03-02</admissionDate>"
            "<dischargeDate>2024-03-12</dischargeDate><settledAt>2024-03-12T10:15:00+08:00</settledAt></visit>"
            "<patient><idNumber>611002196804120038</idNumber><name>王喆</name><scheme>resident</scheme>"
            f"<region>611002</region></patient><lines>{''.join(LINE.format(n=n + 1) for n in range(lines))}"
            "</lines></claim></QuoteRequest>")
    return (f'<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/'
            f'envelope/">{header}<soap:Body>{body}</soap:Body></soap:Envelope>').encode()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] if ordered else float("nan")


def health_latencies(url: str, seconds: float, stop_flag: threading.Event | None = None) -> list[float]:
    """GET /health every 10 ms on one keep-alive connection, for `seconds`: the latencies, in ms."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    latencies: list[float] = []
    until = time.perf_counter() + seconds
    while time.perf_counter() < until and not (stop_flag is not None and stop_flag.is_set()):
        sent = time.perf_counter()
        connection.request("GET", "/health")
        response = connection.getresponse()
        response.read()
        latencies.append(1000 * (time.perf_counter() - sent))
        time.sleep(max(0.0, 0.010 - (time.perf_counter() - sent)))
    connection.close()
    return latencies


def loaded(url: str, code: str, password: str, args: argparse.Namespace) -> tuple[list[float], int, int]:
    """(health latencies, quotes answered, failures) over one slice with `--senders` clients quoting."""
    host, port = url.removeprefix("http://").split(":")
    done = threading.Event()
    answered: list[int] = []
    failures: list[int] = []

    def sender() -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        count = 0
        while not done.is_set():
            envelope = quote_envelope(code, code, password, args.lines)
            connection.request("POST", "/soap", body=envelope, headers={
                "Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{STANDARD}/Quote"'})
            response = connection.getresponse()
            payload = response.read()
            if response.status == 200 and b"QuoteResponse" in payload:
                count += 1
            else:
                failures.append(response.status)
                if len(failures) <= 2:
                    print(f"  unexpected {response.status}: {payload[:300]!r}")
        connection.close()
        answered.append(count)

    senders = [threading.Thread(target=sender) for _ in range(args.senders)]
    for thread in senders:
        thread.start()
    time.sleep(0.5)  # the senders' first messages are on their way
    latencies = health_latencies(url, args.slice)
    done.set()
    for thread in senders:
        thread.join()
    return latencies, sum(answered), len(failures)


def summary(latencies: list[float]) -> str:
    return (f"p50 {statistics.median(latencies):6.1f} ms  p99 {percentile(latencies, 0.99):6.1f} ms  "
            f"worst {max(latencies):6.1f} ms  ({len(latencies)} checks)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20, help="measured per server, in slices")
    parser.add_argument("--slice", type=float, default=5)
    parser.add_argument("--senders", type=int, default=2, help="clients sending large quotes at once")
    parser.add_argument("--lines", type=int, default=4000, help="lines of each quote")
    args = parser.parse_args()

    with bench_database() as env:
        cli(env, "db", "upgrade")
        env["SETTLEMENT_KEY"] = admin_key(env)  # the commands that record something act as a person
        code = "H61100200011"
        cli(env, "hospitals", "add", code, "商州区人民医院", "--level", "county", "--region", "611002")
        cli(env, "hospitals", "bind", code, "standard")
        password = cli(env, "hospitals", "soap-password", code).split()[-1]
        size = len(quote_envelope(code, code, password, args.lines))
        servers = {"offloaded (as configured)": start("settlement.api.asgi:create", env, 1),
                   "on the loop (old)": start("settlement.api.asgi:create",
                                              {**env, "SETTLEMENT_SOAP_OFFLOAD_BYTES": ON_THE_LOOP}, 1)}
        idle: dict[str, list[float]] = {label: [] for label in servers}
        busy: dict[str, list[float]] = {label: [] for label in servers}
        quotes: dict[str, int] = dict.fromkeys(servers, 0)
        failed: dict[str, int] = dict.fromkeys(servers, 0)
        try:
            for _, url in servers.values():  # warm-up: imports, compiled mappings, pools
                loaded(url, code, password, argparse.Namespace(**{**vars(args), "slice": 2.0}))
            for _ in range(max(1, round(args.seconds / args.slice))):
                for label, (_, url) in servers.items():
                    idle[label] += health_latencies(url, 1.0)
                    latencies, answered, failures = loaded(url, code, password, args)
                    busy[label] += latencies
                    quotes[label] += answered
                    failed[label] += failures
        finally:
            for process, _ in servers.values():
                stop(process)

    print(f"PostgreSQL, one uvicorn worker each; {args.senders} clients sending {args.lines}-line quotes "
          f"({size / 1024:.0f} KiB each) back to back; GET /health every 10 ms; {args.seconds:.0f} s each")
    for label in servers:
        print(f"{label:26} idle        {summary(idle[label])}")
        print(f"{'':26} under load  {summary(busy[label])}   quotes {quotes[label] / args.seconds:5.1f}/s  "
              f"failures {failed[label]}")
    ratio = percentile(busy["on the loop (old)"], 0.99) / percentile(busy["offloaded (as configured)"], 0.99)
    print(f"health p99 under load, on the loop / offloaded: {ratio:.1f}x")
    print(json.dumps({label: {"idle_p99_ms": round(percentile(idle[label], 0.99), 1),
                              "load_p99_ms": round(percentile(busy[label], 0.99), 1),
                              "quotes_per_s": round(quotes[label] / args.seconds, 2)} for label in servers}))


if __name__ == "__main__":
    main()
