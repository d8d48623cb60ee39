"""A settlement dated in the future froze tariff administration (issue 15, item 3): any hospital could settle a
bill dated up to 9999-12-31, after which no new version of its region (or of a county inheriting it) could be
activated (TARIFF_RETROACTIVE), and reversing the settlement did not undo it.

Two rules now: a claim whose dates lie after the service's clock by more than SETTLEMENT_CLAIM_CLOCK_SKEW_SECONDS
(default 300) is refused with CLAIM_DATE_IN_FUTURE, kept under its key like every business failure; and the
activation rule ignores reversed settlements. The freeze itself is reproduced with the old behaviour (any date
accepted, the old date rule from tests/service/naive.py) beside the new one."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from settlement.bootstrap import build
from settlement.db.models import Settlement
from settlement.db.repositories import Repository
from settlement.domain.claim import SHANGHAI
from settlement.domain.errors import ClaimRejected
from settlement.services import settlements, tariffs
from settlement.services.errors import ServiceCode
from settlement.services.settlements import SettlementService
from settlement.wire.requests import QuoteRequest, ReverseRequest, SettleRequest
from tests.service.conftest import Service, claim_body, new_id_number, settings_for
from tests.service.naive import settlement_dated_from_counting_reversals
from tests.tariffs.test_lifecycle import BOB, Desk, approved, city_version, desk, refusal


def request_for(counter: Desk, *, settled_at: datetime, admission: str | None = None) -> dict[str, Any]:
    """A settle request for a claim with these dates (discharged on the settlement's day)."""
    day = settled_at.astimezone(SHANGHAI).date().isoformat()
    claim = claim_body(counter.code, "county", new_id_number(), settled_at=settled_at.isoformat(), discharge=day)
    claim["visit"]["admission_date"] = admission or day
    return {"transaction_id": f"T-{secrets.token_hex(6)}", "claim": claim}


def send(counter: Desk, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    reply = SettlementService(counter.service.app.context).settle(counter.caller,
                                                                  SettleRequest.model_validate(request))
    return reply.status, reply.json()


def attempt(counter: Desk, *, settled_at: datetime, admission: str | None = None) -> tuple[int, dict[str, Any]]:
    return send(counter, request_for(counter, settled_at=settled_at, admission=admission))


def refused_paths(body: dict[str, Any]) -> list[str]:
    assert body["code"] == "CLAIM_DATE_IN_FUTURE", body
    return [problem["path"] for problem in body["problems"] if problem["code"] == "CLAIM_DATE_IN_FUTURE"]


def settlement_count(service: Service) -> int:
    with service.app.context.uow() as tx:
        return int(tx.session.scalar(select(func.count()).select_from(Settlement)) or 0)


def test_claims_dated_after_the_clock_are_refused(service: Service) -> None:
    counter = desk(service)
    now = service.clock().astimezone(SHANGHAI)  # 2024-06-15 10:00 in Shanghai
    before = settlement_count(service)
    status, body = attempt(counter, settled_at=now + timedelta(seconds=301))
    assert status == 422 and refused_paths(body) == ["visit.settled_at"]
    tomorrow = (now + timedelta(days=1)).date().isoformat()
    status, body = attempt(counter, settled_at=now + timedelta(days=1), admission=tomorrow)
    assert status == 422
    assert refused_paths(body) == ["visit.admission_date", "visit.discharge_date", "visit.settled_at"]
    status, body = attempt(counter, settled_at=datetime(9999, 12, 31, 10, tzinfo=SHANGHAI))
    assert status == 422 and len(refused_paths(body)) == 3
    for problem in body["problems"]:
        assert "9999" in problem["message"]  # says which date, and never the person
    assert settlement_count(service) == before, "nothing recorded"

    # Within the skew (the hospital's clock a little ahead) and in the past: settled.
    assert attempt(counter, settled_at=now + timedelta(seconds=299))[0] == 201
    assert attempt(counter, settled_at=now - timedelta(days=3))[0] == 201

    # The refusal is kept under its key: the same request once its date has come is answered the same.
    request = request_for(counter, settled_at=now + timedelta(hours=2))
    first = send(counter, request)
    service.clock.now = (now + timedelta(hours=3)).astimezone(UTC)
    assert first[0] == 422 and send(counter, request) == first

    # A quote is refused alike (a settlement of it would be).
    service.clock.now = now.astimezone(UTC)
    claim = claim_body(counter.code, "county", new_id_number(), settled_at=(now + timedelta(hours=1)).isoformat(),
                       discharge=now.date().isoformat())
    with pytest.raises(ClaimRejected) as caught:
        SettlementService(service.app.context).quote(counter.caller, QuoteRequest.model_validate({"claim": claim}))
    assert [(p.code, p.path) for p in caught.value.problems] == [("CLAIM_DATE_IN_FUTURE", "visit.settled_at")]


def test_the_skew_is_a_setting(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SETTLEMENT_CLAIM_CLOCK_SKEW_SECONDS", "3600")
    application = build(settings_for(service.app.settings.database_url, service.tmp), migrate=False)
    try:
        assert application.context.claim_clock_skew_seconds == 3600
    finally:
        application.dispose()
    monkeypatch.setenv("SETTLEMENT_CLAIM_CLOCK_SKEW_SECONDS", "100000")  # more than a day is no clock skew
    with pytest.raises(ValidationError):
        settings_for(service.app.settings.database_url, service.tmp)
    counter = desk(service)
    now = service.clock().astimezone(SHANGHAI)
    service.app.context.claim_clock_skew_seconds = 0
    assert attempt(counter, settled_at=now + timedelta(seconds=1))[0] == 422
    assert attempt(counter, settled_at=now)[0] == 201
    service.app.context.claim_clock_skew_seconds = 3600
    assert attempt(counter, settled_at=now + timedelta(minutes=59))[0] == 201


@pytest.mark.parametrize("rule", ["naive", "real"])
def test_a_reversed_settlement_dated_far_ahead_no_longer_freezes_the_tariff(
        own_service: Service, monkeypatch: pytest.MonkeyPatch, rule: str) -> None:
    """The freeze on the old behaviour: a bill dated 9999-12-31 is accepted (no date rule), after which a new city
    version is refused, and still refused once that settlement is reversed (the old activation rule counts it).
    With the real rule the reversal releases the date; without reversal the date still holds (as it should: an
    unreversed settlement keeps its version)."""
    service, counter = own_service, desk(own_service)
    if rule == "naive":
        monkeypatch.setattr(Repository, "settlement_dated_from", settlement_dated_from_counting_reversals)
    with monkeypatch.context() as before_the_rule:  # a settlement recorded when any date was accepted
        before_the_rule.setattr(settlements, "future_date_problems", lambda *_: [], raising=False)
        status, body = attempt(counter, settled_at=datetime(9999, 12, 31, 10, tzinfo=SHANGHAI))
    assert status == 201, body
    july = approved(service, city_version("2024-07-01", "2024-07-01"))
    error = refusal(ServiceCode.TARIFF_RETROACTIVE, tariffs.activate, service.app.context, str(july), BOB)
    assert body["settlement_id"] in error.message

    reversed_ = SettlementService(service.app.context).reverse(counter.caller, body["settlement_id"], ReverseRequest(
        transaction_id=f"R-{secrets.token_hex(6)}", reason="dated 9999 by mistake"))
    assert reversed_.status == 201, reversed_.body
    if rule == "naive":
        refusal(ServiceCode.TARIFF_RETROACTIVE, tariffs.activate, service.app.context, str(july), BOB)
        return
    assert tariffs.activate(service.app.context, str(july), BOB)["state"] == "scheduled"
    # And with the date rule, such a bill is not recorded in the first place.
    status, body = attempt(counter, settled_at=datetime(9999, 12, 31, 10, tzinfo=SHANGHAI))
    assert status == 422 and body["code"] == "CLAIM_DATE_IN_FUTURE"
