"""Tariff administration end to end (docs: tariff versions are drafts until a second administrator approves them
and one activates them from a future date; a catalogue CSV is a draft of the region's version with the catalogue
replaced; a simulation re-runs a period's settlements under a version and records nothing).

1. A catalogue CSV imported as a draft: its diff (items added, removed, changed, with old and new values) before
   anyone approves it, nothing in force changing, and the new class applied once it is approved and activated;
   malformed catalogues refused naming the line, recording nothing; a GBK file read.
2. The impact simulation of a draft over June, checked against the same claims settled for real under the draft on
   a second database of its own (an expectation computed by the settlement path, not by the simulation), with a
   planted-fault control: a naive re-run that ignores what the draft would have carried over pays past the cap.
3. The admin REST endpoints on a live server, with their access rules.
4. The `settlement tariffs` and `settlement settlements verify` commands.

Every test uses own_service (a SQLite file and a PostgreSQL database of the test's own): the versions put in force
live in the database and must not reach other tests.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import shutil
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import bindparam, text
from typer.testing import CliRunner, Result

from settlement.cli.main import app as cli
from settlement.domain.claim import SHANGHAI
from settlement.domain.money import ZERO, fmt, from_fen
from settlement.domain.settle import settle
from settlement.services import tariffs
from settlement.services.admin import add_staff
from settlement.services.auth import Caller, authenticate
from settlement.services.errors import ServiceCode, ServiceError
from settlement.services.settlements import SettlementService
from settlement.services.tariff_schedule import version_of
from settlement.tariffstore.store import TariffStore
from settlement.wire.claims import ServiceClaimIn
from settlement.wire.requests import QuoteRequest, ReverseRequest, SettleRequest
from tests.factories import TARIFFS
from tests.service.conftest import (
    Service,
    claim_body,
    import_roster_rows,
    new_id_number,
    point_cli_at,
    put_in_force,
    running_service,
    shipped_document,
    start_server,
)

CITY = "611000"
SHIPPED_CATALOGUE = TARIFFS / CITY / "catalogue-2024-01-01.csv"
CLASS_A = "XJ01CAA010A001010101107"  # class A, no cap: a county 1,000.00 inpatient bill pays 450.00 from basic
CLASS_B = "XJ01CRA023A004010102114"  # class B, share 0.10
CAPPED_ITEM = "XJ01DHA127A013010103170"  # class B, share 0.20, price cap 45.00
BY_CATEGORY = "XJ05AFA244A010010105233"  # class B, share 0.05, tekun=0.00;dibao=0.00
REMOVED = "XJ01DDA036A007010103121"  # class A
ADDED = "XNEW0000000000000000001"
BASIC, CRITICAL, ASSISTANCE = "390100", "390200", "610100"
JUNE_FIRST, JUNE_LAST = date(2024, 6, 1), date(2024, 6, 30)
PERIOD = {"from": "2024-06-01", "to": "2024-06-30"}
DEFAULT_NOW = datetime(2024, 6, 15, 2, 0, tzinfo=UTC)
COUNTED = ("tariff_versions", "settlements", "reversals", "ledger_entries", "fund_years", "person_years",
           "idempotency_records", "audit_log")


# Helpers


def counts(service: Service) -> dict[str, int]:
    with service.app.engine.connect() as connection:
        return {table: connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one() for table in COUNTED}


def grown(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {table: after[table] - before[table] for table in before if after[table] != before[table]}


def audit_after(service: Service, after_id: int) -> list[tuple[str, str, str]]:
    """(actor, action, entity_id) of the audit rows written after row `after_id`, in order."""
    with service.app.engine.connect() as connection:
        return [(str(actor), str(action), str(entity_id)) for actor, action, entity_id in connection.execute(
            text("SELECT actor, action, entity_id FROM audit_log WHERE id > :after ORDER BY id"), {"after": after_id})]


def last_audit_id(service: Service) -> int:
    with service.app.engine.connect() as connection:
        return int(connection.execute(text("SELECT COALESCE(MAX(id), 0) FROM audit_log")).scalar_one())


def at(day: date, hour: int, minute: int = 0) -> datetime:
    """An instant of a day in Shanghai."""
    return datetime.combine(day, time(hour, minute), SHANGHAI)


def catalogue_rows() -> list[dict[str, str]]:
    """The shipped catalogue's rows, as a CSV reader gives them."""
    return list(csv.DictReader(io.StringIO(SHIPPED_CATALOGUE.read_text(encoding="utf-8"))))


def catalogue_csv(rows: list[dict[str, str]], columns: list[str] | None = None, encoding: str = "utf-8") -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns or list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode(encoding)


def draft_document(version: str, effective: str, *, county_rate: str = "0.80",
                   basic_cap: str | None = None) -> dict[str, Any]:
    """The shipped city version with a new name and date, the county inpatient rate (and the basic annual cap)
    changed."""
    document = shipped_document()
    document["version"] = version
    document["effective"] = {"from": effective}
    layer = next(layer for layer in document["layers"] if layer["id"] == "basic_inpatient")
    layer["rate"]["by_level"]["county"] = county_rate
    if basic_cap is not None:
        layer["caps"]["per_year"] = basic_cap
    return document


def paid(body: dict[str, Any], fund: str) -> Decimal:
    return sum((Decimal(payer["paid"]) for payer in body["payers"] if payer["fund"] == fund), ZERO)


@dataclass
class Desk:
    """A county hospital's cashier settling in process (the service clock moved to each settlement's time)."""

    service: Service
    code: str
    caller: Caller

    def claim(self, person: str, when: datetime, *, amount: str = "1000.00", item: str = CLASS_A,
              region: str = "611002") -> dict[str, Any]:
        lines = [{"id": "1", "code": item, "name": "测试药品", "quantity": "1", "unit_price": amount,
                  "amount": amount}]
        return claim_body(self.code, "county", person, amount=amount, region=region, lines=lines,
                          settled_at=when.isoformat(), discharge=when.date().isoformat())

    def settle(self, now: datetime, claim: dict[str, Any]) -> dict[str, Any]:
        self.service.clock.now = now.astimezone(UTC)
        reply = SettlementService(self.service.app.context).settle(self.caller, SettleRequest.model_validate(
            {"transaction_id": f"T-{secrets.token_hex(8)}", "claim": claim}))
        assert reply.status == 201, reply.body
        return reply.json()

    def reverse(self, now: datetime, settlement_id: str) -> None:
        self.service.clock.now = now.astimezone(UTC)
        reply = SettlementService(self.service.app.context).reverse(self.caller, settlement_id, ReverseRequest(
            transaction_id=f"R-{secrets.token_hex(8)}", reason="test"))
        assert reply.status == 201, reply.body

    def quote(self, now: datetime, claim: dict[str, Any]) -> dict[str, Any]:
        self.service.clock.now = now.astimezone(UTC)
        return SettlementService(self.service.app.context).quote(self.caller, QuoteRequest.model_validate(
            {"claim": claim}))


