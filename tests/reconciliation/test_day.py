"""The issue's main check: a business day of 1,000 settlements reconciled with a payer's statement carrying five
faults of each kind finds exactly those discrepancies (kinds, national codes, timing flags, amounts), and
changes nothing in the ledger. On SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal

import pytest

from tests.reconciliation.helpers import (
    FakePayer,
    Item,
    as_items,
    at,
    check_found,
    checksum,
    day_lines,
    drop,
    item_of,
    listed,
    naive_compare,
    new_payer,
    phantom,
    reconciler,
    run_records,
    seed_day,
)
from tests.service.conftest import Service

DAY = date(2024, 6, 14)
NEXT = DAY + timedelta(days=1)
DELTAS = [Decimal("0.01"), Decimal("-0.01"), Decimal("1.00"), Decimal("-123.45"), Decimal("50.50")]
EXTRA = ["0.01", "88.00", "450.00", "1234.56", "-30.00"]


def test_a_day_of_1000_settlements_with_five_faults_of_each_kind(service: Service) -> None:
    desks, seeded = seed_day(service, DAY, 995)
    # Five more in the day's last ten minutes: the payer books them on the next day.
    late = [desks[n % len(desks)].settle(at(DAY, 23, 51 + n, 30)) for n in range(5)]
    payer = new_payer()
    engine = day_lines(service, payer, DAY)
    ours = {line.settlement_id: line for line in engine if line.entry_kind == "settlement"}
    assert {s.settlement_id for s in seeded} | set(late) <= set(ours), "basic insurance pays every settlement"

    ordinary = [s.settlement_id for s in seeded]
    dropped, changed = ordinary[100:105], ordinary[500:505]
    deltas = dict(zip(changed, DELTAS, strict=True))
    extras = [phantom(DAY, desks[n % len(desks)].code, amount) for n, amount in enumerate(EXTRA)]
    statement = [replace(line, amount=line.amount + deltas[line.settlement_id])
                 if line.settlement_id in deltas else line for line in drop(engine, [*dropped, *late])] + extras
    moved = [replace(ours[sid], occurred_at=at(NEXT, 0, 0, 10 + n)) for n, sid in enumerate(late)]
    fetch = FakePayer({DAY: statement, NEXT: day_lines(service, payer, NEXT) + moved})

    expected: list[Item] = sorted(
        [item_of("engine_only", False, ours[sid], ours[sid].amount_fen, None) for sid in dropped]
        + [item_of("amount_differs", False, ours[sid], ours[sid].amount_fen,
                   ours[sid].amount_fen + int(deltas[sid] * 100)) for sid in changed]
        + [item_of("payer_only", False, line, None, line.amount_fen) for line in extras]
        + [item_of("engine_only", True, ours[sid], ours[sid].amount_fen, None) for sid in late])
    before = checksum(service)

    runs = reconciler(service, payer, fetch)
    result = runs.run(payer.code, DAY)
    assert result.status == "done", result.error
    assert result.discrepancies == {"engine_only": 10, "amount_differs": 5, "payer_only": 5}
    assert result.engine_count == len(engine) and result.payer_count == len(statement)
    assert Decimal(result.payer_total) - Decimal(result.engine_total) == \
        sum(DELTAS) + sum(Decimal(a) for a in EXTRA) - sum(ours[sid].amount for sid in [*dropped, *late])
    found = as_items(listed(service, payer.code, DAY))
    check_found(found, expected)
    assert {item["status"] for item in listed(service, payer.code, DAY)} == {"open"}

    # Per fund and hospital, the run's totals are the two sides' sums.
    totals = {(row["fund"], row["hospital_code"]): row for row in result.totals}
    for cashier in desks:
        row = totals[("390100", cashier.code)]
        assert (row["engine_count"], row["engine_fen"]) == (
            sum(1 for line in engine if line.hospital_code == cashier.code),
            sum(line.amount_fen for line in engine if line.hospital_code == cashier.code))
        assert (row["payer_count"], row["payer_fen"]) == (
            sum(1 for line in statement if line.hospital_code == cashier.code),
            sum(line.amount_fen for line in statement if line.hospital_code == cashier.code))

    # The next day: the payer's five late bookings are payer-only timing rows, each paired with its engine-only
    # row of the day before, and both sides of each pair resolved as timing.
    following = runs.run(payer.code, NEXT)
    assert following.status == "done", following.error
    assert following.discrepancies == {"payer_only": 5}
    next_found = listed(service, payer.code, NEXT)
    check_found(as_items(next_found), sorted(
        item_of("payer_only", True, line, None, line.amount_fen) for line in moved))
    everything = listed(service, payer.code)
    timing = [item for item in everything if item["settlement_id"] in late]
    assert len(timing) == 10
    assert {(item["status"], item["action"], item["resolved_by"]) for item in timing} == \
        {("resolved", "timing", "reconciliation")}
    assert {item["status"] for item in everything if item["settlement_id"] not in late} == {"open"}
    assert len(everything) == 25 and len(run_records(service, payer.code)) == 2

    # No settlement, ledger entry, reversal, correction or year figure changed.
    assert checksum(service) == before


def test_controls_the_naive_loop_misses_the_timing_flag_and_the_checksum_sees_a_new_entry(service: Service) -> None:
    """Planted faults: a comparison that knows nothing of adjacent days fails the main check's expectation (only
    on the timing flags), and the checksum of the main check does move when the ledger moves."""
    desks, seeded = seed_day(service, DAY, 12, hospitals=2, patients=6)
    late = desks[0].settle(at(DAY, 23, 59, 30))
    payer = new_payer()
    engine = day_lines(service, payer, DAY)
    ours = {line.settlement_id: line for line in engine}
    statement = drop(engine, [seeded[0].settlement_id, late])
    expected = sorted([item_of("engine_only", False, ours[seeded[0].settlement_id],
                               ours[seeded[0].settlement_id].amount_fen, None),
                       item_of("engine_only", True, ours[late], ours[late].amount_fen, None)])
    result = reconciler(service, payer, FakePayer({DAY: statement})).run(payer.code, DAY)
    assert result.status == "done"
    check_found(as_items(listed(service, payer.code, DAY)), expected)
    naive = naive_compare(engine, statement)
    with pytest.raises(AssertionError):
        check_found(naive, expected)
    assert sorted(item[:2] + item[3:] for item in naive) == sorted(item[:2] + item[3:] for item in expected), \
        "the naive loop agrees on everything but the timing flag"

    before = checksum(service)
    desks[1].settle(at(DAY, 15))
    assert checksum(service) != before

