"""settlement: the command line for operators, finance staff and administrators."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from settlement.cli.identity import KeyFile
from settlement.domain.errors import SettlementError, TariffError
from settlement.domain.settle import Settlement, settle
from settlement.paths import default_tariffs_dir
from settlement.services.errors import ServiceError
from settlement.tariffstore import load_store
from settlement.wire.claims import parse_claim_json
from settlement.wire.results import rule_summary, settlement_json

if TYPE_CHECKING:
    from settlement.bootstrap import Application

app = typer.Typer(help="Medical-aid one-stop settlement engine.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
tariffs_app = typer.Typer(help="Tariff versions: validate, import, diff, approve, activate, simulate.",
                          no_args_is_help=True)
app.add_typer(tariffs_app, name="tariffs")
db_app = typer.Typer(help="The database: migrations, backups.", no_args_is_help=True)
app.add_typer(db_app, name="db")
roster_app = typer.Typer(help="The assistance roster.", no_args_is_help=True)
app.add_typer(roster_app, name="roster")
hospitals_app = typer.Typer(help="Hospitals and their API keys.", no_args_is_help=True)
app.add_typer(hospitals_app, name="hospitals")
keys_app = typer.Typer(help="API keys: add (finance, admin), list, revoke, rotate.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
soap_app = typer.Typer(help="SOAP dialects: list them, try a hospital's message, render a reply.",
                       no_args_is_help=True)
app.add_typer(soap_app, name="soap")

console = Console(width=max(Console().width, 120))
errors = Console(stderr=True)

TariffsOption = Annotated[Path | None, typer.Option(
    "--tariffs", help="tariff directory (default: SETTLEMENT_TARIFFS, else the shipped tariffs)")]

EXIT_REJECTED = 2
EXIT_TARIFF = 3


def refused(error: ServiceError, exit_code: int = EXIT_REJECTED) -> typer.Exit:
    """Print a refusal (its stable code, and its message with any [brackets] shown as written); the exit to raise."""
    errors.print(f"[bold red]{error.code}[/]: {escape(error.message)}", highlight=False)
    return typer.Exit(exit_code)


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
        visit = claim.visit  # the version the tariff's own date rule picks (dates.tariff)
        tariff = store.resolve_for(claim.patient.region, visit.admission_date, visit.discharge_date,
                                   claim.tariff_date).tariff
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


def _application(migrate: bool = True) -> Application:
    from settlement.bootstrap import build
    from settlement.config import Settings
    from settlement.files import restrict_umask
    from settlement.soap.dialects import DialectError

    restrict_umask()  # what the service and its commands write (database, secrets, reports) is theirs alone
    try:
        return build(Settings(), migrate=migrate)
    except TariffError as error:
        raise _fail(error, EXIT_TARIFF) from None
    except DialectError as error:
        errors.print(f"[bold red]DIALECT_INVALID[/]: {escape(str(error))}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_TARIFF) from None
    except ServiceError as error:
        raise refused(error, EXIT_TARIFF) from None


def _refuse_missing_data() -> None:
    """Stop before anything starts when a setting points at nothing the service needs (bootstrap.missing_data)."""
    from settlement.bootstrap import missing_data
    from settlement.config import Settings

    problems = missing_data(Settings())
    if problems:
        errors.print("[bold red]SETTINGS_INVALID[/]: cannot start, what the service runs on is missing:",
                     highlight=False)
        for problem in problems:  # one line each, however long the path (logs are read with grep)
            errors.print(f"  - {problem}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_TARIFF)


@app.command()
def serve(
    demo: Annotated[bool, typer.Option("--demo", help="seed a demo hospital, keys and roster if empty")] = False,
    host: Annotated[str | None, typer.Option(help="bind address (SETTLEMENT_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (SETTLEMENT_PORT)")] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes (SETTLEMENT_WORKERS)")] = None,
) -> None:
    """Run the REST service on uvicorn: migrations applied, tariffs loaded, then the workers start."""
    import os

    import uvicorn

    from settlement.bootstrap import prepare
    from settlement.config import Settings
    from settlement.soap.address import AddressError, PublicAddress

    if demo:
        os.environ["SETTLEMENT_DEMO"] = "true"
    # The workers read their settings from the environment: the address they serve at is part of what they give
    # (the WSDLs' default address is http://HOST:PORT).
    if host:
        os.environ["SETTLEMENT_HOST"] = host
    if port:
        os.environ["SETTLEMENT_PORT"] = str(port)
    settings = Settings()
    _refuse_missing_data()
    try:  # checked here too, so that a bad address stops the command rather than each worker
        PublicAddress.configured(settings.public_url, settings.allowed_hosts, settings.host, settings.port)
    except AddressError as error:
        errors.print(f"[bold red]SETTINGS_INVALID[/]: {escape(str(error))}", highlight=False)
        raise typer.Exit(EXIT_TARIFF) from None
    application = _application()
    try:
        for line in prepare(application):
            console.print(line, highlight=False, markup=False)
    except SettlementError as error:
        raise _fail(error, EXIT_TARIFF) from None
    except ServiceError as error:
        raise refused(error, EXIT_TARIFF) from None
    application.dispose()
    console.print(f"dialects {', '.join(application.dialects.dialects)} from {settings.adapters_dir}; tariffs "
                  f"from {settings.tariffs_dir}; payers from {settings.payers_file}", highlight=False, markup=False,
                  soft_wrap=True)
    bind_host = host or settings.host
    bind_port = port or settings.port
    console.print(f"serving on http://{bind_host}:{bind_port} (API docs at /docs), database "
                  f"{application.engine.url.render_as_string(hide_password=True)}", highlight=False, markup=False)
    uvicorn.run("settlement.api.asgi:create", factory=True, host=bind_host, port=bind_port,
                workers=workers or settings.workers, log_level="info")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the migrations to SETTLEMENT_DATABASE_URL; on a database with no tariff versions yet, record the
    shipped ones (SETTLEMENT_TARIFFS) as in force."""
    from settlement.services import tariffs

    application = _application()
    console.print(f"database at the latest schema: {application.engine.url.render_as_string(hide_password=True)}",
                  highlight=False, markup=False)
    try:
        added = tariffs.seed(application.context, application.settings.tariffs_dir)
    except ServiceError as error:
        raise refused(error, EXIT_TARIFF) from None
    if added:
        console.print(f"tariff versions recorded as in force: {', '.join(added)}", highlight=False, markup=False)


