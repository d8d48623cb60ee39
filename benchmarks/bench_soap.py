"""SOAP benchmark: settlements per second through the SOAP endpoint beside the REST API, in the same run.

Both settle the same 24-line bill for the same patients on PostgreSQL with 32 concurrent clients; the SOAP
requests are standard-dialect envelopes with a fresh WS-Security UsernameToken digest (new nonce) each, so every
SOAP call pays for the parse, the schema check, both XSLT mappings, the digest, the nonce record and the envelope
log. REST and SOAP are loaded in turn, 5-second slices on the same server, so that the machine's drift falls on
both alike. Target (issue 4): SOAP at least 70% of REST.

Run: `.venv/bin/python -m benchmarks.bench_soap [--seconds 20 --slice 5 --clients 32 --workers 2]`.
It creates and drops its own database (SETTLEMENT_BENCH_PG, default postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

from benchmarks.bench_service import (
    Builder,
    admin_key,
    bench_database,
    combined,
    drive,
    patient_bodies,
    rest_requests,
    start,
    stop,
)
from settlement.soap.wsse import DIGEST_TYPE, WSSE, WSU, password_digest

STANDARD = "urn:settlement:soap:v1"
FLOOR = "SOAP floor (unmapped)"


def settle_element(request: dict[str, Any]) -> str:
    """A standard-dialect SettleRequest for a REST settle body (message id left as a placeholder)."""
    claim = request["claim"]
    visit, patient = claim["visit"], claim["patient"]
    lines = "".join(
        f"<line><id>{line['id']}</id><code>{line['code']}</code><name>{escape(line['name'])}</name>"
        f"<quantity>{line['quantity']}</quantity><unitPrice>{line['unit_price']}</unitPrice>"
        f"<amount>{line['amount']}</amount></line>" for line in claim["lines"])
    return (
        f'<SettleRequest xmlns="{STANDARD}"><messageId>MESSAGE_ID</messageId><claim>'
        f"<hospital><code>{claim['hospital']['code']}</code><level>{claim['hospital']['level']}</level></hospital>"
        f"<visit><id>{visit['id']}</id><type>{visit['type']}</type><admissionDate>{visit['admission_date']}"
        f"</admissionDate><dischargeDate>{visit['discharge_date']}</dischargeDate><settledAt>{visit['settled_at']}"
        f"</settledAt></visit><patient><idNumber>{patient['id_number']}</idNumber><name>{patient['name']}</name>"
        f"<scheme>{patient['scheme']}</scheme><region>{patient['region']}</region></patient>"
        f"<lines>{lines}</lines></claim></SettleRequest>")


def soap_requests(bodies: list[dict[str, Any]], username: str, password: str) -> Builder:
    elements = [settle_element(body) for body in bodies]
    headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{STANDARD}/Settle"'}

    def build(number: int) -> tuple[bytes, dict[str, str]]:
        nonce = os.urandom(16)
        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        digest = base64.b64encode(password_digest(nonce, created, password)).decode()
        header = (f'<soap:Header><wsse:Security xmlns:wsse="{WSSE}" xmlns:wsu="{WSU}"><wsse:UsernameToken>'
                  f'<wsse:Username>{username}</wsse:Username><wsse:Password Type="{DIGEST_TYPE}">{digest}'
                  f"</wsse:Password><wsse:Nonce>{base64.b64encode(nonce).decode()}</wsse:Nonce>"
                  f"<wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security></soap:Header>")
        body = elements[number % len(elements)].replace("MESSAGE_ID", f"S{number:09d}", 1)
        envelope = (f'<?xml version="1.0" encoding="UTF-8"?><soap:Envelope '
                    f'xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">{header}<soap:Body>{body}</soap:Body>'
                    "</soap:Envelope>")
        return envelope.encode("utf-8"), headers

    return build


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "settlement.cli.main", *args], env=env, check=True,
                          capture_output=True, text=True)
    return done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20, help="measured per protocol, in slices")
    parser.add_argument("--slice", type=float, default=5, help="seconds of one protocol's load before the other's")
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--persons", type=int, default=2000)
    parser.add_argument("--floor", action="store_true",
                        help="also load /soap-floor (benchmarks/soap_floor_app.py): SOAP's required work, unmapped")
    args = parser.parse_args()

    with bench_database() as env:
        cli(env, "db", "upgrade")
        env["SETTLEMENT_KEY"] = admin_key(env)  # the commands that record something act as a person
        code = "H61100200011"
        added = cli(env, "hospitals", "add", code, "商州区人民医院", "--level", "county", "--region", "611002")
        key = added.split()[-1]
        cli(env, "hospitals", "bind", code, "standard")
        password = cli(env, "hospitals", "soap-password", code).split()[-1]
        bodies = patient_bodies(args.persons)
        factory = "benchmarks.soap_floor_app:create" if args.floor else "settlement.api.asgi:create"
        process, url = start(factory, env, args.workers)
        rest = rest_requests(bodies, {"Authorization": f"Bearer {key}"})
        soap = soap_requests(bodies, code, password)
        kinds: tuple[tuple[str, str, Builder, int], ...] = (
            ("REST settle", "/v1/settlements", rest, 201), ("SOAP settle", "/soap", soap, 200))
        if args.floor:
            kinds += ((FLOOR, "/soap-floor", soap, 200),)
        slices: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _, _ in kinds}
        try:
            for _, path, build, status in kinds:
                drive(url, path, build, status, args.clients, 0.0, args.warmup)
            # In turn, slice by slice: the machine's speed drifts within a minute, and both sides must see the same.
            for _ in range(max(1, round(args.seconds / args.slice))):
                for label, path, build, status in kinds:
                    slices[label].append(drive(url, path, build, status, args.clients, args.slice, 0.5))
        finally:
            stop(process)
    results: dict[str, dict[str, Any]] = {label: combined(measured, args.slice) for label, measured in slices.items()}
    rounds = [f"{soap / rest:.2f}"
              for rest, soap in zip(results["REST settle"]["rounds"], results["SOAP settle"]["rounds"], strict=True)]

    print(f"{args.clients} concurrent clients, {args.workers} uvicorn workers, {args.seconds:.0f}s measured each, "
          f"PostgreSQL, 24-line bills over {args.persons} patients")
    for label, figures in results.items():
        print(f"{label:22} {figures['rps']:8.1f} req/s   p50 {figures['p50_ms']:6.1f} ms   "
              f"p99 {figures['p99_ms']:6.1f} ms   errors {figures['errors']:.0f}")
    ratio = results["SOAP settle"]["rps"] / results["REST settle"]["rps"]
    print(f"ratio SOAP / REST: {ratio:.2f} (target >= 0.70: {'met' if ratio >= 0.7 else 'NOT met'})")
    print(f"slice by slice ({args.slice:.0f} s each, in turn): {', '.join(rounds)}")
    if FLOOR in results:
        floor_rounds = [f"{floor / rest:.2f}" for rest, floor
                        in zip(results["REST settle"]["rounds"], results[FLOOR]["rounds"], strict=True)]
        print(f"ratio floor / REST: {results[FLOOR]['rps'] / results['REST settle']['rps']:.2f}; slice by slice: "
              + ", ".join(floor_rounds))
    print(json.dumps({"ratio": round(ratio, 3)}))


if __name__ == "__main__":
    main()