def desk(service: Service, code: str | None = None) -> Desk:
    code, key = service.hospital("county", code=code)
    with service.app.context.uow() as tx:
        caller = authenticate(tx.repo, key)
    return Desk(service, code, caller)


def shipped_id(service: Service) -> int:
    return next(int(view["id"]) for view in tariffs.list_versions(service.app.context, CITY)
                if view["version"] == "2024-01-01")


def ledger_paid(service: Service, public_ids: list[str]) -> dict[str, dict[str, int]]:
    """Per settlement, what each fund paid (fen) by its original entries."""
    query = text("SELECT s.public_id, e.fund, e.paid_fen FROM ledger_entries e JOIN settlements s "
                 "ON s.id = e.settlement_id WHERE e.reversal_id IS NULL AND s.public_id IN :ids"
                 ).bindparams(bindparam("ids", expanding=True))
    found: dict[str, dict[str, int]] = {public_id: {} for public_id in public_ids}
    with service.app.engine.connect() as connection:
        for public_id, fund, fen in connection.execute(query, {"ids": public_ids}):
            found[str(public_id)][str(fund)] = int(fen)
    return found


def patient_paid(service: Service, public_ids: list[str]) -> dict[str, int]:
    query = text("SELECT public_id, patient_fen FROM settlements WHERE public_id IN :ids").bindparams(
        bindparam("ids", expanding=True))
    with service.app.engine.connect() as connection:
        return {str(public_id): int(fen) for public_id, fen in connection.execute(query, {"ids": public_ids})}


def money(fen: int) -> str:
    return fmt(from_fen(fen))


# 1. Catalogue CSV import


def test_catalogue_csv_draft_shows_its_diff_and_applies_only_once_approved_and_activated(
        own_service: Service) -> None:
    service, context = own_service, own_service.app.context
    shipped = {row["code"]: row for row in catalogue_rows()}
    assert (shipped[CLASS_A]["class"], shipped[CLASS_B]["share"], shipped[CAPPED_ITEM]["price_cap"],
            shipped[BY_CATEGORY]["share_by_category"], shipped[REMOVED]["class"]) == (
        "A", "0.10", "45.00", "tekun=0.00;dibao=0.00", "A")
    rows = catalogue_rows()
    for row in rows:
        row["effective_from"] = "2024-01-01"
    by_code = {row["code"]: row for row in rows}
    by_code[CLASS_A].update({"class": "B", "share": "0.10", "effective_from": "2024-07-01"})
    by_code[CLASS_B]["share"] = "0.20"
    by_code[CAPPED_ITEM]["price_cap"] = "60.00"
    by_code[BY_CATEGORY]["share_by_category"] = "tekun=0.00;dibao=0.03"
    rows.remove(by_code[REMOVED])
    rows.append({"code": ADDED, "name": "新增测试片(10mg*10片)", "kind": "drug", "class": "B", "share": "0.15",
                 "share_by_category": "", "price_cap": "12.50", "unit": "盒", "note": "",
                 "effective_from": "2024-06-20"})
    columns = ["effective_from", "class", "code", "name", "share", "price_cap", "share_by_category", "kind", "unit",
               "note"]  # any order
    before, audit_id = counts(service), last_audit_id(service)

    outcome = tariffs.import_catalogue(context, catalogue_csv(rows, columns), "july.csv", CITY, "admin:alice",
                                       note="July catalogue")

    view = outcome["version"]
    version_id = int(view["id"])
    assert (view["status"], view["state"], view["version"], view["effective_from"], view["created_by"],
            view["based_on"], view["note"]) == ("draft", "draft", "2024-07-01", "2024-07-01", "admin:alice",
                                                shipped_id(service), "July catalogue")
    diff = outcome["diff"]
    assert (diff["version"], diff["against"]) == ("611000/2024-07-01", "611000/2024-01-01")
    catalogue = diff["catalogue"]
    assert catalogue["added"] == [{"code": ADDED, "name": "新增测试片(10mg*10片)", "class": "B", "share": "0.15",
                                   "price_cap": "12.50"}]
    assert catalogue["removed"] == [{"code": REMOVED, "name": shipped[REMOVED]["name"], "class": "A"}]
    assert [item["code"] for item in catalogue["changed"]] == sorted([CLASS_A, CLASS_B, CAPPED_ITEM, BY_CATEGORY])
    assert {item["code"]: item["name"] for item in catalogue["changed"]} == {
        code: shipped[code]["name"] for code in (CLASS_A, CLASS_B, CAPPED_ITEM, BY_CATEGORY)}
    assert {item["code"]: item["changes"] for item in catalogue["changed"]} == {
        CLASS_A: {"class": ["A", "B"], "share": [None, "0.10"]},
        CLASS_B: {"share": ["0.10", "0.20"]},
        CAPPED_ITEM: {"price_cap": ["45.00", "60.00"]},
        BY_CATEGORY: {"share_by_category": [{"tekun": "0.00", "dibao": "0.00"}, {"tekun": "0.00", "dibao": "0.03"}]},
    }
    assert catalogue["unchanged"] == len(shipped) - 1 - 4 == 247
    assert diff["parameters"] == [{"path": "effective.from", "before": "2024-01-01", "after": "2024-07-01"},
                                  {"path": "version", "before": "2024-01-01", "after": "2024-07-01"}]
    assert tariffs.diff_versions(context, str(version_id)) == diff  # the recorded draft diffs the same
    assert grown(before, counts(service)) == {"tariff_versions": 1, "audit_log": 1}
    assert audit_after(service, audit_id) == [("admin:alice", "tariff.import", "611000/2024-07-01")]

    # A draft changes nothing in force: a July bill is still quoted under the shipped catalogue.
    states = {view["version"]: view["state"] for view in tariffs.list_versions(context, CITY)}
    assert states == {"2024-01-01": "in force", "2024-07-01": "draft", "2025-01-01": "scheduled"}
    cashier = desk(service)
    july = at(date(2024, 7, 2), 10)
    quoted = cashier.quote(july, cashier.claim(new_id_number(), july))
    assert (quoted["tariff"]["version"], quoted["lines"][0]["class"], paid(quoted, BASIC), quoted["patient_pays"]) == (
        "2024-01-01", "A", Decimal("450.00"), "550.00")

    # Its author cannot approve it; it cannot be activated unapproved; a second administrator approves it.
    service.clock.now = DEFAULT_NOW
    with pytest.raises(ServiceError) as refused:
        tariffs.approve(context, str(version_id), "admin:alice")
    assert refused.value.code == ServiceCode.TARIFF_SELF_APPROVAL
    with pytest.raises(ServiceError) as refused:
        tariffs.activate(context, str(version_id), "admin:bob")
    assert refused.value.code == ServiceCode.TARIFF_STATE
    assert tariffs.approve(context, str(version_id), "admin:bob")["status"] == "approved"
    activated = tariffs.activate(context, "611000/2024-07-01", "admin:bob")
    assert (activated["status"], activated["state"], activated["activated_by"]) == ("active", "scheduled", "admin:bob")
    states = {view["version"]: view["in_force_until"] for view in tariffs.list_versions(context, CITY)}
    assert states == {"2024-01-01": "2024-06-30", "2024-07-01": "2024-12-31", "2025-01-01": None}

    # On 2 July: a bill of 30 June still pays under the shipped catalogue, a July bill under the new class B:
    # 10% self-paid first, (900.00 - 400.00) x 0.75 from basic insurance.
    june_bill = cashier.settle(july, cashier.claim(new_id_number(), at(date(2024, 6, 30), 18)))
    assert (june_bill["tariff"]["version"], june_bill["lines"][0]["class"], paid(june_bill, BASIC),
            june_bill["patient_pays"]) == ("2024-01-01", "A", Decimal("450.00"), "550.00")
    july_bill = cashier.settle(july, cashier.claim(new_id_number(), july))
    line = july_bill["lines"][0]
    assert (july_bill["tariff"]["version"], line["class"], line["share"], line["pre_self_pay"], line["in_scope"]) == (
        "2024-07-01", "B", "0.10", "100.00", "900.00")
    assert (paid(july_bill, BASIC), july_bill["patient_pays"]) == (Decimal("375.00"), "625.00")
    with service.app.engine.connect() as connection:
        recorded = connection.execute(text("SELECT tariff_version_id FROM settlements WHERE public_id = :id"),
                                      {"id": july_bill["settlement_id"]}).scalar_one()
    assert recorded == version_id


