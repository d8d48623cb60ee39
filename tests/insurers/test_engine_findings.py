"""What the payer simulator found in the engine (both fixed since): a run repeated after a fetch that timed out
asks under the same request id, and a cross-midnight pair is matched whichever day is run first."""

from __future__ import annotations

from datetime import timedelta

from settlement.insurers.simulator import Faults
from tests.insurers.conftest import SimulatorServer, sqlite_only
from tests.insurers.helpers import at, cashier, discrepancies
from tests.insurers.test_reconciliation import BEFORE, DAY, reconciler
from tests.service.conftest import Service


@sqlite_only
def test_a_run_again_after_the_payer_timed_out_asks_with_the_same_request_id(
        service: Service, payer_sim: SimulatorServer, fast_backoff: None) -> None:
    cashier(service).settle(at(DAY, 10))
    payer = payer_sim.payer(timeout=0.3, retries=1)
    payer_sim.simulator.faults = Faults(timeout_first=1, hang_seconds=2.0)
    runs = reconciler(service, payer)
    assert runs.run(payer.code, DAY).status == "failed"
    assert runs.run(payer.code, DAY).status == "done"
    assert payer_sim.simulator.bookings == {(payer.code, DAY): 1}


def test_a_booking_moved_across_midnight_is_paired_whatever_the_order_of_the_runs(
        service: Service, payer_sim: SimulatorServer) -> None:
    settled = cashier(service).settle(at(BEFORE, 22, 30))  # earlier than the last ten minutes of the day
    payer = payer_sim.payer()
    payer_sim.simulator.faults = Faults(midnight=1, midnight_window=timedelta(hours=2))
    runs = reconciler(service, payer)
    first, second = runs.run(payer.code, BEFORE), runs.run(payer.code, DAY)  # the nightly order
    pair = [item for run in (first, second) for item in discrepancies(service, run.run_id)
            if item.settlement_id == settled]
    assert sorted(item.kind for item in pair) == ["engine_only", "payer_only"]
    assert all(item.timing and item.status == "resolved" for item in pair)
