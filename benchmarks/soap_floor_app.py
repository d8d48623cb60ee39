"""A floor for the SOAP benchmark: what issue 4 requires of a SOAP settlement besides REST's work, with the
dialect's mappings taken away.

`POST /soap-floor` is added to the real service (same process, pools and settlement as `/soap` and REST) and takes
the same standard-dialect `SettleRequest` envelope as `/soap`. It does what every SOAP call must do whatever maps
it: read the body under its limit, the hardened parse, find the dialect, read and check the WS-Security
UsernameToken (digest, created window), check the message against the dialect's XSD, settle through the same use
case as REST, and store the nonce and both envelopes masked, in the settlement's transaction as `/soap` does.
What it leaves out is the mapping: the request is not mapped (the first message is mapped for real, and each
later message reuses that request under its own message id and patient, read with two `find` calls), nothing is
validated by the request model, and the reply is the first reply's bytes (nothing built). The answer is not meant
to be right: the floor answers how fast SOAP could be if mapping a message and its reply cost nothing.

Started by `python -m benchmarks.bench_soap --floor`, which loads it in turn with REST and `/soap`
(docs/performance.md).
"""

from __future__ import annotations

import asyncio
import hashlib

from fastapi import FastAPI, Request, Response

from settlement.api.app import create_app
from settlement.api.asgi import freeze_startup_heap
from settlement.bootstrap import build
from settlement.config import Settings
from settlement.db.settling import Companion
from settlement.services.settlements import Companions, Reply
from settlement.services.soap_access import (
    SoapPrincipal,
    exchange_companion,
    nonce_claim,
    nonce_replayed,
    remember_nonce_async,
)
from settlement.soap import wsse
from settlement.soap.gateway import Answer, AsyncIo, Gateway, locate, mask, parse_envelope, read_message, render_reply
from settlement.wire.requests import SettleRequest

STANDARD = "urn:settlement:soap:v1"


def create() -> FastAPI:
    app = create_app(build(Settings(), migrate=False))
    gateway: Gateway = app.state.soap
    io: AsyncIo | None = app.state.soap_io
    assert io is not None, "the SOAP floor runs on PostgreSQL"
    template: list[tuple[SettleRequest, Answer]] = []

    @app.post("/soap-floor", include_in_schema=False)
    async def soap_floor(request: Request) -> Response:
        raw = await request.body()
        if len(raw) > gateway.limits.max_bytes:
            return Response(status_code=413)
        envelope, text = parse_envelope(raw, request.headers.get("content-type"),
                                        request.headers.get("content-encoding"), gateway.limits)
        dialect, header, element = locate(gateway.registry, envelope, None)
        token = wsse.read_token(header)
        known = gateway.principals.cached(token.username)
        principal: SoapPrincipal | None = known[0] if known is not None else \
            await asyncio.to_thread(gateway.principals.find, token.username)
        wsse.check_token(token, principal.password if principal else None, gateway.context.clock(), gateway.window)
        assert principal is not None and principal.caller.hospital_id is not None
        problems = dialect.validate(element)
        if problems:
            return Response(problems[0], status_code=400, media_type="text/plain")
        message_id = element.findtext(f"{{{STANDARD}}}messageId") or ""
        id_number = element.findtext(f"{{{STANDARD}}}claim/{{{STANDARD}}}patient/{{{STANDARD}}}idNumber") or ""
        if not template:  # the first message is mapped for real; its request and reply serve every later one
            await remember_nonce_async(gateway.context, io.bookkeeping, principal.caller.hospital_id,
                                       token.nonce_key, gateway.window)
            code, operation, mapped = read_message(dialect, element, gateway.limits)
            model = SettleRequest.model_validate(mapped)
            reply = await gateway.service.settle_async(principal.caller, model, io.settling)
            answer = render_reply(dialect, operation, reply.status, reply.json(), reply.replayed, code, message_id,
                                  mapped)
            template.append((model, answer))
            return Response(answer.body, status_code=answer.status, headers={"Content-Type": answer.content_type})
        model, answer = template[0]
        claim = model.claim
        this = model.model_copy(update={"transaction_id": message_id, "claim": claim.model_copy(
            update={"patient": claim.patient.model_copy(update={"id_number": id_number})})})
        names = {claim.patient.name}
        caller = principal.caller
        assert caller.hospital_id is not None
        hospital_id = caller.hospital_id

        def logged(reply: Reply) -> Companion:
            return exchange_companion(gateway.context, {
                "hospital_id": hospital_id, "dialect": dialect.name, "operation": "settle",
                "code": "SettleRequest", "message_id": message_id,
                "settlement_id": reply.json().get("settlement_id"), "outcome": "ok", "request": mask(text, names),
                "reply": mask(answer.body.decode("utf-8"), names), "request_bytes": len(raw),
                "request_sha256": hashlib.sha256(raw).hexdigest(), "reply_bytes": len(answer.body),
                "reply_sha256": hashlib.sha256(answer.body).hexdigest()})

        # The nonce and the log row go in the settlement's transaction, as /soap records them.
        companions = Companions(nonce_claim(gateway.context, hospital_id, token.nonce_key), nonce_replayed, logged)
        reply = await gateway.service.settle_async(caller, this, io.settling, companions)
        assert companions.committed, reply.body
        return Response(answer.body, status_code=answer.status, headers={"Content-Type": answer.content_type})

    freeze_startup_heap()  # as the service's workers do
    return app
