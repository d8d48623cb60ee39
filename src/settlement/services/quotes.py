"""Quote ids: a quote records nothing, so its id carries, signed, what the quote was computed on.

Settling with a quote id recomputes and compares: the same claim, tariff, year-to-date figures and roster
categories give exactly the quoted shares; anything else is refused with a code naming what changed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from settlement.services.errors import ServiceCode, ServiceError


@dataclass(frozen=True)
class QuoteBasis:
    hospital_id: int
    claim_hash: str
    tariff_sha256: str
    accumulators_hash: str
    categories: tuple[str, ...]
    shares: dict[str, int]  # fund -> fen, and "patient"
    expires_at: int  # Unix seconds

    def payload(self) -> dict[str, Any]:
        return {"h": self.hospital_id, "c": self.claim_hash, "t": self.tariff_sha256, "a": self.accumulators_hash,
                "k": list(self.categories), "s": self.shares, "e": self.expires_at}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(basis: QuoteBasis, key: bytes) -> str:
    body = _b64(json.dumps(basis.payload(), sort_keys=True, separators=(",", ":")).encode("utf-8"))
    mac = _b64(hmac.new(key, body.encode("ascii"), hashlib.sha256).digest()[:20])
    return f"q1.{body}.{mac}"


def verify(quote_id: str, key: bytes) -> QuoteBasis:
    try:
        version, body, mac = quote_id.split(".")
        expected = _b64(hmac.new(key, body.encode("ascii"), hashlib.sha256).digest()[:20])
        if version != "q1" or not hmac.compare_digest(mac, expected):
            raise ValueError("bad signature")
        data = json.loads(_unb64(body))
        return QuoteBasis(int(data["h"]), str(data["c"]), str(data["t"]), str(data["a"]), tuple(data["k"]),
                          {str(k): int(v) for k, v in data["s"].items()}, int(data["e"]))
    except (ValueError, KeyError, TypeError) as error:
        raise ServiceError(ServiceCode.QUOTE_INVALID, "the quote id is not one this service issued") from error


def compare(quoted: QuoteBasis, current: QuoteBasis, now: int) -> None:
    """Raise naming the first thing that changed since the quote."""
    if now > quoted.expires_at:
        raise ServiceError(ServiceCode.QUOTE_EXPIRED, "the quote has expired (quotes are valid for 15 minutes)")
    if quoted.hospital_id != current.hospital_id or quoted.claim_hash != current.claim_hash:
        raise ServiceError(ServiceCode.QUOTE_CLAIM_MISMATCH, "the claim differs from the quoted claim")
    if quoted.tariff_sha256 != current.tariff_sha256:
        raise ServiceError(ServiceCode.QUOTE_TARIFF_CHANGED,
                           "the tariff in force changed since the quote; quote again")
    if quoted.categories != current.categories:
        raise ServiceError(ServiceCode.QUOTE_CATEGORIES_CHANGED,
                           "the person's assistance categories changed since the quote; quote again")
    if quoted.accumulators_hash != current.accumulators_hash:
        raise ServiceError(ServiceCode.QUOTE_ACCUMULATORS_CHANGED,
                           "the person's year-to-date figures changed since the quote (another settlement or "
                           "reversal); quote again")
