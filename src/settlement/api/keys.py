"""The keys' life over REST, for administrators: list, add, revoke and rotate keys; disable and enable a hospital;
issue its SOAP password. Each change reaches every worker within a second (settlement.services.auth)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from pydantic import Field

from settlement.bootstrap import Application
from settlement.domain.text import CODE_MAX, KEY_HOLDER_MAX
from settlement.services import admin
from settlement.services.auth import Caller
from settlement.services.errors import ServiceCode, ServiceError
from settlement.services.soap_access import issue_password
from settlement.wire.claims import Wire
from settlement.wire.fields import Text

KeyId = Annotated[int, Path(ge=1, le=2**31 - 1)]
# No control characters (the rule of every string the service takes): PostgreSQL refuses a NUL in text.
HospitalCode = Annotated[str, Text(CODE_MAX, min_length=1), Path()]


class KeyRequest(Wire):
    kind: Literal["finance", "admin"]
    name: Annotated[str, Text(KEY_HOLDER_MAX, min_length=1), Field(description="the person who holds it")]


async def _caller(request: Request, authorization: Annotated[str | None, Header()] = None,
                  x_api_key: Annotated[str | None, Header()] = None) -> Caller:
    from settlement.api.app import current_caller  # the app module includes this one

    return await current_caller(request, authorization, x_api_key)


Who = Annotated[Caller, Depends(_caller)]


def add_key_routes(app: FastAPI, application: Application, responses: dict[int | str, dict[str, Any]]) -> None:
    context = application.context

    def administrator(who: Caller) -> str:
        if who.kind != "admin":
            raise ServiceError(ServiceCode.FORBIDDEN, "administrators only")
        return who.actor

    @app.get("/v1/admin/keys", tags=["admin"], responses=responses)
    def keys(who: Who, kind: Annotated[str | None, Query(pattern=r"^(hospital|finance|admin)$")] = None,
             revoked: Annotated[bool, Query(description="include revoked keys")] = False) -> list[dict[str, Any]]:
        """Every key (never its secret): holder, role, hospital, public prefix, state, when made and revoked."""
        administrator(who)
        return admin.list_keys(context, kind=kind, include_revoked=revoked)

    @app.post("/v1/admin/keys", tags=["admin"], status_code=201, responses=responses)
    def add_key(request: KeyRequest, who: Who) -> dict[str, Any]:
        """A finance officer's or administrator's key, shown once. A person holds one active key per role: a
        second is 409 PRINCIPAL_EXISTS (rotate the first)."""
        key = admin.add_staff(context, request.kind, request.name, administrator(who))
        return {"kind": request.kind, "name": request.name, "key": key}

    @app.post("/v1/admin/keys/{key_id}/revocation", tags=["admin"], responses=responses)
    def revoke_key(key_id: KeyId, who: Who) -> dict[str, Any]:
        """Revoke a key: every worker refuses it within a second."""
        return admin.revoke_key(context, key_id, administrator(who))

    @app.post("/v1/admin/keys/{key_id}/rotation", tags=["admin"], status_code=201, responses=responses)
    def rotate_key(key_id: KeyId, who: Who) -> dict[str, Any]:
        """A new key for the key's holder, shown once; the old one is refused by every worker within a second."""
        view, key = admin.rotate_key(context, key_id, administrator(who))
        return {**view, "key": key}

    @app.post("/v1/admin/hospitals/{code}/disablement", tags=["admin"], responses=responses)
    def disable_hospital(code: HospitalCode, who: Who) -> dict[str, Any]:
        """Refuse the hospital's keys and SOAP password (403 HOSPITAL_DISABLED) until it is enabled."""
        return admin.set_hospital_enabled(context, code, False, administrator(who))

    @app.post("/v1/admin/hospitals/{code}/enablement", tags=["admin"], responses=responses)
    def enable_hospital(code: HospitalCode, who: Who) -> dict[str, Any]:
        return admin.set_hospital_enabled(context, code, True, administrator(who))

    @app.post("/v1/admin/hospitals/{code}/soap-password", tags=["admin"], status_code=201, responses=responses)
    def soap_password(code: HospitalCode, who: Who) -> dict[str, str]:
        """A new WS-Security password for the hospital, shown once; the old one is refused (and the new one
        accepted) by every worker within a second."""
        password = issue_password(context, application.cipher, code, administrator(who))
        return {"username": code, "password": password}
