"""The FastAPI application factory."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path as PathLib
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Path, Query, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.telemetry import TelemetryConfig
from sqlalchemy import text
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from settlement.api import bodies, limits
from settlement.api.deadline import RequestDeadline, deadlines
from settlement.api.keys import add_key_routes
from settlement.api.last_resort import LastResort
from settlement.bootstrap import Application
from settlement.db.bookkeeping import async_bookkeeping_for
from settlement.db.settling import async_settling_for
from settlement.domain.claim import SHANGHAI
from settlement.domain.errors import SettlementError
from settlement.domain.text import CODE_MAX, NOTE_MAX
from settlement.insurers.config import PayersError, load_payers
from settlement.problems import problem_body
from settlement.services import hospital_register, tariffs
from settlement.services.auth import Caller, CallerCache, CredentialsWatch, authenticate, credentials_watch
from settlement.services.context import Context
from settlement.services.errors import ServiceCode, ServiceError, database_problem
from settlement.services.finance import Filters, list_discrepancies, resolve, run_clearing, run_report
from settlement.services.reconciliation import Reconciler
from settlement.services.roster import MAX_BYTES as ROSTER_FILE_BYTES
from settlement.services.roster import import_roster
from settlement.services.settlements import Reply, SettlementService
from settlement.soap.endpoint import add_soap_routes
from settlement.soap.gateway import AsyncIo
from settlement.wire.fields import IsoDate, Text
from settlement.wire.requests import (
    CancelRequest,
    PeriodRequest,
    QuoteRequest,
    ReconciliationRequest,
    ResolutionRequest,
    ReverseRequest,
    SettleRequest,
    WithdrawalRequest,
)
from settlement.wire.responses import (
    EligibilityOut,
    EligibilityRequest,
    ProblemOut,
    QuoteOut,
    ReversalOut,
    RosterReportOut,
    SettlementOut,
    SettlementPage,
    SettlementReadOut,
)

log = logging.getLogger("settlement.api")
MEDIA = {"xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "csv": "text/csv; charset=utf-8"}
PROBLEM = "application/problem+json"
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ProblemOut, "content": {PROBLEM: {}}} for status in (401, 403, 404, 409, 413, 422, 503)
}
ERRORS[503]["description"] = (
    "Outcome unknown (`DATABASE_BUSY`, `DATABASE_UNAVAILABLE`): the database was busy or did not answer, possibly "
    "after it had recorded the request (a commit whose answer was lost). It does not mean that nothing was "
    "recorded. After `Retry-After` seconds, resend the same request with the same transaction id: it answers as "
    "the first did (`Idempotent-Replayed: true`), or does the work now. Never resend it under a new id: that could "
    "pay a bill twice. A cancellation (`POST /v1/cancellations`) under a new id of its own reverses whatever the "
    "uncertain call did.")


NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False,
                                  "auto_configure": False}
VersionId = Annotated[int, Path(ge=1, le=tariffs.MAX_VERSION_ID)]
# Every string and date a route takes outside its body, with the wire models' rules (settlement.wire.fields).
SettlementId = Annotated[str, Text(64, min_length=1)]
Code = Annotated[str, Text(CODE_MAX, min_length=1)]
Word = Annotated[str, Text(32)]  # a choice among a few names (kind, status)
Extension = Annotated[str, Text(8)]
Note = Annotated[str, Text(NOTE_MAX, multiline=True)]
# An upload's body is its file plus the multipart framing (boundaries, part headers, a form field or two).
MULTIPART_ROOM = 64 * 1024
ROSTER_BODY_BYTES = ROSTER_FILE_BYTES + MULTIPART_ROOM
REGISTER_BODY_BYTES = hospital_register.MAX_BYTES + MULTIPART_ROOM
TARIFF_BODY_BYTES = tariffs.MAX_UPLOAD_BYTES + MULTIPART_ROOM


async def current_caller(request: Request, authorization: Annotated[str | None, Header()] = None,
                         x_api_key: Annotated[str | None, Header()] = None) -> Caller:
    """The caller named by `Authorization: Bearer <key>` (or `X-API-Key`); 401 without a valid key.

    A key found under the credentials generation this worker read less than half a second ago is answered from
    the cache on the event loop; otherwise the generation and, if it moved, the key are read in the thread pool (a
    sync dependency would cost every request a thread hand-over)."""
    key = x_api_key
    if authorization and authorization.lower().startswith("bearer "):
        key = authorization[7:].strip()
    cache: CallerCache = request.app.state.callers
    watch: CredentialsWatch = request.app.state.credentials
    generation = watch.fresh()
    if key and generation is not None and (known := cache.get(key, generation, time.monotonic())) is not None:
        return known
    return await run_in_threadpool(_look_up, request.app.state.context, watch, cache, key)


def _look_up(context: Context, watch: CredentialsWatch, cache: CallerCache, key: str | None) -> Caller:
    now = time.monotonic()
    generation = watch.current()  # read before the key: a revocation committed after it moves the generation on
    if key and (known := cache.get(key, generation, now)) is not None:
        return known
    with context.uow() as tx:
        found = authenticate(tx.repo, key)
    cache.put(key or "", found, generation, now)
    return found


Auth = Annotated[Caller, Depends(current_caller)]
# The two headers `current_caller` reads, as the OpenAPI document shows them for a route that depends on it; for
# the settle route, which reads them itself (FastAPI's dependency machinery cost it 5% of its CPU).
AUTH_PARAMETERS = [{"in": "header", "name": name, "required": False,
                    "schema": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": title}}
                   for name, title in (("authorization", "Authorization"), ("x-api-key", "X-Api-Key"))]


def problem_response(error: SettlementError | ServiceError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    status, body = problem_body(error)
    if status == 503:
        headers = {**(headers or {}), "Retry-After": "1"}
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def framework_problem(error: HTTPException) -> ServiceError:
    """Starlette's and FastAPI's own refusals (an unknown route, a method the route does not take, a body the
    framework cannot parse) as the service's errors, with a stable code like every other."""
    if error.status_code == 404:
        return ServiceError(ServiceCode.NOT_FOUND, "no route answers this path")
    if error.status_code == 405:
        return ServiceError(ServiceCode.METHOD_NOT_ALLOWED, "the route does not take this method (see Allow)")
    # A 400: the framework's own words (fixed texts such as "Missing boundary in multipart.", never the body's).
    return ServiceError(ServiceCode.REQUEST_UNREADABLE, f"the request cannot be read: {error.detail}")


