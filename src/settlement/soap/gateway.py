"""The SOAP 1.1 endpoint's pipeline, free of any web framework: bytes in, bytes out.

    size and compression -> encoding -> hardened parse -> SOAP envelope -> dialect (by the body element)
    -> WS-Security UsernameToken (digest, created window, nonce once) -> the hospital's dialect binding
    -> the message (the element itself, or an XML string inside it, parsed with the same rules)
    -> operation code -> XSD -> XSLT to the canonical request -> the same use case REST calls
    -> canonical result -> XSLT to the dialect's reply -> envelope in the dialect's encoding.

Everything before the use case is refused with a Client fault and records nothing. Business failures carry the
REST codes: as a SOAP fault, or in the dialect's own reply codes when its manifest says `errors: reply`.
Every exchange of an authenticated hospital is stored, masked, linked to its settlement: a refused message only as
its size, sha256 and a short masked prefix, a long envelope truncated (with the size and sha256 of the whole).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Annotated, Any, NamedTuple

from lxml import etree
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from settlement.db.bookkeeping import AsyncBookkeeping
from settlement.db.settling import AsyncPipelinedSettling, Companion
from settlement.domain.claim import SHANGHAI
from settlement.domain.errors import Problem, SettlementError
from settlement.domain.privacy import cut, mask_id_number, mask_id_numbers, mask_name
from settlement.problems import problem_body, status_of
from settlement.services.auth import Caller
from settlement.services.context import Context
from settlement.services.errors import ServiceCode, ServiceError, database_problem
from settlement.services.settlements import Companions, Reply, SettlementService
from settlement.services.soap_access import (
    SoapPrincipal,
    SoapPrincipals,
    exchange_companion,
    nonce_claim,
    nonce_replayed,
    purge_nonces_async,
    record_exchange,
    record_exchange_async,
    remember_nonce,
    remember_nonce_async,
)
from settlement.soap import canonical, wsse
from settlement.soap.dialects import Dialect, Registry
from settlement.soap.xmlsafe import Limits, XmlRejected, inflate, parse_body, parse_text
from settlement.wire.fields import Text
from settlement.wire.requests import CancelRequest, QuoteRequest, ReverseRequest, SettleRequest
from settlement.wire.responses import EligibilityRequest

log = logging.getLogger("settlement.soap")
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
FAULT_NS = "urn:settlement:soap:fault"
# What the envelope log keeps of one exchange (README "What is kept"): a message that was read, up to
# LOG_MAX_CHARS characters of each envelope (settings.soap_log_max_chars); a refused one, the first
# REFUSED_REQUEST_CHARS characters of its request element and REFUSED_REPLY_CHARS of the fault. Every row also
# has the size and sha256 of both envelopes as they went over the wire.
LOG_MAX_CHARS = 64 * 1024
REFUSED_REQUEST_CHARS = 256
REFUSED_REPLY_CHARS = 1024
_SECRET_ELEMENT = re.compile(r"(<(?:[\w-]+:)?(?:Password|Nonce)\b[^>]*>)[^<]*")
_PASSWORD_ATTRIBUTE = re.compile(r"(\bpassword=(?:\"|&quot;))[^\"&]*")


SettlementId = Annotated[str, Text(64, min_length=1)]


class ReverseOne(ReverseRequest):
    settlement_id: SettlementId


class GetOne(BaseModel):
    settlement_id: SettlementId


@dataclass
class Answer:
    status: int
    body: bytes
    content_type: str


@dataclass
class _Exchange:
    """What is known of a call so far: filled in as the pipeline goes, stored at the end when authenticated."""

    dialect: Dialect | None = None
    hospital_id: int | None = None
    code: str = ""
    operation: str = ""
    message_id: str | None = None
    settlement_id: str | None = None
    names: set[str] = field(default_factory=set)
    outcome: str = "ok"  # ok | replayed | the code of a failure answered in the dialect's reply
    envelope: etree._Element | None = None
    holder: etree._Element | None = None  # the element whose text is the message, for string dialects
    message: etree._Element | None = None
    answer: Answer | None = None  # set once the answer is made, when the exchange is to be stored
    logged: bool = False  # stored already, with the settlement it made (see Gateway._companions)
    raw: bytes = b""  # the body as received
    element: etree._Element | None = None  # the SOAP Body's request element
    read: bool = False  # the message was parsed, mapped and met its schema: stored in full (up to the cap)
    offloaded: bool = False  # a large message, worked on in threads (see Gateway.handle_async)


class FindPrincipal(NamedTuple):
    username: str


class RememberNonce(NamedTuple):
    hospital_id: int
    nonce: str


class Call(NamedTuple):
    operation: str
    caller: Caller
    request: dict[str, Any]
    companions: Companions | None = None  # the nonce and the log row, recorded with the settlement


Step = FindPrincipal | RememberNonce | Call


def _advance(steps: Generator[Step, Any, Answer], value: Any,
             error: Exception | None) -> tuple[Step | None, Answer | None]:
    """Resume the pipeline with a step's value (or its failure): (the next step, None) or (None, the answer)."""
    try:
        return (steps.throw(error) if error is not None else steps.send(value)), None
    except StopIteration as done:
        return None, done.value