def test_malformed_catalogues_are_refused_naming_the_line_and_record_nothing(own_service: Service) -> None:
    context = own_service.app.context
    rows = catalogue_rows()
    body = catalogue_csv(rows).decode("utf-8")
    last = len(rows) + 2  # the line of a row appended after the shipped ones (line 1 is the header)

    def edited(index: int, **values: str) -> bytes:
        changed = [dict(row) for row in rows]
        changed[index].update(values)
        return catalogue_csv(changed)

    bad_class = edited(3, **{"class": "Q"})
    assert rows[10]["class"] == "A"
    b_without_share = edited(10, **{"class": "B", "share": ""})
    duplicate = catalogue_csv([*rows, dict(rows[7])])
    short_row = (body + "XBAD0000000000000000001,少了几列的行,drug\n").encode("utf-8")
    long_row = (body + ",".join(["XBAD0000000000000000002", "多了一列", "drug", "A", "", "", "", "盒", "", "extra"])
                + "\n").encode("utf-8")
    cases = [("a bad class", bad_class, 5, "class"), ("class B without a share", b_without_share, 12, "share"),
             ("a duplicate code", duplicate, last, "listed twice"), ("too few columns", short_row, last, "columns"),
             ("too many columns", long_row, last, "columns")]
    before = counts(own_service)
    for label, data, line, words in cases:
        with pytest.raises(ServiceError) as refused:
            tariffs.import_catalogue(context, data, "bad.csv", CITY, "admin:alice", effective=date(2024, 7, 1))
        error = refused.value
        assert error.code == ServiceCode.TARIFF_REJECTED, label
        where = f"catalogue bad.csv: line {line}"
        assert len(error.problems) == 1, (label, error.problems)
        problem = error.problems[0]
        assert problem.path == where or problem.path.startswith(f"{where}:"), (label, problem)
        assert words in f"{problem.path} {problem.message}", (label, problem)
        assert counts(own_service) == before, label

    # A row dated after the version's effective date is refused too (its line: see the test below).
    dated = [dict(row, effective_from="2024-07-01") for row in rows]
    dated[20]["effective_from"] = "2024-08-01"
    with pytest.raises(ServiceError) as refused:
        tariffs.import_catalogue(context, catalogue_csv(dated), "late.csv", CITY, "admin:alice",
                                 effective=date(2024, 7, 1))
    assert refused.value.code == ServiceCode.TARIFF_REJECTED
    assert "2024-08-01" in refused.value.message
    assert counts(own_service) == before
    assert [view["version"] for view in tariffs.list_versions(context, CITY)] == ["2024-01-01", "2025-01-01"]


def test_a_row_dated_after_the_effective_date_is_refused_naming_its_line(own_service: Service) -> None:
    rows = [dict(row, effective_from="2024-07-01") for row in catalogue_rows()]
    rows[20]["effective_from"] = "2024-08-01"  # line 22
    with pytest.raises(ServiceError) as refused:
        tariffs.import_catalogue(own_service.app.context, catalogue_csv(rows), "late.csv", CITY, "admin:alice",
                                 effective=date(2024, 7, 1))
    assert refused.value.code == ServiceCode.TARIFF_REJECTED
    assert "line 22" in " ".join([refused.value.message, *(problem.path for problem in refused.value.problems)])


