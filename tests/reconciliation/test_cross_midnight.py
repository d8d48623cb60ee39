"""A settlement at 23:59:30 (Asia/Shanghai) on day D that the payer books on D+1: D's run flags it engine-only
timing, D+1's run flags it payer-only timing, and the pair ends resolved as timing, whichever day runs first."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from tests.reconciliation.helpers import (
    FakePayer,
    as_items,
    at,
    check_found,
    day_lines,
    desk,
    drop,
    item_of,
    listed,
    naive_compare,
    new_payer,
    reconciler,
)
from tests.service.conftest import Service

D = date(2024, 6, 14)
D1 = D + timedelta(days=1)


def state(items: list[dict[str, Any]], settlement_id: str) -> list[tuple[str, str, bool, str, str | None]]:
    return sorted((item["business_date"], item["kind"], item["timing"], item["status"], item["action"])
                  for item in items if item["settlement_id"] == settlement_id)


@pytest.mark.parametrize("order", ["D first", "D+1 first"])
def test_a_settlement_at_235930_booked_by_the_payer_next_day_is_a_resolved_timing_pair(
        service: Service, order: str) -> None:
    cashier = desk(service)
    cashier.settle(at(D, 9))
    late = cashier.settle(at(D, 23, 59, 30))
    assert service.clock.now == datetime(2024, 6, 14, 15, 59, 30, tzinfo=UTC)  # 23:59:30 in Shanghai
    cashier.settle(at(D1, 8))
    payer = new_payer()
    on_d, on_d1 = day_lines(service, payer, D), day_lines(service, payer, D1)
    line = next(row for row in on_d if row.settlement_id == late)
    assert late not in {row.settlement_id for row in on_d1}, "the engine booked it on D"
    booked_next_day = replace(line, occurred_at=at(D1, 0, 0, 20))
    fetch = FakePayer({D: drop(on_d, [late]), D1: [*on_d1, booked_next_day]})
    runs = reconciler(service, payer, fetch)

    for day in ([D, D1] if order == "D first" else [D1, D]):
        result = runs.run(payer.code, day)
        assert result.status == "done", result.error
        if day == D:
            assert result.discrepancies == {"engine_only": 1}
            check_found(as_items(listed(service, payer.code, D)),
                        [item_of("engine_only", True, line, line.amount_fen, None)])
        else:
            assert result.discrepancies == {"payer_only": 1}
            check_found(as_items(listed(service, payer.code, D1)),
                        [item_of("payer_only", True, booked_next_day, None, line.amount_fen)])
        if order == "D first" and day == D:  # alone, it stays open: the payer may never book it
            assert state(listed(service, payer.code), late) == [(str(D), "engine_only", True, "open", None)]
    assert state(listed(service, payer.code), late) == [(str(D), "engine_only", True, "resolved", "timing"),
                                                       (str(D1), "payer_only", True, "resolved", "timing")]
    assert listed(service, payer.code, status="open") == []


def test_a_late_settlement_the_payer_never_books_stays_open(service: Service) -> None:
    """Flagged timing, but not resolved: nothing on the next day pairs with it."""
    cashier = desk(service)
    late = cashier.settle(at(D, 23, 58))
    payer = new_payer()
    fetch = FakePayer({D: drop(day_lines(service, payer, D), [late]), D1: day_lines(service, payer, D1)})
    runs = reconciler(service, payer, fetch)
    runs.run(payer.code, D)
    runs.run(payer.code, D1)
    assert state(listed(service, payer.code), late) == [(str(D), "engine_only", True, "open", None)]


def test_a_next_day_booking_of_another_amount_is_not_paired(service: Service) -> None:
    """A pair is resolved as timing only when both sides say the same amount."""
    cashier = desk(service)
    late = cashier.settle(at(D, 23, 59, 30))
    payer = new_payer()
    on_d = day_lines(service, payer, D)
    line = next(row for row in on_d if row.settlement_id == late)
    other = replace(line, amount=line.amount + 1, occurred_at=at(D1, 0, 1))
    fetch = FakePayer({D: drop(on_d, [late]), D1: [*day_lines(service, payer, D1), other]})
    runs = reconciler(service, payer, fetch)
    runs.run(payer.code, D)
    runs.run(payer.code, D1)
    assert state(listed(service, payer.code), late) == [(str(D), "engine_only", True, "open", None),
                                                       (str(D1), "payer_only", True, "open", None)]


def test_control_the_naive_loop_leaves_the_pair_open_and_unflagged(service: Service) -> None:
    """Planted fault: compared one day at a time, the same bookings give two ordinary one-sided rows."""
    cashier = desk(service)
    late = cashier.settle(at(D, 23, 59, 30))
    payer = new_payer()
    on_d, on_d1 = day_lines(service, payer, D), day_lines(service, payer, D1)
    line = next(row for row in on_d if row.settlement_id == late)
    moved = replace(line, occurred_at=at(D1, 0, 0, 20))
    naive = naive_compare(on_d, drop(on_d, [late])) + naive_compare(on_d1, [*on_d1, moved])
    with pytest.raises(AssertionError):
        check_found(naive, [item_of("engine_only", True, line, line.amount_fen, None),
                            item_of("payer_only", True, moved, None, line.amount_fen)])


@pytest.mark.parametrize("order", ["D first", "D+1 first"])
@pytest.mark.parametrize("pattern", ["engine just after midnight", "noon, payer next morning"])
def test_a_booking_on_the_adjacent_day_is_paired_whichever_day_runs_first(service: Service, pattern: str,
                                                                          order: str) -> None:
    """engine just after midnight: the engine books at 00:00:20 on D+1, the payer at 23:59:50 on D (the other
    direction of the 23:59:30 case). noon, payer next morning: the engine books at 12:00 on D, the payer at 09:00
    on D+1 - the engine's rule pairs any one-sided rows of one key and amount on adjacent business days, however
    far from midnight. Either way the outcome does not depend on which day is run first (it did before the
    engine's fix of the pairing, which these cases caught)."""
    cashier = desk(service)
    engine_at, payer_day, payer_at = {
        "engine just after midnight": (at(D1, 0, 0, 20), D, at(D, 23, 59, 50)),
        "noon, payer next morning": (at(D, 12), D1, at(D1, 9)),
    }[pattern]
    settled = cashier.settle(engine_at)
    engine_day = engine_at.date()
    payer = new_payer()
    sides = {day: day_lines(service, payer, day) for day in (D, D1)}
    line = next(row for row in sides[engine_day] if row.settlement_id == settled)
    statements = {engine_day: drop(sides[engine_day], [settled]),
                  payer_day: [*sides[payer_day], replace(line, occurred_at=payer_at)]}
    runs = reconciler(service, payer, FakePayer(statements))
    for day in ([D, D1] if order == "D first" else [D1, D]):
        assert runs.run(payer.code, day).status == "done"
    assert state(listed(service, payer.code), settled) == sorted([
        (str(engine_day), "engine_only", True, "resolved", "timing"),
        (str(payer_day), "payer_only", True, "resolved", "timing")])


def test_one_sided_rows_two_days_apart_are_not_paired(service: Service) -> None:
    """Only adjacent business days pair: a booking the payer makes two days later stays open on both sides."""
    cashier = desk(service)
    settled = cashier.settle(at(D, 23, 59, 30))
    payer = new_payer()
    d2 = D + timedelta(days=2)
    line = next(row for row in day_lines(service, payer, D) if row.settlement_id == settled)
    fetch = FakePayer({D: drop(day_lines(service, payer, D), [settled]), D1: day_lines(service, payer, D1),
                       d2: [*day_lines(service, payer, d2), replace(line, occurred_at=at(d2, 0, 0, 5))]})
    runs = reconciler(service, payer, fetch)
    for day in (D, D1, d2):
        assert runs.run(payer.code, day).status == "done"
    assert [row[:4] for row in state(listed(service, payer.code), settled)] == [
        (str(D), "engine_only", True, "open"), (str(d2), "payer_only", False, "open")]


def test_midnight_itself_belongs_to_the_new_day(service: Service) -> None:
    """The business day is [00:00, 24:00) in Asia/Shanghai: a booking at 23:59:59.999999 is D's, one at
    00:00:00 exactly is D+1's, whatever the UTC date (both are 16:00 UTC of D)."""
    cashier = desk(service)
    last = cashier.settle(at(D, 23, 59, 59).replace(microsecond=999_999))
    first = cashier.settle(at(D1, 0))
    payer = new_payer()
    on_d = {row.settlement_id: row for row in day_lines(service, payer, D)}
    on_d1 = {row.settlement_id: row for row in day_lines(service, payer, D1)}
    assert last in on_d and last not in on_d1
    assert first in on_d1 and first not in on_d
    assert on_d[last].occurred_at == at(D, 23, 59, 59).replace(microsecond=999_999)
    assert on_d1[first].occurred_at == at(D1, 0)
