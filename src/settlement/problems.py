"""One table from stable error codes to HTTP statuses, and the problem+json body every interface returns.

REST answers with these bodies; SOAP faults carry the same codes. Business failures are 4xx; a 500 is a bug.
"""

from __future__ import annotations

from typing import Any

from settlement.domain.errors import ErrorCode, SettlementError
from settlement.services.errors import ServiceCode, ServiceError

STATUS: dict[str, int] = {
    ServiceCode.AUTH_REQUIRED: 401,
    ServiceCode.AUTH_INVALID: 401,
    ServiceCode.FORBIDDEN: 403,
    ServiceCode.NOT_FOUND: 404,
    ServiceCode.REQUEST_MALFORMED: 422,
    ServiceCode.REQUEST_UNREADABLE: 400,
    ServiceCode.METHOD_NOT_ALLOWED: 405,
    ServiceCode.BODY_TOO_LARGE: 413,
    ServiceCode.HOSPITAL_MISMATCH: 422,
    ServiceCode.IDEMPOTENCY_KEY_REUSED: 409,
    ServiceCode.SETTLEMENT_ALREADY_REVERSED: 409,
    ServiceCode.QUOTE_INVALID: 422,
    ServiceCode.QUOTE_EXPIRED: 409,
    ServiceCode.QUOTE_CLAIM_MISMATCH: 409,
    ServiceCode.QUOTE_TARIFF_CHANGED: 409,
    ServiceCode.QUOTE_ACCUMULATORS_CHANGED: 409,
    ServiceCode.QUOTE_CATEGORIES_CHANGED: 409,
    ServiceCode.ROSTER_INVALID: 422,
    ServiceCode.HOSPITALS_INVALID: 422,
    ServiceCode.DATABASE_BUSY: 503,
    ServiceCode.DATABASE_UNAVAILABLE: 503,
    ServiceCode.TRANSACTION_CANCELLED: 409,
    ServiceCode.DISCREPANCY_CLOSED: 409,
    ServiceCode.REVERSAL_REFUSED: 409,
    ServiceCode.PRINCIPAL_EXISTS: 409,
    ServiceCode.KEY_REVOKED: 409,
    ServiceCode.HOSPITAL_DISABLED: 403,
    ServiceCode.TARIFF_REJECTED: 422,
    ServiceCode.TARIFF_VERSION_EXISTS: 409,
    ServiceCode.TARIFF_STATE: 409,
    ServiceCode.TARIFF_SELF_APPROVAL: 403,
    ServiceCode.TARIFF_RETROACTIVE: 409,
    ServiceCode.TARIFF_CONFLICT: 409,
    ServiceCode.XML_MALFORMED: 400,
    ServiceCode.XML_FORBIDDEN: 400,
    ServiceCode.XML_TOO_LARGE: 413,
    ServiceCode.XML_TOO_DEEP: 400,
    ServiceCode.ENCODING_INVALID: 400,
    ServiceCode.ENCODING_MISMATCH: 400,
    ServiceCode.ENCODING_UNSUPPORTED: 415,
    ServiceCode.SOAP_INVALID: 400,
    ServiceCode.SOAP_VERSION_MISMATCH: 400,
    ServiceCode.DIALECT_UNKNOWN: 400,
    ServiceCode.DIALECT_NOT_BOUND: 403,
    ServiceCode.OPERATION_UNKNOWN: 400,
    ServiceCode.MESSAGE_INVALID: 422,
    ServiceCode.AUTH_EXPIRED: 401,
    ServiceCode.AUTH_NONCE_REPLAYED: 401,
    ErrorCode.TARIFF_NOT_FOUND: 422,
    ErrorCode.CATALOGUE_UNKNOWN_ITEM: 422,
    ErrorCode.TARIFF_INVALID: 500,
    ErrorCode.TARIFF_OVERLAP: 500,
    ErrorCode.INVARIANT_VIOLATED: 500,
    ErrorCode.ACCUMULATORS_INVALID: 500,
    ErrorCode.ACCUMULATORS_YEAR_MISMATCH: 500,
}

TITLES: dict[int, str] = {
    400: "Bad request", 413: "Body too large", 415: "Unsupported encoding",
    401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed", 409: "Conflict",
    422: "Unprocessable request",
    500: "Internal error", 503: "Outcome unknown, resend with the same key",
}

# Failures that are kept under the caller's key: a retry gets the same answer, and new money needs a new key.
KEPT = frozenset(code for code, status in STATUS.items() if status in (404, 409, 422)) - {
    ServiceCode.IDEMPOTENCY_KEY_REUSED, ServiceCode.REQUEST_MALFORMED}


def status_of(code: str) -> int:
    if code.startswith("CLAIM_"):
        return 422
    return STATUS.get(code, 500)


def is_kept(code: str) -> bool:
    return code.startswith("CLAIM_") or code in KEPT


def problem_body(error: SettlementError | ServiceError) -> tuple[int, dict[str, Any]]:
    code = str(error.code)
    status = status_of(code)
    if isinstance(error, ServiceError):
        detail = error.message
        problems = [{"code": str(p.code), "path": p.path, "message": p.message} for p in error.problems]
    else:
        detail = "; ".join(p.message for p in error.problems[:3])
        problems = [{"code": str(p.code), "path": p.path, "message": p.message} for p in error.problems]
    body: dict[str, Any] = {
        "type": f"urn:settlement:error:{code}",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "code": code,
        "detail": detail,
    }
    if problems:
        body["problems"] = problems
    return status, body
