"""Schemathesis, as a real client, over the OpenAPI document of a live server: no 5xx, replies as documented."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from settlement.bootstrap import build, prepare
from tests.service.conftest import Clock, LiveServer, Service, settings_for, start_server

SCHEMATHESIS = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")


def run_schemathesis(url: str, key: str | None, tmp_path: Path, examples: int = 25) -> subprocess.CompletedProcess[str]:
    command = [SCHEMATHESIS, "run", f"{url}/openapi.json", "--checks",
               "not_a_server_error,response_schema_conformance", "--max-examples", str(examples),
               "--seed", "20261129", "--no-color"]
    if key:
        command += ["-H", f"Authorization: Bearer {key}"]
    return subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=tmp_path, check=False)


@pytest.fixture
def sqlite_live(tmp_path: Path) -> Iterator[tuple[Service, LiveServer]]:
    """One database is enough for fuzzing the HTTP surface: the logic behind it is shared."""
    application = build(settings_for(f"sqlite:///{tmp_path / 'fuzz.sqlite3'}", tmp_path))
    prepare(application)
    running = start_server(application)
    yield Service(application, Clock(), tmp_path), running
    running.server.should_exit = True
    running.thread.join(timeout=10)
    application.engine.dispose()


def test_the_api_survives_schemathesis(sqlite_live: tuple[Service, LiveServer], tmp_path: Path) -> None:
    service, live = sqlite_live
    _, key = service.hospital("county")
    result = run_schemathesis(live.url, key, tmp_path)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "passed" in result.stdout


def test_schemathesis_does_find_a_server_error(tmp_path: Path) -> None:
    """The planted fault: an endpoint that fails on some inputs; the same command must report it."""
    import threading
    import time

    import uvicorn

    from tests.service.conftest import free_port

    broken = FastAPI()

    @broken.get("/divide")
    def divide(by: int) -> dict[str, float]:
        return {"result": 1 / by}  # ZeroDivisionError -> 500 when by == 0

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(broken, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        result = run_schemathesis(f"http://127.0.0.1:{port}", None, tmp_path, examples=50)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert result.returncode != 0
    assert "Server error" in result.stdout or "500" in result.stdout
