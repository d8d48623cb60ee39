"""Core benchmark: settle a 40-line inpatient bill through the full Shangluo chain, on one core.

Prints claims per second beside a baseline measured in the same run (summing the bill's lines alone, the least
any settlement must do) and their ratio. Run: `make bench` or `.venv/bin/python benchmarks/bench_core.py`.
Target (issue 2): at least 10,000 claims per second on one core.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

from settlement.domain.accumulators import Accumulators
from settlement.domain.claim import SHANGHAI, Claim, Hospital, Line, Patient, Visit
from settlement.domain.money import ZERO, money
from settlement.domain.settle import settle
from settlement.tariffstore import load_store

ROOT = Path(__file__).resolve().parents[1]


def forty_line_bill() -> Claim:
    """A realistic stay: the first 40 catalogue items of mixed classes, some over their price caps."""
    with (ROOT / "tariffs/611000/catalogue-2024-01-01.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    picked = rows[::6][:38]
    lines = []
    for index, row in enumerate(picked):
        cap = Decimal(row["price_cap"]) if row["price_cap"] else Decimal("20.00")
        unit_price = cap * Decimal("1.25") if index % 5 == 0 else cap * Decimal("0.9")
        quantity = Decimal(1 + index % 7)
        lines.append(Line(str(index + 1), row["code"], row["name"], quantity, unit_price, money(quantity * unit_price)))
    lines.append(Line("39", "001109000010001", "bed", Decimal(14), Decimal("30.00"), Decimal("420.00")))
    lines.append(Line("40", "HOSPITAL-OWN-1", "unlisted", Decimal(1), Decimal("260.00"), Decimal("260.00")))
    return Claim(
        hospital=Hospital("H61100000002", "city"),
        visit=Visit("ZY2024091800412", "inpatient", date(2024, 9, 1), date(2024, 9, 18),
                    datetime(2024, 9, 18, 9, 5, tzinfo=SHANGHAI)),
        patient=Patient("11010519491231002X", "张秀兰", "resident", "611000", ("jiandang",)),
        lines=tuple(lines),
    )


def rate(operation: Callable[[], object], seconds: float, repeats: int) -> float:
    """Best-of-`repeats` operations per second, each repeat running for about `seconds`."""
    results = []
    for _ in range(repeats):
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            for _ in range(100):
                operation()
            count += 100
            now = time.perf_counter()
            if now >= deadline:
                break
        results.append(count / (now - start))
    return max(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the target says

    tariff = load_store(ROOT / "tariffs").tariff("611000", date(2024, 9, 18))
    claim = forty_line_bill()
    # Mid-year figures so that every layer of the chain does real work (critical illness in its bands).
    accumulators = Accumulators(2024, 1, {"390200": Decimal("5000.00")}, {"390200": Decimal("9000.00")},
                                {"390100": Decimal("20000.00")})
    result = settle(claim, tariff, accumulators)
    paying = [payer.layer_id for payer in result.payers if payer.paid]
    assert len(claim.lines) == 40

    def baseline() -> object:
        return sum((line.amount for line in claim.lines), ZERO)

    def full_chain() -> object:
        return settle(claim, tariff, accumulators)

    def build_and_settle() -> object:
        # A claim is validated when it is made; this variant pays for that on every bill as well.
        return settle(replace(claim), tariff, accumulators)

    base_rate = rate(baseline, args.seconds, args.repeats)
    settle_rate = rate(full_chain, args.seconds, args.repeats)
    with_validation = rate(build_and_settle, args.seconds, args.repeats)
    print(f"bill: {len(claim.lines)} lines, total {claim.total}, layers paying: {', '.join(paying)}")
    print(f"baseline (sum the lines):      {base_rate:>10,.0f} per second")
    print(f"settle (full chain):           {settle_rate:>10,.0f} claims per second on one core "
          f"({1e6 / settle_rate:.1f} us per claim)")
    print(f"validate the claim + settle:   {with_validation:>10,.0f} claims per second "
          f"({1e6 / with_validation:.1f} us per claim)")
    print(f"ratio settle / baseline:       {settle_rate / base_rate:>10.4f}")
    print(f"target 10,000 claims/s:        {'met' if settle_rate >= 10_000 else 'NOT met'}")
    print(f"(best of {args.repeats} runs of {args.seconds}s each, Python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
