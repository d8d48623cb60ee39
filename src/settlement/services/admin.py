"""Administration: hospitals and their keys, finance and admin principals."""

from __future__ import annotations

import json

from settlement.db.models import Hospital
from settlement.domain.claim import HospitalLevel
from settlement.domain.privacy import mask_id_numbers
from settlement.services.auth import add_principal
from settlement.services.context import Context
from settlement.services.errors import ServiceCode, ServiceError


def add_hospital(context: Context, code: str, name: str, level: str, region: str, actor: str) -> str:
    """Register a hospital and return its first API key (shown once)."""
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


def add_staff(context: Context, kind: str, name: str, actor: str) -> str:
    """A finance officer's or administrator's key (shown once)."""
    if kind not in ("finance", "admin"):
        raise ServiceError(ServiceCode.REQUEST_MALFORMED, "kind must be finance or admin")
    name = mask_id_numbers(name)
    now = context.clock()
    with context.uow() as tx:
        key = add_principal(tx.repo, kind, name, None, now)
        tx.repo.audit(now, actor, "principal.create", "principal", name, json.dumps({"kind": kind}))
        tx.commit()
    return key