def create_app(application: Application) -> FastAPI:
    context = application.context
    service = SettlementService(context)
    # On PostgreSQL, settlements (REST and SOAP) and the SOAP bookkeeping run on the event loop with pools of this
    # app's own, opened and closed with it on its loop.
    settings = application.settings
    settling = async_settling_for(application.engine, size=settings.db_pool_size,
                                  lock_timeout_ms=settings.lock_timeout_ms,
                                  connect_timeout_seconds=settings.db_connect_timeout_seconds,
                                  statement_timeout_ms=settings.statement_timeout_ms)
    bookkeeping = async_bookkeeping_for(application.engine, size=max(2, settings.db_pool_size // 2),
                                        connect_timeout_seconds=settings.db_connect_timeout_seconds,
                                        statement_timeout_ms=settings.statement_timeout_ms)
    io = AsyncIo(settling, bookkeeping) if settling is not None and bookkeeping is not None else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if io is not None:
            await io.settling.open()
            await io.bookkeeping.open()
        try:
            yield
        finally:
            if io is not None:
                await io.settling.close()
                await io.bookkeeping.close()

    app = FastAPI(
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry stays off even where a provider is configured: its logs would carry exception
        # messages (which may hold ID numbers) out of the service. It also costs a check per request.
        telemetry=NO_TELEMETRY,
        title="Medical-aid one-stop settlement",
        version="1",
        description="Hospitals quote, settle and reverse bills; basic insurance, critical-illness insurance and "
                    "medical assistance are layered as the tariff says. Money is a decimal string with two "
                    "places. Authenticate with `Authorization: Bearer <key>`.",
    )

    app.state.context = context
    app.state.callers = CallerCache()
    app.state.credentials = watch = credentials_watch(context)
    app.add_middleware(limits.BodyLimit, default=settings.max_body_bytes, exempt_prefix="/soap", by_path={
        "/v1/admin/roster": ROSTER_BODY_BYTES, "/v1/admin/tariffs": TARIFF_BODY_BYTES,
        "/v1/admin/tariffs/catalogue": TARIFF_BODY_BYTES, "/v1/admin/hospitals": REGISTER_BODY_BYTES})
    app.add_middleware(RequestDeadline, deadline=deadlines(settings.request_deadline_seconds,
                                                           settings.ready_deadline_seconds))
    # Added last, so outermost of ours: it answers a bug's exception and keeps its message out of the server's log.
    app.add_middleware(LastResort)

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, error: ServiceError) -> JSONResponse:
        return problem_response(error)

    @app.exception_handler(SettlementError)
    async def _settlement_error(_: Request, error: SettlementError) -> JSONResponse:
        return problem_response(error)

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeoutError)
    async def _database_trouble(_: Request, error: Exception) -> JSONResponse:
        # Not a bug: the database is unreachable, or busy (a lock wait, a full pool). The outcome is unknown (a
        # commit may have gone through before its answer was lost); resending under the same key is safe.
        return problem_response(database_problem(error))

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, error: HTTPException) -> Response:
        if isinstance(error, limits.BodyTooLarge):  # as problem+json with its stable code; nothing kept
            return problem_response(limits.too_large(error.limit))
        return problem_response(framework_problem(error), error.headers)

    @app.exception_handler(RequestValidationError)
    async def _malformed(_: Request, error: RequestValidationError) -> JSONResponse:
        # The values are not echoed: they may be ID numbers or names.
        problems = [{"code": ServiceCode.REQUEST_MALFORMED.value,
                     "path": "" if item.get("type") == "json_invalid"  # the location is a character offset
                     else ".".join(str(part) for part in item.get("loc", ()) if part != "body"),
                     "message": str(item.get("msg", "")).removeprefix("Value error, ")} for item in error.errors()]
        body = {"type": f"urn:settlement:error:{ServiceCode.REQUEST_MALFORMED}", "title": "Unprocessable request",
                "status": 422, "code": ServiceCode.REQUEST_MALFORMED.value,
                "detail": "the request does not have the documented shape", "problems": problems}
        return JSONResponse(body, status_code=422, media_type=PROBLEM)

    def replied(reply: Reply) -> Response:
        media = "application/json" if reply.status < 400 else PROBLEM
        headers = {"Idempotent-Replayed": "true"} if reply.replayed else None
        return Response(reply.body, status_code=reply.status, media_type=media, headers=headers)

    app.state.soap = add_soap_routes(app, application, io, watch)
    add_key_routes(app, application, ERRORS)
    app.state.soap_io = io  # read by the SOAP benchmark's floor (benchmarks/soap_floor_app.py)
    bodies.add_schemas(app, SettleRequest)

    @app.get("/health", tags=["operations"])
    async def health() -> dict[str, str]:
        """Liveness: the worker answers (it does not look at the database: see /health/ready). Answered on the
        event loop itself: it is the loop's health that it tells, not the thread pool's."""
        return {"status": "ok"}

    def engine_answers() -> None:
        with application.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    @app.get("/health/ready", tags=["operations"], responses={503: ERRORS[503]})
    async def ready() -> Response:
        """Readiness, for a load balancer or an operator: 200 when this worker reaches its database (on
        PostgreSQL, through the settlements' pool and the other one alike), else 503 DATABASE_UNAVAILABLE (with
        Retry-After), also when the database does not answer within SETTLEMENT_READY_DEADLINE_SECONDS."""
        try:
            if settling is not None:
                await settling.ping()
            await run_in_threadpool(engine_answers)
        except SQLAlchemyError as error:
            log.warning("readiness: the database does not answer (%s)", type(error).__name__)
            return problem_response(ServiceError(ServiceCode.DATABASE_UNAVAILABLE, "the database does not answer"))
        return JSONResponse({"status": "ready"})

    @app.post("/v1/eligibility", tags=["cashier"], response_model=EligibilityOut, responses=ERRORS)
    def eligibility(request: EligibilityRequest, who: Auth) -> dict[str, Any]:
        """A person's scheme, assistance categories in force on a date, and year-to-date figures.

        The ID number travels in the body, never in a URL, so that it stays out of access logs."""
        return service.eligibility(who, request.id_number,
                                   request.on or context.clock().astimezone(SHANGHAI).date())

    @app.post("/v1/quotes", tags=["cashier"], response_model=QuoteOut, responses=ERRORS)
    def quote(request: QuoteRequest, who: Auth) -> dict[str, Any]:
        """Pre-settlement: every share, nothing recorded. The quote id is valid for 15 minutes."""
        return service.quote(who, request)

    @app.post("/v1/settlements", tags=["cashier"], status_code=201, response_model=SettlementOut,
              responses=ERRORS, openapi_extra={**bodies.documented(SettleRequest), "parameters": AUTH_PARAMETERS})
    async def settle(http: Request) -> Response:
        """Settle a bill. Idempotent by (hospital, transaction_id): a retry gets the first answer."""
        who = await current_caller(http, http.headers.get("authorization"), http.headers.get("x-api-key"))
        request = await bodies.read(http, SettleRequest)
        if settling is not None:
            return replied(await service.settle_async(who, request, settling))
        return replied(await run_in_threadpool(service.settle, who, request))

    @app.get("/v1/settlements/{settlement_id}", tags=["cashier"], response_model=SettlementReadOut,
             responses=ERRORS)
    def get_settlement(settlement_id: SettlementId, who: Auth) -> dict[str, Any]:
        """One settlement with its trace. Another hospital's settlement is not found."""
        return service.get(who, settlement_id)

    @app.get("/v1/settlements", tags=["cashier"], response_model=SettlementPage, responses=ERRORS)
    def list_settlements(
        who: Auth,
        start: Annotated[IsoDate, Query(alias="from", description="first day (Asia/Shanghai), inclusive")],
        end: Annotated[IsoDate, Query(alias="to", description="last day (Asia/Shanghai), inclusive")],
        cursor: Annotated[int | None, Query(ge=0, le=2**63 - 1, description="next_cursor of the previous page")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        hospital: Annotated[Code | None, Query(description="finance and admin only")] = None,
    ) -> dict[str, Any]:
        """The calling hospital's settlements recorded in a date range, oldest first, paged."""
        if end < start:
            raise ServiceError(ServiceCode.REQUEST_MALFORMED, "'to' is before 'from'")
        return service.list(who, start, end, cursor, limit, hospital)

    @app.post("/v1/settlements/{settlement_id}/reversal", tags=["cashier"], status_code=201,
              response_model=ReversalOut, responses=ERRORS)
    def reverse(settlement_id: SettlementId, request: ReverseRequest, who: Auth) -> Response:
        """Reverse a settlement in full: negative linked entries; year-to-date figures restored. Once only."""
        return replied(service.reverse(who, settlement_id, request))

    @app.post("/v1/cancellations", tags=["cashier"], status_code=201, responses=ERRORS)
    def cancel(request: CancelRequest, who: Auth) -> Response:
        """Reverse whatever a call you never heard back from did, by its transaction id (the national 2601): a
        settlement made under it is reversed; if nothing was, the id is refused from now on."""
        return replied(service.cancel(who, request))

    def finance_staff(who: Caller) -> Caller:
        if who.kind not in ("finance", "admin"):
            raise ServiceError(ServiceCode.FORBIDDEN, "finance staff only")
        return who

    def reconciler() -> Reconciler:
        settings = application.settings
        try:
            payers = load_payers(settings.payers_file)
        except PayersError as error:
            raise ServiceError(ServiceCode.REQUEST_MALFORMED, f"the payers configuration is invalid: {error}") from None
        return Reconciler(context, payers, settings.inbox_dir, timedelta(seconds=settings.timing_window_seconds),
                          lease=timedelta(seconds=settings.lease_seconds))

    @app.get("/v1/finance/discrepancies", tags=["finance"], responses=ERRORS)
    def discrepancies(
        who: Auth,
        payer: Annotated[Code | None, Query()] = None,
        hospital: Annotated[Code | None, Query()] = None,
        kind: Annotated[Word | None, Query(description="payer_only | engine_only | amount_differs")] = None,
        status: Annotated[Word, Query(description="open | resolved | cleared | all")] = "open",
        older_than_days: Annotated[int | None, Query(ge=0, le=3650)] = None,
        business_date: Annotated[IsoDate | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
    ) -> dict[str, Any]:
        """The discrepancy queue (finance staff), oldest first, filtered by payer, hospital, kind and age."""
        return list_discrepancies(context, finance_staff(who),
                                  Filters(payer, hospital, kind, status, older_than_days, business_date), limit, cursor)

    @app.post("/v1/finance/discrepancies/{discrepancy_id}/resolution", tags=["finance"], responses=ERRORS)
    def resolve_discrepancy(discrepancy_id: Annotated[int, Path(ge=1, le=2**63 - 1)], request: ResolutionRequest,
                            who: Auth) -> dict[str, Any]:
        """Resolve: accept_payer, correct (with amount), reverse or write_off, with a note. Nothing is edited:
        corrections are new ledger entries linked to the settlement, and appear in the day's totals."""
        return resolve(context, finance_staff(who), discrepancy_id, request.action, request.note, request.amount)

    @app.post("/v1/finance/reconciliations", tags=["finance"], responses=ERRORS)
    def run_reconciliation(request: ReconciliationRequest, who: Auth) -> dict[str, Any]:
        """Run (or rerun) the reconciliation of a payer and business date; one run record per pair."""
        finance_staff(who)
        return reconciler().run(request.payer, request.business_date).as_dict()

    @app.get("/v1/finance/reconciliations/{payer}/{business_date}", tags=["finance"], responses=ERRORS)
    def reconciliation(payer: Code, business_date: IsoDate, who: Auth) -> dict[str, Any]:
        finance_staff(who)
        return reconciler().result(payer, business_date).as_dict()

    @app.get("/v1/finance/reconciliations/{payer}/{business_date}/report.{extension}", tags=["finance"],
             responses=ERRORS)
    def reconciliation_report(payer: Code, business_date: IsoDate, extension: Extension, who: Auth) -> Response:
        """The run's report: `report.xlsx` (totals and discrepancies sheets) or `report.csv` (discrepancies)."""
        finance_staff(who)
        if extension not in ("xlsx", "csv"):
            raise ServiceError(ServiceCode.NOT_FOUND, "report.xlsx or report.csv")
        paths = run_report(context, payer, business_date, application.settings.reports_dir)
        chosen = paths[1] if extension == "xlsx" else paths[0]
        return Response(chosen.read_bytes(), media_type=MEDIA[extension],
                        headers={"Content-Disposition": f'attachment; filename="{chosen.name}"'})

    @app.post("/v1/finance/clearing/{month}", tags=["finance"], responses=ERRORS)
    def clearing(month: Annotated[str, Path(pattern=r"^[0-9]{4}-[0-9]{2}$")], who: Auth) -> dict[str, Any]:
        """The month's clearing statement: what each fund owes each hospital, net of reversals and corrections."""
        return run_clearing(context, month, application.settings.reports_dir, finance_staff(who).actor)

    @app.get("/v1/finance/clearing/{month}/statement.{extension}", tags=["finance"], responses=ERRORS)
    def clearing_file(month: Annotated[str, Path(pattern=r"^[0-9]{4}-[0-9]{2}$")], extension: Extension,
                      who: Auth) -> Response:
        actor = finance_staff(who).actor
        if extension not in ("xlsx", "csv"):
            raise ServiceError(ServiceCode.NOT_FOUND, "statement.xlsx or statement.csv")
        files = [PathLib(name) for name in run_clearing(context, month, application.settings.reports_dir,
                                                        actor)["files"]]
        chosen = files[1] if extension == "xlsx" else files[0]
        return Response(chosen.read_bytes(), media_type=MEDIA[extension],
                        headers={"Content-Disposition": f'attachment; filename="{chosen.name}"'})

    @app.post("/v1/admin/roster", tags=["admin"], response_model=RosterReportOut, responses=ERRORS)
    def roster(file: UploadFile, who: Auth) -> dict[str, Any]:
        """Import a civil-affairs roster CSV; rows with errors are reported and the valid rows kept."""
        data = file.file.read()
        return import_roster(context, who, file.filename or "roster.csv", data).as_dict()

    @app.post("/v1/admin/hospitals", tags=["admin"], responses=ERRORS)
    def hospitals(file: UploadFile, who: Auth, check: bool = False) -> dict[str, Any]:
        """Import a hospital register CSV (code,name,level,region,dialects): the diff with the hospitals recorded,
        applied unless `check`; the added hospitals' API keys are in `keys`, shown once."""
        return hospital_register.import_register(context, who, file.filename or "hospitals.csv", file.file.read(),
                                                 set(application.dialects.dialects), check=check).as_dict()

    def administrator(who: Caller) -> str:
        if who.kind != "admin":
            raise ServiceError(ServiceCode.FORBIDDEN, "administrators only")
        return who.actor


    @app.get("/v1/admin/tariffs", tags=["admin"], responses=ERRORS)
    def tariff_versions(who: Auth, region: Annotated[str | None, Query(pattern=r"^[0-9]{6}$")] = None) -> list[Any]:
        """Every tariff version with its state: draft, approved, scheduled, in force, ended or withdrawn."""
        return tariffs.list_versions(context, region, actor=administrator(who))

    @app.post("/v1/admin/tariffs", tags=["admin"], status_code=201, responses=ERRORS)
    def upload_tariff(file: UploadFile, who: Auth, note: Annotated[Note | None, Query()] = None
                      ) -> dict[str, Any]:
        """Record a version document (YAML or JSON, catalogue inline) as a draft; answers its diff against the
        version it would replace."""
        actor = administrator(who)
        origin = f"upload {file.filename or 'version'}"
        raw = tariffs.parse_upload(file.file.read(tariffs.MAX_UPLOAD_BYTES + 1), origin)
        return tariffs.import_document(context, raw, origin, actor, note=note)

    @app.post("/v1/admin/tariffs/catalogue", tags=["admin"], status_code=201, responses=ERRORS)
    def upload_catalogue(
        file: UploadFile, who: Auth, region: Annotated[str, Query(pattern=r"^[0-9]{6}$")],
        effective: Annotated[IsoDate | None, Query(description="default: the latest date in the file")] = None,
        version: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = None,
        note: Annotated[Note | None, Query()] = None,
    ) -> dict[str, Any]:
        """A catalogue CSV (code, name, class, share, share_by_category, price_cap, effective_from...) as a draft
        of the region's version in force on its date with the catalogue replaced; answers the diff: items
        added, removed, and changed in class, share or cap."""
        actor = administrator(who)
        data = file.file.read(tariffs.MAX_UPLOAD_BYTES + 1)
        return tariffs.import_catalogue(context, data, file.filename or "catalogue.csv", region, actor,
                                        effective=effective, version_name=version, note=note)

    @app.get("/v1/admin/tariffs/{version_id}", tags=["admin"], responses=ERRORS)
    def tariff_version(version_id: VersionId, who: Auth) -> dict[str, Any]:
        """One version: its document, state and history (the audit rows of each step)."""
        return tariffs.show_version(context, str(version_id), actor=administrator(who))

    @app.get("/v1/admin/tariffs/{version_id}/diff", tags=["admin"], responses=ERRORS)
    def tariff_diff(version_id: VersionId, who: Auth,
                    against: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None) -> dict[str, Any]:
        return tariffs.diff_versions(context, str(version_id), None if against is None else str(against),
                                     actor=administrator(who))

    @app.post("/v1/admin/tariffs/{version_id}/approval", tags=["admin"], responses=ERRORS)
    def approve_tariff(version_id: VersionId, who: Auth) -> dict[str, Any]:
        """Approve a draft; its author cannot."""
        return tariffs.approve(context, str(version_id), administrator(who))

    @app.post("/v1/admin/tariffs/{version_id}/activation", tags=["admin"], responses=ERRORS)
    def activate_tariff(version_id: VersionId, who: Auth) -> dict[str, Any]:
        """Put an approved version in force from its effective date (after today, Asia/Shanghai)."""
        return tariffs.activate(context, str(version_id), administrator(who))

    @app.post("/v1/admin/tariffs/{version_id}/withdrawal", tags=["admin"], responses=ERRORS)
    def withdraw_tariff(version_id: VersionId, request: WithdrawalRequest, who: Auth) -> dict[str, Any]:
        return tariffs.withdraw(context, str(version_id), administrator(who), request.reason)

    @app.post("/v1/admin/tariffs/{version_id}/simulation", tags=["admin"], responses=ERRORS)
    def simulate_tariff(version_id: VersionId, request: PeriodRequest, who: Auth) -> dict[str, Any]:
        """Re-run the period's settlements under the version; record nothing; per fund the change in totals and
        the most affected settlements."""
        return tariffs.simulate(context, str(version_id), request.from_, request.to, administrator(who),
                                top=request.top)

    @app.post("/v1/admin/settlements/verification", tags=["admin"], responses=ERRORS)
    def verify_settlements(request: PeriodRequest, who: Auth) -> dict[str, Any]:
        """Recompute the period's settlements under the versions they recorded; every difference is listed."""
        finance_staff(who)
        return tariffs.verify(context, request.from_, request.to, who.actor)

    return app