@roster_app.command("import")
def roster_import(file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
                  key_file: KeyFile = None) -> None:
    """Import a civil-affairs roster CSV (an administrator's key); print rows with errors (line, reason); keep the
    valid rows."""
    from settlement.cli.identity import ADMIN, acting_person
    from settlement.services.roster import import_roster

    application = _application()
    try:
        who = acting_person(application.context, ADMIN, key_file)
        report = import_roster(application.context, who, file.name, file.read_bytes())
    except ServiceError as error:
        raise refused(error) from None
    console.print(f"{file.name}: {report.rows} rows, {report.accepted} accepted, {len(report.rejected)} rejected, "
                  f"{report.changed} changes" + (" (nothing new: already imported)" if report.already_imported
                                                 else ""), highlight=False)
    for problem in report.rejected:
        console.print(f"  line {problem['line']}: {problem['reason']} ({problem['person']})", highlight=False,
                      markup=False)


@hospitals_app.command("add")
def hospitals_add(
    code: Annotated[str, typer.Argument(help="hospital code, e.g. H61100200011")],
    name: Annotated[str, typer.Argument()],
    level: Annotated[str, typer.Option(help="township | county | city | provincial")],
    region: Annotated[str, typer.Option(help="6-digit division code")],
    key_file: KeyFile = None,
) -> None:
    """Register a hospital (an administrator's key) and print its API key (shown once, stored hashed)."""
    from settlement.cli.identity import ADMIN, acting_person
    from settlement.services.admin import add_hospital

    application = _application()
    try:
        who = acting_person(application.context, ADMIN, key_file)
        key = add_hospital(application.context, code, name, level, region, who.actor)
    except ServiceError as error:
        raise refused(error) from None
    console.print(f"hospital {code} added; its API key (shown once): {key}", highlight=False, markup=False)


