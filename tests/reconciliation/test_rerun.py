"""Reruns of one (payer, business date): the same run record, no duplicate discrepancies; a row the payer fixed is
cleared (and reopened if it breaks again), the others kept; resolved discrepancies stay resolved."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, timedelta
from decimal import Decimal
from typing import Any

import pytest

from settlement.services.finance import resolve
from tests.reconciliation.helpers import (
    FINANCE,
    FakePayer,
    NaiveStore,
    at,
    change,
    day_lines,
    drop,
    listed,
    new_payer,
    phantom,
    reconciler,
    run_records,
    scalar,
    seed_day,
)
from tests.service.conftest import Service

DAY = date(2024, 6, 14)


def check_no_duplicates(keys: list[tuple[str, str, str]]) -> None:
    """One discrepancy per (settlement, entry, fund) of a payer's day, however often the day is run."""
    repeated = [key for key, count in Counter(keys).items() if count > 1]
    assert not repeated, f"duplicate discrepancies: {repeated}"


def keys_of(items: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(item["settlement_id"], item["entry_kind"], item["fund"]) for item in items]


def by_settlement(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["settlement_id"]: item for item in items}


def test_reruns_keep_one_record_clear_what_the_payer_fixed_and_keep_resolutions(service: Service) -> None:
    _, seeded = seed_day(service, DAY, 30, hospitals=2, patients=10)
    payer = new_payer()
    engine = day_lines(service, payer, DAY)
    a, b, c = (seeded[n].settlement_id for n in (3, 11, 20))
    extra = phantom(DAY, seeded[0].hospital_code, "66.60")
    fetch = FakePayer({DAY: [*change(drop(engine, [a, b]), {c: Decimal("2.00")}), extra]})
    runs = reconciler(service, payer, fetch)

    first = runs.run(payer.code, DAY)
    assert first.status == "done" and first.discrepancies == {"engine_only": 2, "amount_differs": 1, "payer_only": 1}
    initial = by_settlement(listed(service, payer.code))
    assert set(initial) == {a, b, c, extra.settlement_id}

    second = runs.run(payer.code, DAY)
    assert second.run_id == first.run_id and second.discrepancies == first.discrepancies
    again = listed(service, payer.code)
    check_no_duplicates(keys_of(again))
    assert {item["id"] for item in again} == {item["id"] for item in initial.values()}
    assert [(r[0], str(r[1]), r[2], r[3]) for r in run_records(service, payer.code)] == \
        [(first.run_id, str(DAY), "done", 2)]
    assert scalar(service, "SELECT COUNT(*) FROM statement_rows WHERE run_id = :run", run=first.run_id) == \
        len(fetch.statements[DAY]), "a rerun replaces the statement's rows"

    resolve(service.app.context, FINANCE, initial[b]["id"], "write_off", "lost by the payer; written off")
    # The payer fixes a (sends its row) and c (the right amount): both are cleared, b stays resolved.
    fetch.statements[DAY] = [*drop(engine, [b]), extra]
    third = runs.run(payer.code, DAY)
    assert third.run_id == first.run_id
    assert third.discrepancies == {"engine_only": 1, "payer_only": 1}
    now = by_settlement(listed(service, payer.code))
    assert {sid: now[sid]["status"] for sid in now} == {a: "cleared", b: "resolved", c: "cleared",
                                                        extra.settlement_id: "open"}
    assert now[b]["action"] == "write_off" and now[b]["note"] == "lost by the payer; written off"
    assert {sid: now[sid]["id"] for sid in now} == {sid: initial[sid]["id"] for sid in initial}
    assert [item["settlement_id"] for item in listed(service, payer.code, status="open")] == [extra.settlement_id]

    # a breaks again: its discrepancy is reopened (the same row); the extra row, resolved, then withdrawn by the
    # payer, stays resolved.
    resolve(service.app.context, FINANCE, initial[extra.settlement_id]["id"], "write_off", "payer will withdraw")
    fetch.statements[DAY] = drop(engine, [a, b])
    fourth = runs.run(payer.code, DAY)
    assert fourth.run_id == first.run_id and fourth.discrepancies == {"engine_only": 2, "payer_only": 1}
    last = by_settlement(listed(service, payer.code))
    assert {sid: last[sid]["status"] for sid in last} == {a: "open", b: "resolved", c: "cleared",
                                                         extra.settlement_id: "resolved"}
    assert last[a]["id"] == initial[a]["id"]
    check_no_duplicates(keys_of(listed(service, payer.code)))
    assert len(run_records(service, payer.code)) == 1
    assert scalar(service, "SELECT attempts FROM reconciliation_runs WHERE id = :run", run=first.run_id) == 4


def test_control_a_naive_rerun_duplicates_every_discrepancy(service: Service) -> None:
    """Planted fault: a rerun that appends what it finds (no run record, no key) fails the duplicate check."""
    _, seeded = seed_day(service, DAY, 6, hospitals=1, patients=3)
    payer = new_payer()
    engine = day_lines(service, payer, DAY)
    statement = drop(engine, [seeded[1].settlement_id])
    naive = NaiveStore()
    naive.run(engine, statement)
    check_no_duplicates([item[3:6] for item in naive.rows])
    naive.run(engine, statement)
    with pytest.raises(AssertionError, match="duplicate"):
        check_no_duplicates([item[3:6] for item in naive.rows])


def test_a_rerun_with_new_figures_does_not_hide_them_behind_an_old_resolution(service: Service) -> None:
    _, seeded = seed_day(service, DAY, 3, hospitals=1, patients=3)
    target = seeded[1].settlement_id
    payer = new_payer()
    engine = day_lines(service, payer, DAY)
    fetch = FakePayer({DAY: change(engine, {target: Decimal("1.00")})})
    runs = reconciler(service, payer, fetch)
    runs.run(payer.code, DAY)
    (item,) = listed(service, payer.code)
    service.clock.now = at(DAY + timedelta(days=1), 9).astimezone(UTC)  # the correction is booked on D+1
    resolved = resolve(service.app.context, FINANCE, item["id"], "accept_payer", "the payer's amount")
    assert (resolved["engine_amount"], resolved["payer_amount"]) == (item["engine_amount"], item["payer_amount"])
    fetch.statements[DAY] = change(engine, {target: Decimal("1.50")})  # the payer revises its statement
    runs.run(payer.code, DAY)
    (after,) = listed(service, payer.code)
    assert not (after["status"] == "resolved" and after["payer_amount"] != item["payer_amount"]), \
        "a resolved discrepancy shows figures its resolution was not made on"
    assert [row["settlement_id"] for row in listed(service, payer.code, status="open")] == [target], \
        "the new difference is in the queue"