def test_an_unknown_category_in_a_catalogue_is_refused_naming_its_line(own_service: Service) -> None:
    rows = catalogue_rows()
    assert rows[1]["class"] == "B"
    rows[1]["share_by_category"] = "nosuchcategory=0.01"  # line 3
    before = counts(own_service)
    with pytest.raises(ServiceError) as refused:
        tariffs.import_catalogue(own_service.app.context, catalogue_csv(rows), "categories.csv", CITY, "admin:alice",
                                 effective=date(2024, 7, 1))
    assert refused.value.code == ServiceCode.TARIFF_REJECTED
    assert counts(own_service) == before
    assert all(problem.path.startswith("catalogue categories.csv: line 3") for problem in refused.value.problems), [
        str(problem) for problem in refused.value.problems]


def test_a_gbk_catalogue_with_chinese_names_is_read(own_service: Service) -> None:
    context = own_service.app.context
    rows = catalogue_rows()
    renamed = "阿莫西林胶囊（国家集采）(0.25g*24粒)"
    old_name = rows[0]["name"]
    assert rows[0]["code"] == CLASS_A
    rows[0]["name"] = renamed
    data = catalogue_csv(rows, encoding="gbk")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")  # the GBK path is the one taken

    outcome = tariffs.import_catalogue(context, data, "目录.csv", CITY, "admin:alice", effective=date(2024, 8, 1),
                                       version_name="2024-08-01-gbk")

    assert outcome["version"]["version"] == "2024-08-01-gbk"
    catalogue = outcome["diff"]["catalogue"]
    assert (catalogue["added"], catalogue["removed"], catalogue["unchanged"]) == ([], [], len(rows) - 1)
    assert catalogue["changed"] == [{"code": CLASS_A, "name": renamed, "changes": {"name": [old_name, renamed]}}]
    document = tariffs.show_version(context, str(outcome["version"]["id"]))["document"]
    assert {item["code"]: item["name"] for item in document["catalogue"]["items"]} == {
        row["code"]: row["name"] for row in rows}


# 2. Impact simulation


@dataclass
class Event:
    """One cashier action of the seeded month: a settlement (`claim`) or the reversal of the settlement `target`."""

    name: str
    when: datetime
    hospital: int
    claim: dict[str, Any] | None = None
    target: str | None = None
    replayed: bool = True  # dated in June and decided by the city's version: re-run by the simulation