@keys_app.command("add")
def keys_add(
    kind: Annotated[str, typer.Argument(help="finance | admin")],
    name: Annotated[str, typer.Argument(help="who holds the key")],
    key_file: KeyFile = None,
) -> None:
    """Create a finance or admin key (with an administrator's key) and print it (shown once, stored hashed).

    The first administrator: on a database where no administrator holds a key, `keys add admin NAME` without a
    key is the operator's bootstrap at the server's shell, recorded as 'system'."""
    from settlement.cli.identity import ADMIN, acting_person
    from settlement.services.admin import add_staff, administrator_exists, bootstrap_admin

    application = _application()
    try:
        if kind == "admin" and not administrator_exists(application.context):
            key = bootstrap_admin(application.context, name)
            console.print("no administrator existed: this is the first, recorded as added by 'system'",
                          highlight=False, markup=False)
        else:
            who = acting_person(application.context, ADMIN, key_file)
            key = add_staff(application.context, kind, name, who.actor)
    except ServiceError as error:
        raise refused(error) from None
    console.print(f"{kind} key for {name} (shown once): {key}", highlight=False, markup=False)


@hospitals_app.command("bind")
def hospitals_bind(
    code: Annotated[str, typer.Argument(help="hospital code")],
    dialects: Annotated[list[str], typer.Argument(help="dialect names (see `settlement soap dialects`)")],
    key_file: KeyFile = None,
) -> None:
    """Allow a hospital to speak these SOAP dialects (a dialect it is not bound to is refused)."""
    from settlement.cli.identity import ADMIN, acting_person
    from settlement.services.soap_access import bind_dialects

    application = _application()
    try:
        who = acting_person(application.context, ADMIN, key_file)
        bound = bind_dialects(application.context, code, dialects, set(application.dialects.dialects), who.actor)
    except ServiceError as error:
        raise refused(error) from None
    console.print(f"hospital {code} speaks: {', '.join(bound)}", highlight=False, markup=False)


@hospitals_app.command("soap-password")
def hospitals_soap_password(code: Annotated[str, typer.Argument(help="hospital code")],
                            key_file: KeyFile = None) -> None:
    """Issue the hospital's WS-Security password (shown once; the old one is refused, and the new one accepted, by
    every worker within a second)."""
    from settlement.cli.identity import ADMIN, acting_person
    from settlement.services.soap_access import issue_password

    application = _application()
    try:
        who = acting_person(application.context, ADMIN, key_file)
        password = issue_password(application.context, application.cipher, code, who.actor)
    except ServiceError as error:
        raise refused(error) from None
    console.print(f"WS-Security UsernameToken for {code}: username {code}, password (shown once): {password}",
                  highlight=False, markup=False)


