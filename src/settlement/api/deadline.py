"""A deadline for a whole request: a hospital's call (the REST cashier routes, SOAP) and readiness answer 503 within
their deadline whatever the database does.

A stalled database (its host frozen, the network black-holing packets) accepts connections and statements and
never answers: a statement's timeout is the server's to enforce, and the kernel still acknowledges every packet, so
nothing on the client's side ends the wait. Without this a request hung as long as the database stalled, and
readiness never said 503.

When a request's deadline passes before its answer has begun, the caller gets 503 DATABASE_UNAVAILABLE with
Retry-After at once, and the request is left to end by itself when the database answers (a statement waiting on a
stalled server, a thread in a blocking call): the outcome is unknown (the work may still commit), and resending
under the same key is safe. An answer already begun is let finish.
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


class _Exchange:
    __slots__ = ("expired", "started")

    def __init__(self) -> None:
        self.started = False  # the request's own answer has begun
        self.expired = False  # the deadline answered instead


class RequestDeadline:
    """A timer per request (no task of its own: the settle path stays as cheap as it was); when it fires before the
    answer has begun, the 503 is sent from a task of its own, and whatever the request says later goes nowhere."""

    def __init__(self, app: ASGIApp, deadline: Deadlines) -> None:
        self.app = app
        self.deadline = deadline
        self._answering: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        seconds = self.deadline(scope["path"]) if scope["type"] == "http" else None
        if seconds is None:
            await self.app(scope, receive, send)
            return
        exchange = _Exchange()
        loop = asyncio.get_running_loop()
        answering: list[asyncio.Task[None]] = []

        def expire() -> None:
            if exchange.started:
                return
            exchange.expired = True
            log.warning("%s %s passed its deadline of %g s: answered 503 (outcome unknown)", scope.get("method", "-"),
                        scope["path"], seconds)
            task = loop.create_task(late_answer(scope["path"], seconds)(scope, receive, send))
            self._answering.add(task)  # kept referenced until sent
            task.add_done_callback(self._answering.discard)
            answering.append(task)

        async def guarded(message: Message) -> None:
            if exchange.expired:  # answered by the deadline: what the request says now goes nowhere
                return
            if message["type"] == "http.response.start":
                exchange.started = True
            await send(message)

        timer = loop.call_later(seconds, expire)
        try:
            await self.app(scope, receive, guarded)
        except Exception as error:
            if not exchange.expired:
                raise
            log.info("a request answered at its deadline then ended with %s", type(error).__name__)
        finally:
            timer.cancel()
        for task in answering:  # the 503 fully sent before the request is done with
            await task
