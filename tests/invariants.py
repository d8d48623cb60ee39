"""The money invariants of a run under faults, checked from the database itself, and the clients that make such a
run: several threads settling bills over REST, each call keyed, every call whose outcome is unknown (no answer, or
503) resent under its own key until it has an answer.

After the run, `problems(...)` lists what breaks a promise of docs/reliability.md (empty when all hold):
- nothing acknowledged lost: every 201 a client got is stored, byte for byte, under its key;
- every key sent has exactly one settlement (once every uncertain call was resolved);
- nothing paid twice: no bill (visit) has two settlements;
- the year figures equal the ledger (per person, year and fund; admissions too);
- no annual cap passed (the caps given, per fund);
- every 503 carried Retry-After, and no answer was a 500.

Used by the failover and backup tests and by the fault run (benchmarks/chaos.py)."""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import psycopg
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from settlement.db.aiopool import conninfo_of

Client = Callable[[], httpx.Client]


@dataclass
class Calls:
    """What the clients sent and what they learned, by key (thread-safe)."""

    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    acknowledged: dict[str, str] = field(default_factory=dict)  # key -> the 201's text, as received
    uncertain: set[str] = field(default_factory=set)
    refused: list[str] = field(default_factory=list)  # answers no bill of this run should get (4xx)
    server_errors: list[str] = field(default_factory=list)  # 500s: bugs
    without_retry_after: int = 0  # 503s that did not say when to come back
    statuses: Counter[str] = field(default_factory=Counter)  # "201", "503 DATABASE_BUSY", "no answer"...
    # The planted fault of the fault run: a client that resends an uncertain call under a new key (new money).
    new_key_on_resend: bool = False
    abandoned: set[str] = field(default_factory=set)  # keys it gave up on (resent under new ones)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, key: str, body: dict[str, Any]) -> None:
        with self.lock:
            self.bodies[key] = body

    def send(self, client: httpx.Client, key: str) -> int | None:
        """Send the call under its key; the status, or None when no answer came."""
        body = self.bodies[key]
        try:
            reply = client.post("/v1/settlements", json=body)
        except httpx.TransportError:  # a worker or a connection died with the call, or the client gave up
            with self.lock:
                self.uncertain.add(key)
                self.statuses["no answer"] += 1
            return None
        with self.lock:
            if reply.status_code == 201:
                self.acknowledged[key] = reply.text
                self.uncertain.discard(key)
                self.statuses["201"] += 1
            elif reply.status_code == 503:
                self.uncertain.add(key)
                self.statuses[f"503 {_code(reply)}"] += 1
                if "retry-after" not in reply.headers:
                    self.without_retry_after += 1
            elif reply.status_code >= 500:
                self.uncertain.add(key)
                self.statuses[f"{reply.status_code} {_code(reply)}"] += 1
                self.server_errors.append(f"{key}: {reply.status_code} {reply.text[:200]}")
            else:
                self.uncertain.discard(key)
                self.statuses[f"{reply.status_code} {_code(reply)}"] += 1
                self.refused.append(f"{key}: {reply.status_code} {reply.text[:200]}")
        return reply.status_code

    def resolve(self, client: Client, within: float = 120) -> int:
        """Every uncertain call sent again, same body, same key, until each has an answer; how many resends.
        With `new_key_on_resend` (the planted fault), under a new key instead."""
        deadline = time.monotonic() + within
        resent = 0
        with client() as http:
            while True:
                with self.lock:
                    pending = sorted(self.uncertain)
                if not pending:
                    return resent
                if time.monotonic() > deadline:
                    raise AssertionError(f"{len(pending)} calls still uncertain after {within} s")
                for key in pending:
                    if self.new_key_on_resend:
                        key = self._as_new_money(key)
                    self.send(http, key)
                    resent += 1
                with self.lock:
                    if self.uncertain:
                        time.sleep(0.3)

    def _as_new_money(self, key: str) -> str:
        fresh = f"{key}-again-{secrets.token_hex(2)}"
        with self.lock:
            self.uncertain.discard(key)
            self.bodies[fresh] = {**self.bodies[key], "transaction_id": fresh}
            self.abandoned.add(key)
        return fresh


def _code(reply: httpx.Response) -> str:
    try:
        return str(reply.json().get("code", "-"))
    except ValueError:
        return "-"


def bill(hospital_code: str, person: str, key: str, number: int, claim: Callable[..., dict[str, Any]]) -> dict[
        str, Any]:
    """A bill of 300 to 670 yuan for the person under `key` (claim: tests.service.conftest.claim_body)."""
    amount = f"{300 + 37 * (number % 11)}.00"
    return {"transaction_id": key, "claim": claim(hospital_code, "county", person, amount=amount)}


def load(calls: Calls, client: Client, make: Callable[[int, int], tuple[str, dict[str, Any]]], clients: int,
         stop: threading.Event, timeout_every: int = 0,
         timeout_client: Client | None = None) -> list[threading.Thread]:
    """`clients` threads settling until `stop`: make(client index, number) -> (key, body). Every `timeout_every`-th
    call of a client goes through `timeout_client` (a client that gives up early), if given."""
    def client_loop(index: int) -> None:
        with client() as http, (timeout_client or client)() as impatient:
            number = 0
            while not stop.is_set():
                key, body = make(index, number)
                calls.add(key, body)
                chosen = impatient if timeout_every and number % timeout_every == timeout_every - 1 else http
                if calls.send(chosen, key) == 503:
                    time.sleep(0.05)
                number += 1

    threads = [threading.Thread(target=client_loop, args=(index,), daemon=True) for index in range(clients)]
    for thread in threads:
        thread.start()
    return threads


