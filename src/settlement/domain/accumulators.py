"""Year-to-date amounts of one person for one insurance year, across every hospital."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from settlement.domain.errors import AccumulatorError, ErrorCode, Problem
from settlement.domain.money import ZERO, is_fen_exact


@dataclass(frozen=True, slots=True)
class Accumulators:
    """Keyed by fund code (390100, 390200, 610100...): layers of one fund share its deductible and cap."""

    year: int
    admissions: int = 0  # inpatient admissions already settled this year
    deductible_used: Mapping[str, Decimal] = field(default_factory=dict)  # per-year deductibles only
    cumulative: Mapping[str, Decimal] = field(default_factory=dict)  # each fund's base amounts this year
    paid: Mapping[str, Decimal] = field(default_factory=dict)
    admissions_by_level: Mapping[str, int] = field(default_factory=dict)  # the same admissions, by hospital level
    # Paid against limits inside a fund, by (fund, limit key): a part of `paid`, kept apart for each limit.
    limits: Mapping[tuple[str, str], Decimal] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Checked once when made, like a claim: settle() can trust any Accumulators it is given.
        found = self.problems()
        if found:
            raise AccumulatorError(found)

    def paid_by(self, fund: str) -> Decimal:
        return self.paid.get(fund, ZERO)

    def problems(self) -> list[Problem]:
        found: list[Problem] = []
        if self.admissions < 0:
            found.append(Problem(ErrorCode.ACCUMULATORS_INVALID, "admissions", "must not be negative"))
        for name, table in (("deductible_used", self.deductible_used), ("cumulative", self.cumulative),
                            ("paid", self.paid)):
            for fund, amount in table.items():
                if amount < 0 or not is_fen_exact(amount):
                    found.append(Problem(ErrorCode.ACCUMULATORS_INVALID, f"{name}.{fund}",
                                         f"must be a non-negative amount in fen, got {amount}"))
        if self.admissions_by_level and min(self.admissions_by_level.values()) < 0:
            found.extend(Problem(ErrorCode.ACCUMULATORS_INVALID, f"admissions_by_level.{level}", "must not be negative")
                         for level, count in self.admissions_by_level.items() if count < 0)
        for (fund, key), amount in self.limits.items():
            if amount < 0 or not is_fen_exact(amount):
                found.append(Problem(ErrorCode.ACCUMULATORS_INVALID, f"limits.{fund}.{key}",
                                     f"must be a non-negative amount in fen, got {amount}"))
        return found

    def check_for_year(self, year: int) -> None:
        if self.year != year:
            message = f"accumulators are for {self.year}, the claim is in insurance year {year}"
            raise AccumulatorError([Problem(ErrorCode.ACCUMULATORS_YEAR_MISMATCH, "year", message)])
