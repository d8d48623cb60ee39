"""The policy rules of issue 16 through the service, on SQLite and PostgreSQL (REST: the session path and the
pipelined path on the event loop):

- a limit inside a fund binds across settlements and hospitals, its year figure is the sum of its append-only
  entries, and a reversal gives it back;
- admissions counted per hospital level are kept in the year (and given back by a reversal);
- which date decides: a 低保 status that ends during a stay counts under a tariff deciding by the admission date
  and not under one deciding by the settlement date; a new version's transition rule keeps a stay it finds half
  done under the old version;
- the roster says who is retired and the settlement records it, so that it recomputes; a claim says whether it is
  a referral;
- a claim that uses none of the new fields hashes as it did before them (idempotency keys survive the upgrade).

Planted faults: a writer that forgets the limits' year figures overpays the limit; one that forgets the admissions
by level gives a repeat admission its first deductible; a recomputation that forgets the recorded retirement is
reported by verify; a claim dumped with its new fields at their defaults hashes differently.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from settlement.bootstrap import SYSTEM
from settlement.db import settling
from settlement.db.repositories import Repository
from settlement.services import tariffs
from settlement.services.roster import import_roster
from settlement.services.settlements import canonical_hash
from settlement.wire.requests import SettleRequest
from tests.factories import ROOT
from tests.service.conftest import (
    LiveServer,
    Service,
    claim_body,
    import_roster_rows,
    new_id_number,
    put_in_force,
    serving,
    shipped_document,
)

JULY = datetime(2024, 7, 2, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai, after the versions below start
AMOXICILLIN = "XJ01CAA010A001010101107"  # class A, no price cap, in the shipped catalogue


@pytest.fixture
def own_live(own_service: Service) -> Iterator[LiveServer]:
    with serving(own_service.app) as running:
        yield running


def version(label: str, change: Any = None, **top: Any) -> dict[str, Any]:
    """The shipped city version as a new version from `label`, changed by `change(layers by id)`."""
    document = shipped_document()
    document["version"], document["effective"] = label, {"from": label}
    document.update(top)
    if change is not None:
        change({layer["id"]: layer for layer in document["layers"]})
    return document


def body(code: str, level: str, person: str, key: str, *, amount: str = "1000.00", visit_type: str = "inpatient",
         day: str = "2024-07-02", admitted: str | None = None, **visit: Any) -> dict[str, Any]:
    claim = claim_body(code, level, person, amount=amount, visit_type=visit_type, discharge=day,
                       settled_at=f"{day}T10:00:00+08:00")
    claim["visit"] |= {"admission_date": admitted or day, **visit}
    claim["lines"] = [{"id": "1", "code": AMOXICILLIN, "name": "阿莫西林胶囊", "quantity": "1", "unit_price": amount,
                       "amount": amount}]
    return {"transaction_id": key, "claim": claim}


def settle(client: httpx.Client, request: dict[str, Any]) -> dict[str, Any]:
    reply = client.post("/v1/settlements", json=request)
    assert reply.status_code == 201, reply.text
    data: dict[str, Any] = reply.json()
    return data


def paid(data: dict[str, Any], fund: str) -> Decimal:
    return sum((Decimal(p["paid"]) for p in data["payers"] if p["eligible"] and p["fund"] == fund), Decimal(0))


def rows(service: Service, query: str, **params: Any) -> list[tuple[Any, ...]]:
    with service.app.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(query), params)]


# Limits inside a fund


def outpatient_limit(layers: dict[str, Any]) -> None:
    """门诊统筹: 100.00 a year, inside the basic fund's cap (the shipped 2024 version wrote it per visit)."""
    layers["basic_outpatient"]["caps"] = {"per_year": "130000.00", "source": "ILLUSTRATIVE"}
    layers["basic_outpatient"]["limit"] = {"name": "outpatient_pooling", "per_year": "100.00",
                                           "source": "ILLUSTRATIVE"}


