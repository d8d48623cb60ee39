"""Administration: hospitals and their keys, finance and admin principals, and the keys' life (list, revoke,
rotate; disabling a hospital).

Every change here moves the credentials generation (database triggers), so the workers' caches of keys and SOAP
passwords drop what they knew within half a second (settlement.services.auth.CredentialsWatch).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from settlement.db.models import Hospital, Principal
from settlement.db.repositories import Repository
from settlement.domain.claim import HospitalLevel
from settlement.domain.privacy import mask_id_numbers
from settlement.domain.text import CODE_MAX, KEY_HOLDER_MAX, NAME_MAX
from settlement.services.auth import add_principal
from settlement.services.context import Context
from settlement.services.errors import ServiceCode, ServiceError
from settlement.services.text import checked

STAFF_KINDS = ("finance", "admin")
SYSTEM_ACTOR = "system"  # the operator at the server's shell, before any administrator exists


def add_hospital(context: Context, code: str, name: str, level: str, region: str, actor: str) -> str:
    """Register a hospital and return its first API key (shown once)."""
    checked(code, "the hospital code", CODE_MAX)
    checked(name, "the hospital name", NAME_MAX)
    if level not in set(HospitalLevel):
        raise ServiceError(ServiceCode.REQUEST_MALFORMED, f"level must be one of {sorted(HospitalLevel)}")
    if not (len(region) == 6 and region.isascii() and region.isdigit()):  # str.isdigit takes any script's
        raise ServiceError(ServiceCode.REQUEST_MALFORMED, "region must be a 6-digit division code")
    name = mask_id_numbers(name)
    now = context.clock()
    with context.uow() as tx:
        if tx.repo.hospital_by_code(code) is not None:
            raise ServiceError(ServiceCode.REQUEST_MALFORMED, f"hospital {code} already exists")
        hospital = Hospital(code=code, name=name, level=level, region=region, created_at=now)
        tx.repo.add(hospital)
        tx.repo.flush()
        key = add_principal(tx.repo, "hospital", code, hospital.id, now)
        tx.repo.audit(now, actor, "hospital.create", "hospital", code,
                      json.dumps({"name": name, "level": level, "region": region}, ensure_ascii=False))
        tx.commit()
    return key


def _staff_kind(kind: str) -> None:
    if kind not in STAFF_KINDS:
        raise ServiceError(ServiceCode.REQUEST_MALFORMED, "kind must be finance or admin")


def _name(name: str) -> str:
    cleaned = name.strip()
    if not cleaned or len(cleaned) > 128 or not cleaned.isprintable():
        raise ServiceError(ServiceCode.REQUEST_MALFORMED, "a name is 1 to 128 printable characters")
    return cleaned


def _flushed_once(repo: Repository, kind: str, name: str) -> None:
    """Write the new key; a concurrent `add` of the same person loses on the unique index, as PRINCIPAL_EXISTS."""
    try:
        repo.flush()
    except IntegrityError:
        raise ServiceError(ServiceCode.PRINCIPAL_EXISTS, f"{kind} {name!r} already holds an active key") from None


def add_staff(context: Context, kind: str, name: str, actor: str) -> str:
    """A finance officer's or administrator's key (shown once). One person, one active key per role: a second
    is PRINCIPAL_EXISTS (rotate the first instead)."""
    _staff_kind(kind)
    checked(name, "the key holder's name", KEY_HOLDER_MAX)  # the audit row names the holder in 64 characters
    name = mask_id_numbers(_name(name))
    now = context.clock()
    with context.uow() as tx:
        key = add_principal(tx.repo, kind, name, None, now)
        _flushed_once(tx.repo, kind, name)
        tx.repo.audit(now, actor, "principal.create", "principal", name, json.dumps({"kind": kind}))
        tx.commit()
    return key


def administrator_exists(context: Context) -> bool:
    with context.uow() as tx:
        return bool(tx.repo.principals(kind="admin"))


def bootstrap_admin(context: Context, name: str) -> str:
    """The first administrator's key, by the operator at the server's shell (recorded as 'system'); refused once
    any administrator holds an active key: from then on an administrator adds keys with their own."""
    name = _name(name)
    if administrator_exists(context):
        raise ServiceError(ServiceCode.AUTH_REQUIRED, "an administrator exists already: authenticate with an "
                                                      "administrator's key (SETTLEMENT_KEY or --key-file)")
    return add_staff(context, "admin", name, SYSTEM_ACTOR)


def key_view(principal: Principal, hospital_code: str | None, disabled: bool = False) -> dict[str, Any]:
    state = "revoked" if principal.revoked_at is not None else "hospital disabled" if disabled else "active"
    return {"id": principal.id, "kind": principal.kind, "name": principal.name, "hospital": hospital_code,
            "prefix": f"stl_{principal.key_prefix}_", "state": state, "created_at": principal.created_at.isoformat(),
            "revoked_at": principal.revoked_at.isoformat() if principal.revoked_at else None}


def list_keys(context: Context, *, kind: str | None = None, include_revoked: bool = False) -> list[dict[str, Any]]:
    """Keys (never their secrets): who holds each, its public prefix, when it was made and revoked."""
    if kind is not None and kind not in ("hospital", *STAFF_KINDS):
        raise ServiceError(ServiceCode.REQUEST_MALFORMED, "kind must be hospital, finance or admin")
    with context.uow() as tx:
        disabled = {hospital.code for hospital in tx.repo.hospitals() if hospital.disabled_at is not None}
        return [key_view(principal, code, code in disabled)
                for principal, code in tx.repo.principals(kind=kind, include_revoked=include_revoked)]


def _key(repo: Repository, key_id: int) -> tuple[Principal, str | None]:
    principal = repo.principal(key_id, for_update=True)
    if principal is None:
        raise ServiceError(ServiceCode.NOT_FOUND, f"no key {key_id} (see settlement keys list)")
    hospital = repo.hospital(principal.hospital_id) if principal.hospital_id is not None else None
    return principal, hospital.code if hospital else None


def _revoke(repo: Repository, principal: Principal, now: datetime) -> None:
    principal.revoked_at = now
    repo.flush()  # before a new key of the same person is inserted: the unique index sees one active key


def revoke_key(context: Context, key_id: int, actor: str) -> dict[str, Any]:
    """Revoke a key: refused on every worker within a second."""
    now = context.clock()
    with context.uow() as tx:
        principal, code = _key(tx.repo, key_id)
        if principal.revoked_at is not None:
            raise ServiceError(ServiceCode.KEY_REVOKED, f"key {key_id} was revoked at "
                                                        f"{principal.revoked_at.isoformat()}")
        _revoke(tx.repo, principal, now)
        tx.repo.audit(now, actor, "principal.revoke", "principal", str(principal.id),
                      json.dumps({"kind": principal.kind, "name": principal.name}, ensure_ascii=False))
        view = key_view(principal, code)
        tx.commit()
    return view


def rotate_key(context: Context, key_id: int, actor: str) -> tuple[dict[str, Any], str]:
    """A new key for the holder of key `key_id` (shown once); the holder's active key stops working on every
    worker within a second. Rotating a revoked key gives its holder a key again."""
    now = context.clock()
    with context.uow() as tx:
        principal, code = _key(tx.repo, key_id)
        for active in tx.repo.active_keys_of(principal.kind, principal.name):
            _revoke(tx.repo, active, now)
        key = add_principal(tx.repo, principal.kind, principal.name, principal.hospital_id, now)
        _flushed_once(tx.repo, principal.kind, principal.name)
        created = tx.repo.principal_by_prefix(key.split("_")[1])
        assert created is not None
        tx.repo.audit(now, actor, "principal.rotate", "principal", str(principal.id), json.dumps(
            {"kind": principal.kind, "name": principal.name, "new_key": created.id}, ensure_ascii=False))
        view = key_view(created, code)
        tx.commit()
    return view, key


def set_hospital_enabled(context: Context, code: str, enabled: bool, actor: str) -> dict[str, Any]:
    """Disable a hospital (its REST keys and SOAP password are refused with HOSPITAL_DISABLED on every worker
    within a second; nothing of its history changes) or enable it again."""
    now = context.clock()
    with context.uow() as tx:
        hospital = tx.repo.hospital_by_code(code)
        if hospital is None:
            raise ServiceError(ServiceCode.NOT_FOUND, f"no hospital {code}")
        changed = (hospital.disabled_at is None) != enabled
        if changed:
            hospital.disabled_at = None if enabled else now
            tx.repo.audit(now, actor, "hospital.enable" if enabled else "hospital.disable", "hospital", code, "{}")
        view = {"code": hospital.code, "name": hospital.name, "enabled": hospital.disabled_at is None,
                "disabled_at": hospital.disabled_at.isoformat() if hospital.disabled_at else None,
                "changed": changed}
        tx.commit()
    return view