@dataclass(frozen=True)
class AsyncIo:
    """The web application's pools, for the pipeline on the event loop (PostgreSQL)."""

    settling: AsyncPipelinedSettling
    bookkeeping: AsyncBookkeeping


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname


# Above this many bytes (as received) a message is worked on in threads rather than on the event loop: about 400
# lines of the standard dialect, some 10 ms of parsing and mapping; a 24-line bill is a twentieth of it.
DEFAULT_OFFLOAD_BYTES = 64 * 1024


class Gateway:
    def __init__(self, context: Context, registry: Registry, principals: SoapPrincipals, limits: Limits,
                 window: timedelta, log_max_chars: int = LOG_MAX_CHARS,
                 offload_bytes: int = DEFAULT_OFFLOAD_BYTES) -> None:
        self.context = context
        self.log_max_chars = log_max_chars
        self.registry = registry
        self.principals = principals
        self.limits = limits
        self.window = window
        self.offload_bytes = offload_bytes
        self.service = SettlementService(context)
        self._operations: dict[str, Callable[[Any, dict[str, Any]], tuple[Reply, str | None]]] = {
            "eligibility": self._eligibility, "quote": self._quote, "settle": self._settle,
            "reverse": self._reverse, "cancel": self._cancel, "get": self._get,
        }

    # The pipeline: one generator of steps, driven with blocking calls (`handle`) or on the event loop
    # (`handle_async`); the steps it yields are the only places where it waits for the database.

    def handle(self, raw: bytes, content_type: str | None, content_encoding: str | None,
               path_dialect: str | None = None) -> Answer:
        exchange = _Exchange(raw=raw)
        steps = self._pipeline(raw, content_type, content_encoding, path_dialect, exchange)
        step, answer = _advance(steps, None, None)
        while step is not None:
            try:
                value = self._do(step)
            except Exception as error:  # raised inside the pipeline, where the step was yielded
                step, answer = _advance(steps, None, error)
            else:
                step, answer = _advance(steps, value, None)
        if exchange.answer is not None:
            self._store(exchange)
        assert answer is not None
        return answer

    async def handle_async(self, raw: bytes, content_type: str | None, content_encoding: str | None,
                           path_dialect: str | None, io: AsyncIo) -> Answer:
        """The pipeline on the event loop, its database steps awaited. A large message (or a compressed one) is
        parsed, mapped, checked, answered and masked for the log in threads, between the steps: on the loop, where
        nothing preempts it, a 4,000-line quote held every other request of the worker for a quarter of a second.
        A small message stays on the loop, where it is faster (no hand-over to a thread)."""
        exchange = _Exchange(raw=raw, offloaded=len(raw) > self.offload_bytes
                             or (content_encoding or "identity").strip().lower() != "identity")
        steps = self._pipeline(raw, content_type, content_encoding, path_dialect, exchange, io)

        async def advance(value: Any, error: Exception | None) -> tuple[Step | None, Answer | None]:
            if exchange.offloaded:
                return await asyncio.to_thread(_advance, steps, value, error)
            return _advance(steps, value, error)

        step, answer = await advance(None, None)
        while step is not None:
            try:
                value = await self._do_async(step, io, exchange.offloaded)
            except Exception as error:
                step, answer = await advance(None, error)
            else:
                step, answer = await advance(value, None)
        if exchange.logged:
            await self._purge_nonces(io)
        elif exchange.answer is not None:
            await self._store_async(exchange, io)
        assert answer is not None
        return answer

    async def _purge_nonces(self, io: AsyncIo) -> None:
        """Now and then, as `remember_nonce_async` does, after a nonce claimed in a settlement's transaction."""
        try:
            await purge_nonces_async(self.context, io.bookkeeping, self.window)
        except Exception as error:  # the answer is given regardless; the next purge will do
            log.error("could not purge old WS-Security nonces: %s", type(error).__name__)

    def _do(self, step: Step) -> Any:
        if isinstance(step, FindPrincipal):
            return self.principals.find(step.username)
        if isinstance(step, RememberNonce):
            remember_nonce(self.context, step.hospital_id, step.nonce, self.window)
            return None
        return self._operations[step.operation](step.caller, step.request)

    async def _do_async(self, step: Step, io: AsyncIo, offloaded: bool = False) -> Any:
        if isinstance(step, FindPrincipal):
            known = self.principals.cached(step.username)
            return known[0] if known is not None else await asyncio.to_thread(self.principals.find, step.username)
        if isinstance(step, RememberNonce):
            await remember_nonce_async(self.context, io.bookkeeping, step.hospital_id, step.nonce, self.window)
            return None
        if step.operation == "settle" and not offloaded:
            return await self.service.settle_async(step.caller, self._model(SettleRequest, step.request),
                                                   io.settling, step.companions), None
        # The other operations are rarer: they run as they do for REST, in a thread.
        return await asyncio.to_thread(self._operations[step.operation], step.caller, step.request)

    def _pipeline(self, raw: bytes, content_type: str | None, content_encoding: str | None,
                  path_dialect: str | None, exchange: _Exchange,
                  io: AsyncIo | None = None) -> Generator[Step, Any, Answer]:
        try:
            answer = yield from self._steps(raw, content_type, content_encoding, path_dialect, exchange, io)
            outcome = exchange.outcome
        except (XmlRejected, ServiceError, SettlementError) as error:
            answer = fault(error, exchange.dialect)
            outcome = str(error.code)
        except (OperationalError, PoolTimeoutError) as error:  # the database, not a bug: a Server fault to retry
            trouble = database_problem(error)
            answer = fault(trouble, exchange.dialect)
            outcome = str(trouble.code)
        except Exception as error:  # a bug: a Server fault, and only the exception's type is logged
            log.error("unexpected %s while handling a SOAP request", type(error).__name__)
            problem = {"code": "INTERNAL_ERROR", "detail": "an unexpected error; retry with the same message id"}
            answer = render_fault(problem, exchange.dialect)
            outcome = "INTERNAL_ERROR"
        if exchange.hospital_id is not None and exchange.dialect is not None:
            exchange.answer, exchange.outcome = answer, outcome
        return answer

    def _steps(self, raw: bytes, content_type: str | None, content_encoding: str | None,
               path_dialect: str | None, exchange: _Exchange, io: AsyncIo | None) -> Generator[Step, Any, Answer]:
        envelope, _ = parse_envelope(raw, content_type, content_encoding, self.limits)
        exchange.envelope = envelope
        dialect, header, element = locate(self.registry, envelope, path_dialect)
        exchange.dialect, exchange.element = dialect, element

        token = wsse.read_token(header)
        principal: SoapPrincipal | None = yield FindPrincipal(token.username)
        wsse.check_token(token, principal.password if principal else None, self.context.clock(), self.window)
        assert principal is not None
        caller = principal.caller
        assert caller.hospital_id is not None
        if principal.disabled:
            raise ServiceError(ServiceCode.HOSPITAL_DISABLED, f"hospital {caller.hospital_code} is disabled: its "
                                                              "password is refused until an administrator enables it")
        if dialect.name not in principal.dialects:
            raise ServiceError(ServiceCode.DIALECT_NOT_BOUND,
                               f"hospital {caller.hospital_code} is not bound to the {dialect.name} dialect")
        # The nonce is remembered before any use case runs, and an exchange is stored only once it was; reading the
        # message first (it records nothing) lets a settlement on the event loop claim the nonce in its own
        # transaction instead of one of its own.
        nonce = RememberNonce(caller.hospital_id, token.nonce_key)
        try:
            code, operation, request = read_message(dialect, element, self.limits, exchange)
            exchange.read = True
        except Exception as error:
            yield nonce
            exchange.hospital_id = caller.hospital_id
            # Hostile or broken XML and unknown trade codes are Client faults in every dialect; a dialect that
            # answers its own failures tells a message its schema refuses in its reply codes.
            if (not isinstance(error, ServiceError) or dialect.manifest.errors == "fault"
                    or error.code != ServiceCode.MESSAGE_INVALID):
                raise
            # The dialect answers its own failures: an unknown trade code or a message its schema refuses is
            # told in its reply codes too, now that the caller is known.
            _, problem = problem_body(error)
            exchange.outcome = str(error.code)
            return render_reply(dialect, exchange.operation, problem["status"], problem, False, exchange.code,
                                exchange.message_id or "", None)
        # A large settlement is computed in a thread, by the blocking transaction (the same statements): its nonce
        # and log row are recorded as every other operation's are.
        companions = self._companions(exchange, nonce, code, request) \
            if io is not None and operation == "settle" and not exchange.offloaded else None
        if companions is None:
            yield nonce
        exchange.hospital_id = caller.hospital_id
        try:
            reply, settlement_id = yield Call(operation, caller, request, companions)
        except Exception as error:
            if isinstance(error, ServiceError) and error.code == ServiceCode.AUTH_NONCE_REPLAYED:
                exchange.hospital_id = None  # a replayed message is refused and not stored
                raise
            if companions is not None:  # whatever the failure, the message's nonce is spent, as when it comes first
                yield from _remember_late(nonce, exchange, outcome_unknown=_database_trouble(error))
            if not isinstance(error, ServiceError | SettlementError) or dialect.manifest.errors == "fault":
                raise
            status, problem = problem_body(error)
            reply, settlement_id = Reply(status, json.dumps(problem, ensure_ascii=False)), None
        else:
            if companions is not None and companions.committed:
                assert exchange.answer is not None  # made, and stored, with the settlement
                exchange.logged = True
                return exchange.answer
            if companions is not None:  # no settlement was made: the nonce is remembered on its own
                yield from _remember_late(nonce, exchange)
        answer = reply.json()
        if reply.status >= 400:
            exchange.outcome = str(answer.get("code", "ERROR"))
        elif reply.replayed:
            exchange.outcome = "replayed"
        exchange.settlement_id = settlement_id or answer.get("settlement_id") or request.get("settlement_id")
        return render_reply(dialect, operation, reply.status, answer, reply.replayed, code,
                            exchange.message_id or "", request)

    def _companions(self, exchange: _Exchange, nonce: RememberNonce, code: str,
                    request: dict[str, Any]) -> Companions:
        """A settlement on the event loop records the message's nonce (in its first round trip) and the exchange
        (with its write) in its own transaction: two statements fewer, each with its own commit, per settlement.
        The reply is made from the settlement's result before it commits, so the logged reply is the one sent."""
        assert exchange.dialect is not None
        dialect = exchange.dialect

        def after(reply: Reply) -> Companion:
            body = reply.json()
            exchange.settlement_id = body.get("settlement_id")
            exchange.answer = render_reply(dialect, "settle", reply.status, body, reply.replayed, code,
                                           exchange.message_id or "", request)
            return exchange_companion(self.context, self._exchange_row(exchange))

        return Companions(claim=nonce_claim(self.context, nonce.hospital_id, nonce.nonce), refused=nonce_replayed,
                          after=after)

    # The use cases, called exactly as REST calls them

    @staticmethod
    def _model(model: type[BaseModel], request: dict[str, Any]) -> Any:
        try:
            return model.model_validate(request)
        except ValidationError as error:
            problems = [{"path": ".".join(str(p) for p in item["loc"]),
                         "message": str(item["msg"]).removeprefix("Value error, ")}
                        for item in error.errors(include_input=False)]
            raise ServiceError(ServiceCode.REQUEST_MALFORMED,
                               "the request does not have the documented shape: "
                               + "; ".join(f"{p['path']}: {p['message']}" for p in problems[:3]),
                               [Problem(ServiceCode.REQUEST_MALFORMED, p["path"], p["message"])  # type: ignore[arg-type]
                                for p in problems]) from None

    def _eligibility(self, caller: Any, request: dict[str, Any]) -> tuple[Reply, str | None]:
        parsed: EligibilityRequest = self._model(EligibilityRequest, request)
        day: date = parsed.on or self.context.clock().astimezone(SHANGHAI).date()
        body = self.service.eligibility(caller, parsed.id_number, day)
        return Reply(200, json.dumps(body, ensure_ascii=False)), None

    def _quote(self, caller: Any, request: dict[str, Any]) -> tuple[Reply, str | None]:
        body = self.service.quote(caller, self._model(QuoteRequest, request))
        return Reply(200, json.dumps(body, ensure_ascii=False)), None

    def _settle(self, caller: Any, request: dict[str, Any]) -> tuple[Reply, str | None]:
        return self.service.settle(caller, self._model(SettleRequest, request)), None

    def _reverse(self, caller: Any, request: dict[str, Any]) -> tuple[Reply, str | None]:
        parsed: ReverseOne = self._model(ReverseOne, request)
        reply = self.service.reverse(caller, parsed.settlement_id,
                                     ReverseRequest(transaction_id=parsed.transaction_id, reason=parsed.reason))
        return reply, parsed.settlement_id

    def _cancel(self, caller: Any, request: dict[str, Any]) -> tuple[Reply, str | None]:
        return self.service.cancel(caller, self._model(CancelRequest, request)), None

    def _get(self, caller: Any, request: dict[str, Any]) -> tuple[Reply, str | None]:
        parsed: GetOne = self._model(GetOne, request)
        body = self.service.get(caller, parsed.settlement_id)
        return Reply(200, json.dumps(body, ensure_ascii=False)), parsed.settlement_id

    # The envelope log

    def _exchange_row(self, exchange: _Exchange) -> dict[str, object]:
        assert exchange.dialect is not None and exchange.hospital_id is not None and exchange.answer is not None
        reply_body = exchange.answer.body
        reply_text = reply_body.decode(exchange.dialect.reply_codec, "replace")
        names = exchange.names | _charref_forms(exchange.names, exchange.dialect.reply_codec)
        if exchange.read:
            request = kept(masked_request(exchange), self.log_max_chars, lambda text: text)
            reply = kept(reply_text, self.log_max_chars, lambda text: mask(text, names))
        else:  # refused before a valid message existed: a hostile body is not kept, only what tells it apart
            request = kept(refused_text(exchange), REFUSED_REQUEST_CHARS, lambda text: mask(
                text, exchange.names, exchange.dialect.personal_pattern if exchange.dialect else None))
            reply = kept(reply_text, REFUSED_REPLY_CHARS, lambda text: mask(text, names))
        return {
            "hospital_id": exchange.hospital_id, "dialect": exchange.dialect.name,
            "operation": exchange.operation or "-", "code": exchange.code or "-",
            "message_id": exchange.message_id, "settlement_id": exchange.settlement_id,
            "outcome": exchange.outcome[:64], "request": request, "reply": reply,
            "request_bytes": len(exchange.raw), "request_sha256": hashlib.sha256(exchange.raw).hexdigest(),
            "reply_bytes": len(reply_body), "reply_sha256": hashlib.sha256(reply_body).hexdigest()}

    def _store(self, exchange: _Exchange) -> None:
        try:  # masking included: the answer is given regardless
            record_exchange(self.context, self._exchange_row(exchange))
        except Exception as error:  # the answer is given regardless; losing a log row is not losing money
            log.error("could not store a SOAP exchange: %s", type(error).__name__)

    async def _store_async(self, exchange: _Exchange, io: AsyncIo) -> None:
        try:
            row = await asyncio.to_thread(self._exchange_row, exchange) if exchange.offloaded \
                else self._exchange_row(exchange)
            await record_exchange_async(self.context, io.bookkeeping, row)
        except Exception as error:
            log.error("could not store a SOAP exchange: %s", type(error).__name__)


