"""Reconciliation against the payer simulator over real SOAP (zeep on one side, the simulator's uvicorn on the
other) and through the inbox, on SQLite and PostgreSQL: a clean statement, every fault kind, cross-midnight
bookings, a payer that times out after doing the work, a payer that never answers, and the file payers.

On PostgreSQL the tests share one database, so a day's ledger may hold other tests' settlements too: every
expectation is exact all the same, since the simulator says which rows it damaged (`Applied`), and every test
reconciles a payer code of its own."""

from __future__ import annotations

import secrets
from datetime import date, timedelta
from pathlib import Path

import pytest

from settlement.insurers.config import PayerConfig, StatementSource
from settlement.insurers.simulator import Faults, PayerSimulator
from settlement.services.reconciliation import Reconciler
from tests.insurers.conftest import SimulatorServer
from tests.insurers.helpers import at, cashier, discrepancies, run_record
from tests.service.conftest import Service, import_roster_rows, new_id_number

DAY = date(2024, 6, 15)
BEFORE = DAY - timedelta(days=1)


def reconciler(service: Service, payer: PayerConfig, inbox: Path | None = None) -> Reconciler:
    return Reconciler(service.app.context, {payer.code: payer}, inbox or service.tmp / "inbox")


def test_a_clean_statement_reconciles_with_no_discrepancies(service: Service, payer_sim: SimulatorServer) -> None:
    desk = cashier(service)
    settled = [desk.settle(at(DAY, 9 + n)) for n in range(4)]
    desk.reverse(at(DAY, 15), settled[0])
    payer = payer_sim.payer()
    result = reconciler(service, payer).run(payer.code, DAY)
    assert result.status == "done", result.error
    assert result.discrepancies == {}
    assert result.payer_count == result.engine_count >= 5  # four settlements and one reversal at least
    assert result.payer_total == result.engine_total
    request_id = run_record(service, result.run_id)["request_id"]
    assert payer_sim.simulator.requests == [request_id]
    assert payer_sim.simulator.bookings == {(payer.code, DAY): 1}
    statement = payer_sim.simulator.prepared(request_id)
    assert statement is not None
    sent = {(line.settlement_id, line.entry_kind) for line in statement.lines}
    assert {(settled[0], "settlement"), (settled[0], "reversal")} <= sent


@pytest.mark.parametrize(("fault", "kind"), [("drop", "engine_only"), ("shift", "amount_differs"),
                                             ("extra", "payer_only"), ("phantom_reversals", "payer_only")])
def test_each_fault_gives_exactly_its_discrepancies(service: Service, payer_sim: SimulatorServer, fault: str,
                                                    kind: str) -> None:
    desk = cashier(service)
    for n in range(5):
        desk.settle(at(DAY, 8 + n))
    payer = payer_sim.payer()
    payer_sim.simulator.faults = Faults(seed=11, **{fault: 2})  # type: ignore[arg-type]
    result = reconciler(service, payer).run(payer.code, DAY)
    assert result.status == "done", result.error
    statement = payer_sim.simulator.prepared(run_record(service, result.run_id)["request_id"])
    assert statement is not None
    found = discrepancies(service, result.run_id)
    assert {item.key for item in found} == statement.applied.discrepancies()
    assert len(found) == 2 and {item.kind for item in found} == {kind}
    assert result.discrepancies == {kind: 2}
    assert not any(item.timing for item in found) and {item.status for item in found} == {"open"}
    if fault == "shift":
        assert all(item.engine_fen is not None and item.payer_fen is not None
                   and 1 <= item.payer_fen - item.engine_fen <= 99 for item in found)
    if fault == "phantom_reversals":
        settled = {(line.settlement_id, line.fund): line.amount_fen for line in statement.lines
                   if line.entry_kind == "settlement"}
        for item in found:
            assert item.entry_kind == "reversal" and item.engine_fen is None
            assert item.payer_fen == -settled[(item.settlement_id, item.fund)] < 0
    if fault == "extra":
        assert all(item.settlement_id.startswith(f"ST{DAY:%Y%m%d}") and item.engine_fen is None for item in found)
    if fault == "drop":
        assert all(item.payer_fen is None and item.engine_fen for item in found)


