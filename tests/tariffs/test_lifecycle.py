"""The life of a tariff version (import, approve, activate, withdraw) on both databases: a version entered today
changes nothing before its date and takes over exactly at midnight Asia/Shanghai; nothing can rewrite a date
already settled; every step is audited; the database itself refuses to edit or delete a version's document.

Each area carries a planted-fault control: the naive rule a careless implementation would follow (switch at UTC
midnight, ignore an explicit end date, keep the old city version under a county) is computed beside the engine's
answer, and the test shows that its own assertion tells them apart.
"""

from __future__ import annotations

import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from settlement.bootstrap import SYSTEM
from settlement.db.models import Settlement, TariffVersion
from settlement.domain.claim import SHANGHAI
from settlement.services import tariffs
from settlement.services.auth import Caller, authenticate
from settlement.services.errors import ServiceCode, ServiceError
from settlement.services.roster import import_roster
from settlement.services.settlements import SettlementService
from settlement.wire.requests import QuoteRequest, SettleRequest
from tests.service.conftest import Service, claim_body, new_id_number, put_in_force, shipped_document

CITY, COUNTY = "611000", "611021"
SHIPPED = f"{CITY}/2024-01-01"
BASIC, ASSISTANCE = "390100", "610100"
ALICE, BOB, CAROL = "admin:alice", "admin:bob", "admin:carol"
OLD_PAID, NEW_PAID = Decimal("450.00"), Decimal("480.00")  # 1,000.00 at a county hospital: 600 x 0.75 / 0.80


# Documents, settlements and what the database holds


