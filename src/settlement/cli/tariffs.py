"""Commands for administrators: tariff versions (import, diff, approve, activate, withdraw, simulate, list, show)
and the recomputation of past settlements (`settlement settlements verify`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from settlement.cli.identity import ADMIN, KeyFile, RemovedBy, acting_person
from settlement.cli.main import (
    EXIT_REJECTED,
    EXIT_TARIFF,
    _application,
    _fail,
    app,
    console,
    errors,
    refused,
    tariffs_app,
)
from settlement.domain.errors import ErrorCode, Problem, TariffError
from settlement.paths import default_tariffs_dir
from settlement.services.errors import ServiceError
from settlement.tariffstore import load_store
from settlement.tariffstore.store import VersionFile

if TYPE_CHECKING:
    from settlement.services.context import Context

settlements_app = typer.Typer(help="Settlements: recompute past ones under the versions they recorded.",
                              no_args_is_help=True)
app.add_typer(settlements_app, name="settlements")

Reference = Annotated[str, typer.Argument(help="a version's id, or region/version (e.g. 611000/2027-01-01)")]
AsJson = Annotated[bool, typer.Option("--json", help="print the result as JSON")]
EXIT_DIFFERENCES = 1


def _date(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        errors.print(f"[bold red]REQUEST_MALFORMED[/]: {option} is YYYY-MM-DD", highlight=False)
        raise typer.Exit(EXIT_REJECTED) from None


def _refused_with_problems(error: ServiceError) -> typer.Exit:
    exit_code = refused(error, EXIT_TARIFF if error.problems else EXIT_REJECTED)
    for problem in error.problems:
        errors.print(f"  - {problem}", highlight=False, markup=False)
    return exit_code


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def _print_view(view: dict[str, Any]) -> None:
    until = view["in_force_until"] or "open"
    console.print(f"[bold]{view['region']}/{view['version']}[/] (id {view['id']}): {view['state']}, "
                  f"effective {view['effective_from']} to {until}"
                  + (f", inherits {view['inherits']}" if view["inherits"] else ""), highlight=False)
    steps = [f"recorded by {view['created_by']} at {view['recorded_at']}"]
    for step in ("approved", "activated", "withdrawn"):
        if view[f"{step}_by"]:
            steps.append(f"{step} by {view[f'{step}_by']} at {view[f'{step}_at']}")
    console.print("  " + "; ".join(steps), highlight=False, markup=False)
    for resolved in view["resolved"]:
        beside = f" (with {resolved['with']})" if resolved["with"] else ""
        console.print(f"  sha256 {resolved['sha256']}  as settlements record it: {resolved['version']}{beside}",
                      highlight=False, markup=False)
    console.print(f"  document sha256 {view['document_sha256']}  from {view['origin']}", highlight=False,
                  markup=False)
    if view.get("note"):
        console.print(f"  note: {view['note']}", highlight=False, markup=False)


def _print_diff(diff: dict[str, Any]) -> None:
    against = diff["against"] or "nothing (a new region)"
    catalogue = diff["catalogue"]
    console.print(f"[bold]Diff[/] of {diff['version']} against {against}: catalogue {len(catalogue['added'])} "
                  f"added, {len(catalogue['removed'])} removed, {len(catalogue['changed'])} changed, "
                  f"{catalogue['unchanged']} unchanged; {len(diff['parameters'])} policy parameters changed",
                  highlight=False)
    if catalogue["added"] or catalogue["removed"] or catalogue["changed"]:
        table = Table("", "item", "name", "what changed", title="Catalogue", title_justify="left")
        for item in catalogue["added"]:
            details = f"class {item['class']}" + (f", share {item['share']}" if item.get("share") else "") + (
                f", cap {item['price_cap']}" if item.get("price_cap") else "")
            table.add_row("+", item["code"], escape(item["name"]), details)
        for item in catalogue["removed"]:
            table.add_row("-", item["code"], escape(item["name"]), f"class {item['class']}")
        for item in catalogue["changed"]:
            details = "; ".join(f"{field} {_plain(old)} -> {_plain(new)}"
                                for field, (old, new) in item["changes"].items())
            table.add_row("~", item["code"], escape(item["name"]), escape(details))
        console.print(table)
    if diff["parameters"]:
        table = Table("parameter", "before", "after", title="Policy parameters", title_justify="left")
        for change in diff["parameters"]:
            table.add_row(escape(change["path"]), escape(_plain(change["before"])), escape(_plain(change["after"])))
        console.print(table)


def _plain(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, dict):
        return ";".join(f"{k}={v}" for k, v in value.items()) or "(none)"
    if isinstance(value, list):
        return ", ".join(_plain(v) for v in value)
    return str(value)


def _validate_file(path: Path) -> VersionFile:
    """One version file, its rules included: alone, or merged with the versions of the region it inherits from
    (read from the tariff folder it sits in)."""
    from settlement.services.tariffs import draft_problems
    from settlement.tariffstore.store import TariffStore, read_version_file

    problems: list[Problem] = []
    version = read_version_file(path, problems)
    if version is None or problems:
        raise _fail(TariffError(problems), EXIT_TARIFF)
    parents = []
    if version.inherits is not None:
        folder = path.parent.parent / version.inherits
        if not folder.is_dir():
            raise _fail(TariffError([Problem(ErrorCode.TARIFF_NOT_FOUND, f"{path}: inherits",
                                             f"no tariff folder {folder}")]), EXIT_TARIFF)
        parents = [p for file in sorted(folder.glob("*.yaml")) if (p := read_version_file(file, problems))]
    problems += draft_problems(TariffStore.of(str(path.parent.parent), [version, *parents]), version)
    if problems:
        raise _fail(TariffError(problems), EXIT_TARIFF)
    return version


@tariffs_app.command("validate")
def tariffs_validate(path: Annotated[Path | None, typer.Argument(
        help="a tariff folder (default: SETTLEMENT_TARIFFS, else the shipped tariffs) or one version file")]
        = None) -> None:
    """Check tariff files against the schema; list every problem (file, path, reason). Nothing is recorded."""
    root = path or default_tariffs_dir()
    if root.is_file():
        version = _validate_file(root)
        console.print(f"{root}: {version.label}, effective {version.effective_from}, valid"
                      + (f" with {version.inherits}'s versions beside it" if version.inherits else ""),
                      highlight=False, markup=False)
        return
    try:
        store = load_store(root)
    except TariffError as error:
        raise _fail(error, EXIT_TARIFF) from None
    table = Table("region", "version", "from", "until", "inherits", "sha256 (resolved)")
    for region in store.regions():
        for version in store.versions(region):
            resolved = store.resolve(region, version.effective_from)
            table.add_row(region, escape(resolved.tariff.ref.version), str(version.effective_from),
                          str(store.until(version) or "open"), version.inherits or "",
                          resolved.tariff.ref.sha256[:16])
    console.print(table)
    count = sum(len(store.versions(region)) for region in store.regions())
    console.print(f"{root}: {count} versions in {len(store.regions())} regions, all valid (the database's versions: "
                  "settlement tariffs list)", highlight=False)


@tariffs_app.command("list")
def tariffs_list(
    region: Annotated[str | None, typer.Option("--region", help="only this region")] = None,
    as_json: AsJson = False,
) -> None:
    """The versions in the database: status (draft, approved, scheduled, in force, ended, withdrawn), ranges."""
    from settlement.services import tariffs

    views = tariffs.list_versions(_application().context, region, actor="cli")
    if as_json:
        _print_json(views)
        return
    table = Table("id", "region", "version", "state", "from", "until", "inherits", "by", "sha256 (resolved)")
    for view in views:
        by = view["created_by"] + (f" / {view['approved_by']}" if view["approved_by"] else "")
        # The hash settlements record; a county version beside several city versions has one per city version.
        hashes = ", ".join(resolved["sha256"][:12] for resolved in view["resolved"]) or "-"
        table.add_row(str(view["id"]), view["region"], escape(view["version"]), view["state"],
                      view["effective_from"], view["in_force_until"] or "open", view["inherits"] or "",
                      escape(by), hashes)
    console.print(table)


@tariffs_app.command("show")
def tariffs_show(reference: Reference, as_json: AsJson = False) -> None:
    """One version: its life (who recorded, approved, activated it, when) and, with --json, its document."""
    from settlement.services import tariffs

    try:
        view = tariffs.show_version(_application().context, reference, actor="cli")
    except ServiceError as error:
        raise refused(error) from None
    if as_json:
        _print_json(view)
        return
    _print_view(view)
    document = view["document"]
    layers = ", ".join(layer.get("id", "?") for layer in document.get("layers", []))
    items = len((document.get("catalogue") or {}).get("items", []))
    console.print(f"  {document.get('name', '')}: layers {layers or '(inherited)'}; {items} catalogue items",
                  highlight=False, markup=False)
    for step in view["history"]:
        console.print(f"  {step['at']} {step['actor']} {step['action']}", highlight=False, markup=False)


@tariffs_app.command("import")
def tariffs_import(
    path: Annotated[Path, typer.Argument(exists=True, readable=True,
                                         help="a version file (YAML), a tariff folder, or a catalogue CSV")],
    region: Annotated[str | None, typer.Option("--region", help="a catalogue CSV's region")] = None,
    effective: Annotated[str | None, typer.Option("--effective", help="a catalogue's effective date (default: "
                                                                      "the latest date in the file)")] = None,
    version: Annotated[str | None, typer.Option("--version", help="a catalogue draft's version name")] = None,
    note: Annotated[str | None, typer.Option("--note", help="why: shown to the approver")] = None,
    as_json: AsJson = False,
    key_file: KeyFile = None,
    by: RemovedBy = None,
) -> None:
    """Record a version, or a catalogue update, as a draft (an administrator's key: its holder is the author) and
    show how it differs from what is in force."""
    from settlement.services import tariffs

    context = _application().context
    try:
        actor = acting_person(context, ADMIN, key_file, by).actor
        if path.suffix.lower() == ".csv":
            if region is None:
                errors.print("[bold red]REQUEST_MALFORMED[/]: a catalogue CSV needs --region", highlight=False)
                raise typer.Exit(EXIT_REJECTED)
            outcomes = [tariffs.import_catalogue(context, path.read_bytes(), path.name, region, actor,
                                                 effective=_date(effective, "--effective") if effective else None,
                                                 version_name=version, note=note)]
        else:
            outcomes = tariffs.import_path(context, path, actor, note)
    except ServiceError as error:
        raise _refused_with_problems(error) from None
    if as_json:
        _print_json(outcomes)
        return
    for outcome in outcomes:
        view = outcome["version"]
        if outcome["already_recorded"]:
            console.print(f"{view['region']}/{view['version']}: already recorded (id {view['id']}, {view['state']})",
                          highlight=False, markup=False)
            continue
        console.print(f"[green]draft recorded[/]: {view['region']}/{view['version']} (id {view['id']}); another "
                      f"administrator approves it with their own key: `settlement tariffs approve {view['id']}`",
                      highlight=False)
        _print_diff(outcome["diff"])


@tariffs_app.command("diff")
def tariffs_diff(
    reference: Reference,
    against: Annotated[str | None, typer.Option("--against", help="the version to compare with (default: the "
                                                                  "one it replaces)")] = None,
    as_json: AsJson = False,
) -> None:
    """Items added, removed and changed (class, share, cap), and every policy parameter changed."""
    from settlement.services import tariffs

    try:
        diff = tariffs.diff_versions(_application().context, reference, against, actor="cli")
    except ServiceError as error:
        raise _refused_with_problems(error) from None
    if as_json:
        _print_json(diff)
    else:
        _print_diff(diff)


def _step(reference: str, key_file: Path | None, by: str | None,
          step: Callable[[Context, str, str], dict[str, Any]]) -> None:
    """One step of a version's life, done by the administrator whose key is given."""
    context = _application().context
    try:
        view = step(context, reference, acting_person(context, ADMIN, key_file, by).actor)
    except ServiceError as error:
        raise _refused_with_problems(error) from None
    _print_view(view)


@tariffs_app.command("approve")
def tariffs_approve(reference: Reference, key_file: KeyFile = None, by: RemovedBy = None) -> None:
    """Approve a draft (its author cannot: TARIFF_SELF_APPROVAL)."""
    from settlement.services import tariffs

    _step(reference, key_file, by, tariffs.approve)


@tariffs_app.command("activate")
def tariffs_activate(reference: Reference, key_file: KeyFile = None, by: RemovedBy = None) -> None:
    """Put an approved version in force from its effective date (a date after today, Asia/Shanghai)."""
    from settlement.services import tariffs

    _step(reference, key_file, by, tariffs.activate)


@tariffs_app.command("withdraw")
def tariffs_withdraw(
    reference: Reference,
    reason: Annotated[str, typer.Option("--reason", help="why it is set aside")],
    key_file: KeyFile = None,
    by: RemovedBy = None,
) -> None:
    """Set a draft or approved version aside, or cancel an activated one before its effective date."""
    from settlement.services import tariffs

    _step(reference, key_file, by, lambda context, ref, actor: tariffs.withdraw(context, ref, actor, reason))


def _progress(description: str, as_json: bool) -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed} settlements"),
                    TimeElapsedColumn(), console=console, transient=True, disable=as_json)


