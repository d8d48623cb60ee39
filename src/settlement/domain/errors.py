"""Stable error codes of the domain. Codes never change meaning; new failures get new codes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ErrorCode(StrEnum):
    # Claim validation
    CLAIM_EMPTY = "CLAIM_EMPTY"
    CLAIM_AMOUNT_MISMATCH = "CLAIM_AMOUNT_MISMATCH"
    CLAIM_TOTAL_MISMATCH = "CLAIM_TOTAL_MISMATCH"
    CLAIM_NON_POSITIVE_QUANTITY = "CLAIM_NON_POSITIVE_QUANTITY"
    CLAIM_NEGATIVE_PRICE = "CLAIM_NEGATIVE_PRICE"
    CLAIM_DATES_OUT_OF_ORDER = "CLAIM_DATES_OUT_OF_ORDER"
    CLAIM_DUPLICATE_LINE = "CLAIM_DUPLICATE_LINE"
    CLAIM_UNKNOWN_SCHEME = "CLAIM_UNKNOWN_SCHEME"
    CLAIM_UNKNOWN_LEVEL = "CLAIM_UNKNOWN_LEVEL"
    CLAIM_UNKNOWN_VISIT_TYPE = "CLAIM_UNKNOWN_VISIT_TYPE"
    CLAIM_INVALID_ID_NUMBER = "CLAIM_INVALID_ID_NUMBER"
    CLAIM_NAIVE_SETTLEMENT_TIME = "CLAIM_NAIVE_SETTLEMENT_TIME"
    CLAIM_MALFORMED = "CLAIM_MALFORMED"
    CLAIM_DATE_IN_FUTURE = "CLAIM_DATE_IN_FUTURE"  # after the service's clock (beyond the allowed skew)
    CLAIM_CONTRADICTS_ROSTER = "CLAIM_CONTRADICTS_ROSTER"  # a region or scheme other than the roster's
    # Catalogue and tariff
    CATALOGUE_UNKNOWN_ITEM = "CATALOGUE_UNKNOWN_ITEM"
    TARIFF_INVALID = "TARIFF_INVALID"
    TARIFF_NOT_FOUND = "TARIFF_NOT_FOUND"
    TARIFF_OVERLAP = "TARIFF_OVERLAP"
    # Accumulators
    ACCUMULATORS_YEAR_MISMATCH = "ACCUMULATORS_YEAR_MISMATCH"
    ACCUMULATORS_INVALID = "ACCUMULATORS_INVALID"
    # A broken identity is a bug in the engine or the tariff, never the hospital's fault.
    INVARIANT_VIOLATED = "INVARIANT_VIOLATED"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an input: a stable code, where it is (a JSON-style path) and a clear reason."""

    code: ErrorCode
    path: str
    message: str

    def __str__(self) -> str:
        where = f" at {self.path}" if self.path else ""
        return f"{self.code}{where}: {self.message}"


class SettlementError(Exception):
    """Base of every expected failure; carries one or more problems, the first giving the error code."""

    def __init__(self, problems: list[Problem]) -> None:
        if not problems:
            raise ValueError("an error needs at least one problem")
        self.problems = problems
        super().__init__("; ".join(str(problem) for problem in problems))

    @property
    def code(self) -> ErrorCode:
        return self.problems[0].code


class ClaimRejected(SettlementError):
    """The bill itself is wrong: the hospital must correct it."""


class TariffError(SettlementError):
    """The tariff is invalid or missing: an administrator must correct it."""


class AccumulatorError(SettlementError):
    """The year-to-date figures handed in do not fit the claim."""


class InvariantViolation(SettlementError):
    """The engine produced a result that breaks an identity; nothing may be recorded."""
