"""SOAP access: hospitals' WS-Security passwords, the dialects they may speak, nonces, and the envelope log.

A UsernameToken password digest is SHA-1(nonce + created + password), so the service must know the password
itself: it is stored encrypted with Fernet (AES-128-CBC and HMAC-SHA256) under the credentials key, which lives
outside the database (SETTLEMENT_CREDENTIALS_KEY, or data_dir/credentials.key with mode 0600). A copy of the
database alone reveals no password.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from settlement.db.bookkeeping import AsyncBookkeeping
from settlement.db.models import HospitalDialect, SoapCredential
from settlement.db.repositories import add_exchange, add_nonce, purge_nonces
from settlement.db.settling import Companion
from settlement.services.auth import Caller, CredentialsWatch
from settlement.services.context import Context
from settlement.services.errors import ServiceCode, ServiceError

log = logging.getLogger("settlement.soap")


@dataclass(frozen=True)
class SoapPrincipal:
    caller: Caller
    password: str
    dialects: frozenset[str]
    disabled: bool = False  # the hospital is disabled: refused once its token is checked


def issue_password(context: Context, cipher: Fernet, hospital_code: str, actor: str) -> str:
    """A new WS-Security password for a hospital (shown once); earlier ones are revoked."""
    now = context.clock()
    password = secrets.token_urlsafe(24)
    with context.uow() as tx:
        hospital = tx.repo.hospital_by_code(hospital_code)
        if hospital is None:
            raise ServiceError(ServiceCode.NOT_FOUND, f"no hospital {hospital_code}")
        for old in tx.repo.soap_credentials_of(hospital.id):
            old.revoked_at = now
        tx.repo.add(SoapCredential(hospital_id=hospital.id, username=hospital.code,
                                   secret_encrypted=cipher.encrypt(password.encode("utf-8")).decode("ascii"),
                                   created_at=now))
        tx.repo.audit(now, actor, "soap_password.issue", "hospital", hospital.code, "{}")
        tx.commit()
    return password


def bind_dialects(context: Context, hospital_code: str, dialects: list[str], known: set[str], actor: str) -> list[str]:
    """Allow a hospital to speak the named dialects; returns every dialect it is bound to."""
    unknown = sorted(set(dialects) - known)
    if unknown:
        raise ServiceError(ServiceCode.DIALECT_UNKNOWN, f"no dialect {', '.join(unknown)}; known: "
                                                         f"{', '.join(sorted(known))}")
    now = context.clock()
    with context.uow() as tx:
        hospital = tx.repo.hospital_by_code(hospital_code)
        if hospital is None:
            raise ServiceError(ServiceCode.NOT_FOUND, f"no hospital {hospital_code}")
        bound = set(tx.repo.dialects_of(hospital.id))
        for dialect in sorted(set(dialects) - bound):
            tx.repo.add(HospitalDialect(hospital_id=hospital.id, dialect=dialect, created_at=now))
            tx.repo.audit(now, actor, "hospital.bind_dialect", "hospital", hospital.code,
                          json.dumps({"dialect": dialect}))
        tx.commit()
        return sorted(bound | set(dialects))


class SoapPrincipals:
    """Finds a UsernameToken's hospital, its password and dialects; cached per worker under the credentials
    generation, like API keys (a revoked or rotated password or a new binding counts within the watch's interval,
    see settlement.services.auth.CredentialsWatch; `ttl_seconds` only bounds how long an entry is kept)."""

    def __init__(self, context: Context, cipher: Fernet, watch: CredentialsWatch, ttl_seconds: float = 30.0) -> None:
        self.context = context
        self.cipher = cipher
        self.watch = watch
        self.ttl = ttl_seconds
        self._cache: dict[str, tuple[float, int, SoapPrincipal | None]] = {}

    def _from_cache(self, username: str, generation: int, now: float) -> tuple[SoapPrincipal | None] | None:
        cached = self._cache.get(username)
        if cached is not None and cached[1] == generation and now - cached[0] <= self.ttl:
            return (cached[2],)
        return None

    def cached(self, username: str) -> tuple[SoapPrincipal | None] | None:
        """(the principal, or None for an unknown name) when the cache answers without I/O; None when it does not
        (then `find`, off the event loop)."""
        generation = self.watch.fresh()
        return None if generation is None else self._from_cache(username, generation, time.monotonic())

    def find(self, username: str) -> SoapPrincipal | None:
        now = time.monotonic()
        generation = self.watch.current()  # read before the credential: a change committed after moves it on
        known = self._from_cache(username, generation, now)
        if known is not None:
            return known[0]
        with self.context.uow() as tx:
            found = tx.repo.soap_credential(username)
            principal = None
            if found is not None:
                credential, hospital = found
                try:
                    password = self.cipher.decrypt(credential.secret_encrypted.encode("ascii")).decode("utf-8")
                except InvalidToken:
                    # Encrypted under another credentials key: the operator must re-issue the password.
                    log.error("the WS-Security password of a hospital cannot be decrypted with this credentials key")
                    password = None
                if password is not None:
                    principal = SoapPrincipal(
                        Caller(0, "hospital", hospital.code, hospital.id, hospital.code, hospital.level),
                        password, frozenset(tx.repo.dialects_of(hospital.id)), hospital.disabled_at is not None)
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[username] = (now, generation, principal)
        return principal


def _bookkeeping(context: Context, write: Callable[[Connection], None]) -> None:
    """Run a bookkeeping write; once more on a connection found dead (the bookkeeping pool does not ping)."""
    for attempt in (1, 2):
        try:
            with context.bookkeeping_connection() as connection:
                write(connection)
            return
        except DBAPIError as error:
            if not error.connection_invalidated or attempt == 2:
                raise


NONCE_REPLAYED = "this nonce was already used: every message needs a new nonce"


def nonce_replayed() -> ServiceError:
    return ServiceError(ServiceCode.AUTH_NONCE_REPLAYED, NONCE_REPLAYED)


def _purge_before(now: datetime, window: timedelta) -> datetime | None:
    """Now and then (one accepted call in 256) the nonces older than two windows are forgotten: a nonce is never
    accepted twice within them."""
    return now - 2 * window if secrets.randbelow(256) == 0 else None


def remember_nonce(context: Context, hospital_id: int, nonce: str, window: timedelta) -> None:
    """Accept a nonce once within the window; a second use is refused. Old nonces are purged now and then."""
    now = context.clock()
    purge_before = _purge_before(now, window)

    def write(connection: Connection) -> None:
        add_nonce(connection, hospital_id, nonce, now)
        if purge_before is not None:
            purge_nonces(connection, purge_before)

    try:
        _bookkeeping(context, write)
    except IntegrityError:
        raise nonce_replayed() from None


async def remember_nonce_async(context: Context, bookkeeping: AsyncBookkeeping, hospital_id: int, nonce: str,
                               window: timedelta) -> None:
    """`remember_nonce` on the event loop."""
    now = context.clock()
    if not await bookkeeping.add_nonce(hospital_id, nonce, now, _purge_before(now, window)):
        raise nonce_replayed()


def nonce_claim(context: Context, hospital_id: int, nonce: str) -> Companion:
    """`remember_nonce` as a statement of a settlement's transaction: see `purge_nonces_async` for the purge."""
    return AsyncBookkeeping.nonce_claim(hospital_id, nonce, context.clock())


