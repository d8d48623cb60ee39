"""A statement that repeats a key (settlement, entry kind, fund): its rows of one key are summed before they are
compared, counted once in the totals, under the lowest of their hospital codes, whether the repeats are under
one hospital or two. A statement whose keys are distinct (checked while it is stored) is compared as stored, and
its totals are counted on the way; these tests make sure that shortcut is only taken when it is sound. On SQLite
and PostgreSQL.

Planted-fault controls: the same runs with the key check left out (every statement taken as distinct), and with
the check looking for repeats within one hospital's rows only, both fail the check (on PostgreSQL the run itself
fails: one key's rows would update one discrepancy twice)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from settlement.insurers.statements import StatementLine
from settlement.services import reconciliation
from settlement.services.reconciliation import RunResult, StatementTally
from tests.reconciliation.helpers import (
    FakePayer,
    Item,
    as_items,
    check_found,
    day_lines,
    item_of,
    listed,
    new_payer,
    reconciler,
    seed_day,
)
from tests.service.conftest import Service

DAY = date(2024, 6, 14)


def split(line: StatementLine, first: Decimal, *, hospital: str | None = None) -> list[StatementLine]:
    """The line reported as two rows of one key: `first`, and the rest (under `hospital`, if given)."""
    return [replace(line, amount=first), replace(line, amount=line.amount - first,
                                                 hospital_code=hospital or line.hospital_code)]


def repeated(service: Service, where: str) -> tuple[Any, FakePayer, list[StatementLine], list[Item]]:
    """A day and a statement repeating keys of three settlements of the test's own, `where` "one hospital"
    (both rows under the settlement's hospital) or "two hospitals" (the second row under the other desk's):
    one split that sums to the ledger's amount, one that sums to 0.50 more, one to 0.25 less."""
    desks, seeded = seed_day(service, DAY, 6, hospitals=2, patients=4)
    payer = new_payer()
    engine = day_lines(service, payer, DAY)
    ours = {line.settlement_id: line for line in engine if line.entry_kind == "settlement"}
    equal, more, less = (ours[seeded[n].settlement_id] for n in (0, 1, 2))

    def elsewhere(line: StatementLine) -> str | None:
        if where == "one hospital":
            return None
        return next(d.code for d in desks if d.code != line.hospital_code)

    rows = {equal.settlement_id: split(equal, Decimal("100.00"), hospital=elsewhere(equal)),
            more.settlement_id: split(replace(more, amount=more.amount + Decimal("0.50")), Decimal("0.01"),
                                      hospital=elsewhere(more)),
            less.settlement_id: split(replace(less, amount=less.amount - Decimal("0.25")), Decimal("300.00"),
                                      hospital=elsewhere(less))}
    statement = [row for line in engine for row in rows.get(line.settlement_id, [line])
                 if line.entry_kind == "settlement" or line.settlement_id not in rows]
    expected = sorted([item_of("amount_differs", False, more, more.amount_fen, more.amount_fen + 50),
                       item_of("amount_differs", False, less, less.amount_fen, less.amount_fen - 25)])
    return payer, FakePayer({DAY: statement}), statement, expected


def run(service: Service, payer: Any, fetch: FakePayer) -> RunResult | BaseException:
    try:
        return reconciler(service, payer, fetch).run(payer.code, DAY)
    except Exception as error:  # a planted fault may make the run itself fail
        return error


def check(service: Service, payer: Any, outcome: RunResult | BaseException, statement: list[StatementLine],
          expected: list[Item]) -> None:
    """Exactly the expected discrepancies, and the payer's totals counted over its keys (once per key, under the
    lowest of the key's hospital codes, with the key's sum)."""
    assert isinstance(outcome, RunResult), f"the run failed: {outcome!r}"
    assert outcome.status == "done", outcome.error
    check_found(as_items(listed(service, payer.code, DAY)), expected)
    keys: dict[tuple[str, str, str], tuple[str, int]] = {}
    for line in statement:
        key = (line.settlement_id, line.entry_kind, line.fund)
        hospital, fen = keys.get(key, (line.hospital_code, 0))
        keys[key] = (min(hospital, line.hospital_code), fen + line.amount_fen)
    totals: dict[tuple[str, str], tuple[int, int]] = {}
    for (_, _, fund), (hospital, fen) in keys.items():
        count, total = totals.get((fund, hospital), (0, 0))
        totals[(fund, hospital)] = (count + 1, total + fen)
    assert {(row["fund"], row["hospital_code"]): (row["payer_count"], row["payer_fen"])
            for row in outcome.totals if row["payer_count"]} == totals
    assert outcome.payer_count == len(keys) < len(statement)


@pytest.mark.parametrize("where", ["one hospital", "two hospitals"])
def test_rows_of_one_key_are_summed_before_they_are_compared(service: Service, where: str) -> None:
    payer, fetch, statement, expected = repeated(service, where)
    check(service, payer, run(service, payer, fetch), statement, expected)


class EveryKeyDistinct(StatementTally):
    """Planted fault: the statement is taken as distinct without looking, so its rows are compared as stored."""

    def distinct_keys(self) -> bool:
        return True


class RepeatsWithinAHospital(StatementTally):
    """Planted fault: repeats are looked for within the rows of one (fund, hospital, entry kind) only."""

    def distinct_keys(self) -> bool:
        seen: dict[tuple[str, str, str], set[str]] = {}
        for _, settlement_id, kind, fund, hospital, *_ in self.stored:
            ids = seen.setdefault((fund, hospital, kind), set())
            if settlement_id in ids:
                return False
            ids.add(settlement_id)
        return True

    def rows(self, run_id: int, lines: list[StatementLine]) -> Any:
        self.stored = [row[1:] for row in super().rows(run_id, lines)]
        yield from ((run_id, *row) for row in self.stored)


@pytest.mark.parametrize(("fault", "where"), [(EveryKeyDistinct, "one hospital"), (EveryKeyDistinct, "two hospitals"),
                                              (RepeatsWithinAHospital, "two hospitals")])
def test_control_a_statement_compared_as_stored_though_it_repeats_a_key_fails(
        service: Service, monkeypatch: pytest.MonkeyPatch, fault: type[StatementTally], where: str) -> None:
    payer, fetch, statement, expected = repeated(service, where)
    monkeypatch.setattr(reconciliation, "StatementTally", fault)
    outcome = run(service, payer, fetch)
    with pytest.raises(AssertionError):
        check(service, payer, outcome, statement, expected)