def _remember_late(nonce: RememberNonce, exchange: _Exchange, *,
                   outcome_unknown: bool = False) -> Generator[Step, Any, None]:
    """The nonce of a settlement that committed nothing, remembered after it: refused (replayed, or the database
    failing), the message is answered with that fault and its exchange is not stored, as when it comes first.

    After a database fault (outcome_unknown) the settlement may have committed, and the nonce with it: then the
    nonce is found spent by this very message, and the database's fault (resend under the same message id) is the
    answer, not AUTH_NONCE_REPLAYED."""
    try:
        yield nonce
    except ServiceError as error:
        if outcome_unknown and error.code == ServiceCode.AUTH_NONCE_REPLAYED:
            return
        exchange.hospital_id = None
        raise
    except BaseException:
        exchange.hospital_id = None
        raise


def _database_trouble(error: Exception) -> bool:
    return isinstance(error, OperationalError | PoolTimeoutError) or (
        isinstance(error, ServiceError)
        and error.code in (ServiceCode.DATABASE_BUSY, ServiceCode.DATABASE_UNAVAILABLE))




def kept(text: str, limit: int, masked: Callable[[str], str]) -> str:
    """`text` masked, and when longer than `limit` characters, its first `limit` (of the masked text) and a
    note. Only a window a little longer than the limit is masked (a 1 MiB body costs what 4 KiB do); the digits
    running into the cut are dropped, so that what the window's edge split is never kept unmasked."""
    if len(text) <= limit:
        return masked(text)
    window = masked(text[:limit + 256])
    return f"{cut(window, limit)}…[{len(text):,} characters; the first {limit:,} kept]"