def forget_limit_figures(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """The planted fault: settlements write their limit entries but never move the limits' year figures."""
    naive = re.sub(r"\), limits AS \(.*?\n\), funds AS \(", "), funds AS (", settling.WRITE, flags=re.DOTALL)
    assert naive != settling.WRITE and "limit_years" not in naive
    monkeypatch.setattr(settling, "WRITE", naive)
    move_year = Repository.move_year

    def without_limits(self: Repository, *args: Any, **kwargs: Any) -> None:
        if len(args) > 5:
            args = args[:5]
        kwargs.pop("limits", None)
        move_year(self, *args, **kwargs)

    monkeypatch.setattr(Repository, "move_year", without_limits)


def three_visits(service: Service, live: LiveServer) -> tuple[str, list[Decimal], dict[str, Any]]:
    """Three 120.00 outpatient visits of one person at two township hospitals: what basic paid each time."""
    code_a, key_a = service.hospital("township")
    code_b, key_b = service.hospital("township")
    person = new_id_number()
    shares = []
    with live.client(key_a) as a, live.client(key_b) as b:
        for index, (client, code) in enumerate(((a, code_a), (b, code_b), (a, code_a))):
            data = settle(client, body(code, "township", person, f"OP-{index}", amount="120.00",
                                       visit_type="outpatient"))
            shares.append(paid(data, "390100"))
    return person, shares, data


@pytest.mark.parametrize("planted", [False, True], ids=["real", "forgets-the-figures"])
def test_a_limit_inside_a_fund_binds_across_hospitals(own_service: Service, own_live: LiveServer,
                                                      monkeypatch: pytest.MonkeyPatch, planted: bool) -> None:
    service = own_service
    put_in_force(service, version("2024-07-01", outpatient_limit))
    service.clock.now = JULY
    if planted:
        forget_limit_figures(service, monkeypatch)
    person, shares, last = three_visits(service, own_live)
    if planted:  # the year never remembers the limit: every visit pays its 60.00
        assert shares == [Decimal("60.00")] * 3
        return
    assert shares == [Decimal("60.00"), Decimal("40.00"), Decimal("0.00")]
    assert last["year_to_date"]["after"]["limits"] == {"390100": {"outpatient_pooling": "100.00"}}
    assert "limit outpatient_pooling reached" in next(p["summary"] for p in last["payers"]
                                                      if p["layer"] == "basic_outpatient")
    with service.app.context.uow() as tx:
        assert tx.repo.limit_totals(person, 2024) == {("390100", "outpatient_pooling"): 10000}
        assert tx.repo.read_year(person, 2024).limits == {("390100", "outpatient_pooling"): 10000}
        assert tx.repo.ledger_totals(person, 2024)["390100"][0] == 10000  # inside the fund's figures too


def test_a_reversal_gives_the_limit_back_and_its_entries_are_history(own_service: Service,
                                                                     own_live: LiveServer) -> None:
    service = own_service
    put_in_force(service, version("2024-07-01", outpatient_limit))
    service.clock.now = JULY
    code, key = service.hospital("township")
    person = new_id_number()
    with own_live.client(key) as client:
        first = settle(client, body(code, "township", person, "L-1", amount="120.00", visit_type="outpatient"))
        second = settle(client, body(code, "township", person, "L-2", amount="120.00", visit_type="outpatient"))
        assert (paid(first, "390100"), paid(second, "390100")) == (Decimal("60.00"), Decimal("40.00"))
        reversal = client.post(f"/v1/settlements/{second['settlement_id']}/reversal",
                               json={"transaction_id": "L-2R", "reason": "test"})
        assert reversal.status_code == 201, reversal.text
        eligibility = client.post("/v1/eligibility", json={"id_number": person, "on": "2024-07-02"}).json()
        assert eligibility["year_to_date"]["limits"] == {"390100": {"outpatient_pooling": "60.00"}}
        third = settle(client, body(code, "township", person, "L-3", amount="120.00", visit_type="outpatient"))
        assert paid(third, "390100") == Decimal("40.00")
    entries = rows(service, "SELECT paid_fen, reversal_id IS NOT NULL FROM limit_entries WHERE id_number = :p "
                            "ORDER BY id", p=person)
    assert entries == [(6000, False), (4000, False), (-4000, True), (4000, False)]
    with service.app.context.uow() as tx:
        assert tx.repo.limit_totals(person, 2024) == tx.repo.read_year(person, 2024).limits == {
            ("390100", "outpatient_pooling"): 10000}
    for statement in ("UPDATE limit_entries SET paid_fen = 0", "DELETE FROM limit_entries"):
        with pytest.raises(Exception, match="APPEND_ONLY"), service.app.engine.begin() as connection:
            connection.execute(text(statement))
    report = tariffs.verify(service.app.context, date(2024, 7, 1), date(2024, 7, 31), "test")
    assert (report["checked"], report["differences"]) == (3, [])


# Admissions by hospital level


def counted_per_level(layers: dict[str, Any]) -> None:
    layers["basic_inpatient"]["deductible"]["repeat_admission"] = {"counted": "level", "step": "0.20",
                                                                   "floor": "0.60"}


def forget_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    """The planted fault: stays are counted in the year but never by level."""
    write_parameters = settling.PostgresStatements.write_parameters
    move_year: Any = Repository.move_year

    def levelless_parameters(rows: settling.SettlementRows) -> dict[str, Any]:
        return write_parameters(dataclasses.replace(rows, level=""))

    def without_level(self: Repository, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("level", None)
        move_year(self, *args[:4], "", *args[5:], **kwargs)

    monkeypatch.setattr(settling.PostgresStatements, "write_parameters", staticmethod(levelless_parameters))
    monkeypatch.setattr(Repository, "move_year", without_level)


@pytest.mark.parametrize("planted", [False, True], ids=["real", "forgets-the-levels"])
def test_repeat_admissions_counted_per_hospital_level(own_service: Service, own_live: LiveServer,
                                                      monkeypatch: pytest.MonkeyPatch, planted: bool) -> None:
    service = own_service
    put_in_force(service, version("2024-07-01", counted_per_level))
    service.clock.now = JULY
    if planted:
        forget_levels(monkeypatch)
    township, township_key = service.hospital("township")
    county, county_key = service.hospital("county")
    person = new_id_number()
    with own_live.client(township_key) as small, own_live.client(county_key) as large:
        settle(small, body(township, "township", person, "T-1"))
        first = settle(large, body(county, "county", person, "C-1"))
        second = settle(large, body(county, "county", person, "C-2"))
    # County: the first stay at a county hospital pays the whole 400.00 (the township stay does not count),
    # the second 320.00. Counting every stay of the year, the first would have had 320.00.
    shares = (paid(first, "390100"), paid(second, "390100"))
    if planted:
        assert shares == (Decimal("450.00"), Decimal("450.00"))
        return
    assert shares == (Decimal("450.00"), Decimal("510.00"))
    assert second["year_to_date"]["after"]["admissions_by_level"] == {"county": 2, "township": 1}
    with own_live.client(county_key) as large:
        assert large.post(f"/v1/settlements/{second['settlement_id']}/reversal",
                          json={"transaction_id": "C-2R", "reason": "test"}).status_code == 201
    assert rows(service, "SELECT admissions, admissions_township, admissions_county, admissions_city "
                         "FROM person_years WHERE id_number = :p", p=person) == [(2, 1, 1, 0)]


# Which date decides


def admission_decides(layers: dict[str, Any]) -> None:
    layers["basic_inpatient"]["rate"]["by_level"]["county"] = "0.80"


def test_a_dibao_status_ending_during_a_stay(own_service: Service, own_live: LiveServer) -> None:
    """低保 until 5 July; a stay from 3 to 10 July. A tariff taking categories on the admission date gives the
    stay medical assistance; one taking them on the settlement date (the shipped default) does not."""
    service = own_service
    put_in_force(service, version("2024-07-01", dates={"categories": "admission"}))
    put_in_force(service, version("2024-07-20"))  # no dates: the settlement date decides
    code, key = service.hospital("county")
    person = new_id_number()
    import_roster_rows(service, [(person, "dibao_rural_a", "2024-01-01", "2024-07-05")])
    service.clock.now = datetime(2024, 7, 25, 2, 0, tzinfo=UTC)
    with own_live.client(key) as client:
        july = settle(client, body(code, "county", person, "D-1", day="2024-07-10", admitted="2024-07-03"))
        quote = client.post("/v1/quotes", json={"claim": body(code, "county", person, "-", day="2024-07-10",
                                                               admitted="2024-07-03")["claim"]}).json()
        later = settle(client, body(code, "county", person, "D-2", day="2024-07-24", admitted="2024-07-03"))
    # 1,000.00 at a county hospital: basic (1,000.00 - 400.00) x 0.75 = 450.00; assistance 70% of 550.00.
    assert july["categories"] == quote["categories"] == ["dibao_rural_a"]
    assert (paid(july, "390100"), paid(july, "610100")) == (Decimal("450.00"), Decimal("385.00"))
    assert later["categories"] == [] and paid(later, "610100") == Decimal("0.00")
    assert (july["tariff"]["version"], later["tariff"]["version"]) == ("2024-07-01", "2024-07-20")
    assert rows(service, "SELECT categories FROM settlements WHERE transaction_id IN ('D-1', 'D-2') "
                         "ORDER BY transaction_id") == [('["dibao_rural_a"]',), ("[]",)]
    report = tariffs.verify(service.app.context, date(2024, 7, 1), date(2024, 7, 31), "test")
    assert (report["checked"], report["differences"]) == (2, [])


def test_a_new_versions_transition_rule_keeps_a_stay_under_the_old_one(own_service: Service,
                                                                       own_live: LiveServer) -> None:
    """The version from 8 July (county 80%) says the admission date decides: a stay admitted on 3 July and
    settled on the 10th keeps the version before it (75%); one admitted on the 9th takes the new one."""
    service = own_service
    put_in_force(service, version("2024-07-08", admission_decides, dates={"tariff": "admission"}))
    code, key = service.hospital("county")
    service.clock.now = datetime(2024, 7, 10, 4, 0, tzinfo=UTC)
    with own_live.client(key) as client:
        old = settle(client, body(code, "county", new_id_number(), "V-1", day="2024-07-10", admitted="2024-07-03"))
        new = settle(client, body(code, "county", new_id_number(), "V-2", day="2024-07-10", admitted="2024-07-09"))
    assert (old["tariff"]["version"], paid(old, "390100")) == ("2024-01-01", Decimal("450.00"))
    assert (new["tariff"]["version"], paid(new, "390100")) == ("2024-07-08", Decimal("480.00"))
    report = tariffs.verify(service.app.context, date(2024, 7, 1), date(2024, 7, 31), "test")
    assert (report["checked"], report["differences"]) == (2, [])


# Retirees and referrals


def employees(layers: dict[str, Any]) -> None:
    layers["employee_inpatient"] = {
        "id": "employee_inpatient", "fund": "310100", "name": "职工基本医疗保险统筹基金",
        "eligible": {"schemes": ["employee"], "visit_types": ["inpatient"]},
        "deductible": {"per": "visit", "amount": "500.00", "source": "ILLUSTRATIVE"},
        "rate": {"rate": "0.85", "source": "ILLUSTRATIVE"},
        "category_rules": [
            {"label": "转外就医", "referral": True, "rate_subtract": "0.10", "source": "ILLUSTRATIVE"},
            {"label": "退休人员", "retired": True, "rate_add": "0.05", "source": "ILLUSTRATIVE"}]}


def with_employee_layer(label: str) -> dict[str, Any]:
    document = version(label)
    holder: dict[str, Any] = {}
    employees(holder)
    document["layers"].insert(0, holder["employee_inpatient"])
    return document


def employee_roster(person: str, retired: str) -> bytes:
    return ("id_number,name,scheme,region,category,valid_from,valid_to,retired\n"
            f"{person},测试,employee,611002,,,,{retired}\n").encode()


def test_retirees_from_the_roster_and_referrals_from_the_claim(own_service: Service, own_live: LiveServer,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    service = own_service
    put_in_force(service, with_employee_layer("2024-07-01"))
    service.clock.now = JULY
    code, key = service.hospital("county")
    retiree, working = new_id_number(), new_id_number()
    for person, retired in ((retiree, "1"), (working, "0")):
        imported = import_roster(service.app.context, SYSTEM, "employees.csv", employee_roster(person, retired))
        assert (imported.accepted, imported.rejected) == (1, [])

    def employee(person: str, key_: str, **visit: Any) -> dict[str, Any]:
        request = body(code, "county", person, key_, amount="10000.00", **visit)
        request["claim"]["patient"]["scheme"] = "employee"
        return request

    with own_live.client(key) as client:
        old = settle(client, employee(retiree, "R-1"))
        young = settle(client, employee(working, "R-2"))
        referred = settle(client, employee(working, "R-3", referral=True))
        eligibility = client.post("/v1/eligibility", json={"id_number": retiree, "on": "2024-07-02"}).json()
    # (10,000.00 - 500.00) at 90% (retired), 85%, 75% (referred out of the region).
    assert [paid(data, "310100") for data in (old, young, referred)] == [
        Decimal("8550.00"), Decimal("8075.00"), Decimal("7125.00")]
    assert eligibility["retired"] is True and eligibility["categories"] == []
    assert rows(service, "SELECT transaction_id, retired FROM settlements WHERE transaction_id LIKE 'R-%' "
                         "ORDER BY transaction_id") == [("R-1", True), ("R-2", False), ("R-3", False)]
    stored = json.loads(rows(service, "SELECT claim FROM settlements WHERE transaction_id = 'R-3'")[0][0])
    assert stored["visit"]["referral"] is True
    report = tariffs.verify(service.app.context, date(2024, 7, 1), date(2024, 7, 31), "test")
    assert (report["checked"], report["differences"]) == (3, [])

    # The planted fault: a recomputation that forgets the recorded retirement pays the retiree 85%.
    recompute = tariffs.recompute
    monkeypatch.setattr(tariffs, "recompute", lambda row, *args: recompute(
        dataclasses.replace(row, retired=None), *args))
    report = tariffs.verify(service.app.context, date(2024, 7, 1), date(2024, 7, 31), "test")
    assert [item["settlement_id"] for item in report["differences"]] == [old["settlement_id"]]


def test_a_claim_without_the_new_fields_hashes_as_before() -> None:
    """The request hash (the idempotency key's) and the stored claim of a request that names neither a referral
    nor a disease are those of the engine before them (the hash pinned from the engine of revision 0006)."""
    data = json.loads((ROOT / "examples/requests/settle-dibao-county.json").read_text(encoding="utf-8"))
    request = SettleRequest.model_validate(data)
    dumped = request.model_dump(mode="json")
    assert "referral" not in dumped["claim"]["visit"] and "disease" not in dumped["claim"]["visit"]
    pinned = "facc8b6a72df35672eafcc5c4bab640271e22d7174cde3e311ed3f895fb929de"
    assert canonical_hash("settle", dumped) == pinned
    naive = json.loads(json.dumps(dumped))  # the planted fault: the defaults dumped too
    naive["claim"]["visit"] |= {"referral": False, "disease": None}
    assert canonical_hash("settle", naive) != pinned
    referred = SettleRequest.model_validate(data | {"claim": data["claim"] | {
        "visit": data["claim"]["visit"] | {"referral": True, "disease": "hypertension"}}})
    assert referred.model_dump(mode="json")["claim"]["visit"] | {} == dumped["claim"]["visit"] | {
        "referral": True, "disease": "hypertension"}


def test_the_pipelined_settlement_still_sends_five_statements(pg_service: Service,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The limits, the admissions by level, the roster's spans and retirement ride in the statements a PostgreSQL
    settlement already sent: BEGIN, the year's lock, one read, one write, COMMIT (docs/performance.md)."""
    import psycopg

    from settlement.services.auth import authenticate
    from settlement.services.settlements import SettlementService

    service = pg_service
    put_in_force(service, version("2024-07-01", outpatient_limit))
    service.clock.now = JULY
    code, key = service.hospital("township")
    with service.app.context.uow() as tx:
        caller = authenticate(tx.repo, key)
    settlements = SettlementService(service.app.context)
    first = SettleRequest.model_validate(body(code, "township", new_id_number(), "P-0", amount="120.00",
                                              visit_type="outpatient"))
    assert settlements.settle(caller, first).status == 201  # the worker loads the schedule's versions once
    sent: list[str] = []
    execute = psycopg.Connection.execute

    def counted(self: psycopg.Connection[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(query).split()[0] if str(query).strip() else "")
        return execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "execute", counted)
    request = SettleRequest.model_validate(body(code, "township", new_id_number(), "P-1", amount="120.00",
                                                visit_type="outpatient"))
    reply = settlements.settle(caller, request)
    assert reply.status == 201 and paid(reply.json(), "390100") == Decimal("60.00")
    assert sent == ["BEGIN", "INSERT", "SELECT", "WITH", "COMMIT"], sent
