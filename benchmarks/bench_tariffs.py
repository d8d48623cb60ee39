"""Tariff administration benchmark: how fast past settlements are recomputed (`settlement settlements verify`) and
re-run under a draft (`settlement tariffs simulate`), beside reading the same settlements and their ledger entries
without computing anything (the baseline, in the same run).

Run: `.venv/bin/python -m benchmarks.bench_tariffs [--settlements 4000]`. It creates and drops its own PostgreSQL
database, settles N bills (one county hospital, a quarter as many patients, so caps and deductibles carry over)
dated across June 2024, imports a draft with another county rate, then times each pass over the month.
No target is set by the issue; the figures say how long a month of a city's settlements takes. The
ratios are times: the pass's time over the baseline's.
"""

from __future__ import annotations

import argparse
import secrets
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from tests.factories import TARIFFS
from tests.service.conftest import claim_body, new_id_number, shipped_document

from benchmarks.bench_service import bench_database
from settlement.bootstrap import build, prepare
from settlement.config import Settings
from settlement.services import tariffs
from settlement.services.admin import add_hospital
from settlement.services.auth import authenticate
from settlement.services.settlements import SettlementService
from settlement.wire.requests import SettleRequest

JUNE = (date(2024, 6, 1), date(2024, 6, 30))


def timed(work: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def run(database_url: str, count: int) -> None:
    settings = Settings(database_url=database_url, tariffs_dir=TARIFFS, secret_key=secrets.token_urlsafe(48),
                        data_dir=Path(tempfile.mkdtemp()), demo=False)
    application = build(settings)
    context = application.context
    context.clock = lambda: datetime(2024, 6, 30, 12, 0, tzinfo=UTC)
    prepare(application)
    key = add_hospital(context, "H-BENCH", "基准医院", "county", "611002", "bench")
    with context.uow() as tx:
        caller = authenticate(tx.repo, key)
    service = SettlementService(context)
    persons = [new_id_number() for _ in range(max(1, count // 4))]

    def settle(index: int) -> None:
        day = f"2024-06-{1 + index % 28:02d}"
        reply = service.settle(caller, SettleRequest.model_validate({
            "transaction_id": f"B{index}", "claim": claim_body("H-BENCH", "county", persons[index % len(persons)],
                                                               settled_at=f"{day}T10:00:00+08:00", discharge=day)}))
        assert reply.status == 201, reply.body

    with ThreadPoolExecutor(8) as pool:
        seconds, _ = timed(lambda: list(pool.map(settle, range(count))))
    print(f"seeded {count} settlements in {seconds:.1f} s")
    document = shipped_document()
    document.update(version="2024-07-01", effective={"from": "2024-07-01"})
    next(layer for layer in document["layers"] if layer["id"] == "basic_inpatient")["rate"]["by_level"][
        "county"] = "0.80"
    draft = str(tariffs.import_document(context, document, "bench", "admin:bench")["version"]["id"])
    baseline, pages = timed(lambda: sum(len(page) for page in tariffs.stored_pages(context, *JUNE, {})))
    checked, report = timed(lambda: tariffs.verify(context, *JUNE, "bench"))
    simulated, simulation = timed(lambda: tariffs.simulate(context, draft, *JUNE, "bench"))
    assert report["checked"] == pages == count and not report["differences"]
    print(f"baseline (read the month's settlements and entries): {pages / baseline:8.0f} settlements/s")
    print(f"verify (recompute under the recorded versions):      {report['checked'] / checked:8.0f} settlements/s"
          f"  time ratio {checked / baseline:.2f}")
    print(f"simulate (re-run under the draft, with carry-over):   {simulation['settlements_rerun'] / simulated:8.0f} "
          f"settlements/s  time ratio {simulated / baseline:.2f}")
    application.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settlements", type=int, default=4000)
    args = parser.parse_args()
    with bench_database() as env:
        run(env["SETTLEMENT_DATABASE_URL"], args.settlements)


if __name__ == "__main__":
    main()