@tariffs_app.command("simulate")
def tariffs_simulate(
    reference: Reference,
    start: Annotated[str, typer.Option("--from", help="first settlement date, YYYY-MM-DD")],
    end: Annotated[str, typer.Option("--to", help="last settlement date, YYYY-MM-DD")],
    top: Annotated[int, typer.Option("--top", min=1, max=1000, help="how many most affected settlements")] = 20,
    as_json: AsJson = False,
    key_file: KeyFile = None,
    by: RemovedBy = None,
) -> None:
    """Re-run a period's settlements under a version (a draft, typically); record nothing; per fund, how the
    totals would change, and the most affected settlements."""
    from settlement.services import tariffs

    context = _application().context
    low, high = _date(start, "--from"), _date(end, "--to")
    try:
        actor = acting_person(context, ADMIN, key_file, by).actor
        with _progress("re-running", as_json) as progress:
            task = progress.add_task(f"re-running {low} to {high} under {reference}")
            report = tariffs.simulate(context, reference, low, high, actor, top=top,
                                      progress=lambda n: progress.advance(task, n))
    except ServiceError as error:
        raise _refused_with_problems(error) from None
    if as_json:
        _print_json(report)
        return
    console.print(f"[bold]Simulation[/] of {report['version']} over {report['from']} to {report['to']}: "
                  f"{report['settlements_rerun']} of {report['settlements_considered']} settlements re-run "
                  "(nothing recorded)", highlight=False)
    table = Table("fund", "as paid", "under the version", "change", title_justify="left")
    for fund in report["funds"]:
        table.add_row(fund["fund"], fund["as_paid"], fund["under_version"], fund["change"])
    patient = report["patient_pays"]
    table.add_row("patients", patient["as_paid"], patient["under_version"], patient["change"])
    console.print(table)
    for code, count in report["refused_under_version"].items():
        console.print(f"  {count} settlements would be refused under it: {code}", highlight=False, markup=False)
    if report["most_affected"]:
        affected = Table("settlement", "date", "person", "patient pays", "funds", title="Most affected",
                         title_justify="left")
        for item in report["most_affected"]:
            funds = "; ".join(f"{fund} {old} -> {new}" for fund, (old, new) in item["funds"].items() if old != new)
            affected.add_row(item["settlement_id"], item["settled_at"][:10], item["person"],
                             f"{item['patient_pays'][0]} -> {item['patient_pays'][1]}", funds)
        console.print(affected)


