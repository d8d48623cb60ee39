"""API keys: random, shown once, stored as a SHA-256 digest and found by their public prefix.

A key is 256 bits of randomness, so a fast digest is enough (there is nothing to brute-force); comparison is
constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from settlement.db.models import Principal
from settlement.db.repositories import Repository
from settlement.services.errors import ServiceCode, ServiceError

KEY_PREFIX = "stl"


@dataclass(frozen=True)
class Caller:
    principal_id: int
    kind: str  # hospital | finance | admin
    name: str
    hospital_id: int | None
    hospital_code: str | None = None
    hospital_level: str | None = None

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.name}"


def new_key() -> tuple[str, str, str]:
    """(key to hand out once, its lookup prefix, its digest to store)."""
    prefix = secrets.token_hex(6)
    key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    return key, prefix, digest(key)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def authenticate(repo: Repository, key: str | None) -> Caller:
    if not key:
        raise ServiceError(ServiceCode.AUTH_REQUIRED, "send your API key as 'Authorization: Bearer <key>'")
    parts = key.split("_", 2)
    principal = repo.principal_by_prefix(parts[1]) if len(parts) == 3 and parts[0] == KEY_PREFIX else None
    if principal is None or principal.revoked_at is not None or not hmac.compare_digest(
            principal.key_hash, digest(key)):
        raise ServiceError(ServiceCode.AUTH_INVALID, "the API key is not valid")
    hospital = repo.hospital(principal.hospital_id) if principal.hospital_id is not None else None
    return Caller(principal.id, principal.kind, principal.name, principal.hospital_id,
                  hospital.code if hospital else None, hospital.level if hospital else None)


class CallerCache:
    """Recently authenticated keys, by digest, for a few seconds: most requests then skip a database round trip.

    A revoked key stops working within `ttl_seconds`.
    """

    def __init__(self, ttl_seconds: float = 30.0, size: int = 4096) -> None:
        self.ttl = ttl_seconds
        self.size = size
        self._entries: dict[str, tuple[float, Caller]] = {}

    def get(self, key: str, now: float) -> Caller | None:
        entry = self._entries.get(digest(key))
        if entry is None or now - entry[0] > self.ttl:
            return None
        return entry[1]

    def put(self, key: str, caller: Caller, now: float) -> None:
        if len(self._entries) >= self.size:
            self._entries.clear()
        self._entries[digest(key)] = (now, caller)


def add_principal(repo: Repository, kind: str, name: str, hospital_id: int | None, now: datetime) -> str:
    key, prefix, key_digest = new_key()
    repo.add(Principal(kind=kind, name=name, hospital_id=hospital_id, key_prefix=prefix, key_hash=key_digest,
                       created_at=now))
    return key