def _dialects() -> object:
    from settlement.config import Settings
    from settlement.soap.dialects import DialectError, load_registry

    try:
        return load_registry(Settings().adapters_dir)
    except DialectError as error:
        errors.print(f"[bold red]DIALECT_INVALID[/]: {escape(str(error))}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_TARIFF) from None


@soap_app.command("dialects")
def soap_dialects() -> None:
    """The dialects in adapters/, with their operations."""
    from settlement.soap.dialects import Registry

    registry = _dialects()
    assert isinstance(registry, Registry)
    table = Table("dialect", "style", "encoding", "operations", "errors as")
    for dialect in registry.dialects.values():
        manifest = dialect.manifest
        table.add_row(dialect.name, manifest.soap_style, manifest.encoding,
                      ", ".join(f"{code}={op}" for code, op in manifest.operations.items()), manifest.errors)
    console.print(table)


@soap_app.command("map")
def soap_map(envelope: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                                      help="a SOAP envelope as a hospital sends it")]) -> None:
    """Show the canonical request a hospital's envelope maps to (no server, no credentials needed)."""
    from settlement.soap.dialects import Registry
    from settlement.soap.gateway import locate, parse_envelope, read_message
    from settlement.soap.xmlsafe import Limits

    registry = _dialects()
    assert isinstance(registry, Registry)
    try:
        root, _ = parse_envelope(envelope.read_bytes(), None, None, Limits())
        dialect, _, element = locate(registry, root, None)
        code, operation, request = read_message(dialect, element, Limits())
    except ServiceError as error:
        raise refused(error) from None
    print(json.dumps({"dialect": dialect.name, "code": code, "operation": operation, "request": request},
                     ensure_ascii=False, indent=2))


@soap_app.command("render")
def soap_render(
    dialect_name: Annotated[str, typer.Argument(metavar="DIALECT")],
    result: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                           help="JSON: operation, status, body, code (replayed, message_id, request)")],
) -> None:
    """Print the reply envelope a dialect gives for a canonical result (bytes in the dialect's encoding)."""
    from settlement.soap.dialects import Registry
    from settlement.soap.gateway import render_reply

    registry = _dialects()
    assert isinstance(registry, Registry)
    dialect = registry.get(dialect_name)
    if dialect is None:
        errors.print(f"[bold red]DIALECT_UNKNOWN[/]: no dialect {dialect_name}", highlight=False)
        raise typer.Exit(EXIT_REJECTED)
    spec = json.loads(result.read_text(encoding="utf-8"))
    answer = render_reply(dialect, spec["operation"], spec["status"], spec["body"], spec.get("replayed", False),
                          spec["code"], spec.get("message_id", ""), spec.get("request"))
    sys.stdout.buffer.write(answer.body)


@soap_app.command("purge-exchanges")
def soap_purge_exchanges(
    retention_days: Annotated[int | None, typer.Option(
        "--retention-days", help="keep this many days (default SETTLEMENT_SOAP_EXCHANGE_RETENTION_DAYS, 180; "
                                 "at least 30)")] = None,
) -> None:
    """Delete the SOAP envelope log's rows older than the retention (the only deletion it allows)."""
    from settlement.services.soap_access import purge_exchanges

    application = _application()
    days = application.settings.soap_exchange_retention_days if retention_days is None else retention_days
    try:
        purged = purge_exchanges(application.context, days)
    except ServiceError as error:
        raise refused(error) from None
    console.print(f"purged {purged.rows} SOAP exchanges recorded before {purged.cutoff.isoformat()} "
                  f"(kept {days} days)", highlight=False, markup=False)


# The payer simulator: the payers' side of reconciliation, for demos and tests.

payer_sim_app = typer.Typer(
    help="Simulate the payers' side of reconciliation from this engine's own ledger: serve the SOAP statement "
         "service (statement.wsdl) on loopback, or write a file statement into the inbox. Faults damage the "
         "statement on purpose (victims drawn with --seed, so runs are reproducible).",
    invoke_without_command=True, no_args_is_help=False)
app.add_typer(payer_sim_app, name="payer-sim")

DropOption = Annotated[int, typer.Option("--drop", min=0, help="leave out N rows the engine has (engine_only)")]
ShiftOption = Annotated[int, typer.Option("--shift", min=0,
                                          help="change N rows' amounts by 1 to 99 fen (amount_differs)")]
ExtraOption = Annotated[int, typer.Option("--extra", min=0,
                                          help="add N rows of settlement ids the engine never issued (payer_only)")]
MidnightOption = Annotated[int, typer.Option(
    "--midnight", min=0, help="report N bookings of a day's last 10 minutes on the next day instead (timing)")]