def test_bookings_moved_across_midnight_are_flagged_timing_and_paired(service: Service,
                                                                      payer_sim: SimulatorServer) -> None:
    desk = cashier(service)
    desk.settle(at(BEFORE, 12))
    late = [desk.settle(at(BEFORE, 23, minute)) for minute in (51, 55, 58)]
    desk.settle(at(DAY, 10))
    payer = payer_sim.payer()
    payer_sim.simulator.faults = Faults(seed=5, midnight=2)
    runs = reconciler(service, payer)

    first = runs.run(payer.code, BEFORE)
    assert first.status == "done", first.error
    before = payer_sim.simulator.prepared(run_record(service, first.run_id)["request_id"])
    assert before is not None
    moved = before.applied.moved_out
    assert len({line.settlement_id for line in moved}) == 2
    # from the day's last ten minutes only (on SQLite the ledger holds this test's rows alone: two of `late`)
    assert all(line.occurred_at is not None and line.occurred_at >= at(BEFORE, 23, 50) for line in moved)
    if service.app.settings.is_sqlite:
        assert {line.settlement_id for line in moved} < set(late)
    found = discrepancies(service, first.run_id)
    assert {item.key for item in found} == before.applied.discrepancies()
    for item in found:  # late on the engine's day, not in the payer's: a likely timing difference, still open
        if item.kind == "engine_only":
            assert item.timing and item.status == "open"

    second = runs.run(payer.code, DAY)
    assert second.status == "done", second.error
    after = payer_sim.simulator.prepared(run_record(service, second.run_id)["request_id"])
    assert after is not None
    assert [(line.settlement_id, line.entry_kind, line.fund, line.amount) for line in after.applied.moved_in] == \
        [(line.settlement_id, line.entry_kind, line.fund, line.amount) for line in moved]
    assert all(line.occurred_at is not None and line.occurred_at >= at(DAY, 0) for line in after.applied.moved_in)
    found_after = discrepancies(service, second.run_id)
    assert {item.key for item in found_after} == after.applied.discrepancies()
    # Each moved booking: engine only on its day, payer only on the next, both timing, paired and resolved.
    moved_keys = {(line.settlement_id, line.entry_kind, line.fund) for line in moved}
    pairs = [item for item in (*discrepancies(service, first.run_id), *found_after)
             if (item.settlement_id, item.entry_kind, item.fund) in moved_keys]
    assert len(pairs) == 2 * len(moved_keys)
    assert all(item.timing and item.status == "resolved" for item in pairs)
    assert sorted(item.kind for item in pairs) == ["engine_only"] * len(moved_keys) + ["payer_only"] * len(moved_keys)


def test_a_payer_that_times_out_after_doing_the_work_is_asked_again_with_the_same_request_id_and_books_once(
        service: Service, payer_sim: SimulatorServer, fast_backoff: None) -> None:
    desk = cashier(service)
    desk.settle(at(DAY, 10))
    payer = payer_sim.payer(timeout=1.0, retries=3)
    payer_sim.simulator.faults = Faults(timeout_first=1, hang_seconds=4.0)
    result = reconciler(service, payer).run(payer.code, DAY)
    assert result.status == "done", result.error
    assert result.discrepancies == {}
    request_id = run_record(service, result.run_id)["request_id"]
    assert payer_sim.simulator.requests == [request_id, request_id]
    assert payer_sim.simulator.bookings == {(payer.code, DAY): 1}


def test_a_payer_that_never_answers_in_time_fails_the_run_and_a_later_run_succeeds_in_the_same_record(
        service: Service, payer_sim: SimulatorServer, fast_backoff: None) -> None:
    desk = cashier(service)
    desk.settle(at(DAY, 10))
    payer = payer_sim.payer(timeout=0.4, retries=3)
    payer_sim.simulator.faults = Faults(timeout_first=3, hang_seconds=3.0)
    runs = reconciler(service, payer)
    failed = runs.run(payer.code, DAY)
    assert failed.status == "failed"
    assert failed.error is not None
    assert f"the statement service of {payer.code} did not answer after 3 attempts" in failed.error
    assert "Timeout" in failed.error
    record = run_record(service, failed.run_id)
    assert payer_sim.simulator.requests == [record["request_id"]] * 3  # every attempt with the same request id

    # Later: the payer answers again (its first three calls are over); the operator runs the day again.
    patient = payer.model_copy(update={"statement": payer.statement.model_copy(update={"timeout_seconds": 10})})
    again = reconciler(service, patient).run(payer.code, DAY)
    assert again.run_id == failed.run_id
    assert again.status == "done", again.error
    assert again.error is None and again.discrepancies == {}
    assert run_record(service, again.run_id)["attempts"] == 2


@pytest.mark.parametrize("file_format", ["csv", "xml"])
def test_file_payers_reconcile_the_statement_written_into_the_inbox(service: Service, tmp_path: Path,
                                                                    file_format: str) -> None:
    desk = cashier(service)
    if file_format == "csv":  # the critical-illness insurer: pays from 390200 on large bills
        funds, amount = ["390200"], "80000.00"
        people = [new_id_number() for _ in range(4)]
    else:  # medical assistance: pays 低保 patients from 610100
        funds, amount = ["610100", "610102", "610103", "640100"], "1000.00"
        people = [new_id_number() for _ in range(4)]
        import_roster_rows(service, [(person, "dibao_rural_a", "2024-01-01", "") for person in people])
    for n, person in enumerate(people):
        desk.settle(at(DAY, 9 + n), amount=amount, person=person)
    code = f"file-{file_format}-{secrets.token_hex(3)}"
    payer = PayerConfig(code=code, name="文件对账方", funds=funds,
                        statement=StatementSource(source="file", format=file_format))
    inbox = tmp_path / "inbox"
    simulator = PayerSimulator(service.app.context, {code: payer})
    runs = reconciler(service, payer, inbox)

    path, clean = simulator.write_inbox(code, DAY, inbox)
    assert path == inbox / code / f"{DAY.isoformat()}.{file_format}"
    assert len(clean.lines) >= 4 and {line.fund for line in clean.lines} <= set(funds)
    result = runs.run(code, DAY)
    assert result.status == "done", result.error
    assert result.discrepancies == {} and result.payer_count == result.engine_count >= 4

    simulator.faults = Faults(seed=3, drop=1, shift=1, extra=1, phantom_reversals=1)
    _, damaged = simulator.write_inbox(code, DAY, inbox)
    rerun = runs.run(code, DAY)
    assert rerun.run_id == result.run_id and rerun.status == "done", rerun.error
    assert {item.key for item in discrepancies(service, rerun.run_id)} == damaged.applied.discrepancies()
    assert rerun.discrepancies == {"engine_only": 1, "amount_differs": 1, "payer_only": 2}