async def purge_nonces_async(context: Context, bookkeeping: AsyncBookkeeping, window: timedelta) -> None:
    """The purge `remember_nonce_async` does now and then, after a nonce claimed in a settlement's transaction."""
    purge_before = _purge_before(context.clock(), window)
    if purge_before is not None:
        await bookkeeping.purge_nonces(purge_before)


def record_exchange(context: Context, values: dict[str, object]) -> None:
    row = {**values, "created_at": context.clock()}
    _bookkeeping(context, lambda connection: add_exchange(connection, row))


async def record_exchange_async(context: Context, bookkeeping: AsyncBookkeeping, values: dict[str, object]) -> None:
    await bookkeeping.add_exchange({**values, "created_at": context.clock()})


def exchange_companion(context: Context, values: dict[str, object]) -> Companion:
    """`record_exchange` as a statement of a settlement's transaction."""
    return AsyncBookkeeping.exchange_companion({**values, "created_at": context.clock()})


# The envelope log's retention (settings.soap_exchange_retention_days): the database itself refuses to delete a
# row younger than MIN_RETENTION_DAYS, whatever the setting says (revision 0008).
MIN_RETENTION_DAYS = 30
PURGE_BATCH = 10_000


class Purged(NamedTuple):
    rows: int
    cutoff: datetime


def purge_exchanges(context: Context, retention_days: int, batch: int = PURGE_BATCH) -> Purged:
    """Delete the envelope-log rows recorded more than `retention_days` ago, oldest first, `batch` rows per
    transaction (a large backlog never holds one long transaction). Running it twice, or from two processes at
    once, deletes each row once."""
    if retention_days < MIN_RETENTION_DAYS:
        raise ServiceError(ServiceCode.REQUEST_MALFORMED,
                           f"the envelope log is kept at least {MIN_RETENTION_DAYS} days, not {retention_days}")
    cutoff = context.clock() - timedelta(days=retention_days)
    total = 0
    while True:
        with context.uow() as tx:
            deleted = tx.repo.purge_exchanges(cutoff, batch)
            tx.commit()
        total += deleted
        if deleted < batch:
            log.info("purged %d SOAP exchanges recorded before %s", total, cutoff.isoformat())
            return Purged(total, cutoff)


def new_credentials_key() -> str:
    return Fernet.generate_key().decode("ascii")


def cipher_for(key: str) -> Fernet:
    try:
        return Fernet(key.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise ServiceError(ServiceCode.REQUEST_MALFORMED,
                           "the credentials key must be a Fernet key (32 url-safe base64-encoded bytes)") from None
