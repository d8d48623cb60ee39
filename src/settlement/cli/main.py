"""settlement: the command line for operators, finance staff and administrators."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from settlement.domain.errors import SettlementError, TariffError
from settlement.domain.settle import Settlement, settle
from settlement.paths import default_tariffs_dir
from settlement.tariffstore import load_store
from settlement.wire.claims import parse_claim_json
from settlement.wire.results import rule_summary, settlement_json

app = typer.Typer(help="Medical-aid one-stop settlement engine.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
tariffs_app = typer.Typer(help="Tariff tables: validate and inspect.", no_args_is_help=True)
app.add_typer(tariffs_app, name="tariffs")

console = Console(width=max(Console().width, 120))
errors = Console(stderr=True)

TariffsOption = Annotated[Path | None, typer.Option("--tariffs", help="tariff directory (default: ./tariffs)")]

EXIT_REJECTED = 2
EXIT_TARIFF = 3


def _fail(error: SettlementError, exit_code: int) -> typer.Exit:
    errors.print(f"[bold red]{error.code}[/]: cannot continue", highlight=False)
    for problem in error.problems:
        errors.print(f"  - {problem}", highlight=False, markup=False)
    return typer.Exit(exit_code)


@app.command()
def quote(
    claim_file: Annotated[Path, typer.Argument(help="a claim as JSON (see README: the claim file)",
                                               exists=True, dir_okay=False, readable=True)],
    tariffs: TariffsOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Quote a bill offline: every payer's share and what the patient pays. Nothing is recorded."""
    try:
        store = load_store(tariffs or default_tariffs_dir())
    except TariffError as error:
        raise _fail(error, EXIT_TARIFF) from None
    try:
        claim_in = parse_claim_json(claim_file.read_bytes())
        claim = claim_in.to_domain()
        tariff = store.tariff(claim.patient.region, claim.tariff_date)
        result = settle(claim, tariff, claim_in.accumulators())
    except TariffError as error:
        raise _fail(error, EXIT_TARIFF) from None
    except SettlementError as error:
        raise _fail(error, EXIT_REJECTED) from None
    if as_json:
        sys.stdout.write(json.dumps(settlement_json(result), ensure_ascii=False, indent=2) + "\n")
    else:
        _print_quote(result)


def _print_quote(result: Settlement) -> None:
    claim = result.claim
    dec = result.decomposition
    console.print(f"[bold]Quote[/] visit {claim.visit.id} at {claim.hospital.code} ({claim.hospital.level}), "
                  f"{claim.visit.type}, {len(claim.lines)} lines; tariff {result.tariff.region} "
                  f"{result.tariff.version} ({result.tariff.sha256[:12]})", highlight=False)
    split = Table(title="The bill", show_header=False, title_justify="left")
    split.add_column("part")
    split.add_column("amount", justify="right")
    for label, amount in (("out of catalogue", dec.out_of_catalogue), ("over the price limit", dec.over_price_limit),
                          ("self-paid first (class B)", dec.pre_self_pay), ("in scope", dec.in_scope),
                          ("total", dec.total)):
        split.add_row(label, f"{amount:,.2f}")
    console.print(split)
    payers = Table(title="Payers, in order", title_justify="left")
    for column, justify in (("layer", "left"), ("fund", "left"), ("base", "right"), ("deductible", "right"),
                            ("how", "left"), ("paid", "right")):
        payers.add_column(column, justify=justify)  # type: ignore[arg-type]
    skipped = []
    for payer in result.payers:
        if not payer.eligible:
            skipped.append(f"{payer.name} ({payer.fund}): {rule_summary(payer)}")
            continue
        payers.add_row(payer.name, payer.fund, f"{payer.base:,.2f}", f"{payer.deductible:,.2f}",
                       rule_summary(payer), f"{payer.paid:,.2f}")
    console.print(payers)
    for line in skipped:
        console.print(f"  [dim]{line}[/]", highlight=False)
    console.print(f"[bold]Patient pays: {result.patient_pays:,.2f}[/]", highlight=False)


@tariffs_app.command("validate")
def tariffs_validate(directory: Annotated[Path | None, typer.Argument(help="tariff directory")] = None) -> None:
    """Check every tariff file against the schema; list every problem (file, path, reason)."""
    root = directory or default_tariffs_dir()
    try:
        store = load_store(root)
    except TariffError as error:
        raise _fail(error, EXIT_TARIFF) from None
    count = sum(len(store.versions(region)) for region in store.regions())
    console.print(f"{root}: {count} versions in {len(store.regions())} regions, all valid", highlight=False)


@tariffs_app.command("list")
def tariffs_list(tariffs: TariffsOption = None) -> None:
    """List regions and their versions with effective ranges and content hashes."""
    try:
        store = load_store(tariffs or default_tariffs_dir())
    except TariffError as error:
        raise _fail(error, EXIT_TARIFF) from None
    table = Table()
    for column in ("region", "version", "from", "to", "inherits", "sha256"):
        table.add_column(column)
    for region in store.regions():
        for version in store.versions(region):
            resolved = store.resolve(region, version.effective_from)
            table.add_row(region, resolved.tariff.ref.version, str(version.effective_from),
                          str(version.effective_to or "open"), version.inherits or "",
                          resolved.tariff.ref.sha256[:16])
    console.print(table)


if __name__ == "__main__":  # pragma: no cover
    app()
