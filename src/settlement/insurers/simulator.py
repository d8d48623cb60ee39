"""A payer simulator: the payer's statement service (statement.wsdl, SOAP 1.1) on loopback, and the payer's
statement files for file payers, built from the engine's own ledger and then damaged on purpose.

A payer that agrees with the engine sends exactly `engine_lines` of the day. `Faults` say how this one does not:

- `drop` rows: the payer lacks a row the engine has (a row from before the day's last `midnight_window`, so
  that the engine does not take it for a timing difference)              -> engine_only
- `shift` rows: the payer's amount differs by some fen                     -> amount_differs
- `extra` rows: the payer has a row of a settlement id the engine never issued -> payer_only
- `phantom_reversals` settlements: the payer reports a reversal (one row per fund, the negative of the
  settlement's amount) of a settlement the engine did not reverse on the day or either adjacent day
                                                                          -> payer_only, entry kind reversal
- `midnight` bookings: a booking (the rows of one settlement id and entry kind) of the last `midnight_window`
  of a day is left out of that day and reported on the next day instead  -> engine_only on the day, payer_only
  on the next, both flagged as cross-midnight timing (with a window no wider than the engine's timing window,
  10 minutes by default) and paired. The choice is a function of (seed, payer, day) and that day's ledger, so
  the next day's statement moves in exactly the rows the day's statement left out.
- `delay` seconds: every answer is late by that much;
- `timeout_first` calls: the first K calls are booked and their statement prepared, then the answer waits
  `hang_seconds` (longer than the client's timeout): the payer did the work, the client never heard.

Victims are drawn with a random generator seeded by (seed, payer, day), from disjoint pools: the same faults on
the same ledger damage the same rows, and every damaged row gives exactly one discrepancy
(`Applied.discrepancies`). The previous day's late bookings are never damaged further.

Idempotency as statement.wsdl promises: statements are prepared once per request id (in memory, thread-safe);
the same request id is answered the same statement and books nothing new. `bookings` counts the distinct
request ids booked per (payer, business date).
"""

from __future__ import annotations

import asyncio
import html
import logging
import os
import random
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from lxml import etree
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from settlement.files import private_dir
from settlement.insurers import statements
from settlement.insurers.config import PayerConfig
from settlement.insurers.statements import NAMESPACE, WSDL, StatementLine
from settlement.services.context import Context
from settlement.services.errors import ServiceCode, ServiceError
from settlement.services.reconciliation import day_bounds, engine_lines
from settlement.soap.xmlsafe import Limits, XmlRejected, inflate, parse_body

log = logging.getLogger("settlement.insurers.simulator")
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
PATH = "/statements"
LIMITS = Limits(max_bytes=64 * 1024, max_depth=16)  # a GetStatement request is a few hundred bytes
_POLL = 0.05  # how often a waiting answer checks whether its client is still there
Key = tuple[str, str]  # (settlement id, entry kind): one booking of the payer


