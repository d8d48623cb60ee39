"""The keys' life at the command line (an administrator's own key): list, revoke and rotate keys; disable and
enable a hospital. Each change reaches every server worker within a second."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from settlement.cli.identity import ADMIN, KeyFile, acting_person
from settlement.cli.main import _application, console, hospitals_app, keys_app, refused
from settlement.services.errors import ServiceError

KeyId = Annotated[int, typer.Argument(metavar="ID", min=1, help="the key's id (settlement keys list)")]
HospitalCode = Annotated[str, typer.Argument(help="hospital code")]


@keys_app.command("list")
def keys_list(
    kind: Annotated[str | None, typer.Option("--kind", help="hospital | finance | admin")] = None,
    show_revoked: Annotated[bool, typer.Option("--all", help="revoked keys too")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    key_file: KeyFile = None,
) -> None:
    """Keys (never their secrets): id, role, holder, hospital, public prefix, state, created and revoked."""
    from settlement.services.admin import list_keys

    application = _application()
    try:
        acting_person(application.context, ADMIN, key_file)
        keys = list_keys(application.context, kind=kind, include_revoked=show_revoked)
    except ServiceError as error:
        raise refused(error) from None
    if as_json:
        print(json.dumps(keys, ensure_ascii=False, indent=2))
        return
    table = Table("id", "role", "holder", "hospital", "prefix", "state", "created", "revoked")
    for key in keys:
        table.add_row(str(key["id"]), key["kind"], escape(key["name"]), key["hospital"] or "", key["prefix"],
                      key["state"], key["created_at"][:19], (key["revoked_at"] or "")[:19])
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: KeyId, key_file: KeyFile = None) -> None:
    """Revoke a key: every server worker refuses it within a second."""
    from settlement.services.admin import revoke_key

    application = _application()
    try:
        who = acting_person(application.context, ADMIN, key_file)
        view = revoke_key(application.context, key_id, who.actor)
    except ServiceError as error:
        raise refused(error) from None
    console.print(f"key {view['id']} ({view['kind']} {view['name']}, {view['prefix']}...) revoked", highlight=False,
                  markup=False)


@keys_app.command("rotate")
def keys_rotate(key_id: KeyId, key_file: KeyFile = None) -> None:
    """A new key for the key's holder (shown once); the old one is refused by every worker within a second."""
    from settlement.services.admin import rotate_key

    application = _application()
    try:
        who = acting_person(application.context, ADMIN, key_file)
        view, key = rotate_key(application.context, key_id, who.actor)
    except ServiceError as error:
        raise refused(error) from None
    console.print(f"new key {view['id']} for {view['kind']} {view['name']} (shown once): {key}", highlight=False,
                  markup=False)


def _set_enabled(code: str, enabled: bool, key_file: KeyFile) -> None:
    from settlement.services.admin import set_hospital_enabled

    application = _application()
    try:
        who = acting_person(application.context, ADMIN, key_file)
        view = set_hospital_enabled(application.context, code, enabled, who.actor)
    except ServiceError as error:
        raise refused(error) from None
    state = "enabled" if view["enabled"] else "disabled"
    console.print(f"hospital {code} {state}" + ("" if view["changed"] else " (it already was)"), highlight=False,
                  markup=False)


@hospitals_app.command("disable")
def hospitals_disable(code: HospitalCode, key_file: KeyFile = None) -> None:
    """Refuse the hospital's API keys and SOAP password (HOSPITAL_DISABLED) on every worker within a second; its
    settlements and history stay as they are."""
    _set_enabled(code, False, key_file)


@hospitals_app.command("enable")
def hospitals_enable(code: HospitalCode, key_file: KeyFile = None) -> None:
    """Accept a disabled hospital's keys and SOAP password again."""
    _set_enabled(code, True, key_file)