def seed_month(desks: list[Desk], people: dict[str, str]) -> list[Event]:
    """About thirty settlements: a person whose bills reach the draft's lower basic cap (one reversed between
    the others), a person with two admissions, two 低保 persons (medical assistance pays), a reversed settlement,
    singles, and settlements outside the period or decided by another city's version."""
    events: list[Event] = []

    def bill(name: str, person: str, day: date, hour: int, amount: str = "1000.00", *, hospital: int = 0,
             minute: int = 0, region: str = "611002", replayed: bool = True) -> None:
        when = at(day, hour, minute)
        events.append(Event(name, when, hospital, desks[hospital].claim(person, when, amount=amount, region=region),
                            replayed=replayed))

    capped = people["capped"]
    bill("capped-1", capped, date(2024, 6, 3), 9)
    bill("capped-2", capped, date(2024, 6, 6), 9, hospital=1)
    bill("capped-3", capped, date(2024, 6, 9), 9)
    events.append(Event("capped-2-reversed", at(date(2024, 6, 10), 9), 1, target="capped-2"))
    bill("capped-4", capped, date(2024, 6, 12), 9)
    bill("twice-1", people["twice"], date(2024, 6, 4), 11, "1200.00")
    bill("twice-2", people["twice"], date(2024, 6, 20), 11, "900.00", hospital=1)
    bill("dibao-1", people["dibao-1"], date(2024, 6, 5), 15, "1500.00")
    bill("dibao-2", people["dibao-2"], date(2024, 6, 7), 15, "2500.00", hospital=1)
    bill("reversed", people["reversed"], date(2024, 6, 8), 16, "1100.00")
    events.append(Event("reversed-reversal", at(date(2024, 6, 11), 16), 0, target="reversed"))
    for index in range(18):
        bill(f"single-{index}", people[f"single-{index}"], date(2024, 6, 1 + index * 3 // 2), 10 + index % 8,
             f"{600 + 83 * index}.00", hospital=index % 2)
    bill("june-30-late", people["june-30"], date(2024, 6, 30), 23, "1300.00", minute=30)
    bill("may-31-late", people["may-31"], date(2024, 5, 31), 23, minute=30, replayed=False)
    bill("july-1-early", people["july-1"], date(2024, 7, 1), 0, minute=30, replayed=False)
    bill("other-city", people["other-city"], date(2024, 6, 14), 10, region="610902", replayed=False)
    return sorted(events, key=lambda event: event.when)


def play(events: list[Event], desks: list[Desk]) -> dict[str, str]:
    """The events at the cashiers, in order; the settlements' public ids by event name."""
    ids: dict[str, str] = {}
    for event in events:
        if event.claim is not None:
            ids[event.name] = str(desks[event.hospital].settle(event.when, event.claim)["settlement_id"])
        else:
            assert event.target is not None
            desks[event.hospital].reverse(event.when, ids[event.target])
    return ids


@pytest.fixture
def replay_service(tmp_path: Path) -> Iterator[Service]:
    """A second service on a SQLite database of its own: the month settled again with the draft in force."""
    folder = tmp_path / "replay"
    folder.mkdir()
    with running_service(f"sqlite:///{folder / 'replay.sqlite3'}", folder) as replay:
        yield replay


def naive_basic_total(service: Service, draft_id: int, public_ids: list[str]) -> Decimal:
    """The planted fault: each settlement re-run under the draft from the year figures it started from as paid,
    ignoring what the draft would have changed in the person's earlier settlements of the period."""
    with service.app.context.uow() as tx:
        row = tx.repo.tariff_version(draft_id)
        assert row is not None
        draft = TariffStore.of("naive", [tariffs.stretched(version_of(row))])
    query = text("SELECT claim, categories, accumulators_before, settled_at FROM settlements "
                 "WHERE public_id IN :ids").bindparams(bindparam("ids", expanding=True))
    total = ZERO
    with service.app.engine.connect() as connection:
        for claim_json, categories, before, _ in connection.execute(query, {"ids": public_ids}):
            claim_in = ServiceClaimIn.model_validate_json(claim_json)
            claim = claim_in.build(claim_in.patient, tuple(json.loads(categories)))
            tariff = draft.resolve(claim_in.patient.region, claim.visit.settled_at.astimezone(SHANGHAI).date()).tariff
            computed = settle(claim, tariff, tariffs.accumulators_of(before))
            total += sum((payer.paid for payer in computed.payers if payer.fund == BASIC), ZERO)
    return total


def test_simulation_matches_the_month_settled_under_the_draft_and_records_nothing(
        own_service: Service, replay_service: Service) -> None:
    service, context = own_service, own_service.app.context
    names = ["capped", "twice", "dibao-1", "dibao-2", "reversed", "june-30", "may-31", "july-1", "other-city",
             *(f"single-{index}" for index in range(18))]
    people = {name: new_id_number() for name in names}
    roster = [(people[name], "dibao_rural_a", "2024-01-01", "") for name in ("dibao-1", "dibao-2")]
    desks = [desk(service), desk(service)]
    events = seed_month(desks, people)
    import_roster_rows(service, roster)
    original = play(events, desks)

    # The draft: county rate 0.80 (shipped 0.75) and a basic annual cap of 1,600.00 (shipped 130,000.00).
    service.clock.now = DEFAULT_NOW
    draft_id = int(tariffs.import_document(context, draft_document("2024-07-01-sim", "2024-07-01",
                                                                   basic_cap="1600.00"), "test", "admin:alice")
                   ["version"]["id"])

    # The expectation: the June events replayed on a database where the same rules are in force from 1 June.
    replay_service.clock.now = datetime(2024, 5, 20, 2, 0, tzinfo=UTC)
    put_in_force(replay_service, draft_document("2024-06-01-replay", "2024-06-01", basic_cap="1600.00"))
    import_roster_rows(replay_service, roster)
    replay_desks = [desk(replay_service, code=cashier.code) for cashier in desks]
    replayed = play([event for event in events if event.replayed], replay_desks)

    reversed_names = {event.target for event in events if event.target is not None}
    kept = [event.name for event in events if event.claim is not None and event.replayed
            and event.name not in reversed_names]
    before_fen = ledger_paid(service, [original[name] for name in kept])
    after_fen = ledger_paid(replay_service, [replayed[name] for name in kept])
    was = {name: before_fen[original[name]] for name in kept}
    now = {name: after_fen[replayed[name]] for name in kept}
    with replay_service.app.engine.connect() as connection:  # every replayed bill was settled under the draft
        used = connection.execute(text("SELECT DISTINCT v.version FROM settlements s JOIN tariff_versions v "
                                       "ON v.id = s.tariff_version_id")).scalars().all()
    assert used == ["2024-06-01-replay"]
    funds = sorted({fund for name in kept for fund in (*was[name], *now[name])})
    assert {BASIC, ASSISTANCE} <= set(funds)
    patient_before = patient_paid(service, [original[name] for name in kept])
    patient_after = patient_paid(replay_service, [replayed[name] for name in kept])
    before, audit_id = counts(service), last_audit_id(service)

    report = tariffs.simulate(context, str(draft_id), JUNE_FIRST, JUNE_LAST, "admin:carol")

    # Nothing recorded but one audit row.
    assert grown(before, counts(service)) == {"audit_log": 1}
    assert audit_after(service, audit_id) == [("admin:carol", "tariff.simulate", "611000/2024-07-01-sim")]
    june = [event for event in events if event.claim is not None and event.when.month == 6]
    assert (report["version"], report["from"], report["to"]) == ("611000/2024-07-01-sim", "2024-06-01", "2024-06-30")
    assert report["settlements_considered"] == len(june) == 29
    assert report["settlements_rerun"] == len(june) - 1  # the other city's patient is not the draft's to decide
    assert report["refused_under_version"] == {}
    # Per fund: as paid = the ledger of the settlements not reversed; under the version = the replay's ledger.
    expected = {fund: {"fund": fund, "as_paid": money(sum(was[n].get(fund, 0) for n in kept)),
                       "under_version": money(sum(now[n].get(fund, 0) for n in kept)),
                       "change": money(sum(now[n].get(fund, 0) - was[n].get(fund, 0) for n in kept))}
                for fund in funds}
    assert report["funds"] == [expected[fund] for fund in funds]
    assert report["patient_pays"] == {
        "as_paid": money(sum(patient_before.values())), "under_version": money(sum(patient_after.values())),
        "change": money(sum(patient_after.values()) - sum(patient_before.values()))}
    # The most affected: the top 20 by the total absolute change of the funds' payments, largest first.
    change = {name: sum(abs(now[name].get(fund, 0) - was[name].get(fund, 0)) for fund in funds) for name in kept}
    affected = {original[name]: name for name in kept if change[name]}
    assert len(affected) > 20
    top = report["most_affected"]
    assert len(top) == 20
    changes = [Decimal(item["change"]) for item in top]
    assert changes == sorted(changes, reverse=True)
    assert changes == sorted((from_fen(change[name]) for name in affected.values()), reverse=True)[:20]

    def check(item: dict[str, Any]) -> None:
        name = affected[item["settlement_id"]]
        moved = sorted(set(was[name]) | set(now[name]))
        assert item["funds"] == {fund: [money(was[name].get(fund, 0)), money(now[name].get(fund, 0))]
                                 for fund in moved}, name
        assert item["patient_pays"] == [money(patient_before[original[name]]),
                                        money(patient_after[replayed[name]])], name
        assert item["change"] == money(change[name]), name

    for item in top:
        check(item)

    # Every affected settlement, with --top 1000: each one as the replay paid it.
    audit_id = last_audit_id(service)
    full = tariffs.simulate(context, str(draft_id), JUNE_FIRST, JUNE_LAST, "admin:carol", top=1000)
    assert {item["settlement_id"] for item in full["most_affected"]} == set(affected)
    for item in full["most_affected"]:
        check(item)
    assert full["funds"] == report["funds"]
    assert len(audit_after(service, audit_id)) == 1

    # The capped person: the draft's lower cap binds only because the earlier bills paid more under the draft.
    capped = [name for name in kept if name.startswith("capped-")]
    assert capped == ["capped-1", "capped-3", "capped-4"]
    simulated = {item["settlement_id"]: item for item in full["most_affected"]}
    capped_total = sum((Decimal(simulated[original[name]]["funds"][BASIC][1]) for name in capped), ZERO)
    assert capped_total == from_fen(sum(now[name][BASIC] for name in capped)) == Decimal("1600.00")
    naive = naive_basic_total(service, draft_id, [original[name] for name in capped])
    assert naive != capped_total
    assert naive > Decimal("1600.00")  # the naive re-run pays past the annual cap
    assert grown(before, counts(service)) == {"audit_log": 2}


# 3. REST


def test_admin_tariff_endpoints_on_a_live_server(own_service: Service) -> None:
    service, context = own_service, own_service.app.context
    alice = add_staff(context, "admin", "alice", "test")
    bob = add_staff(context, "admin", "bob", "test")
    finance = service.staff("finance")
    _, hospital = service.hospital()
    cashier = desk(service)
    for day in (3, 4, 5):
        when = at(date(2024, 6, day), 10)
        cashier.settle(when, cashier.claim(new_id_number(), when))
    service.clock.now = DEFAULT_NOW
    document = yaml.safe_dump(draft_document("2024-07-01-rest", "2024-07-01"), allow_unicode=True,
                              sort_keys=False).encode("utf-8")
    upload = {"file": ("611000-2024-07-01-rest.yaml", document, "application/x-yaml")}
    shipped_rows = catalogue_rows()
    catalogue = catalogue_csv([row for row in shipped_rows if row["code"] != REMOVED])
    csv_upload = {"file": ("catalogue.csv", catalogue, "text/csv")}
    server = start_server(service.app)
    try:
        with (server.client(alice) as admin_a, server.client(bob) as admin_b, server.client(finance) as officer,
              server.client(hospital) as cashier_client, server.client() as anonymous):
            shipped = shipped_id(service)
            calls: list[tuple[str, str, dict[str, Any]]] = [
                ("POST", "/v1/admin/tariffs", {"files": upload}),
                ("GET", "/v1/admin/tariffs", {}),
                ("POST", "/v1/admin/tariffs/catalogue?region=611000", {"files": csv_upload}),
                ("GET", f"/v1/admin/tariffs/{shipped}", {}),
                ("GET", f"/v1/admin/tariffs/{shipped}/diff", {}),
                ("POST", f"/v1/admin/tariffs/{shipped}/approval", {}),
                ("POST", f"/v1/admin/tariffs/{shipped}/activation", {}),
                ("POST", f"/v1/admin/tariffs/{shipped}/simulation", {"json": PERIOD}),
                ("POST", f"/v1/admin/tariffs/{shipped}/withdrawal", {"json": {"reason": "no"}}),
            ]
            before = counts(service)
            for client, status, code in ((anonymous, 401, None), (cashier_client, 403, "FORBIDDEN"),
                                         (officer, 403, "FORBIDDEN")):
                for method, path, arguments in calls:
                    response = client.request(method, path, **arguments)
                    assert response.status_code == status, (method, path, response.text)
                    assert response.headers["content-type"].startswith("application/problem+json")
                    if code is not None:
                        assert response.json()["code"] == code, (method, path)
            for client, status in ((anonymous, 401), (cashier_client, 403)):
                response = client.post("/v1/admin/settlements/verification", json=PERIOD)
                assert response.status_code == status
            assert counts(service) == before

            # Upload: a draft with its diff.
            response = admin_a.post("/v1/admin/tariffs", files=upload, params={"note": "county 0.80"})
            assert response.status_code == 201, response.text
            body = response.json()
            version_id = body["version"]["id"]
            assert (body["version"]["status"], body["version"]["created_by"], body["version"]["note"],
                    body["already_recorded"]) == ("draft", "admin:alice", "county 0.80", False)
            diff = body["diff"]
            assert diff["against"] == "611000/2024-01-01"
            assert diff["catalogue"] == {"added": [], "removed": [], "changed": [], "unchanged": len(shipped_rows)}
            assert diff["parameters"] == [
                {"path": "effective.from", "before": "2024-01-01", "after": "2024-07-01"},
                {"path": "layers[basic_inpatient].rate.by_level.county", "before": "0.75", "after": "0.80"},
                {"path": "version", "before": "2024-01-01", "after": "2024-07-01-rest"}]
            assert grown(before, counts(service)) == {"tariff_versions": 1, "audit_log": 1}

            listed = admin_b.get("/v1/admin/tariffs", params={"region": CITY})
            assert listed.status_code == 200
            assert {view["version"]: view["state"] for view in listed.json()} == {
                "2024-01-01": "in force", "2024-07-01-rest": "draft", "2025-01-01": "scheduled"}
            shown = admin_b.get(f"/v1/admin/tariffs/{version_id}").json()
            assert shown["document"]["version"] == "2024-07-01-rest"
            assert [step["action"] for step in shown["history"]] == ["tariff.import"]
            assert admin_b.get(f"/v1/admin/tariffs/{version_id}/diff").json() == diff
            missing = admin_b.get("/v1/admin/tariffs/999999")
            assert (missing.status_code, missing.json()["code"]) == (404, "NOT_FOUND")

            # Approval: not by its author; activation only once approved.
            counted = counts(service)
            response = admin_a.post(f"/v1/admin/tariffs/{version_id}/approval")
            assert response.status_code == 403
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["code"] == "TARIFF_SELF_APPROVAL"
            response = admin_b.post(f"/v1/admin/tariffs/{version_id}/activation")
            assert (response.status_code, response.json()["code"]) == (409, "TARIFF_STATE")
            assert counts(service) == counted
            response = admin_b.post(f"/v1/admin/tariffs/{version_id}/approval")
            assert response.status_code == 200, response.text
            assert (response.json()["status"], response.json()["approved_by"]) == ("approved", "admin:bob")

            # Simulation: three 1,000.00 county bills, 450.00 each from basic as paid, (1000 - 400) x 0.80 under it.
            response = admin_b.post(f"/v1/admin/tariffs/{version_id}/simulation", json=PERIOD)
            assert response.status_code == 200, response.text
            report = response.json()
            assert (report["settlements_considered"], report["settlements_rerun"]) == (3, 3)
            assert report["funds"] == [  # critical illness: only its cumulative base moves, below its threshold
                {"fund": BASIC, "as_paid": "1350.00", "under_version": "1440.00", "change": "90.00"},
                {"fund": CRITICAL, "as_paid": "0.00", "under_version": "0.00", "change": "0.00"}]
            assert report["patient_pays"] == {"as_paid": "1650.00", "under_version": "1560.00", "change": "-90.00"}
            assert [item["change"] for item in report["most_affected"]] == ["30.00"] * 3
            backwards = admin_b.post(f"/v1/admin/tariffs/{version_id}/simulation",
                                     json={"from": "2024-06-30", "to": "2024-06-01"})
            assert (backwards.status_code, backwards.json()["code"]) == (422, "REQUEST_MALFORMED")

            # Activation.
            response = admin_b.post(f"/v1/admin/tariffs/{version_id}/activation")
            assert response.status_code == 200, response.text
            assert (response.json()["state"], response.json()["activated_by"]) == ("scheduled", "admin:bob")
            again = admin_b.post(f"/v1/admin/tariffs/{version_id}/activation")
            assert (again.status_code, again.json()["code"]) == (409, "TARIFF_STATE")
            states = {view["version"]: (view["state"], view["in_force_until"])
                      for view in admin_a.get("/v1/admin/tariffs").json() if view["region"] == CITY}
            assert states == {"2024-01-01": ("in force", "2024-06-30"), "2024-07-01-rest": ("scheduled", "2024-12-31"),
                              "2025-01-01": ("scheduled", None)}

            # A catalogue CSV: based on the version in force on its date (the one just activated).
            response = admin_a.post("/v1/admin/tariffs/catalogue", files=csv_upload,
                                    params={"region": CITY, "effective": "2024-08-01"})
            assert response.status_code == 201, response.text
            draft = response.json()
            catalogue_id = draft["version"]["id"]
            assert (draft["version"]["version"], draft["version"]["based_on"]) == ("2024-08-01", version_id)
            assert draft["diff"]["against"] == "611000/2024-07-01-rest"
            assert [item["code"] for item in draft["diff"]["catalogue"]["removed"]] == [REMOVED]
            assert [change["path"] for change in draft["diff"]["parameters"]] == ["effective.from", "version"]
            bad = catalogue_csv([*shipped_rows, dict(shipped_rows[0])])
            refused = admin_a.post("/v1/admin/tariffs/catalogue", params={"region": CITY, "effective": "2024-09-01"},
                                   files={"file": ("bad.csv", bad, "text/csv")})
            assert refused.status_code == 422
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert refused.json()["code"] == "TARIFF_REJECTED"
            assert [problem["path"] for problem in refused.json()["problems"]] == [
                f"catalogue bad.csv: line {len(shipped_rows) + 2}"]

            # Withdrawal: a reason is required.
            empty = admin_b.post(f"/v1/admin/tariffs/{catalogue_id}/withdrawal", json={"reason": ""})
            assert (empty.status_code, empty.json()["code"]) == (422, "REQUEST_MALFORMED")
            response = admin_b.post(f"/v1/admin/tariffs/{catalogue_id}/withdrawal", json={"reason": "wrong month"})
            assert response.status_code == 200, response.text
            assert (response.json()["status"], response.json()["withdrawn_by"], response.json()["note"]) == (
                "withdrawn", "admin:bob", "wrong month")
            gone = admin_b.post(f"/v1/admin/tariffs/{catalogue_id}/simulation", json=PERIOD)
            assert (gone.status_code, gone.json()["code"]) == (409, "TARIFF_STATE")

            # Verification: finance officers and administrators.
            for client in (officer, admin_a):
                response = client.post("/v1/admin/settlements/verification", json=PERIOD)
                assert response.status_code == 200, response.text
                assert (response.json()["checked"], response.json()["matched"], response.json()["differences"]) == (
                    3, 3, [])
    finally:
        server.server.should_exit = True
        server.thread.join(timeout=10)
    actions = [step["action"] for step in tariffs.show_version(context, str(version_id))["history"]]
    assert actions == ["tariff.import", "tariff.approve", "tariff.simulate", "tariff.activate"]


# 4. The command line


def test_validate_a_single_file_checks_its_rules(tmp_path: Path) -> None:
    folder = tmp_path / CITY
    shutil.copytree(TARIFFS / CITY, folder)
    city_file = folder / "2024-01-01.yaml"
    city_file.write_text(city_file.read_text(encoding="utf-8").replace('county: "0.75"', 'county: "seventy"'),
                         encoding="utf-8")
    result = run("tariffs", "validate", str(city_file))
    assert result.exit_code == 3, result.output
    assert "layers[0].rate.by_level.county" in said(result)


@pytest.fixture
def own_cli(own_service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Service:
    """The command line pointed at the test's own database (as conftest's cli_env, for own_service)."""
    return point_cli_at(own_service, tmp_path, monkeypatch)


def run(*arguments: str, key: str | None = None) -> Result:
    """A command; `key`: the API key of the person doing it (SETTLEMENT_KEY)."""
    return CliRunner().invoke(cli, list(arguments), env={"SETTLEMENT_KEY": key} if key else None)


def said(result: Result) -> str:
    """What a command printed (stdout and stderr), unwrapped: Rich breaks long lines, keeping the spaces."""
    return result.output.replace("\n", "")


def version_ids(region: str = CITY) -> dict[str, int]:
    result = run("tariffs", "list", "--region", region, "--json")
    assert result.exit_code == 0, result.output
    return {view["version"]: int(view["id"]) for view in json.loads(result.stdout)}


def test_tariff_commands_end_to_end(own_cli: Service, tmp_path: Path) -> None:
    service, context = own_cli, own_cli.app.context
    alice = add_staff(context, "admin", "alice", "test")
    bob = add_staff(context, "admin", "bob", "test")
    finance = add_staff(context, "finance", "frank", "test")
    cashier = desk(service)
    for day in (3, 4, 5):
        when = at(date(2024, 6, day), 10)
        cashier.settle(when, cashier.claim(new_id_number(), when))

    # validate: the shipped folder; a broken folder and a broken file name the file and the path.
    result = run("tariffs", "validate", str(TARIFFS))
    assert result.exit_code == 0, result.output
    assert "all valid" in said(result)
    broken = tmp_path / "broken"
    shutil.copytree(TARIFFS, broken)
    city_file = broken / CITY / "2024-01-01.yaml"
    source = city_file.read_text(encoding="utf-8")
    assert source.count('county: "0.75"') == 1
    city_file.write_text(source.replace('county: "0.75"', 'county: "seventy"'), encoding="utf-8")
    result = run("tariffs", "validate", str(broken))
    assert result.exit_code == 3, result.output
    output = said(result)
    assert "TARIFF_INVALID" in output, output
    assert f"{city_file}: layers[0].rate.by_level.county: not a non-negative decimal string" in output, output
    head_file = tmp_path / "611000-bad-date.yaml"
    head_file.write_text(source.replace('from: "2024-01-01"', 'from: "2024-02-30"'), encoding="utf-8")
    result = run("tariffs", "validate", str(head_file))
    assert result.exit_code == 3, result.output
    output = said(result)
    assert f"{head_file}: effective.from" in output, output

    # import: no key, a typed name, a wrong key or another role's key is refused and records nothing; alice, with
    # her own key, records a draft.
    path = tmp_path / "611000-2027-01-01.yaml"
    path.write_text(yaml.safe_dump(draft_document("2027-01-01", "2027-01-01"), allow_unicode=True, sort_keys=False),
                    encoding="utf-8")
    before = counts(service)
    for key, by, code in ((None, [], "AUTH_REQUIRED"), (None, ["--by", "alice"], "AUTH_REQUIRED"),
                          (alice[:-1] + ("A" if alice[-1] != "A" else "B"), [], "AUTH_INVALID"),
                          (finance, [], "FORBIDDEN")):
        result = run("tariffs", "import", str(path), *by, key=key)
        assert result.exit_code == 2, result.output
        assert code in said(result), said(result)
        assert counts(service) == before
    result = run("tariffs", "import", str(path), "--note", "county 0.80", key=alice)
    assert result.exit_code == 0, result.output
    assert "draft recorded" in said(result) and "611000/2027-01-01" in said(result)
    version_id = version_ids()["2027-01-01"]
    result = run("tariffs", "diff", str(version_id), "--json")
    assert result.exit_code == 0, result.output
    diff = json.loads(result.stdout)
    assert {"path": "layers[basic_inpatient].rate.by_level.county", "before": "0.75", "after": "0.80"} in diff[
        "parameters"]
    result = run("tariffs", "diff", "611000/2027-01-01")
    assert result.exit_code == 0, result.output
    assert "3 policy parameters changed" in said(result)

    # approve: not by its author (exit 2), then by bob; activate; list and show.
    result = run("tariffs", "approve", str(version_id), key=alice)
    assert result.exit_code == 2, result.output
    assert "TARIFF_SELF_APPROVAL" in said(result)
    result = run("tariffs", "approve", str(version_id), key=bob)
    assert result.exit_code == 0, result.output
    assert "approved by admin:bob" in said(result)
    result = run("tariffs", "activate", "611000/2027-01-01", key=bob)
    assert result.exit_code == 0, result.output
    assert "scheduled" in said(result)
    result = run("tariffs", "list")
    assert result.exit_code == 0, result.output
    assert "scheduled" in said(result) and "2027-01-01" in said(result)
    result = run("tariffs", "show", str(version_id))
    assert result.exit_code == 0, result.output
    for words in ("recorded by admin:alice", "approved by admin:bob", "activated by admin:bob", "tariff.import",
                  "tariff.approve", "tariff.activate"):
        assert words in said(result), words

    # simulate: June 2024's three bills under the version.
    result = run("tariffs", "simulate", str(version_id), "--from", "2024-06-01", "--to", "2024-06-30", "--json",
                 key=bob)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["version"], report["settlements_rerun"]) == ("611000/2027-01-01", 3)
    assert report["funds"] == [{"fund": BASIC, "as_paid": "1350.00", "under_version": "1440.00", "change": "90.00"},
                               {"fund": CRITICAL, "as_paid": "0.00", "under_version": "0.00", "change": "0.00"}]

    # A catalogue CSV on top of the scheduled version, then withdrawn.
    catalogue = tmp_path / "catalogue.csv"
    catalogue.write_bytes(catalogue_csv([row for row in catalogue_rows() if row["code"] != REMOVED]))
    result = run("tariffs", "import", str(catalogue), "--region", CITY, "--effective", "2027-02-01", key=alice)
    assert result.exit_code == 0, result.output
    assert "611000/2027-02-01" in said(result) and "1 removed" in said(result)
    catalogue_id = version_ids()["2027-02-01"]
    assert tariffs.diff_versions(context, str(catalogue_id))["against"] == "611000/2027-01-01"
    result = run("tariffs", "withdraw", str(catalogue_id), "--reason", "not needed", key=bob)
    assert result.exit_code == 0, result.output
    assert "withdrawn by admin:bob" in said(result)

    # verify: June's settlements recompute to what was paid.
    result = run("settlements", "verify", "--from", "2024-06-01", "--to", "2024-06-30", "--json")
    assert result.exit_code == 0, result.output
    assert (json.loads(result.stdout)["checked"], json.loads(result.stdout)["differences"]) == (3, [])

    states = {view["version"]: view["status"] for view in tariffs.list_versions(context, CITY)}
    assert states == {"2024-01-01": "active", "2025-01-01": "active", "2027-01-01": "active",
                      "2027-02-01": "withdrawn"}
    by_actor: dict[str, list[str]] = defaultdict(list)
    for actor, action, _ in audit_after(service, 0):
        if action.startswith("tariff."):
            by_actor[actor].append(action)
    # The reads (list, show, diff) are audited too, under the command line's name.
    reads = by_actor.pop("cli")
    assert set(reads) == {"tariff.list", "tariff.show", "tariff.diff"}, reads
    assert dict(by_actor) == {"system": ["tariff.seed"] * 4, "admin:alice": ["tariff.import", "tariff.import"],
                              "admin:bob": ["tariff.approve", "tariff.activate", "tariff.simulate",
                                            "tariff.withdraw"]}
