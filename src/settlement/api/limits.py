"""The REST routes' body limit: a body is refused past its route's limit before it is held in memory.

A declared Content-Length over the limit is answered at once (413 BODY_TOO_LARGE, problem+json), nothing read; a
body sent without one (chunked) is counted as it arrives and refused at the message that passes the limit. The
refusal is raised from `receive` as an HTTPException, which FastAPI lets through its body parsing (JSON and
multipart alike) to the application's handler, so no endpoint runs and nothing is recorded.

Written here rather than taken from FastAPI's `max_body_size`: Starlette's limiter answers a declared oversize
body in plain text, replacing whatever the application answered (the problem+json, or a SOAP fault). SOAP keeps
its own limit, which also bounds an inflated body, and answers with a fault: its paths are left alone.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from settlement.problems import problem_body
from settlement.services.errors import ServiceCode, ServiceError

PROBLEM = "application/problem+json"


def too_large(limit: int) -> ServiceError:
    return ServiceError(ServiceCode.BODY_TOO_LARGE, f"the request body is larger than {limit} bytes")


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=too_large(limit).message)
        self.limit = limit


class BodyLimit:
    def __init__(self, app: ASGIApp, *, default: int, by_path: Mapping[str, int], exempt_prefix: str) -> None:
        self.app = app
        self.default = default
        self.by_path = dict(by_path)
        self.exempt_prefix = exempt_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path == self.exempt_prefix or path.startswith(self.exempt_prefix + "/"):
            await self.app(scope, receive, send)
            return
        limit = self.by_path.get(path, self.default)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            status, body = problem_body(too_large(limit))
            # The body is left unread: the connection closes after the answer instead of draining it.
            refusal = JSONResponse(body, status_code=status, media_type=PROBLEM, headers={"Connection": "close"})
            await refusal(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            # The HTTP server has already refused a malformed value; be strict anyway (digits only).
            return int(value) if value.isdigit() else None
    return None