def refused_text(exchange: _Exchange) -> str:
    """A refused message as text: the message string a string dialect carries, else the request element (the
    envelope's WS-Security header tells nobody why it was refused)."""
    if exchange.holder is not None:
        return exchange.holder.text or ""
    if exchange.element is None:  # pragma: no cover - stored only once located
        return ""
    return etree.tostring(exchange.element, encoding="unicode")


def _charref_forms(names: set[str], codec: str) -> set[str]:
    """Names as the reply's encoding writes them when they hold characters it lacks (&#NNNN; references)."""
    return {name.encode(codec, "xmlcharrefreplace").decode(codec) for name in names} - names


def masked_request(exchange: _Exchange) -> str:
    """The request envelope as stored: serialised from its parsed tree (so character references are resolved and
    CDATA unwrapped before masking), with ID numbers, known names, passwords and the dialect's personal elements
    masked; a message carried as a string is masked as a document of its own first."""
    if exchange.envelope is None or exchange.dialect is None:  # pragma: no cover - stored only once parsed
        return ""
    personal = exchange.dialect.personal_pattern
    holder, message = exchange.holder, exchange.message
    original = holder.text if holder is not None else None
    if holder is not None and message is not None:
        holder.text = mask(etree.tostring(message, encoding="unicode"), exchange.names, personal)
    try:
        text = etree.tostring(exchange.envelope, encoding="unicode")
    finally:
        if holder is not None:
            holder.text = original
    return mask(text, exchange.names, personal)