PhantomOption = Annotated[int, typer.Option(
    "--phantom-reversals", min=0, help="report reversals of N settlements the engine never reversed (payer_only)")]
SeedOption = Annotated[int, typer.Option("--seed", help="seeds the choice of damaged rows")]

if TYPE_CHECKING:
    from settlement.insurers.config import PayerConfig


def _payers_for_sim() -> dict[str, PayerConfig]:
    from settlement.config import Settings
    from settlement.insurers.config import PayersError, load_payers

    settings = Settings()
    try:
        return load_payers(settings.payers_file)
    except PayersError as error:
        errors.print(f"[bold red]PAYERS_INVALID[/]: {escape(str(error))}", highlight=False)
        raise typer.Exit(EXIT_TARIFF) from None


@payer_sim_app.callback()
def payer_sim(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="bind address (loopback unless you mean it)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port; deploy/payers.yaml expects 8810")] = 8810,
    drop: DropOption = 0,
    shift: ShiftOption = 0,
    extra: ExtraOption = 0,
    midnight: MidnightOption = 0,
    phantom_reversals: PhantomOption = 0,
    delay: Annotated[float, typer.Option("--delay", min=0, help="answer every call S seconds late")] = 0.0,
    timeout_first: Annotated[int, typer.Option(
        "--timeout-first", min=0, help="book the first K calls, then answer only after --hang seconds (the "
                                       "client times out after the payer did the work)")] = 0,
    hang: Annotated[float, typer.Option("--hang", min=0, help="how long a --timeout-first call waits; longer "
                                                              "than the client's timeout_seconds")] = 15.0,
    seed: SeedOption = 0,
) -> None:
    """Serve the payers' statement service (GET /statements?wsdl, POST /statements) for every payer of
    SETTLEMENT_PAYERS_FILE, built from the ledger of SETTLEMENT_DATABASE_URL. A repeated request id is answered
    the statement already prepared and books nothing new. Subcommand `write` drops a file statement instead."""
    if ctx.invoked_subcommand is not None:
        return
    import logging

    import uvicorn

    from settlement.insurers.simulator import Faults, PayerSimulator

    faults = Faults(drop=drop, shift=shift, extra=extra, midnight=midnight, phantom_reversals=phantom_reversals,
                    delay=delay, timeout_first=timeout_first, hang_seconds=hang, seed=seed)
    payers = _payers_for_sim()
    application = _application()
    simulator = PayerSimulator(application.context, payers, faults)
    url = f"http://{host}:{port}/statements"
    console.print(f"payer simulator: {url}?wsdl for {', '.join(payers)}; faults: {faults.describe()}; ledger of "
                  f"{application.engine.url.render_as_string(hide_password=True)}", highlight=False, markup=False)
    calls = logging.getLogger("settlement.insurers.simulator")  # every call: booked or replayed, rows, wait
    if not calls.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        calls.addHandler(handler)
    calls.setLevel(logging.INFO)
    try:
        uvicorn.run(simulator.asgi(), host=host, port=port, log_level="info")
    finally:
        application.dispose()


