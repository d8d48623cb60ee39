"""The answer to an exception nothing else handled: a 500 problem+json, and one log line naming only the
exception's type (and a violated constraint's name).

Its message is never logged: it may hold ID numbers or names (a unique violation's DETAIL holds the key's values).
Starlette's own last handler answers too, but then raises the exception again so that the server logs it, and
uvicorn writes the whole traceback, message included, to its log. This middleware sits inside that handler and
does not raise further.
"""

from __future__ import annotations

import logging

from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("settlement.api")
PROBLEM = "application/problem+json"
INTERNAL_ERROR = {"type": "urn:settlement:error:INTERNAL_ERROR", "title": "Internal error", "status": 500,
                  "code": "INTERNAL_ERROR",
                  "detail": "an unexpected error; the outcome is unknown: resend with the same key"}


def log_unexpected(error: BaseException, where: str) -> None:
    diagnostics = getattr(getattr(error, "orig", None), "diag", None)
    constraint = getattr(diagnostics, "constraint_name", None)  # a name, never a value: safe to log
    log.error("unexpected %s while %s%s", type(error).__name__, where,
              f" (constraint {constraint})" if constraint else "")


class LastResort:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except ClientDisconnect:
            # The caller gave up (its timeout) before its body was read: not an error of ours, and nobody to answer.
            # Nothing was done for the request; if the caller resends it under its key, it is done then.
            log.info("client disconnected before its request was read: %s %s", scope.get("method", "-"),
                     scope.get("path", "-"))
        except Exception as error:  # a bug: answered, logged without its message, not raised to the server
            log_unexpected(error, "handling a request")
            if not started:
                await JSONResponse(INTERNAL_ERROR, status_code=500, media_type=PROBLEM)(scope, receive, send)