@dataclass(frozen=True)
class Faults:
    """How the simulated payer disagrees with the engine (all off by default: a clean statement)."""

    drop: int = 0
    shift: int = 0
    extra: int = 0
    midnight: int = 0
    phantom_reversals: int = 0
    delay: float = 0.0
    timeout_first: int = 0
    seed: int = 0
    shift_fen: int | None = None  # by how much a shifted amount differs; None: 1 to 99 fen, drawn per row
    midnight_window: timedelta = timedelta(minutes=10)  # "the last minutes of the day" a midnight victim is from
    hang_seconds: float = 15.0  # how long a timed-out call waits: longer than the client's timeout

    def __post_init__(self) -> None:
        for name in ("drop", "shift", "extra", "midnight", "phantom_reversals", "timeout_first"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.delay < 0 or self.hang_seconds < 0:
            raise ValueError("delay and hang_seconds must not be negative")
        if self.shift_fen == 0:
            raise ValueError("shift_fen must not be zero: a shifted amount differs")
        if self.midnight_window <= timedelta(0):
            raise ValueError("midnight_window must be positive")

    def describe(self) -> str:
        parts = [f"{name.replace('_', '-')} {value}" for name, value in (
            ("drop", self.drop), ("shift", self.shift), ("extra", self.extra), ("midnight", self.midnight),
            ("phantom_reversals", self.phantom_reversals), ("timeout_first", self.timeout_first)) if value]
        if self.delay:
            parts.append(f"delay {self.delay:g}s")
        if self.timeout_first:
            parts.append(f"hang {self.hang_seconds:g}s")
        return (", ".join(parts) + f" (seed {self.seed})") if parts else "none (a clean statement)"


@dataclass(frozen=True)
class Applied:
    """What the faults did to one day's statement: the rows as the engine has them (and as the payer sent them)."""

    dropped: tuple[StatementLine, ...] = ()
    shifted: tuple[tuple[StatementLine, StatementLine], ...] = ()  # (the engine's row, the payer's row)
    extra: tuple[StatementLine, ...] = ()
    phantom_reversals: tuple[StatementLine, ...] = ()
    moved_out: tuple[StatementLine, ...] = ()  # this day's late rows, reported on the next day
    moved_in: tuple[StatementLine, ...] = ()  # the previous day's late rows, reported on this day

    def discrepancies(self) -> set[tuple[str, str, str, str]]:
        """(kind, settlement id, entry kind, fund) the reconciliation of this day should find: one per row."""
        found: set[tuple[str, str, str, str]] = set()
        for kind, lines in (("engine_only", self.dropped), ("engine_only", self.moved_out),
                            ("amount_differs", tuple(engine for engine, _ in self.shifted)),
                            ("payer_only", self.extra), ("payer_only", self.phantom_reversals),
                            ("payer_only", self.moved_in)):
            found.update((kind, line.settlement_id, line.entry_kind, line.fund) for line in lines)
        return found


@dataclass(frozen=True)
class Statement:
    payer: str
    business_date: date
    lines: tuple[StatementLine, ...]
    applied: Applied = field(default_factory=Applied)


@dataclass
class _Booked:
    payer: str
    business_date: date
    statement: Statement


class PayerSimulator:
    """The payers' side. `asgi()` is the statement service; `write_inbox` drops a file statement."""

    def __init__(self, context: Context, payers: Mapping[str, PayerConfig], faults: Faults | None = None) -> None:
        self.context = context
        self.payers = dict(payers)
        self.faults = faults or Faults()  # may be replaced between calls; prepared statements stay as they were
        self._lock = threading.Lock()
        self._prepared: dict[str, _Booked] = {}
        self._bookings: Counter[tuple[str, date]] = Counter()
        self._requests: list[str] = []

    # What tests and operators look at

    @property
    def bookings(self) -> dict[tuple[str, date], int]:
        """Distinct request ids booked per (payer, business date)."""
        with self._lock:
            return dict(self._bookings)

    @property
    def requests(self) -> list[str]:
        """The request id of every GetStatement call answered or timed out, in order (repeats included)."""
        with self._lock:
            return list(self._requests)

    def prepared(self, request_id: str) -> Statement | None:
        with self._lock:
            booked = self._prepared.get(request_id)
            return booked.statement if booked else None

    # Building a statement

    def payer(self, code: str) -> PayerConfig:
        found = self.payers.get(code)
        if found is None:
            raise ServiceError(ServiceCode.NOT_FOUND, f"no payer {code!r} here; known: {', '.join(self.payers)}")
        return found

    def statement(self, payer_code: str, day: date, faults: Faults | None = None) -> Statement:
        """The statement the payer sends for a business day: the ledger's rows of the day with the faults applied,
        plus the previous day's late bookings this payer moved across midnight. Books nothing."""
        payer = self.payer(payer_code)
        faults = faults or self.faults
        own = engine_lines(self.context, payer, day)
        previous = engine_lines(self.context, payer, day - timedelta(days=1)) \
            if faults.midnight or faults.phantom_reversals else []
        following = engine_lines(self.context, payer, day + timedelta(days=1)) if faults.phantom_reversals else []
        out_keys = _midnight_victims(faults, payer.code, day, own)
        in_keys = _midnight_victims(faults, payer.code, day - timedelta(days=1), previous)
        moved_out = [line for line in own if _key(line) in out_keys]
        moved_in = [_after_midnight(line, faults.midnight_window) for line in previous if _key(line) in in_keys]
        kept = [line for line in own if _key(line) not in out_keys]

        rng = random.Random(f"{faults.seed}/{payer.code}/{day.isoformat()}/rows")  # noqa: S311 - reproducible
        free = list(range(len(kept)))  # indices of kept rows no fault has taken yet

        # Phantom reversals: whole settlements (every fund of this payer), never reversed by the engine nearby
        # (a reversal on an adjacent day would make the payer's row a timing difference instead).
        reversed_ids = {line.settlement_id for line in (*previous, *own, *following) if line.entry_kind == "reversal"}
        candidates = sorted({kept[i].settlement_id for i in free
                             if kept[i].entry_kind == "settlement" and kept[i].settlement_id not in reversed_ids})
        phantom_ids = set(rng.sample(candidates, min(faults.phantom_reversals, len(candidates))))
        phantom_rows = [i for i in free if kept[i].settlement_id in phantom_ids and kept[i].entry_kind == "settlement"]
        phantoms = [StatementLine(kept[i].settlement_id, "reversal", kept[i].fund, kept[i].hospital_code,
                                  -kept[i].amount, _later(kept[i].occurred_at, day)) for i in phantom_rows]
        taken = set(phantom_rows)
        free = [i for i in free if i not in taken]

        # Dropped rows come from before the day's last minutes: a late row the payer lacks is a timing candidate
        # for the engine, which is what `midnight` is for.
        _, high = day_bounds(day)
        early = [i for i in free if not _late(kept[i], high - faults.midnight_window)]
        dropped_rows = set(rng.sample(early, min(faults.drop, len(early))))
        free = [i for i in free if i not in dropped_rows]
        shifted_rows = set(rng.sample(free, min(faults.shift, len(free))))
        shifted: list[tuple[StatementLine, StatementLine]] = []
        sent: list[StatementLine] = []
        for index, line in enumerate(kept):
            if index in dropped_rows:
                continue
            if index in shifted_rows:
                fen = faults.shift_fen if faults.shift_fen is not None else rng.randint(1, 99)
                changed = StatementLine(line.settlement_id, line.entry_kind, line.fund, line.hospital_code,
                                        line.amount + Decimal(fen).scaleb(-2), line.occurred_at)
                shifted.append((line, changed))
                line = changed
            sent.append(line)

        extras = _fabricated(rng, faults.extra, payer, day, kept,
                             {line.settlement_id for line in (*previous, *own, *following)})
        lines = (*sent, *phantoms, *extras, *moved_in)
        applied = Applied(tuple(kept[i] for i in sorted(dropped_rows)), tuple(shifted), tuple(extras),
                          tuple(phantoms), tuple(moved_out), tuple(moved_in))
        return Statement(payer.code, day, lines, applied)

    def book(self, request_id: str, payer_code: str, day: date) -> tuple[Statement, bool]:
        """The statement prepared for a request id (prepared and booked now if the id is new): (statement, new)."""
        with self._lock:  # one preparation at a time: a request id is never booked twice, even by racing calls
            booked = self._prepared.get(request_id)
            if booked is not None:
                if (booked.payer, booked.business_date) != (payer_code, day):
                    raise ServiceError(ServiceCode.IDEMPOTENCY_KEY_REUSED,
                                       f"request id {request_id!r} was used for the statement of {booked.payer} "
                                       f"for {booked.business_date}")
                return booked.statement, False
            statement = self.statement(payer_code, day)
            self._prepared[request_id] = _Booked(payer_code, day, statement)
            self._bookings[(payer_code, day)] += 1
            return statement, True

    def _call(self, request_id: str, payer_code: str, day: date) -> tuple[Statement, float]:
        """Book (or replay) a call; (statement, seconds to wait before answering)."""
        statement, new = self.book(request_id, payer_code, day)
        faults = self.faults
        with self._lock:
            number = len(self._requests)
            self._requests.append(request_id)
        wait = faults.delay + (faults.hang_seconds if number < faults.timeout_first else 0.0)
        log.info("GetStatement %s %s %s: %s, %d rows%s", request_id, payer_code, day,
                 "booked" if new else "replayed", len(statement.lines), f", answering in {wait:g}s" if wait else "")
        return statement, wait

    # File payers

    def write_inbox(self, payer_code: str, day: date, inbox: Path) -> tuple[Path, Statement]:
        """Write the day's statement where the reconciliation reads a file payer's statement (atomically: the
        reconciliation never reads half a file)."""
        payer = self.payer(payer_code)
        if payer.statement.source != "file":
            raise ServiceError(ServiceCode.REQUEST_MALFORMED,
                               f"payer {payer.code} sends its statement over SOAP, not as a file: serve it instead")
        statement = self.statement(payer.code, day)
        data = statements.write_csv(statement.lines) if payer.statement.format == "csv" \
            else statements.write_xml(payer.code, day, statement.lines)
        path = statements.inbox_file(inbox, payer, day)
        private_dir(path.parent)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return path, statement

    # The statement service

    def asgi(self) -> Starlette:
        async def wsdl(request: Request) -> Response:
            if "wsdl" not in request.query_params:
                return Response("the statement service: POST SOAP 1.1 here; its contract is at ?wsdl\n",
                                media_type="text/plain")
            address = f"{request.url.scheme}://{request.url.netloc}{PATH}"
            text = WSDL.read_text(encoding="utf-8").replace("SOAP_ADDRESS", html.escape(address, quote=True))
            return Response(text.encode("utf-8"), media_type="text/xml; charset=utf-8")

        async def soap(request: Request) -> Response:
            started = time.monotonic()
            try:
                body = inflate(await request.body(), request.headers.get("content-encoding"), LIMITS.max_bytes)
                request_id, payer_code, day = _read_request(body, request.headers.get("content-type"))
                statement, wait = await run_in_threadpool(self._call, request_id, payer_code, day)
            except ServiceError as error:
                return _fault(error)
            except Exception:
                log.exception("GetStatement failed")
                return _fault(None)
            reply = _reply(request_id, statement)
            await _pause(request, wait - (time.monotonic() - started))
            return Response(reply, media_type="text/xml; charset=utf-8")

        return Starlette(routes=[Route(PATH, wsdl, methods=["GET"]), Route(PATH, soap, methods=["POST"])])


def _key(line: StatementLine) -> Key:
    return line.settlement_id, line.entry_kind


def _late(line: StatementLine, since: datetime) -> bool:
    return line.occurred_at is not None and line.occurred_at >= since


def _midnight_victims(faults: Faults, payer: str, day: date, lines: Iterable[StatementLine]) -> set[Key]:
    """The bookings of the day's last minutes this payer reports on the next day: a function of (seed, payer, day)
    and the ledger, so that the day's and the next day's statements agree on them."""
    if not faults.midnight:
        return set()
    _, high = day_bounds(day)
    late = sorted({_key(line) for line in lines if _late(line, high - faults.midnight_window)})
    rng = random.Random(f"{faults.seed}/{payer}/{day.isoformat()}/midnight")  # noqa: S311 - reproducible
    return set(rng.sample(late, min(faults.midnight, len(late))))


def _after_midnight(line: StatementLine, window: timedelta) -> StatementLine:
    """A late row as the payer booked it: `window` later, which is past midnight."""
    occurred = line.occurred_at + window if line.occurred_at is not None else None
    return StatementLine(line.settlement_id, line.entry_kind, line.fund, line.hospital_code, line.amount, occurred)


def _later(occurred: datetime | None, day: date) -> datetime:
    """When a phantom reversal is said to have happened: a minute after the settlement, within the day."""
    low, high = day_bounds(day)
    moment = (occurred or low) + timedelta(minutes=1)
    return min(moment, high - timedelta(seconds=1))


def _fabricated(rng: random.Random, count: int, payer: PayerConfig, day: date, lines: list[StatementLine],
                known: set[str]) -> list[StatementLine]:
    """Rows of settlements the engine never issued, in the engine's id format."""
    hospitals = sorted({line.hospital_code for line in lines}) or ["H00000000000"]
    funds = sorted(payer.funds)
    low, _ = day_bounds(day)
    made: list[StatementLine] = []
    while len(made) < count:
        settlement_id = f"ST{day:%Y%m%d}{rng.getrandbits(48):012X}"
        if settlement_id in known:  # pragma: no cover - one chance in 2**48
            continue
        known.add(settlement_id)
        made.append(StatementLine(settlement_id, "settlement", rng.choice(funds), rng.choice(hospitals),
                                  Decimal(rng.randint(1_000, 99_999)).scaleb(-2),
                                  low + timedelta(seconds=rng.randrange(8 * 3600, 20 * 3600))))
    return made


def _text(parent: etree._Element, name: str) -> str:
    found = parent.find(f"{{{NAMESPACE}}}{name}")
    if found is None or not (found.text or "").strip():
        raise ServiceError(ServiceCode.MESSAGE_INVALID, f"GetStatementRequest lacks {name}")
    return (found.text or "").strip()


def _read_request(body: bytes, content_type: str | None) -> tuple[str, str, date]:
    """(request id, payer, business date) of a GetStatement envelope, parsed with the hardened parser."""
    root, _, _ = parse_body(body, content_type, LIMITS)
    if root.tag != f"{{{SOAP11}}}Envelope":
        raise XmlRejected(ServiceCode.SOAP_INVALID, "the body is not a SOAP 1.1 envelope")
    soap_body = root.find(f"{{{SOAP11}}}Body")
    operation = soap_body[0] if soap_body is not None and len(soap_body) else None
    if operation is None or operation.tag != f"{{{NAMESPACE}}}GetStatementRequest":
        raise ServiceError(ServiceCode.OPERATION_UNKNOWN,
                           f"the only operation here is GetStatement ({{{NAMESPACE}}}GetStatementRequest)")
    request_id = _text(operation, "requestId")
    if len(request_id) > 128:
        raise ServiceError(ServiceCode.MESSAGE_INVALID, "requestId is longer than 128 characters")
    payer = _text(operation, "payer")
    try:
        day = date.fromisoformat(_text(operation, "businessDate"))
    except ValueError:
        raise ServiceError(ServiceCode.MESSAGE_INVALID, "businessDate is not a date (YYYY-MM-DD)") from None
    return request_id, payer, day


def _reply(request_id: str, statement: Statement) -> bytes:
    def child(parent: etree._Element, name: str, value: str) -> None:
        etree.SubElement(parent, f"{{{NAMESPACE}}}{name}").text = value

    envelope = etree.Element(f"{{{SOAP11}}}Envelope", nsmap={"soap": SOAP11, "p": NAMESPACE})
    response = etree.SubElement(etree.SubElement(envelope, f"{{{SOAP11}}}Body"),
                                f"{{{NAMESPACE}}}GetStatementResponse")
    child(response, "requestId", request_id)
    child(response, "payer", statement.payer)
    child(response, "businessDate", statement.business_date.isoformat())
    for line in statement.lines:
        row = etree.SubElement(response, f"{{{NAMESPACE}}}row")
        child(row, "settlementId", line.settlement_id)
        child(row, "entryKind", line.entry_kind)
        child(row, "fund", line.fund)
        child(row, "hospitalCode", line.hospital_code)
        child(row, "amount", f"{line.amount:.2f}")
        if line.occurred_at is not None:
            child(row, "occurredAt", line.occurred_at.isoformat())
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


def _fault(error: ServiceError | None) -> Response:
    """A SOAP 1.1 fault carrying the stable code (HTTP 500, as WS-I Basic Profile has it; 413 for a large body);
    None: the payer's own failure (a Server fault)."""
    from settlement.soap.gateway import fault, render_fault

    answer = fault(error) if error is not None else render_fault(
        {"code": "INTERNAL_ERROR", "detail": "the payer could not prepare the statement"}, None)
    return Response(answer.body, status_code=answer.status, media_type=answer.content_type)


async def _pause(request: Request, seconds: float) -> None:
    """Wait before answering; stop early when the client has gone (its answer would be lost anyway)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(_POLL, left))
        if await request.is_disconnected():
            return
