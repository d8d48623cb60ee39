"""Commands for finance staff: reconciliation runs and reports, the discrepancy queue, monthly clearing."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from settlement.cli.identity import STAFF, KeyFile, RemovedBy, acting_person
from settlement.cli.main import EXIT_REJECTED, _application, app, console, errors, refused
from settlement.services.errors import ServiceError

if TYPE_CHECKING:
    from settlement.bootstrap import Application
    from settlement.services.reconciliation import Reconciler

reconcile_app = typer.Typer(help="Reconcile the ledger with a payer's daily statement.", no_args_is_help=True)
app.add_typer(reconcile_app, name="reconcile")
discrepancies_app = typer.Typer(help="The discrepancy queue: list and resolve.", no_args_is_help=True)
app.add_typer(discrepancies_app, name="discrepancies")
clearing_app = typer.Typer(help="Monthly clearing statements: what each fund owes each hospital.",
                           no_args_is_help=True)
app.add_typer(clearing_app, name="clearing")

EXIT_HELD = 5  # another process holds the run's lease: nothing was done
DateOption = Annotated[str | None, typer.Option("--date", help="business date YYYY-MM-DD (default: yesterday, "
                                                               "Asia/Shanghai)")]


def _day(value: str | None) -> date:
    from settlement.bootstrap import utc_now
    from settlement.domain.claim import SHANGHAI

    if value:
        try:
            return date.fromisoformat(value)
        except ValueError:
            errors.print("[bold red]REQUEST_MALFORMED[/]: --date is YYYY-MM-DD", highlight=False)
            raise typer.Exit(EXIT_REJECTED) from None
    return utc_now().astimezone(SHANGHAI).date() - timedelta(days=1)


def _reconciler() -> tuple[Application, Reconciler]:
    """Built when a command runs: importing the CLI connects to nothing."""
    from settlement.insurers.config import PayersError, load_payers
    from settlement.services.reconciliation import Reconciler

    application = _application()
    settings = application.settings
    try:
        payers = load_payers(settings.payers_file)
    except PayersError as error:
        errors.print(f"[bold red]PAYERS_INVALID[/]: {escape(str(error))}", highlight=False)
        raise typer.Exit(3) from None
    return application, Reconciler(application.context, payers, settings.inbox_dir,
                                   timedelta(seconds=settings.timing_window_seconds),
                                   lease=timedelta(seconds=settings.lease_seconds))


@reconcile_app.command("run")
def reconcile_run(
    payer: Annotated[str, typer.Option("--payer", help="payer code (payers.yaml)")],
    day: DateOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Fetch the payer's statement for a business date and compare it with the ledger (totals, then details)."""
    application, reconciler = _reconciler()
    business_date = _day(day)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True, disable=as_json) as progress:
        # The run's steps: fetch the statement, store and compare it, totals, details where totals differ.
        task = progress.add_task(f"reconciling {payer} for {business_date}", total=4)

        def step(message: str) -> None:
            progress.update(task, description=message, advance=1)

        try:
            result = reconciler.run(payer, business_date, step)
        except ServiceError as error:
            raise refused(error) from None
    if as_json:
        print(json.dumps(result.as_dict(), ensure_ascii=False, indent=2))
    else:
        _print_result(result.as_dict())
    application.dispose()
    if result.already_running:
        errors.print(f"[bold red]RUN_HELD[/]: the reconciliation of {escape(payer)} for {business_date} is being "
                     f"worked by {escape(result.held_by or 'another process')} (its lease renewed at "
                     f"{result.renewed_at.isoformat() if result.renewed_at else '-'}); nothing was done. Run it again "
                     "once that process has finished, or, if it died, once its lease has expired "
                     f"({application.settings.lease_seconds} s without renewal).", highlight=False)
        raise typer.Exit(EXIT_HELD)
    if result.status == "failed":
        raise typer.Exit(4)