def layer(document: dict[str, Any], layer_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(item for item in document["layers"] if item["id"] == layer_id)
    return found


def city_version(version: str, start: str, *, to: str | None = None, county_rate: Any = "0.80") -> dict[str, Any]:
    """The shipped city document as a new version: its own name and range, another county-level basic rate."""
    document = shipped_document()
    document["version"] = version
    document["effective"] = {"from": start} | ({"to": to} if to else {})
    layer(document, "basic_inpatient")["rate"]["by_level"]["county"] = county_rate
    return document


def draft(service: Service, document: dict[str, Any], author: str = ALICE) -> int:
    outcome = tariffs.import_document(service.app.context, document, "test", author)
    assert outcome["already_recorded"] is False and outcome["version"]["status"] == "draft"
    return int(outcome["version"]["id"])


def approved(service: Service, document: dict[str, Any]) -> int:
    version_id = draft(service, document)
    tariffs.approve(service.app.context, str(version_id), BOB)
    return version_id


def refusal(code: ServiceCode, call: Any, *args: Any) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        call(*args)
    assert caught.value.code == code, caught.value
    return caught.value


def version_row(service: Service, reference: str) -> TariffVersion:
    with service.app.context.uow() as tx:
        row = tariffs.find_version(tx.repo, reference)
        tx.session.expunge(row)
        return row


def shipped_id(service: Service) -> int:
    return version_row(service, SHIPPED).id


def version_count(service: Service) -> int:
    with service.app.context.uow() as tx:
        return int(tx.session.scalar(select(func.count()).select_from(TariffVersion)) or 0)


def generation(service: Service) -> int:
    with service.app.context.uow() as tx:
        return tx.repo.tariff_generation()


def audit(service: Service, label: str) -> list[tuple[str, str]]:
    with service.app.context.uow() as tx:
        return [(entry.action, entry.actor) for entry in tx.repo.audit_of("tariff_version", label)]


@dataclass(frozen=True)
class Settled:
    public_id: str
    paid: dict[str, Decimal]
    patient_pays: Decimal
    tariff: str  # the version label the reply names
    version_id: int  # as recorded in the settlements table
    parent_id: int | None


@dataclass
class Desk:
    """A county hospital settling in-process; every bill is a new person's (no earlier admissions)."""

    service: Service
    code: str
    caller: Caller

    def claim(self, settled_at: str, region: str, amount: str, person: str | None) -> dict[str, Any]:
        day = datetime.fromisoformat(settled_at).astimezone(SHANGHAI).date().isoformat()
        return claim_body(self.code, "county", person or new_id_number(region), amount=amount, region=region,
                          settled_at=settled_at, discharge=day)

    def settle(self, settled_at: str, *, region: str = "611002", amount: str = "1000.00",
               person: str | None = None) -> Settled:
        request = SettleRequest.model_validate({"transaction_id": f"T-{secrets.token_hex(6)}",
                                                "claim": self.claim(settled_at, region, amount, person)})
        reply = SettlementService(self.service.app.context).settle(self.caller, request)
        assert reply.status == 201, reply.body
        body = reply.json()
        with self.service.app.context.uow() as tx:
            row = tx.session.scalar(select(Settlement).where(Settlement.public_id == body["settlement_id"]))
            assert row is not None
            recorded = (row.tariff_version_id, row.tariff_parent_version_id)
        return Settled(body["settlement_id"], paid_by_fund(body), Decimal(body["patient_pays"]),
                       body["tariff"]["version"], *recorded)

    def quote(self, settled_at: str) -> tuple[str, Decimal]:
        """What a settlement would use and pay now (a quote records nothing, so it blocks no activation)."""
        request = QuoteRequest.model_validate({"claim": self.claim(settled_at, "611002", "1000.00", None)})
        body = SettlementService(self.service.app.context).quote(self.caller, request)
        return body["tariff"]["version"], paid_by_fund(body).get(BASIC, Decimal(0))


def paid_by_fund(body: dict[str, Any]) -> dict[str, Decimal]:
    funds: dict[str, Decimal] = {}
    for payer in body["payers"]:
        funds[payer["fund"]] = funds.get(payer["fund"], Decimal(0)) + Decimal(payer["paid"])
    return funds


def desk(service: Service) -> Desk:
    code, key = service.hospital("county")
    with service.app.context.uow() as tx:
        return Desk(service, code, authenticate(tx.repo, key))


@pytest.fixture(autouse=True)
def claims_dated_ahead(request: pytest.FixtureRequest) -> None:
    """These tests settle and quote bills dated weeks after the clock, to show what a version does to the dates
    around its own. The service refuses such bills beyond SETTLEMENT_CLAIM_CLOCK_SKEW_SECONDS (at most a day;
    test_future_dates.py): a skew of two months stands in for the settlements dated ahead that the rules below
    must still hold against (within the skew, or recorded before that rule)."""
    if "own_service" in request.fixturenames:
        request.getfixturevalue("own_service").app.context.claim_clock_skew_seconds = 60 * 86400


# 1. A version entered today for next month: nothing changes before its date; the switch is at Shanghai midnight


def test_a_version_takes_over_exactly_at_midnight_in_shanghai(own_service: Service) -> None:
    service, counter = own_service, desk(own_service)
    old_id = shipped_id(service)
    early = counter.settle("2024-06-20T10:00:00+08:00")  # before the new version exists
    assert (early.paid[BASIC], early.version_id, early.tariff) == (OLD_PAID, old_id, "2024-01-01")

    new_id = draft(service, city_version("2024-07-01", "2024-07-01"))
    assert counter.quote("2024-07-01T09:00:00+08:00") == ("2024-01-01", OLD_PAID)  # a draft is not in force
    tariffs.approve(service.app.context, str(new_id), BOB)
    assert counter.quote("2024-07-01T09:00:00+08:00") == ("2024-01-01", OLD_PAID)  # nor an approved version
    view = tariffs.activate(service.app.context, str(new_id), BOB)
    assert (view["state"], view["effective_from"]) == ("scheduled", "2024-07-01")
    until = {v["id"]: v["in_force_until"] for v in tariffs.list_versions(service.app.context, CITY)}
    assert (until[old_id], until[new_id]) == ("2024-06-30", "2024-12-31")  # the shipped 2025 version follows it

    again = counter.settle("2024-06-20T10:00:00+08:00")  # the same date after activation: still the old one
    assert (again.paid[BASIC], again.version_id) == (OLD_PAID, old_id)
    instants = {"2024-06-30T23:59:59+08:00": old_id, "2024-07-01T00:00:00+08:00": new_id,
                "2024-06-30T15:59:59Z": old_id, "2024-06-30T16:00:00Z": new_id, "2024-06-30T16:30:00Z": new_id}
    used = {at: counter.settle(at) for at in instants}
    assert {at: s.version_id for at, s in used.items()} == instants
    assert {at: s.paid[BASIC] for at, s in used.items()} == {
        at: NEW_PAID if version == new_id else OLD_PAID for at, version in instants.items()}
    assert used["2024-07-01T00:00:00+08:00"].tariff == "2024-07-01"

    # Planted fault: a rule switching at UTC midnight would keep the old version for 16:30Z on 30 June.
    at = datetime.fromisoformat("2024-06-30T16:30:00Z")
    naive = new_id if at.astimezone(UTC).date() >= date(2024, 7, 1) else old_id
    assert naive == old_id != used["2024-06-30T16:30:00Z"].version_id


# 2. Overlapping ranges are refused, and nothing is recorded


def test_overlapping_ranges_are_refused_at_import(own_service: Service) -> None:
    service = own_service
    put_in_force(service, city_version("2024-07-01-q3", "2024-07-01", to="2024-09-30"))
    before = version_count(service)
    for version, start in (("2024-08-01", "2024-08-01"),  # starts inside the explicit range
                           ("2024-09-30", "2024-09-30"),  # on its last day: `to` is inclusive
                           ("2024-07-01-again", "2024-07-01"),  # the same start date
                           ("2024-01-01-again", "2024-01-01")):  # the same start as the shipped version
        error = refusal(ServiceCode.TARIFF_REJECTED, tariffs.import_document, service.app.context,
                        city_version(version, start), "test", ALICE)
        assert "TARIFF_OVERLAP" in {str(p.code) for p in error.problems}, (version, error.problems)
        assert any(f"{CITY}/{version}" in p.message for p in error.problems), error.problems
    assert version_count(service) == before

    # The day after the explicit end does not overlap: the refusals above are about the range, not the region.
    draft(service, city_version("2024-10-01", "2024-10-01"))
    assert version_count(service) == before + 1

    # Planted fault: a rule treating every version as open-ended (ending when the next starts) would accept the
    # 1 August version. Without an explicit end date the engine accepts it too (here in the other region).
    other = shipped_document("610900")
    other["version"], other["effective"] = "2024-07-01", {"from": "2024-07-01"}
    put_in_force(service, other)
    inside = shipped_document("610900")
    inside["version"], inside["effective"] = "2024-08-01", {"from": "2024-08-01"}
    draft(service, inside)
    assert version_count(service) == before + 3


def test_two_drafts_of_one_date_cannot_both_be_activated(own_service: Service) -> None:
    """Drafts are checked against the active versions only, so two drafts of one date can be recorded; the
    second activation is the one that finds the overlap."""
    service = own_service
    first = approved(service, city_version("2024-07-01", "2024-07-01"))
    second = approved(service, city_version("2024-07-01-b", "2024-07-01", county_rate="0.85"))
    tariffs.activate(service.app.context, str(first), BOB)
    generation_before = generation(service)
    error = refusal(ServiceCode.TARIFF_CONFLICT, tariffs.activate, service.app.context, str(second), BOB)
    assert "TARIFF_OVERLAP" in {str(p.code) for p in error.problems}
    assert version_row(service, str(second)).status == "approved"
    assert generation(service) == generation_before


# 3. Four eyes: the author cannot approve


def test_the_author_cannot_approve_their_own_version(own_service: Service) -> None:
    service = own_service
    version_id = draft(service, city_version("2024-07-01", "2024-07-01"), author=ALICE)
    label = f"{CITY}/2024-07-01"
    refusal(ServiceCode.TARIFF_SELF_APPROVAL, tariffs.approve, service.app.context, str(version_id), ALICE)
    refusal(ServiceCode.TARIFF_SELF_APPROVAL, tariffs.approve, service.app.context, label, ALICE)  # by name too
    row = version_row(service, str(version_id))
    assert (row.status, row.approved_by, row.approved_at) == ("draft", None, None)
    assert audit(service, label) == [("tariff.import", ALICE)]

    view = tariffs.approve(service.app.context, label, BOB)  # control: the same call by another admin passes
    assert (view["status"], view["state"], view["approved_by"], view["created_by"]) == (
        "approved", "approved", BOB, ALICE)
    assert audit(service, label) == [("tariff.import", ALICE), ("tariff.approve", BOB)]
    refusal(ServiceCode.TARIFF_STATE, tariffs.approve, service.app.context, label, CAROL)  # only drafts


def approvals_at_once(service: Service, monkeypatch: pytest.MonkeyPatch, *, lock_rows: bool) -> list[str]:
    """Bob and Carol approve one draft at the same moment; each pauses after reading the version, so that both
    have read it before either commits. Returns who approved it, by the audit log."""
    version_id = draft(service, city_version("2024-07-01", "2024-07-01"), author=ALICE)
    find = tariffs.find_version

    def slow_find(repo: Any, reference: str, *, for_update: bool = False) -> TariffVersion:
        row = find(repo, reference, for_update=for_update and lock_rows)
        time.sleep(0.3)
        return row

    monkeypatch.setattr(tariffs, "find_version", slow_find)
    barrier = threading.Barrier(2)

    def approve(actor: str) -> str:
        barrier.wait()
        try:
            tariffs.approve(service.app.context, str(version_id), actor)
        except ServiceError as error:
            return str(error.code)
        return "approved"

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(approve, [BOB, CAROL]))
    assert set(outcomes) <= {"approved", "TARIFF_STATE"}, outcomes
    return [actor for action, actor in audit(service, f"{CITY}/2024-07-01") if action == "tariff.approve"]


