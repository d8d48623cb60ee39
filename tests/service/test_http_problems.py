"""Every error the service answers is application/problem+json with a stable code: the framework's own too (an
unknown route, a method a route does not take, a body it cannot parse, malformed JSON) and the SOAP routes' GETs.
The control: FastAPI's default answers, which the service gave before, fail the same check."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI

from tests.service.conftest import LiveServer, Service, serve_on_loopback

PROBLEM = "application/problem+json"


def assert_problem_answer(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text[:300]
    assert response.headers.get("content-type", "").startswith(PROBLEM), (response.headers, response.text[:300])
    body: dict[str, object] = response.json()
    assert (body.get("status"), body.get("code"), body.get("type")) == (status, code, f"urn:settlement:error:{code}")
    assert body.get("title") and body.get("detail"), body
    return body


def test_the_frameworks_own_errors_are_problems_with_codes(service: Service, live: LiveServer) -> None:
    _, key = service.hospital()
    admin = service.staff("admin")
    with live.client(key) as client:
        assert_problem_answer(client.get("/v1/nowhere"), 404, "NOT_FOUND")
        assert_problem_answer(client.post("/health"), 405, "METHOD_NOT_ALLOWED")
        refused = client.delete("/v1/settlements")
        assert_problem_answer(refused, 405, "METHOD_NOT_ALLOWED")
        assert "POST" in refused.headers["allow"]  # Starlette names the first route matching the path
        for path in ("/v1/eligibility", "/v1/settlements"):  # FastAPI's body parsing, and the settle route's own
            malformed = client.post(path, content=b'{"id_number": ', headers={"Content-Type": "application/json"})
            problems = malformed.json()["problems"]
            assert_problem_answer(malformed, 422, "REQUEST_MALFORMED")
            assert [item["path"] for item in problems] == [""], problems  # not the character offset
        assert_problem_answer(client.get("/soap/no-such-dialect", params={"wsdl": ""}), 404, "NOT_FOUND")
        assert_problem_answer(client.get("/soap/standard/files/no-such.xsd"), 404, "NOT_FOUND")
        assert client.get("/soap/standard/files/schema.xsd").status_code == 200  # the route itself serves
    with live.client(admin) as client:
        unparsable = client.post("/v1/admin/roster", content=b"id_number,name\n",
                                 headers={"Content-Type": "multipart/form-data"})  # no boundary
        problem = assert_problem_answer(unparsable, 400, "REQUEST_UNREADABLE")
        assert "boundary" in str(problem["detail"])


@pytest.fixture
def bare() -> Iterator[str]:
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    url, server, thread = serve_on_loopback(app, "a bare FastAPI app")
    yield url
    server.should_exit = True
    thread.join(timeout=10)


def test_control_fastapis_own_answers_fail_the_check(bare: str) -> None:
    with httpx.Client(base_url=bare, timeout=10) as client:
        for response, status, code in ((client.get("/v1/nowhere"), 404, "NOT_FOUND"),
                                       (client.post("/health"), 405, "METHOD_NOT_ALLOWED")):
            assert response.status_code == status  # the same status, but JSON without a code
            with pytest.raises(AssertionError):
                assert_problem_answer(response, status, code)
