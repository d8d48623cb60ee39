"""Stable codes of the service's expected failures (the domain's own codes are in settlement.domain.errors)."""

from __future__ import annotations

from enum import StrEnum

from settlement.domain.errors import Problem


class ServiceCode(StrEnum):
    AUTH_REQUIRED = "AUTH_REQUIRED"
    AUTH_INVALID = "AUTH_INVALID"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    REQUEST_MALFORMED = "REQUEST_MALFORMED"
    HOSPITAL_MISMATCH = "HOSPITAL_MISMATCH"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    SETTLEMENT_ALREADY_REVERSED = "SETTLEMENT_ALREADY_REVERSED"
    QUOTE_INVALID = "QUOTE_INVALID"
    QUOTE_EXPIRED = "QUOTE_EXPIRED"
    QUOTE_CLAIM_MISMATCH = "QUOTE_CLAIM_MISMATCH"
    QUOTE_TARIFF_CHANGED = "QUOTE_TARIFF_CHANGED"
    QUOTE_ACCUMULATORS_CHANGED = "QUOTE_ACCUMULATORS_CHANGED"
    QUOTE_CATEGORIES_CHANGED = "QUOTE_CATEGORIES_CHANGED"
    ROSTER_INVALID = "ROSTER_INVALID"
    DATABASE_BUSY = "DATABASE_BUSY"


class ServiceError(Exception):
    def __init__(self, code: ServiceCode, message: str, problems: list[Problem] | None = None) -> None:
        self.code = code
        self.message = message
        self.problems = problems or []
        super().__init__(f"{code}: {message}")