def test_two_administrators_approving_at_once_approve_once(own_service: Service,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The version's row is locked by the step: the second administrator waits, then finds it approved."""
    approvals = approvals_at_once(own_service, monkeypatch, lock_rows=True)
    assert len(approvals) == 1, approvals
    assert version_row(own_service, f"{CITY}/2024-07-01").approved_by == approvals[0]


def test_without_the_row_lock_both_would_approve(own_service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """The naive variant (read, check, write, with no lock) fails the check above on PostgreSQL; SQLite's
    BEGIN IMMEDIATE already holds the whole database, so there it cannot go wrong."""
    approvals = approvals_at_once(own_service, monkeypatch, lock_rows=False)
    if own_service.app.engine.dialect.name == "postgresql":
        assert sorted(approvals) == [BOB, CAROL]
    else:
        assert len(approvals) == 1


# 4. Activation refused: not approved, not in the future, or a date already settled


def test_activation_needs_an_approved_version_dated_after_today_in_shanghai(own_service: Service) -> None:
    service = own_service
    unapproved = draft(service, city_version("2024-07-01", "2024-07-01"))
    refusal(ServiceCode.TARIFF_STATE, tariffs.activate, service.app.context, str(unapproved), BOB)
    past = approved(service, city_version("2024-06-01", "2024-06-01"))
    today = approved(service, city_version("2024-06-15", "2024-06-15"))
    tomorrow = approved(service, city_version("2024-06-16", "2024-06-16"))
    generation_before = generation(service)
    for version_id in (past, today):
        error = refusal(ServiceCode.TARIFF_RETROACTIVE, tariffs.activate, service.app.context, str(version_id), BOB)
        assert "2024-06-15" in error.message
    # 16:00Z on 15 June is midnight of the 16th in Shanghai: tomorrow has become today. A rule taking "today"
    # in UTC (still the 15th) would activate it: the planted fault this refusal catches.
    service.clock.now = datetime(2024, 6, 15, 16, 0, tzinfo=UTC)
    assert service.clock.now.date() < date(2024, 6, 16)
    refusal(ServiceCode.TARIFF_RETROACTIVE, tariffs.activate, service.app.context, str(tomorrow), BOB)
    assert [version_row(service, str(i)).status for i in (unapproved, past, today, tomorrow)] == [
        "draft", "approved", "approved", "approved"]
    assert generation(service) == generation_before
    assert all(action != "tariff.activate" for label in ("2024-06-01", "2024-06-15", "2024-06-16")
               for action, _ in audit(service, f"{CITY}/{label}"))
    service.clock.now = datetime(2024, 6, 15, 15, 59, 59, tzinfo=UTC)  # 23:59:59 on the 15th in Shanghai
    assert tariffs.activate(service.app.context, str(tomorrow), BOB)["state"] == "scheduled"
    assert generation(service) == generation_before + 1


@pytest.mark.parametrize("dated", ["2024-07-01T23:59:59+08:00", "2024-06-30T16:30:00Z"])
def test_activation_refused_over_a_date_already_settled(own_service: Service, dated: str) -> None:
    service, counter = own_service, desk(own_service)
    first_day = approved(service, city_version("2024-07-01", "2024-07-01"))
    next_day = approved(service, city_version("2024-07-02", "2024-07-02"))
    settled = counter.settle(dated)  # future-dated (a discharge booked ahead), under the shipped version
    assert settled.version_id == shipped_id(service)
    generation_before = generation(service)

    error = refusal(ServiceCode.TARIFF_RETROACTIVE, tariffs.activate, service.app.context, str(first_day), BOB)
    assert settled.public_id in error.message
    row = version_row(service, str(first_day))
    assert (row.status, row.activated_by, row.activated_at) == ("approved", None, None)
    assert generation(service) == generation_before
    assert audit(service, f"{CITY}/2024-07-01") == [("tariff.import", ALICE), ("tariff.approve", BOB)]
    assert counter.quote(dated)[0] == "2024-01-01"

    # Control: the settlement is dated 1 July in Shanghai, so a version starting on the 2nd rewrites nothing.
    assert datetime.fromisoformat(dated).astimezone(SHANGHAI).date() == date(2024, 7, 1)
    assert tariffs.activate(service.app.context, str(next_day), BOB)["state"] == "scheduled"
    assert counter.settle("2024-07-02T00:00:00+08:00").version_id == next_day


# 5. Withdrawal

def test_a_draft_is_withdrawn_for_good(own_service: Service) -> None:
    service = own_service
    unwanted = draft(service, city_version("2024-08-01", "2024-08-01"))
    view = tariffs.withdraw(service.app.context, str(unwanted), CAROL, "typo in the rate")
    assert (view["status"], view["state"], view["withdrawn_by"], view["note"]) == (
        "withdrawn", "withdrawn", CAROL, "typo in the rate")
    refusal(ServiceCode.TARIFF_STATE, tariffs.approve, service.app.context, str(unwanted), BOB)
    refusal(ServiceCode.TARIFF_STATE, tariffs.withdraw, service.app.context, str(unwanted), CAROL, "again")
    assert audit(service, f"{CITY}/2024-08-01") == [("tariff.import", ALICE), ("tariff.withdraw", CAROL)]
    # The name stays taken: a withdrawn version is history, and another document under it is refused.
    refusal(ServiceCode.TARIFF_VERSION_EXISTS, tariffs.import_document, service.app.context,
            city_version("2024-08-01", "2024-08-01", county_rate="0.81"), "test", ALICE)


def test_withdrawing_a_scheduled_version_brings_the_old_one_back(own_service: Service) -> None:
    service, counter = own_service, desk(own_service)
    scheduled = put_in_force(service, city_version("2024-07-01", "2024-07-01"))
    assert counter.quote("2024-07-01T08:00:00+08:00") == ("2024-07-01", NEW_PAID)
    generation_before = generation(service)
    view = tariffs.withdraw(service.app.context, str(scheduled), CAROL, "the decree was postponed")
    assert (view["status"], view["state"], view["withdrawn_by"]) == ("withdrawn", "withdrawn", CAROL)
    assert generation(service) == generation_before + 1  # settlements in every worker see it at once
    assert audit(service, f"{CITY}/2024-07-01")[-1] == ("tariff.withdraw", CAROL)
    after = counter.settle("2024-07-01T08:00:00+08:00")
    assert (after.version_id, after.paid[BASIC]) == (shipped_id(service), OLD_PAID)
    assert tariffs.show_version(service.app.context, SHIPPED)["in_force_until"] == "2024-12-31"  # then 2025's
    refusal(ServiceCode.TARIFF_STATE, tariffs.activate, service.app.context, str(scheduled), BOB)


def test_a_scheduled_version_already_used_cannot_be_withdrawn(own_service: Service) -> None:
    service, counter = own_service, desk(own_service)
    used = put_in_force(service, city_version("2024-07-01", "2024-07-01"))
    assert counter.settle("2024-07-03T09:00:00+08:00").version_id == used
    # Not in force yet (15 June), but a settlement already used it: withdrawing would orphan that settlement.
    refusal(ServiceCode.TARIFF_RETROACTIVE, tariffs.withdraw, service.app.context, str(used), CAROL, "no")
    assert version_row(service, str(used)).status == "active"


def test_a_version_in_force_cannot_be_withdrawn(own_service: Service) -> None:
    service = own_service
    refusal(ServiceCode.TARIFF_RETROACTIVE, tariffs.withdraw, service.app.context, SHIPPED, CAROL, "old")
    version_id = put_in_force(service, city_version("2024-08-01", "2024-08-01"))
    service.clock.now = datetime(2024, 7, 31, 15, 59, 59, tzinfo=UTC)  # 23:59:59 on 31 July in Shanghai
    assert tariffs.show_version(service.app.context, str(version_id))["state"] == "scheduled"
    service.clock.now = datetime(2024, 7, 31, 16, 0, tzinfo=UTC)  # midnight of 1 August in Shanghai
    assert tariffs.show_version(service.app.context, str(version_id))["state"] == "in force"
    error = refusal(ServiceCode.TARIFF_RETROACTIVE, tariffs.withdraw, service.app.context, str(version_id),
                    CAROL, "late")
    assert "2024-08-01" in error.message
    # Planted fault: by the UTC date (still 31 July) the version is not in force yet and would be withdrawn.
    assert service.clock.now.date() < date(2024, 8, 1)
    assert version_row(service, str(version_id)).status == "active"
    assert [action for action, _ in audit(service, f"{CITY}/2024-08-01")] == [
        "tariff.import", "tariff.approve", "tariff.activate"]
    assert audit(service, SHIPPED) == [("tariff.seed", "system")]


# 6. Every step is audited with its actor; a refused step is not


def test_every_step_writes_one_audit_row_with_its_actor(own_service: Service) -> None:
    service = own_service
    label = f"{CITY}/2024-07-01"
    version_id = draft(service, city_version("2024-07-01", "2024-07-01"), author=ALICE)
    refusal(ServiceCode.TARIFF_STATE, tariffs.activate, service.app.context, label, CAROL)
    refusal(ServiceCode.TARIFF_SELF_APPROVAL, tariffs.approve, service.app.context, label, ALICE)
    refusal(ServiceCode.REQUEST_MALFORMED, tariffs.withdraw, service.app.context, label, CAROL, "  ")
    assert audit(service, label) == [("tariff.import", ALICE)]
    tariffs.approve(service.app.context, label, BOB)
    tariffs.activate(service.app.context, label, CAROL)
    refusal(ServiceCode.TARIFF_STATE, tariffs.activate, service.app.context, label, CAROL)
    refusal(ServiceCode.TARIFF_STATE, tariffs.approve, service.app.context, label, CAROL)
    expected = [("tariff.import", ALICE), ("tariff.approve", BOB), ("tariff.activate", CAROL)]
    assert audit(service, label) == expected
    history = tariffs.show_version(service.app.context, str(version_id))["history"]
    assert [(entry["action"], entry["actor"]) for entry in history] == expected
    assert {entry["details"]["id"] for entry in history} == {version_id}
    assert history[-1]["details"]["effective_from"] == "2024-07-01"

    later = draft(service, city_version("2024-08-01", "2024-08-01"), author=BOB)
    tariffs.approve(service.app.context, str(later), ALICE)
    tariffs.withdraw(service.app.context, str(later), "admin:dave", "superseded")
    trail = tariffs.show_version(service.app.context, str(later))["history"]
    assert [(entry["action"], entry["actor"]) for entry in trail] == [
        ("tariff.import", BOB), ("tariff.approve", ALICE), ("tariff.withdraw", "admin:dave")]
    assert trail[-1]["details"] == {"id": later, "was": "approved", "reason": "superseded"}
    assert audit(service, label) == expected  # each version's trail is its own
    assert audit(service, SHIPPED) == [("tariff.seed", "system")]


# 7. The database refuses to edit or delete a version


def statement_error(service: Service, sql: str, **params: Any) -> str:
    with pytest.raises(DBAPIError) as caught, service.app.engine.begin() as connection:
        connection.execute(text(sql), params)
    return str(caught.value)


@pytest.mark.parametrize(("column", "value"), [("content", "{}"), ("sha256", "0" * 64),
                                                ("effective_from", date(2023, 1, 1)),
                                                ("effective_to", date(2030, 12, 31))])
def test_the_database_refuses_to_edit_a_document(own_service: Service, column: str, value: object) -> None:
    service = own_service
    pending = draft(service, city_version("2024-07-01", "2024-07-01"))
    for version_id in (shipped_id(service), pending):  # active and draft alike
        message = statement_error(service, f"UPDATE tariff_versions SET {column} = :value WHERE id = :id",
                                  value=value, id=version_id)
        assert "TARIFF_IMMUTABLE" in message
    assert version_row(service, str(pending)).effective_from == date(2024, 7, 1)
    assert tariffs.show_version(service.app.context, str(pending))["document"]["version"] == "2024-07-01"


def test_the_database_refuses_deletes_and_going_back(own_service: Service) -> None:
    service = own_service
    before = version_count(service)
    pending = draft(service, city_version("2024-07-01", "2024-07-01"))
    for sql in ("DELETE FROM tariff_versions WHERE id = :id", "DELETE FROM tariff_versions"):
        assert "TARIFF_IMMUTABLE" in statement_error(service, sql, id=pending)
    old = shipped_id(service)
    for status in ("draft", "approved"):
        message = statement_error(service, "UPDATE tariff_versions SET status = :s WHERE id = :id", s=status, id=old)
        assert "TARIFF_IMMUTABLE" in message
    withdrawn = draft(service, city_version("2024-08-01", "2024-08-01"))
    tariffs.withdraw(service.app.context, str(withdrawn), BOB, "not needed")
    for status in ("draft", "active"):
        message = statement_error(service, "UPDATE tariff_versions SET status = :s WHERE id = :id",
                                  s=status, id=withdrawn)
        assert "TARIFF_IMMUTABLE" in message
    assert version_count(service) == before + 2
    assert version_row(service, str(old)).status == "active"

    # Control: the triggers refuse history, not every write. The life columns move forward, by the service
    # or by hand.
    assert tariffs.approve(service.app.context, str(pending), BOB)["status"] == "approved"
    with service.app.engine.begin() as connection:
        connection.execute(text("UPDATE tariff_versions SET note = 'checked' WHERE id = :id"), {"id": pending})
        connection.execute(text("UPDATE tariff_versions SET status = 'withdrawn', withdrawn_by = 'admin:bob' "
                                "WHERE id = :id"), {"id": pending})
    assert (version_row(service, str(pending)).status, version_row(service, str(pending)).note) == (
        "withdrawn", "checked")


# 8. Bad documents are rejected whole; versions are never edited by re-importing


def bad_documents() -> dict[str, tuple[dict[str, Any], str]]:
    floated = city_version("2024-07-01", "2024-07-01", county_rate=0.80)
    unknown = city_version("2024-07-01", "2024-07-01")
    layer(unknown, "medical_assistance")["category_rules"][0]["categories"] = ["tekun", "no_such_group"]
    nameless = city_version("2024-07-01", "2024-07-01")
    del nameless["region"]
    return {"float rate": (floated, "layers[0].rate.by_level.county"),
            "unknown category": (unknown, "layers[4].category_rules[0].categories"), "no region": (nameless, "region")}


@pytest.mark.parametrize("case", sorted(bad_documents()))
def test_a_bad_document_is_rejected_and_nothing_is_recorded(own_service: Service, case: str) -> None:
    service = own_service
    document, path = bad_documents()[case]
    before, generation_before = version_count(service), generation(service)
    error = refusal(ServiceCode.TARIFF_REJECTED, tariffs.import_document, service.app.context, document,
                    "upload.yaml", ALICE)
    assert f"upload.yaml: {path}" in {p.path for p in error.problems}, [(p.path, p.message) for p in error.problems]
    assert version_count(service) == before and generation(service) == generation_before
    assert audit(service, f"{CITY}/2024-07-01") == []
    # Control: the same document without the planted fault is recorded.
    draft(service, city_version("2024-07-01", "2024-07-01"))
    assert version_count(service) == before + 1


def test_reimporting_is_idempotent_but_never_edits(own_service: Service) -> None:
    service = own_service
    document = city_version("2024-07-01", "2024-07-01")
    version_id = draft(service, document)
    before = version_count(service)
    shuffled = dict(reversed(list(document.items())))  # the same content in another key order
    shuffled["effective"] = {"from": date(2024, 7, 1)}  # and a date as YAML reads an unquoted one
    again = tariffs.import_document(service.app.context, shuffled, "again.yaml", BOB)
    assert (again["already_recorded"], again["version"]["id"], again["diff"]) == (True, version_id, None)

    changed = city_version("2024-07-01", "2024-07-01", county_rate="0.81")
    error = refusal(ServiceCode.TARIFF_VERSION_EXISTS, tariffs.import_document, service.app.context, changed,
                    "edited.yaml", ALICE)
    assert str(version_id) in error.message
    assert version_count(service) == before
    assert audit(service, f"{CITY}/2024-07-01") == [("tariff.import", ALICE)]  # one import, not three
    stored = tariffs.show_version(service.app.context, str(version_id))["document"]
    assert layer(stored, "basic_inpatient")["rate"]["by_level"]["county"] == "0.80"


# 9. A county that inherits takes the city's new version, with its own overrides on top


def test_an_inheriting_county_follows_the_new_city_version(own_service: Service) -> None:
    service, counter = own_service, desk(own_service)
    old_city = shipped_id(service)
    county = version_row(service, f"{COUNTY}/2024-01-01")
    assert county.inherits == CITY
    document = city_version("2024-07-01", "2024-07-01")
    layer(document, "medical_assistance")["rate"]["rate"] = "0.50"  # the county overrides it with 0.65
    new_city = put_in_force(service, document)

    people = {(region, day): new_id_number(region) for region in (COUNTY, "611002") for day in ("06-30", "07-01")}
    rows = "".join(f"{person},测试,resident,{region},low_income,2024-01-01,\n"
                   for (region, _), person in people.items())
    import_roster(service.app.context, SYSTEM, "roster.csv",
                  f"id_number,name,scheme,region,category,valid_from,valid_to\n{rows}".encode())
    settled = {key: counter.settle(f"2024-{key[1]}T10:00:00+08:00", region=key[0], amount="5000.00",
                                   person=person) for key, person in people.items()}

    # 5,000.00: the basic layer pays (5,000 - 400) x rate; the assistance layer pays the rest of the
    # in-scope amount over its 1,200.00 deductible at the low-income rate (critical illness starts at 10,000).
    def expected(basic_rate: str, assistance_rate: str) -> dict[str, Decimal]:
        basic = Decimal("4600.00") * Decimal(basic_rate)
        return {BASIC: basic, ASSISTANCE: (Decimal("3800.00") - basic) * Decimal(assistance_rate)}

    new_county = settled[(COUNTY, "07-01")]
    assert {f: new_county.paid[f] for f in (BASIC, ASSISTANCE)} == expected("0.80", "0.65")
    assert (new_county.version_id, new_county.parent_id) == (county.id, new_city)
    assert new_county.tariff == "2024-01-01+611000@2024-07-01"
    old_county = settled[(COUNTY, "06-30")]
    assert {f: old_county.paid[f] for f in (BASIC, ASSISTANCE)} == expected("0.75", "0.65")
    assert (old_county.version_id, old_county.parent_id) == (county.id, old_city)
    city_patient = settled[("611002", "07-01")]  # the city's own patients get the city's assistance rate
    assert {f: city_patient.paid[f] for f in (BASIC, ASSISTANCE)} == expected("0.80", "0.50")
    assert (city_patient.version_id, city_patient.parent_id) == (new_city, None)

    # Planted faults: keeping the county on the old city version, or letting the city's document replace the
    # county's overrides, both pay differently from what the county patient got.
    for naive in (expected("0.75", "0.65"), expected("0.80", "0.50")):
        assert naive != {f: new_county.paid[f] for f in (BASIC, ASSISTANCE)}
