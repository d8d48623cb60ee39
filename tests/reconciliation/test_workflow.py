"""The finance workflow on the discrepancy queue: filters (payer, hospital, kind, age with the clock moved), and
each resolution: accept_payer and correct post linked correction entries (under the person's lock, year figures
kept equal to the ledger, booked on the day they are made and seen by that day's reconciliation); reverse
reverses the settlement once; write_off touches no ledger row; a closed discrepancy stays closed; hospitals may
not work the queue; every resolution is audited; the original settlement row never changes."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import UTC, date, timedelta
from decimal import Decimal
from typing import Any

import pytest

from settlement.services.errors import ServiceCode, ServiceError
from settlement.services.finance import Filters, list_discrepancies, resolve
from tests.reconciliation.helpers import (
    FINANCE,
    FakePayer,
    as_items,
    at,
    change,
    check_found,
    checksum,
    day_lines,
    drop,
    item_of,
    listed,
    new_payer,
    phantom,
    reconciler,
    rows,
    scalar,
    seed_day,
    year_mismatches,
)
from tests.service.conftest import Service

D = date(2024, 6, 14)
D1 = D + timedelta(days=1)


def refused(code: ServiceCode, call: Any, *args: Any, **kwargs: Any) -> None:
    with pytest.raises(ServiceError) as caught:
        call(*args, **kwargs)
    assert caught.value.code == code, caught.value


def ids_of(page: dict[str, Any]) -> list[str]:
    return sorted(item["settlement_id"] for item in page["items"])


def test_the_queue_and_every_resolution(service: Service) -> None:
    desks, seeded = seed_day(service, D, 12, hospitals=2, patients=12)
    h1, h2 = desks[0].code, desks[1].code
    s1, s2, s3, s4 = [s.settlement_id for s in seeded if s.hospital_code == h1][:4]
    s5 = next(s.settlement_id for s in seeded if s.hospital_code == h2)
    payer, other_payer = new_payer(), new_payer()
    engine = day_lines(service, payer, D)
    line = {row.settlement_id: row for row in engine}
    extra = phantom(D, h1, "77.70")
    fetch = FakePayer({D: [*change(drop(engine, [s3, s5]), {s1: Decimal("5.00"), s2: Decimal("-7.77")}), extra]})
    other_fetch = FakePayer({D: drop(engine, [s3])})
    assert reconciler(service, payer, fetch).run(payer.code, D).status == "done"
    assert reconciler(service, other_payer, other_fetch).run(other_payer.code, D).status == "done"
    ctx = service.app.context
    by_sid = {item["settlement_id"]: item for item in listed(service, payer.code)}
    d1, d2, d3, dx, d5 = (by_sid[sid]["id"] for sid in (s1, s2, s3, extra.settlement_id, s5))
    d3_other = listed(service, other_payer.code)[0]["id"]
    mine = [s1, s2, s3, s4, s5]
    originals = rows(service, "SELECT * FROM settlements WHERE public_id IN ('" + "','".join(mine) + "') ORDER BY id")

    # Filters: payer, hospital, kind, age.
    service.clock.now = at(D1, 10).astimezone(UTC)
    assert ids_of(list_discrepancies(ctx, FINANCE, Filters(payer=payer.code))) == sorted(
        [s1, s2, s3, s5, extra.settlement_id])
    assert ids_of(list_discrepancies(ctx, FINANCE, Filters(payer=other_payer.code))) == [s3]
    assert ids_of(list_discrepancies(ctx, FINANCE, Filters(hospital=h2))) == [s5]
    assert ids_of(list_discrepancies(ctx, FINANCE, Filters(hospital=h1, payer=payer.code, kind="engine_only"))) \
        == [s3]
    assert ids_of(list_discrepancies(ctx, FINANCE, Filters(payer=payer.code, kind="amount_differs"))) == \
        sorted([s1, s2])
    assert ids_of(list_discrepancies(ctx, FINANCE, Filters(payer=payer.code, kind="payer_only"))) == \
        [extra.settlement_id]
    refused(ServiceCode.REQUEST_MALFORMED, list_discrepancies, ctx, FINANCE, Filters(kind="timing"))
    assert len(list_discrepancies(ctx, FINANCE, Filters(payer=payer.code, older_than_days=1))["items"]) == 5
    assert list_discrepancies(ctx, FINANCE, Filters(payer=payer.code, older_than_days=2))["items"] == []
    service.clock.now = at(D + timedelta(days=8), 10).astimezone(UTC)
    assert len(list_discrepancies(ctx, FINANCE, Filters(payer=payer.code, older_than_days=8))["items"]) == 5
    assert list_discrepancies(ctx, FINANCE, Filters(payer=payer.code, older_than_days=9))["items"] == []
    page = list_discrepancies(ctx, FINANCE, Filters(payer=payer.code), limit=2)
    rest = list_discrepancies(ctx, FINANCE, Filters(payer=payer.code), limit=10,
                              after_id=int(page["next_cursor"]))
    assert len(page["items"]) == 2 and len(rest["items"]) == 3 and rest["next_cursor"] is None

    # A hospital may neither read nor work the queue.
    hospital = desks[0].caller
    refused(ServiceCode.FORBIDDEN, list_discrepancies, ctx, hospital, Filters(payer=payer.code))
    refused(ServiceCode.FORBIDDEN, resolve, ctx, hospital, d5, "write_off", "not mine to close")
    # Refused resolutions leave the discrepancy open.
    refused(ServiceCode.REQUEST_MALFORMED, resolve, ctx, FINANCE, d1, "ignore", "no such action")
    refused(ServiceCode.REQUEST_MALFORMED, resolve, ctx, FINANCE, d1, "accept_payer", "   ")
    refused(ServiceCode.REQUEST_MALFORMED, resolve, ctx, FINANCE, d2, "correct", "zero", "0.00")
    refused(ServiceCode.REQUEST_MALFORMED, resolve, ctx, FINANCE, d2, "correct", "three places", "1.005")
    refused(ServiceCode.REQUEST_MALFORMED, resolve, ctx, FINANCE, d2, "correct", "no amount")
    refused(ServiceCode.NOT_FOUND, resolve, ctx, FINANCE, dx, "accept_payer", "no settlement to correct")
    refused(ServiceCode.NOT_FOUND, resolve, ctx, FINANCE, dx, "reverse", "no settlement to reverse")
    assert {item["status"] for item in listed(service, payer.code)} == {"open"}
    audited_before = scalar(service, "SELECT COUNT(*) FROM audit_log WHERE entity = 'discrepancy'")

    # Resolutions are booked when they are made: the morning of D+1.
    service.clock.now = at(D1, 9, 30).astimezone(UTC)

    accepted = resolve(ctx, FINANCE, d1, "accept_payer", "the payer's figure is right")
    assert (accepted["status"], accepted["action"], accepted["resolved_by"]) == \
        ("resolved", "accept_payer", FINANCE.actor)
    corrected = resolve(ctx, FINANCE, d2, "correct", "agreed with the payer by phone", "-12.50")
    assert corrected["action"] == "correct"
    for discrepancy, settlement, amount in ((d1, s1, 500), (d2, s2, -1250)):
        correction = rows(service, "SELECT c.id, c.fund, c.amount_fen, s.public_id, c.actor FROM corrections c "
                                   "JOIN settlements s ON s.id = c.settlement_id WHERE c.discrepancy_id = :d",
                          d=discrepancy)
        assert [row[1:] for row in correction] == [("390100", amount, settlement, FINANCE.actor)]
        entries = rows(service, "SELECT s.public_id, l.fund, l.paid_fen, l.reversal_id, h.code, l.created_at "
                                "FROM ledger_entries l JOIN settlements s ON s.id = l.settlement_id "
                                "JOIN hospitals h ON h.id = l.hospital_id WHERE l.correction_id = :c",
                       c=correction[0][0])
        assert [row[:5] for row in entries] == [(settlement, "390100", amount, None, h1)]
        assert scalar(service, "SELECT correction_id FROM discrepancies WHERE id = :d", d=discrepancy) == \
            correction[0][0]
    assert year_mismatches(service, mine) == []
    assert year_mismatches(service, mine, ignore_corrections=True) != [], \
        "control: without the correction entries the ledger no longer sums to the year figures"

    assert scalar(service, "SELECT COUNT(*) FROM reversals r JOIN settlements s ON s.id = r.settlement_id "
                           "WHERE s.public_id = :s", s=s3) == 0
    reversed_ = resolve(ctx, FINANCE, d3, "reverse", "the payer never received it; reversed")
    assert reversed_["action"] == "reverse"
    also = resolve(ctx, FINANCE, d3_other, "reverse", "the same settlement, seen by another payer")
    assert also["status"] == "resolved"
    assert scalar(service, "SELECT COUNT(*) FROM reversals r JOIN settlements s ON s.id = r.settlement_id "
                           "WHERE s.public_id = :s", s=s3) == 1, "reversed once"
    mirror = rows(service, "SELECT l.fund, l.paid_fen FROM ledger_entries l JOIN settlements s ON s.id = "
                           "l.settlement_id WHERE s.public_id = :s AND l.reversal_id IS NOT NULL "
                           "AND l.paid_fen <> 0", s=s3)
    assert mirror == [("390100", -line[s3].amount_fen)]
    assert year_mismatches(service, mine) == []

    before = checksum(service)
    written_off = resolve(ctx, FINANCE, dx, "write_off", "the payer's row is its own error")
    assert written_off["action"] == "write_off" and written_off["note"] == "the payer's row is its own error"
    assert checksum(service) == before, "a write-off changes no ledger row"

    for closed in (d1, d2, d3, dx):
        refused(ServiceCode.DISCREPANCY_CLOSED, resolve, ctx, FINANCE, closed, "write_off", "twice")
    assert scalar(service, "SELECT COUNT(*) FROM corrections c JOIN settlements s ON s.id = c.settlement_id "
                           "WHERE s.public_id IN (:a, :b)", a=s1, b=s2) == 2

    # Every resolution is audited (and each correction too); refusals are not.
    audited = rows(service, "SELECT action, entity_id, actor FROM audit_log WHERE entity = 'discrepancy' "
                            "AND entity_id IN (:a, :b, :c, :d, :e) ORDER BY id",
                   a=str(d1), b=str(d2), c=str(d3), d=str(d3_other), e=str(dx))
    assert audited == [("discrepancy.accept_payer", str(d1), FINANCE.actor),
                       ("discrepancy.correct", str(d2), FINANCE.actor),
                       ("discrepancy.reverse", str(d3), FINANCE.actor),
                       ("discrepancy.reverse", str(d3_other), FINANCE.actor),
                       ("discrepancy.write_off", str(dx), FINANCE.actor)]
    assert scalar(service, "SELECT COUNT(*) FROM audit_log WHERE entity = 'discrepancy'") == audited_before + 5
    assert sorted(row[0] for row in rows(service, "SELECT entity_id FROM audit_log WHERE action = "
                                                  "'correction.create' AND entity_id IN (:a, :b)", a=s1, b=s2)) \
        == sorted([s1, s2])

    # The settlements themselves never changed.
    assert rows(service, "SELECT * FROM settlements WHERE public_id IN ('" + "','".join(mine) + "') ORDER BY id") \
        == originals
    assert [item["status"] for item in listed(service, payer.code, status="open")] == ["open"]  # s5 only

    # D+1's reconciliation sees the corrections and the reversal, booked that morning: in its totals, and as
    # 'correction' entries (the payer's statement here lacks the second correction).
    next_day = day_lines(service, payer, D1)
    booked = sorted((row.settlement_id, row.entry_kind, row.fund, row.hospital_code, row.amount)
                    for row in next_day if row.settlement_id in mine)
    assert booked == sorted([(s1, "correction", "390100", h1, Decimal("5.00")),
                             (s2, "correction", "390100", h1, Decimal("-12.50")),
                             (s3, "reversal", "390100", h1, -line[s3].amount)])
    statement = [row for row in next_day if not (row.settlement_id == s2 and row.entry_kind == "correction")]
    runs = reconciler(service, payer, FakePayer({D1: statement}))
    result = runs.run(payer.code, D1)
    assert result.status == "done" and result.discrepancies == {"engine_only": 1}
    totals = {(row["fund"], row["hospital_code"]): row for row in result.totals}
    assert (totals[("390100", h1)]["engine_count"], totals[("390100", h1)]["engine_fen"]) == \
        (3, 500 - 1250 - line[s3].amount_fen)
    assert totals[("390100", h1)]["payer_fen"] == 500 - line[s3].amount_fen
    missing = next(row for row in next_day if row.settlement_id == s2)
    check_found(as_items(listed(service, payer.code, D1)), [item_of("engine_only", False, missing, -1250, None)])


def test_a_statement_equal_to_the_engines_side_agrees_in_every_total(service: Service) -> None:
    """Two corrections of one settlement on one day: the payer booked it too much on D (amount differs) and again
    on D+2 (payer only); finance accepts both on D+3 morning."""
    _, seeded = seed_day(service, D, 3, hospitals=1, patients=3)
    target = seeded[0].settlement_id
    payer = new_payer()
    engine = day_lines(service, payer, D)
    line = next(row for row in engine if row.settlement_id == target)
    d2, d3 = D + timedelta(days=2), D + timedelta(days=3)
    fetch = FakePayer({D: change(engine, {target: Decimal("1.00")}),
                       d2: [*day_lines(service, payer, d2), replace(line, occurred_at=at(d2, 10))]})
    runs = reconciler(service, payer, fetch)
    runs.run(payer.code, D)
    runs.run(payer.code, d2)
    service.clock.now = at(d3, 9).astimezone(UTC)
    for item in listed(service, payer.code):
        resolve(service.app.context, FINANCE, item["id"], "accept_payer", "the payer's amount")
    assert year_mismatches(service, [target]) == []

    agreeing = day_lines(service, payer, d3)
    assert [(row.entry_kind, row.amount) for row in agreeing if row.settlement_id == target] == \
        [("correction", line.amount + Decimal("1.00"))]
    result = reconciler(service, payer, FakePayer({d3: agreeing})).run(payer.code, d3)
    assert result.discrepancies == {}
    assert result.engine_total == result.payer_total
    mismatched = [row for row in result.totals
                  if (row["engine_count"], row["engine_fen"]) != (row["payer_count"], row["payer_fen"])]
    assert mismatched == []


def test_a_refused_reversal_leaves_the_discrepancy_open(service: Service) -> None:
    desks, seeded = seed_day(service, D, 3, hospitals=1, patients=3)
    target = seeded[0].settlement_id
    payer = new_payer()
    reconciler(service, payer, FakePayer({D: drop(day_lines(service, payer, D), [target])})).run(payer.code, D)
    (item,) = listed(service, payer.code)
    desks[0].settle(at(D, 16), transaction_id=f"FIN-DISCREPANCY-{item['id']}")  # a hospital's own key
    service.clock.now = at(D1, 9).astimezone(UTC)
    with contextlib.suppress(ServiceError):  # refusing is fine; resolving without reversing is not
        resolve(service.app.context, FINANCE, item["id"], "reverse", "the payer never had it")
    reversed_count = scalar(service, "SELECT COUNT(*) FROM reversals r JOIN settlements s ON s.id = "
                                     "r.settlement_id WHERE s.public_id = :s", s=target)
    (after,) = listed(service, payer.code)
    assert (after["status"], reversed_count) in (("open", 0), ("resolved", 1)), \
        f"discrepancy {after['status']} ({after['action']}) with {reversed_count} reversal(s)"