def mask(text: str, names: set[str], personal: re.Pattern[str] | None = None) -> str:
    """A serialised envelope with ID numbers, known names, passwords, nonces and the text of the dialect's
    personal elements masked (in plain and in escaped inner XML alike)."""
    text = mask_id_numbers(text)
    for name in names:
        if name:
            text = text.replace(name, mask_name(name))
    if "Password" in text or "Nonce" in text:
        text = _SECRET_ELEMENT.sub(r"\1***", text)
    if "password=" in text:
        text = _PASSWORD_ATTRIBUTE.sub(r"\1***", text)
    if personal is not None:
        text = personal.sub(lambda match: match.group(1) + mask_personal(match.group(2)), text)
    return text


_IDENTIFIER = re.compile(r"\s*[0-9A-Za-z*]{10,}\s*")


def mask_personal(value: str) -> str:
    """The text of a personal element: an identifier (an ID number, valid or not, perhaps masked already) keeps
    its region and last four characters, anything else (a name) its first character."""
    if _IDENTIFIER.fullmatch(value):
        return mask_id_number(value.strip())
    return mask_name(value)



# The pipeline's steps, usable without a server (the dialect examples, `settlement soap` commands)

def parse_envelope(raw: bytes, content_type: str | None, content_encoding: str | None,
                   limits: Limits) -> tuple[etree._Element, str]:
    """The SOAP 1.1 Envelope of a raw body, and its decoded text."""
    data = inflate(raw, content_encoding, limits.max_bytes)
    envelope, text, _ = parse_body(data, content_type, limits)
    if envelope.tag == f"{{{SOAP12}}}Envelope":
        raise XmlRejected(ServiceCode.SOAP_VERSION_MISMATCH, "this endpoint speaks SOAP 1.1 only")
    if envelope.tag != f"{{{SOAP11}}}Envelope":
        raise XmlRejected(ServiceCode.SOAP_INVALID, "the body is not a SOAP 1.1 Envelope")
    return envelope, text