def engine_for(url: str) -> Any:
    """A plain engine on the database (several hosts understood as the service understands them)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return create_engine(url)
    conninfo = conninfo_of(url)
    return create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(conninfo))


def problems(url: str, hospital_code: str, calls: Calls, caps: Mapping[str, Decimal] | None = None,
             resolved: bool = True) -> list[str]:
    """What breaks a promise, checked from the database at `url`; empty when every one holds."""
    found: list[str] = []
    engine = engine_for(url)
    try:
        with engine.connect() as connection:
            hospital = connection.execute(text("SELECT id FROM hospitals WHERE code = :code"),
                                          {"code": hospital_code}).scalar_one()
            stored: dict[str, list[str]] = {}
            for key, result in connection.execute(text(
                    "SELECT transaction_id, result FROM settlements WHERE hospital_id = :h"), {"h": hospital}):
                stored.setdefault(key, []).append(result)
            visits = Counter(row[0] for row in connection.execute(text(
                "SELECT s.visit_id FROM settlements s WHERE s.hospital_id = :h AND NOT EXISTS "
                "(SELECT 1 FROM reversals r WHERE r.settlement_id = s.id)"), {"h": hospital}))
            persons = [row[0] for row in connection.execute(text(
                "SELECT DISTINCT id_number FROM settlements WHERE hospital_id = :h"), {"h": hospital})]
            found += _figures(connection, persons)
            found += _caps(connection, persons, caps or {})
    finally:
        engine.dispose()
    for key, reply in sorted(calls.acknowledged.items()):
        if key not in stored:
            found.append(f"lost: {key} was acknowledged (201) and is not in the database")
        elif reply not in stored[key]:
            found.append(f"changed: {key} is stored otherwise than it was acknowledged")
    for key, results in sorted(stored.items()):
        if len(results) > 1:
            found.append(f"twice: {key} has {len(results)} settlements")
    if resolved:
        for key in sorted(set(calls.bodies) - set(stored) - calls.abandoned):
            if not any(reply.startswith(key) for reply in calls.refused):
                found.append(f"unresolved: {key} was sent and has no settlement")
    visit_of = {body["claim"]["visit"]["id"] for body in calls.bodies.values()}
    for visit, count in sorted(visits.items()):
        if count > 1 and visit in visit_of:
            found.append(f"paid twice: bill {visit} has {count} settlements")
    if calls.without_retry_after:
        found.append(f"retry-after: {calls.without_retry_after} answers of 503 had no Retry-After")
    found += [f"500: {error}" for error in calls.server_errors]
    return found


def _figures(connection: Any, persons: Iterable[str]) -> list[str]:
    """The year figures against the ledger, per person, year and fund (and admissions against the settlements)."""
    found = []
    for person in persons:
        ledger = {(year, fund): (paid, deductible, cumulative) for year, fund, paid, deductible, cumulative in
                  connection.execute(text(
                      "SELECT insurance_year, fund, SUM(paid_fen), SUM(deductible_fen), SUM(cumulative_fen) "
                      "FROM ledger_entries WHERE id_number = :p GROUP BY insurance_year, fund"), {"p": person})}
        figures = {(year, fund): (paid, deductible, cumulative) for year, fund, paid, deductible, cumulative in
                   connection.execute(text(
                       "SELECT year, fund, paid_fen, deductible_fen, cumulative_fen FROM fund_years "
                       "WHERE id_number = :p"), {"p": person})}
        for key in sorted(set(ledger) | set(figures)):
            if tuple(int(v) for v in ledger.get(key, (0, 0, 0))) != tuple(int(v) for v in figures.get(key, (0, 0, 0))):
                found.append(f"figures: {person[:6]}****** {key}: year figures {figures.get(key)} != ledger "
                             f"{ledger.get(key)}")
        admissions = dict(connection.execute(text(
            "SELECT year, admissions FROM person_years WHERE id_number = :p"), {"p": person}).all())
        made = dict(connection.execute(text(
            "SELECT insurance_year, SUM(admissions) FROM settlements WHERE id_number = :p GROUP BY insurance_year"),
            {"p": person}).all())
        undone = dict(connection.execute(text(
            "SELECT s.insurance_year, SUM(r.admissions) FROM reversals r JOIN settlements s ON s.id = r.settlement_id "
            "WHERE s.id_number = :p GROUP BY s.insurance_year"), {"p": person}).all())
        for year in sorted(set(admissions) | set(made)):
            expected = int(made.get(year, 0) or 0) + int(undone.get(year, 0) or 0)
            if int(admissions.get(year, 0)) != expected:
                found.append(f"figures: {person[:6]}****** {year}: admissions {admissions.get(year)} != {expected}")
    return found


def _caps(connection: Any, persons: Iterable[str], caps: Mapping[str, Decimal]) -> list[str]:
    found = []
    for person in persons:
        for year, fund, paid in connection.execute(text(
                "SELECT insurance_year, fund, SUM(paid_fen) FROM ledger_entries WHERE id_number = :p "
                "GROUP BY insurance_year, fund"), {"p": person}):
            cap = caps.get(fund)
            if cap is not None and Decimal(int(paid)) / 100 > cap:
                found.append(f"cap: {person[:6]}****** {year} fund {fund} paid {Decimal(int(paid)) / 100} over its "
                             f"cap {cap}")
    return found
