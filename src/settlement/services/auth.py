"""API keys: random, shown once, stored as a SHA-256 digest and found by their public prefix.

A key is 256 bits of randomness, so a fast digest is enough (there is nothing to brute-force); comparison is
constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError

from settlement.db.models import Principal
from settlement.db.repositories import Repository
from settlement.services.errors import ServiceCode, ServiceError

if TYPE_CHECKING:
    from settlement.services.context import Context

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
    if hospital is not None and hospital.disabled_at is not None:
        raise ServiceError(ServiceCode.HOSPITAL_DISABLED, f"hospital {hospital.code} is disabled: its keys are "
                                                          "refused until an administrator enables it")
    return Caller(principal.id, principal.kind, principal.name, principal.hospital_id,
                  hospital.code if hospital else None, hospital.level if hospital else None)


class CredentialsWatch:
    """This worker's view of the credentials generation, which the database moves on (by triggers) with every
    change to keys, hospitals, SOAP passwords and dialect bindings, whether made by a command or by hand.

    A cache of credentials keeps each answer under the generation it was found in and gives it back only while
    this view is of that generation and younger than `interval` seconds. The view is re-read when it is older:
    one tiny query per worker per interval, not per request. A revocation or rotation committed at some instant
    is therefore seen by every worker within `interval` (plus the query's own time).
    """

    def __init__(self, read: Callable[[], int], interval: float = 0.5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._read = read
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        # (when the read that found it began, the generation): one value, so a thread never mixes two reads.
        self._view: tuple[float, int] = (-math.inf, -1)

    def fresh(self) -> int | None:
        """The generation while the view is young enough to answer from a cache (no I/O); else None."""
        began, generation = self._view
        return generation if self._clock() - began < self.interval else None

    def current(self) -> int:
        """The generation, read again when the view is too old (a blocking query: keep it off the event loop).
        Answers cached under it stay true for as long as it is fresh: anything committed after the read began
        moves the generation on."""
        generation = self.fresh()
        if generation is not None:
            return generation
        with self._lock:  # one read at a time; the threads that waited find the view young again
            generation = self.fresh()
            if generation is None:
                began = self._clock()
                generation = self._read()
                self._view = (began, generation)
        return generation


def credentials_watch(context: Context) -> CredentialsWatch:
    """A worker's view of the credentials generation, read with the context's units of work."""

    def read() -> int:
        for attempt in (1, 2):
            try:
                with context.uow() as tx:
                    return tx.repo.credentials_generation()
            except DBAPIError as error:
                # A pooled connection found dead (the database restarted): SQLAlchemy replaces the pool's
                # connections, and one more try on a fresh one tells whether the database is really away.
                if not error.connection_invalidated or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    return CredentialsWatch(read)


class CallerCache:
    """Recently authenticated keys, by digest, each under the credentials generation it was found in (see
    CredentialsWatch): most requests then skip a database round trip, and a revoked key stops working on every
    worker within the watch's interval. `ttl_seconds` only bounds how long an entry is kept."""

    def __init__(self, ttl_seconds: float = 30.0, size: int = 4096) -> None:
        self.ttl = ttl_seconds
        self.size = size
        self._entries: dict[str, tuple[float, int, Caller]] = {}

    def get(self, key: str, generation: int, now: float) -> Caller | None:
        entry = self._entries.get(digest(key))
        if entry is None or entry[1] != generation or now - entry[0] > self.ttl:
            return None
        return entry[2]

    def put(self, key: str, caller: Caller, generation: int, now: float) -> None:
        if len(self._entries) >= self.size:
            self._entries.clear()
        self._entries[digest(key)] = (now, generation, caller)


def add_principal(repo: Repository, kind: str, name: str, hospital_id: int | None, now: datetime) -> str:
    """A new key for a person (shown once). The person must hold no active key of that role (the database's
    unique index says so too): `PRINCIPAL_EXISTS`, to rotate the key instead."""
    if repo.active_keys_of(kind, name):
        raise ServiceError(ServiceCode.PRINCIPAL_EXISTS, f"{kind} {name!r} already holds an active key; rotate it "
                                                         "(settlement keys rotate ID) instead of adding another")
    key, prefix, key_digest = new_key()
    repo.add(Principal(kind=kind, name=name, hospital_id=hospital_id, key_prefix=prefix, key_hash=key_digest,
                       created_at=now))
    return key