def locate(registry: Registry, envelope: etree._Element,
           path_dialect: str | None) -> tuple[Dialect, etree._Element | None, etree._Element]:
    """(dialect, Header, body element) of an envelope: the dialect is the one that answers the body element."""
    header = envelope.find(f"{{{SOAP11}}}Header")
    body = envelope.find(f"{{{SOAP11}}}Body")
    # One Body holding one request (WS-I Basic Profile): a second one would be ignored, not answered.
    elements = [child for child in body if isinstance(child.tag, str)] if body is not None else []
    if not elements:
        raise XmlRejected(ServiceCode.SOAP_INVALID, "the SOAP Body holds no request element")
    if len(elements) > 1 or len(envelope.findall(f"{{{SOAP11}}}Body")) > 1 \
            or len(envelope.findall(f"{{{SOAP11}}}Header")) > 1:
        raise XmlRejected(ServiceCode.SOAP_INVALID, "a SOAP envelope carries one Header at most and one Body "
                                                    "holding exactly one request element")
    element = elements[0]
    dialect = registry.for_element(element.tag)
    if dialect is None or (path_dialect is not None and dialect.name != path_dialect):
        raise XmlRejected(ServiceCode.DIALECT_UNKNOWN,
                          f"no dialect{' ' + path_dialect[:32] if path_dialect else ''} answers the body element "
                          f"{_local(element)[:64]!r}")
    return dialect, header, element