def _print_result(result: dict[str, object]) -> None:
    note = " (already running elsewhere)" if result["already_running"] else ""
    console.print(f"{result['payer']} {result['business_date']}: {result['status']}{note}", highlight=False)
    if result.get("error"):
        console.print(f"  error: {result['error']}", highlight=False, markup=False)
    console.print(f"  engine {result['engine_count']} entries, {result['engine_total']}; payer "
                  f"{result['payer_count']} rows, {result['payer_total']}", highlight=False)
    kinds = result["discrepancies"]
    assert isinstance(kinds, dict)
    console.print("  discrepancies: " + (", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) or "none"),
                  highlight=False)


@reconcile_app.command("report")
def reconcile_report(
    payer: Annotated[str, typer.Option("--payer")],
    day: DateOption = None,
    out: Annotated[Path | None, typer.Option("--out", help="folder (default: SETTLEMENT_REPORTS_DIR)")] = None,
) -> None:
    """Write the run's discrepancies as CSV and a workbook (totals and discrepancies sheets)."""
    from settlement.services.finance import run_report

    application = _application()
    try:
        paths = run_report(application.context, payer, _day(day), out or application.settings.reports_dir)
    except ServiceError as error:
        raise refused(error) from None
    for path in paths:
        console.print(str(path), highlight=False, markup=False)
    application.dispose()


@discrepancies_app.command("list")
def discrepancies_list(
    payer: Annotated[str | None, typer.Option("--payer")] = None,
    hospital: Annotated[str | None, typer.Option("--hospital")] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="payer_only | engine_only | amount_differs")] = None,
    older_than: Annotated[int | None, typer.Option("--older-than", help="days since the business date")] = None,
    status: Annotated[str, typer.Option("--status", help="open | resolved | cleared | all")] = "open",
    limit: Annotated[int, typer.Option("--limit")] = 200,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The discrepancy queue, oldest first."""
    from settlement.bootstrap import SYSTEM
    from settlement.services.finance import Filters, list_discrepancies

    application = _application()
    try:
        page = list_discrepancies(application.context, SYSTEM, Filters(payer, hospital, kind, status, older_than),
                                  limit=limit)
    except ServiceError as error:
        raise refused(error) from None
    if as_json:
        print(json.dumps(page, ensure_ascii=False, indent=2))
        return
    # A plain, borderless table: every column fits a 120-character terminal, and ids are never cut.
    table = Table(box=None, padding=(0, 1), header_style="bold")
    for name in ("id", "payer", "date", "kind", "settlement", "fund", "hospital", "engine", "payer", "difference",
                 "status"):
        table.add_column(name, no_wrap=name != "kind")
    for item in page["items"]:
        kind = f"{item['code']} {item['kind']}" + (" (timing)" if item["timing"] else "") \
            + (f", {item['entry_kind']}" if item["entry_kind"] != "settlement" else "")
        table.add_row(str(item["id"]), item["payer"], item["business_date"], kind, item["settlement_id"],
                      item["fund"], item["hospital_code"], item["engine_amount"] or "-", item["payer_amount"] or "-",
                      item["difference"], item["status"])
    console.print(table)
    application.dispose()


@discrepancies_app.command("resolve")
def discrepancies_resolve(
    discrepancy_id: Annotated[int, typer.Argument(metavar="ID")],
    action: Annotated[str, typer.Option("--action", help="accept_payer | correct | reverse | write_off")],
    note: Annotated[str, typer.Option("--note", help="why (kept with the resolution and in the audit log)")],
    amount: Annotated[str | None, typer.Option("--amount", help="the correction (action correct), e.g. -12.50")]
    = None,
    key_file: KeyFile = None,
    by: RemovedBy = None,
) -> None:
    """Resolve a discrepancy (a finance or admin key: its holder is recorded); the settlement is never edited
    (corrections are new linked ledger entries)."""
    from settlement.services.finance import resolve

    application = _application()
    try:
        who = acting_person(application.context, STAFF, key_file, by)
        item = resolve(application.context, who, discrepancy_id, action, note, amount)
    except ServiceError as error:
        raise refused(error) from None
    console.print(f"discrepancy {item['id']} {item['status']} ({item['action']}): {item['note']}", highlight=False,
                  markup=False)
    if "correction" in item:
        posted = item["correction"]
        console.print(f"correction {posted['correction_id']} of {posted['settlement_id']}: fund {posted['fund']} "
                      f"{posted['amount']}, patient's share {posted['patient_pays']}", highlight=False, markup=False)
    application.dispose()


@clearing_app.command("run")
def clearing_run(
    month: Annotated[str, typer.Option("--month", help="YYYY-MM")],
    out: Annotated[Path | None, typer.Option("--out", help="folder (default: SETTLEMENT_REPORTS_DIR)")] = None,
    key_file: KeyFile = None,
) -> None:
    """What each fund owes each hospital for the month, net of reversals and corrections (CSV and XLSX); run by
    a finance or admin key's holder, who is recorded."""
    from settlement.services.finance import run_clearing

    application = _application()
    try:
        who = acting_person(application.context, STAFF, key_file)
    except ServiceError as error:
        raise refused(error) from None
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=True) as progress:
        progress.add_task(f"clearing {month}")
        try:
            result = run_clearing(application.context, month, out or application.settings.reports_dir, who.actor)
        except ServiceError as error:
            raise refused(error) from None
    for fund, owed in result["owed_by_fund"].items():
        console.print(f"{fund}: {owed}", highlight=False)
    for path in result["files"]:
        console.print(path, highlight=False, markup=False)
    application.dispose()
