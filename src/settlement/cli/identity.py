"""Who acts at the command line: the person whose own API key is given, checked against the database as the REST
API checks it, never a typed name. The key comes from `--key-file PATH`, else SETTLEMENT_KEY, else a prompt when
the command runs in a terminal. What the command records names the key's holder (`admin:NAME`, `finance:NAME`).
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from settlement.services.auth import Caller, authenticate
from settlement.services.errors import ServiceCode, ServiceError

if TYPE_CHECKING:
    from settlement.services.context import Context

KEY_VARIABLE = "SETTLEMENT_KEY"
ADMIN = ("admin",)
STAFF = ("finance", "admin")
HOW = f"{KEY_VARIABLE}=<key> in the environment, --key-file PATH, or type it when asked (in a terminal)"

KeyFile = Annotated[Path | None, typer.Option(
    "--key-file", dir_okay=False, help=f"a file holding your own API key (else {KEY_VARIABLE}, else you are asked); "
                                       "what you do is recorded under the key's holder")]
# `--by NAME` recorded whatever was typed; it is kept only to say so and how to authenticate instead.
RemovedBy = Annotated[str | None, typer.Option("--by", hidden=True)]


def read_key(key_file: Path | None) -> str | None:
    if key_file is not None:
        try:
            text = key_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ServiceError(ServiceCode.AUTH_REQUIRED,
                               f"cannot read the key file {key_file} ({type(error).__name__})") from None
        if key_file.stat().st_mode & 0o077:
            sys.stderr.write(f"warning: {key_file} is readable by other users: chmod 600 it\n")
        return text.strip() or None
    configured = os.environ.get(KEY_VARIABLE, "").strip()
    if configured:
        return configured
    if sys.stdin.isatty():
        return getpass.getpass("your API key: ").strip() or None
    return None


def acting_person(context: Context, roles: tuple[str, ...], key_file: Path | None, removed_by: str | None = None,
                  ) -> Caller:
    """The authenticated holder of the given key, in one of `roles`. Raises the refusal (AUTH_REQUIRED without a
    key, AUTH_INVALID for a wrong or revoked one, HOSPITAL_DISABLED, FORBIDDEN for another role) before the
    command records anything."""
    if removed_by is not None:
        raise ServiceError(ServiceCode.AUTH_REQUIRED,
                           f"--by is gone (a typed name proves nothing); give your own API key: {HOW}")
    key = read_key(key_file)
    if key is None:
        raise ServiceError(ServiceCode.AUTH_REQUIRED, f"this command needs your own API key: {HOW}")
    with context.uow() as tx:
        caller = authenticate(tx.repo, key)
    if caller.kind not in roles:
        wanted = " or ".join(f"{role} key" for role in roles)
        raise ServiceError(ServiceCode.FORBIDDEN, f"this needs a {wanted}; yours is a {caller.kind} key")
    return caller