def read_message(dialect: Dialect, element: etree._Element, limits: Limits,
                 exchange: _Exchange | None = None) -> tuple[str, str, dict[str, Any]]:
    """(operation code, canonical operation, canonical request) of a body element."""
    spec = dialect.manifest.message
    message = element
    if spec.string is not None:
        holder = element.find(f"{{{dialect.manifest.namespace}}}{spec.string}")
        if holder is None:
            holder = element.find(spec.string)
        if holder is None or not (holder.text or "").strip():
            raise ServiceError(ServiceCode.MESSAGE_INVALID, f"{spec.string} is missing or empty")
        if exchange is not None:  # known before it is parsed: a refused message is logged by its text
            exchange.holder = holder
        message = parse_text(holder.text or "", limits, spec.string)
    if exchange is not None:
        exchange.message = message
    code = dialect.operation_code(element if spec.operation_on == "element" else message)
    if exchange is not None:
        exchange.code = code[:32]
        exchange.message_id = dialect.message_id(message)
    operation = dialect.operation(code)
    if operation is None:
        raise ServiceError(ServiceCode.OPERATION_UNKNOWN,
                           f"the {dialect.name} dialect has no operation {code[:32]!r}; known: "
                           f"{', '.join(sorted(dialect.manifest.operations))}")
    if exchange is not None:
        exchange.operation = operation
    # Mapped before the schema check, so that even a refused message's patient name is known to the masking of
    # the envelope log (a mapping only selects, it cannot be harmed by an invalid message).
    request = canonical.request_json(dialect.to_canonical(message, code, operation))
    if exchange is not None:
        exchange.message_id = str(request.get("transaction_id") or "")[:64] or exchange.message_id
        claim = request.get("claim")
        patient = claim.get("patient") if isinstance(claim, dict) else None
        if isinstance(patient, dict) and patient.get("name"):
            exchange.names.add(str(patient["name"]))
    problems = dialect.validate(message)
    if problems:
        raise ServiceError(ServiceCode.MESSAGE_INVALID,
                           f"the message does not match the {dialect.name} schema: {problems[0]}")
    return code, operation, request