@settlements_app.command("verify")
def settlements_verify(
    start: Annotated[str, typer.Option("--from", help="first settlement date, YYYY-MM-DD")],
    end: Annotated[str, typer.Option("--to", help="last settlement date, YYYY-MM-DD")],
    as_json: AsJson = False,
) -> None:
    """Recompute every settlement of the period from its stored claim under the version it recorded; report
    each difference from what was paid. Exit status 1 when any is found."""
    from settlement.services import tariffs

    context = _application().context
    low, high = _date(start, "--from"), _date(end, "--to")
    with _progress("verifying", as_json) as progress:
        task = progress.add_task(f"recomputing {low} to {high}")
        report = tariffs.verify(context, low, high, "cli", progress=lambda n: progress.advance(task, n))
    if as_json:
        _print_json(report)
    else:
        console.print(f"{report['checked']} settlements dated {low} to {high} recomputed: {report['matched']} "
                      f"match what was paid, {len(report['differences'])} differ", highlight=False)
        for item in report["differences"]:
            console.print(f"  [red]{item['settlement_id']}[/] {item['settled_at'][:10]} {item['person']} "
                          f"({escape(item['tariff'])}): {item['kind']}: {escape(item['detail'])}", highlight=False)
            for fund in item["funds"]:
                console.print(f"    fund {fund['fund']}: paid {fund['paid']}, recomputed {fund['recomputed']}",
                              highlight=False, markup=False)
    if report["differences"]:
        raise typer.Exit(EXIT_DIFFERENCES)
