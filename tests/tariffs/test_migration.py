"""Migration 0004 on a database that the engine of revision 0003 used: its tariff_versions rows were resolved
tariffs recorded on first use (a county's row carries its city's rules merged in, under a label such as
"2024-01-01+611000@2024-01-01"). After the upgrade each is an active, self-contained version approved by
"system"; the engine settles with them exactly as it settles from the shipped files, recomputes them without a
difference, refuses to edit them, and administers new versions beside them. Both databases.

Planted-fault control: the same upgrade of a database whose county row lost the county's override (its
medical-assistance rate is the city's 0.60, not the county's 0.65). The recomputation cannot see that (it
recomputes from what was recorded), the comparison with the files does: the test shows it fails.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from settlement.bootstrap import SYSTEM, build, prepare
from settlement.db.engine import make_engine
from settlement.db.migrate import upgrade
from settlement.db.models import Settlement, TariffVersion
from settlement.domain.accumulators import Accumulators
from settlement.domain.settle import settle
from settlement.services import tariffs
from settlement.services.auth import Caller, authenticate
from settlement.services.errors import ServiceError
from settlement.services.roster import import_roster
from settlement.services.settlements import SettlementService
from settlement.tariffstore import load_store
from settlement.wire.claims import ServiceClaimIn
from settlement.wire.requests import SettleRequest
from tests.factories import TARIFFS
from tests.service.conftest import (
    Clock,
    Service,
    claim_body,
    new_id_number,
    put_in_force,
    settings_for,
    shipped_document,
)

CITY, COUNTY, DISTRICT = "611000", "611021", "611002"
COUNTY_LABEL = "2024-01-01+611000@2024-01-01"
JULY = date(2024, 7, 2)
RECORDED_AT = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)  # when the old engine first used the tariffs
LEGACY = sa.table("tariff_versions", *(sa.column(name) for name in (
    "region", "version", "sha256", "effective_from", "effective_to", "content", "loaded_at")))


def legacy_rows(*, drop_county_override: bool = False) -> list[dict[str, Any]]:
    """What the engine of revision 0003 recorded: one row per resolved tariff (every resolution pair)."""
    store = load_store(TARIFFS)
    rows = []
    for version, parent in store.all_resolutions():
        if version.effective_from.year > 2024 or (parent is not None and parent.effective_from.year > 2024):
            continue  # the versions of 2024 only: the old engine had nothing else
        resolved = store.resolved_pair(version, parent)
        ref, content = resolved.tariff.ref, resolved.canonical
        if drop_county_override and ref.region == COUNTY:  # the planted fault: the city's rate under the county
            document = json.loads(content)
            next(item for item in document["layers"] if item["id"] == "medical_assistance")["rate"]["rate"] = "0.60"
            content = json.dumps(document, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        sha = hashlib.sha256(content.encode("utf-8")).hexdigest()
        assert sha == ref.sha256 or drop_county_override
        rows.append({"region": ref.region, "version": ref.version, "sha256": sha, "content": content,
                     "effective_from": resolved.tariff.effective_from, "effective_to": resolved.tariff.effective_to,
                     "loaded_at": RECORDED_AT})
    return rows


def migrated(url: str, tmp: Path, rows: list[dict[str, Any]]) -> Service:
    """The schema at 0003 with the old rows, then the application built on it (which upgrades to head)."""
    engine = make_engine(url)
    try:
        upgrade(engine, "0003")
        with engine.begin() as connection:
            assert connection.scalar(sa.text("SELECT version_num FROM alembic_version")) == "0003"
            connection.execute(sa.insert(LEGACY), rows)
    finally:
        engine.dispose()
    application = build(settings_for(url, tmp))
    clock = Clock()  # 15 June 2024
    application.context.clock = clock
    prepare(application)
    return Service(application, clock, tmp)


@pytest.fixture
def legacy_service(own_database_url: str, tmp_path: Path) -> Iterator[Service]:
    service = migrated(own_database_url, tmp_path, legacy_rows())
    yield service
    service.app.dispose()


@dataclass(frozen=True)
class Settled:
    body: dict[str, Any]
    version_id: int
    parent_id: int | None
    sha256: str


def settle_one(service: Service, caller: Caller, claim: dict[str, Any]) -> Settled:
    request = SettleRequest.model_validate({"transaction_id": f"T-{secrets.token_hex(6)}", "claim": claim})
    reply = SettlementService(service.app.context).settle(caller, request)
    assert reply.status == 201, reply.body
    body = reply.json()
    with service.app.context.uow() as tx:
        row = tx.session.scalar(sa.select(Settlement).where(Settlement.public_id == body["settlement_id"]))
        assert row is not None
        return Settled(body, row.tariff_version_id, row.tariff_parent_version_id, row.tariff_sha256)


def amounts(body: dict[str, Any]) -> dict[str, Decimal]:
    paid = {"patient": Decimal(body["patient_pays"])}
    for payer in body["payers"]:
        if payer["eligible"]:
            paid[payer["fund"]] = paid.get(payer["fund"], Decimal(0)) + Decimal(payer["paid"])
    return {fund: value for fund, value in paid.items() if value}


def from_files(claim: dict[str, Any], categories: tuple[str, ...]) -> tuple[dict[str, Decimal], str]:
    """What the shipped files pay for a first admission (amounts, tariff sha256): no database, no migration."""
    claim_in = ServiceClaimIn.model_validate(claim)
    built = claim_in.build(claim_in.patient, categories)
    tariff = load_store(TARIFFS).tariff(built.patient.region, built.tariff_date)
    computed = settle(built, tariff, Accumulators(built.insurance_year))
    paid = {fund: value for fund, value in computed.paid_by_fund().items() if value}
    return paid | {"patient": computed.patient_pays}, tariff.ref.sha256


def differences(settled: Settled, claim: dict[str, Any], categories: tuple[str, ...]) -> list[str]:
    expected, sha = from_files(claim, categories)
    found = [f"paid {amounts(settled.body)}, the files pay {expected}"] if amounts(settled.body) != expected else []
    return found + ([f"recorded tariff {settled.sha256[:12]}, the files' is {sha[:12]}"] if settled.sha256 != sha
                    else [])


def county_patient(service: Service, code: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    """A low-income person of the county (medical assistance: the county's 0.65, not the city's 0.60)."""
    person = new_id_number(COUNTY)
    csv = f"id_number,name,scheme,region,category,valid_from,valid_to\n{person},测试,resident,{COUNTY},low_income," \
          "2024-01-01,\n"
    report = import_roster(service.app.context, SYSTEM, "county.csv", csv.encode())
    assert report.accepted == 1
    claim = claim_body(code, "county", person, amount="5000.00", region=COUNTY)
    return claim, ("low_income",)


def desk(service: Service) -> tuple[str, Caller]:
    code, key = service.hospital("county")
    with service.app.context.uow() as tx:
        return code, authenticate(tx.repo, key)


def versions(service: Service) -> dict[tuple[str, str], TariffVersion]:
    with service.app.context.uow() as tx:
        rows = tx.repo.tariff_versions()
        tx.session.expunge_all()
        return {(row.region, row.version): row for row in rows}


def test_versions_recorded_before_0004_become_active_self_contained_versions(legacy_service: Service) -> None:
    service, context = legacy_service, legacy_service.app.context
    old = legacy_rows()
    rows = versions(service)
    # Every old row, as it was, now active, approved by "system", self-contained; prepare seeded nothing more.
    assert set(rows) == {(row["region"], row["version"]) for row in old} and (COUNTY, COUNTY_LABEL) in rows
    for row in old:
        now = rows[(row["region"], row["version"])]
        assert (now.sha256, now.content, now.effective_from, now.effective_to) == \
            (row["sha256"], row["content"], row["effective_from"], row["effective_to"])
        assert (now.status, now.approved_by, now.activated_by, now.created_by, now.inherits) == \
            ("active", "system", "system", "system", None)
    with context.uow() as tx:
        assert tx.session.execute(sa.text("SELECT id, generation FROM tariff_schedule")).all() == [(1, 1)]
    assert {(v["region"], v["version"]): v["state"] for v in tariffs.list_versions(context)} == \
        dict.fromkeys(rows, "in force")

    # June: a district patient (the city's version) and a low-income county patient (the migrated county row).
    code, caller = desk(service)
    city_claim = claim_body(code, "county", new_id_number(DISTRICT), region=DISTRICT)
    city = settle_one(service, caller, city_claim)
    assert (city.version_id, city.parent_id) == (rows[(CITY, "2024-01-01")].id, None)
    assert differences(city, city_claim, ()) == []
    county_claim, categories = county_patient(service, code)
    county = settle_one(service, caller, county_claim)
    assert (county.version_id, county.parent_id) == (rows[(COUNTY, COUNTY_LABEL)].id, None)
    assert county.body["tariff"]["version"] == COUNTY_LABEL
    assert differences(county, county_claim, categories) == []
    assert amounts(county.body)["610100"] > 0  # the assistance layer paid: the county's rate was exercised

    report = tariffs.verify(context, date(2024, 1, 1), date(2024, 12, 31), "test")
    assert (report["checked"], report["matched"], report["differences"]) == (2, 2, [])

    # The triggers of 0004 guard the migrated rows too.
    with pytest.raises(DBAPIError) as refused, service.app.engine.begin() as connection:
        connection.execute(sa.text("UPDATE tariff_versions SET content = :c WHERE id = :id"),
                           {"c": rows[(COUNTY, COUNTY_LABEL)].content + " ", "id": county.version_id})
    assert "TARIFF_IMMUTABLE" in str(refused.value)
    assert versions(service)[(COUNTY, COUNTY_LABEL)].content == rows[(COUNTY, COUNTY_LABEL)].content

    # A new city version from 1 July is imported, approved and activated beside the migrated ones.
    document = shipped_document(CITY)
    document["version"], document["effective"] = "2024-07-01", {"from": "2024-07-01"}
    next(item for item in document["layers"] if item["id"] == "basic_inpatient")["rate"]["by_level"]["county"] = \
        "0.80"
    new_id = put_in_force(service, document)
    day = JULY.isoformat()
    service.clock.now = datetime.fromisoformat(f"{day}T12:00:00+08:00")  # July has come: its bills are settled
    july_claim = claim_body(code, "county", new_id_number(DISTRICT), region=DISTRICT,
                            settled_at=f"{day}T10:00:00+08:00", discharge=day)
    july = settle_one(service, caller, july_claim)
    assert (july.version_id, july.body["tariff"]["version"]) == (new_id, "2024-07-01")
    assert amounts(july.body)["390100"] == Decimal("480.00")  # 600.00 x 0.80 (450.00 under the old version)
    # The migrated county row is self-contained: it does not follow the city to the new version (a fresh
    # database, whose county version inherits, would); it stays in force for the county.
    july_county, categories = county_patient(service, code)
    july_county["visit"] |= {"settled_at": f"{day}T11:00:00+08:00", "admission_date": day, "discharge_date": day}
    later = settle_one(service, caller, july_county)
    assert (later.version_id, later.parent_id) == (county.version_id, None)
    report = tariffs.verify(context, date(2024, 1, 1), date(2024, 12, 31), "test")
    assert (report["checked"], report["differences"]) == (4, [])


def test_planted_fault_a_county_row_without_its_override_is_caught_by_the_files(own_database_url: str,
                                                                               tmp_path: Path) -> None:
    service = migrated(own_database_url, tmp_path, legacy_rows(drop_county_override=True))
    try:
        code, caller = desk(service)
        claim, categories = county_patient(service, code)
        county = settle_one(service, caller, claim)
        assert county.body["tariff"]["version"] == COUNTY_LABEL
        report = tariffs.verify(service.app.context, date(2024, 1, 1), date(2024, 12, 31), "test")
        assert report["differences"] == []  # the recomputation agrees with what was recorded, however wrong
        found = differences(county, claim, categories)
        assert len(found) == 2 and "610100" in found[0], found  # the comparison with the files does not
    finally:
        service.app.dispose()


def test_start_up_hint_names_only_files_that_can_be_imported(legacy_service: Service) -> None:
    service = legacy_service
    hint = prepare(service.app)
    unimportable = []
    for label in tariffs.unrecorded_files(service.app.context, TARIFFS):
        region, _, version = label.partition("/")
        path = TARIFFS / region / f"{version}.yaml"
        try:
            tariffs.import_path(service.app.context, path, "admin:alice")
        except ServiceError as error:
            unimportable.append(f"{label}: {error.code}")
    assert unimportable == [], hint