def _envelope(payload: etree._Element) -> etree._Element:
    envelope = etree.Element(f"{{{SOAP11}}}Envelope", nsmap={"soap": SOAP11})
    etree.SubElement(envelope, f"{{{SOAP11}}}Body").append(payload)
    return envelope


def _serialise(envelope: etree._Element, dialect: Dialect | None, status: int) -> Answer:
    codec = dialect.reply_codec if dialect is not None else "utf-8"
    label = dialect.manifest.encoding if dialect is not None else "UTF-8"
    text = etree.tostring(envelope, encoding="unicode")
    data = f'<?xml version="1.0" encoding="{label}"?>\n{text}'.encode(codec, "xmlcharrefreplace")
    return Answer(status, data, f"text/xml; charset={label}")


def render_reply(dialect: Dialect, operation: str, status: int, body: dict[str, Any], replayed: bool, code: str,
                 message_id: str, request: dict[str, Any] | None = None) -> Answer:
    """The dialect's reply envelope to a use case's answer (a failure becomes a fault unless the dialect answers
    failures in its own reply codes)."""
    if status >= 400 and dialect.manifest.errors == "fault":
        return render_fault(body, dialect)
    result = canonical.result_xml(operation, status, body, replayed, request)
    payload = dialect.from_canonical(result, code, message_id)
    reply = dialect.manifest.reply
    if reply.element is not None and reply.string is not None:
        namespace = dialect.manifest.namespace
        wrapper = etree.Element(f"{{{namespace}}}{reply.element}", nsmap={"ns": namespace})
        # rpc/literal parts are unqualified (WS-I Basic Profile R2735); a document-style wrapper's are not.
        part = reply.string if dialect.manifest.soap_style == "rpc" else f"{{{namespace}}}{reply.string}"
        holder = etree.SubElement(wrapper, part)
        document = etree.tostring(payload, encoding="unicode")
        holder.text = f'<?xml version="1.0" encoding="{dialect.manifest.encoding}"?>{document}'
        payload = wrapper
    return _serialise(_envelope(payload), dialect, 200)


def fault(error: XmlRejected | ServiceError | SettlementError, dialect: Dialect | None = None) -> Answer:
    return render_fault(problem_body(error)[1], dialect)


def render_fault(problem: dict[str, Any], dialect: Dialect | None) -> Answer:
    code = str(problem.get("code", "INTERNAL_ERROR"))
    status = status_of(code)
    fault = etree.Element(f"{{{SOAP11}}}Fault")
    etree.SubElement(fault, "faultcode").text = "soap:Client" if status < 500 else "soap:Server"
    etree.SubElement(fault, "faultstring").text = f"{code}: {problem.get('detail', '')}"
    detail = etree.SubElement(etree.SubElement(fault, "detail"), f"{{{FAULT_NS}}}error", nsmap={"e": FAULT_NS})
    etree.SubElement(detail, f"{{{FAULT_NS}}}code").text = code
    etree.SubElement(detail, f"{{{FAULT_NS}}}status").text = str(status)
    problems = problem.get("problems") or []
    if problems:
        holder = etree.SubElement(detail, f"{{{FAULT_NS}}}problems")
        for item in problems:
            entry = etree.SubElement(holder, f"{{{FAULT_NS}}}problem")
            for name in ("code", "path", "message"):
                etree.SubElement(entry, f"{{{FAULT_NS}}}{name}").text = str(item.get(name, ""))
    # WS-I Basic Profile: a fault travels with HTTP 500; refused credentials with 401, an oversized body 413.
    http = 401 if status == 401 else 413 if status == 413 else 500
    return _serialise(_envelope(fault), dialect, http)