@payer_sim_app.command("write")
def payer_sim_write(
    payer: Annotated[str, typer.Option("--payer", help="a file payer's code in SETTLEMENT_PAYERS_FILE")],
    day: Annotated[str, typer.Option("--date", metavar="YYYY-MM-DD", help="the business day (Asia/Shanghai)")],
    inbox: Annotated[Path | None, typer.Option("--inbox", help="the inbox (default: SETTLEMENT_INBOX_DIR)",
                                               file_okay=False)] = None,
    drop: DropOption = 0,
    shift: ShiftOption = 0,
    extra: ExtraOption = 0,
    midnight: MidnightOption = 0,
    phantom_reversals: PhantomOption = 0,
    seed: SeedOption = 0,
) -> None:
    """Write a file payer's statement of a business day into the inbox (<inbox>/<payer>/<date>.csv or .xml, in
    the payer's format), from the ledger, with the faults asked for."""
    from datetime import date

    from settlement.config import Settings
    from settlement.insurers.simulator import Faults, PayerSimulator

    try:
        business_date = date.fromisoformat(day)
    except ValueError:
        errors.print(f"[bold red]REQUEST_MALFORMED[/]: --date {escape(day)!r} is not a date (YYYY-MM-DD)",
                     highlight=False)
        raise typer.Exit(EXIT_REJECTED) from None
    faults = Faults(drop=drop, shift=shift, extra=extra, midnight=midnight, phantom_reversals=phantom_reversals,
                    seed=seed)
    payers = _payers_for_sim()
    application = _application()
    try:
        simulator = PayerSimulator(application.context, payers, faults)
        path, statement = simulator.write_inbox(payer, business_date, inbox or Settings().inbox_dir)
    except ServiceError as error:
        raise refused(error) from None
    finally:
        application.dispose()
    console.print(f"{path}: {len(statement.lines)} rows of {payer} for {business_date}; faults: "
                  f"{faults.describe()}", highlight=False, markup=False)


@app.command()
def scheduler(
    once: Annotated[bool, typer.Option("--once", help="catch up what is missing, then exit")] = False,
) -> None:
    """Run the scheduler process (never inside the API workers): nightly reconciliation of the previous business
    day at SETTLEMENT_RECONCILE_AT (Asia/Shanghai) for every payer, monthly clearing on the 1st at 03:00, and the
    catch-up of runs missed while it was down (at start and daily). Of several schedulers on one database one
    leads (a lease), the others wait and take over when it stops renewing it. Stops cleanly on SIGTERM or Ctrl-C;
    exits 3 if another scheduler took its lease."""
    import logging
    from datetime import timedelta

    from settlement.insurers.config import PayersError
    from settlement.jobs.scheduler import EXIT_LEASE_LOST, LEADER_LEASE, Jobs, SchedulerProcess, build_scheduler
    from settlement.services.leases import NamedLease

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _refuse_missing_data()
    application = _application()
    try:
        jobs = Jobs.for_application(application)
        process = SchedulerProcess(jobs, build_scheduler(application), leader=NamedLease(
            application.context, LEADER_LEASE, timedelta(seconds=application.settings.lease_seconds)))
    except (PayersError, ValueError) as error:
        application.dispose()
        errors.print(f"[bold red]SETTINGS_INVALID[/]: {escape(str(error))}", highlight=False)
        raise typer.Exit(EXIT_TARIFF) from None
    settings = application.settings
    console.print(f"scheduler: database {application.engine.url.render_as_string(hide_password=True)}, payers "
                  f"{', '.join(jobs.payers)}; nightly at {settings.reconcile_at} Asia/Shanghai, catch-up over "
                  f"{settings.catch_up_days} days", highlight=False, markup=False)
    try:
        outcomes = process.run(once=once)
    finally:
        application.dispose()
    if process.lost:
        raise typer.Exit(EXIT_LEASE_LOST)
    ran = [outcome for outcome in outcomes if outcome.action == "ran"]
    if once:
        for outcome in ran:
            subject = f"{outcome.subject} {outcome.day}" if outcome.day else outcome.subject
            console.print(f"{outcome.job} {subject}: {outcome.status} ({outcome.reason})", highlight=False,
                          markup=False)
        console.print(f"catch-up: {len(ran)} runs", highlight=False, markup=False)
        if any(outcome.status in ("failed", "error", "unavailable") for outcome in outcomes):
            raise typer.Exit(1)


# Finance staff's commands (reconcile, discrepancies, clearing) register themselves on `app`.
from settlement.cli import backup as _backup  # noqa: E402, F401
from settlement.cli import finance as _finance  # noqa: E402, F401
from settlement.cli import keys as _keys  # noqa: E402, F401
from settlement.cli import register as _register  # noqa: E402, F401
from settlement.cli import tariffs as _tariffs  # noqa: E402, F401

if __name__ == "__main__":  # pragma: no cover
    app()
