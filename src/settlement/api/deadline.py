"""A deadline for a whole request: a hospital's call (the REST cashier routes, SOAP) and readiness answer 503 within
their deadline whatever the database does.

A stalled database (its host frozen, the network black-holing packets) accepts connections and statements and
never answers: a statement's timeout is the server's to enforce, and the kernel still acknowledges every packet, so
nothing on the client's side ends the wait. Without this a request hung as long as the database stalled, and
readiness never said 503.

The request runs in a task of its own. When its deadline passes before an answer has begun, the task is cancelled
and left to end by itself (psycopg cancels a statement in flight on the server, which can take a few seconds more;
a thread in a blocking call ends when the call does), and the caller gets 503 DATABASE_UNAVAILABLE with
Retry-After: the outcome is unknown (the work may still commit), and resending under the same key is safe. An
answer already begun is let finish.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from settlement.problems import problem_body
from settlement.services.errors import OUTCOME_UNKNOWN, ServiceCode, ServiceError

log = logging.getLogger("settlement.api")
PROBLEM = "application/problem+json"

# A request's deadline in seconds by its path, None for none (administration and finance: long by nature).
Deadlines = Callable[[str], float | None]


def deadlines(request_seconds: float, ready_seconds: float) -> Deadlines:
    """The hospitals' routes get `request_seconds`, readiness `ready_seconds`, the rest none."""
    hospital_prefixes = ("/v1/eligibility", "/v1/quotes", "/v1/settlements", "/v1/cancellations", "/soap")

    def deadline(path: str) -> float | None:
        if path == "/health/ready":
            return ready_seconds
        if path.startswith(hospital_prefixes):
            return request_seconds
        return None

    return deadline


def late_answer(path: str, seconds: float) -> Response:
    error = ServiceError(ServiceCode.DATABASE_UNAVAILABLE,
                         f"the database did not answer within {seconds:g} s; {OUTCOME_UNKNOWN}")
    if path.startswith("/soap"):
        from settlement.soap.gateway import fault  # the SOAP package imports the service layer: imported late

        answer = fault(error)
        return Response(answer.body, status_code=answer.status, headers={"Content-Type": answer.content_type,
                                                                         "Retry-After": "1"})
    status, body = problem_body(error)
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers={"Retry-After": "1"})


class RequestDeadline:
    def __init__(self, app: ASGIApp, deadline: Deadlines) -> None:
        self.app = app
        self.deadline = deadline
        self._abandoned: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        seconds = self.deadline(scope["path"]) if scope["type"] == "http" else None
        if seconds is None:
            await self.app(scope, receive, send)
            return
        started = expired = False

        async def guarded(message: Message) -> None:
            nonlocal started
            if expired:  # answered by the deadline: what the abandoned request says goes nowhere
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, guarded))
        done, _ = await asyncio.wait({task}, timeout=seconds)
        if done or started:
            await task  # its answer, or its exception for the handlers outside
            return
        expired = True
        task.cancel()
        self._abandoned.add(task)  # kept referenced until it has ended
        task.add_done_callback(self._ended)
        log.warning("%s %s passed its deadline of %g s: answered 503 (outcome unknown)", scope.get("method", "-"),
                    scope["path"], seconds)
        await late_answer(scope["path"], seconds)(scope, receive, send)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._abandoned.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.info("a request abandoned at its deadline ended with %s", type(task.exception()).__name__)
