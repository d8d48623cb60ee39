"""`settlement hospitals import FILE`: the hospital register of a region, imported and diffed (see
settlement.services.hospital_register). Kept apart from the other hospital commands."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from settlement.cli.identity import ADMIN, KeyFile, acting_person
from settlement.cli.main import _application, console, hospitals_app, refused
from settlement.domain.claim import SHANGHAI
from settlement.services.errors import ServiceError


@hospitals_app.command("import")
def hospitals_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                         help="register CSV: code,name,level,region,dialects")],
    check: Annotated[bool, typer.Option("--check", help="show the differences, change nothing")] = False,
    keys: Annotated[Path | None, typer.Option(
        "--keys", help="where to write the added hospitals' API keys (default: the data directory)")] = None,
    key_file: KeyFile = None,
) -> None:
    """Import a hospital register (an administrator's key): add, change (name, level, region, SOAP dialects) and
    report the differences; recorded hospitals the file does not list are reported and left alone. New hospitals'
    keys go to a file."""
    from settlement.files import private_dir, write_private
    from settlement.services.hospital_register import import_register

    application = _application()
    try:
        who = acting_person(application.context, ADMIN, key_file)
        report = import_register(application.context, who, file.name, file.read_bytes(),
                                 set(application.dialects.dialects), check=check)
    except ServiceError as error:
        raise refused(error) from None
    finally:
        application.dispose()
    _show(report.as_dict())
    if report.keys:
        stamp = datetime.now(SHANGHAI).strftime("%Y%m%d-%H%M%S")
        target = keys or application.settings.data_dir / f"hospital-keys-{stamp}.txt"
        private_dir(target.parent)
        write_private(target, "".join(f"hospital {code} {key}\n" for code, key in report.keys.items()))
        say(f"API keys of the {len(report.keys)} hospitals added (shown once): {target} (mode 0600)")


def say(text: str) -> None:
    console.print(text, highlight=False, markup=False)


def _value(value: object) -> str:
    return ", ".join(value) or "none" if isinstance(value, list) else str(value)


def _show(report: dict[str, Any]) -> None:
    verb = "would be" if report["checked_only"] else "were"
    say(f"{report['filename']}: {report['rows']} rows; {len(report['added'])} hospitals {verb} added, "
        f"{len(report['changed'])} {verb} changed, {report['unchanged']} unchanged, {len(report['rejected'])} "
        f"rejected; {len(report['absent'])} recorded hospitals are not in the file (left alone)")
    for added in report["added"]:
        dialects = ", ".join(added["dialects"]) or "REST only"
        say(f"  + {added['code']} {added['name']} ({added['level']}, {added['region']}; {dialects})")
    for changed in report["changed"]:
        fields = "; ".join(f"{name} {_value(pair[0])} -> {_value(pair[1])}" for name, pair in changed.items()
                           if name != "code")
        say(f"  ~ {changed['code']}: {fields}")
    if report["absent"]:
        say(f"  recorded, not in the file: {', '.join(report['absent'])}")
    for problem in report["rejected"]:
        say(f"  line {problem['line']}: {problem['reason']}" + (f" ({problem['code']})" if problem["code"] else ""))
