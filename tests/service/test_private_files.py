"""What the service writes is its own (issue 15, items 13 and 14): the SQLite database and its -wal and -shm, the
secrets, the demo keys, the reports and the inbox are created 0600 in folders created 0700; `serve --demo` shows
the demo keys on its first start only; a weak SETTLEMENT_SECRET_KEY (a placeholder, short, repetitive) is refused
at start, as a credentials key that is not a Fernet key is."""

from __future__ import annotations

import os
import re
import secrets
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from settlement.bootstrap import build, weak_secret
from settlement.services.errors import ServiceError
from settlement.services.finance import run_clearing
from tests.factories import TARIFFS
from tests.service.conftest import TEST_SECRET_KEY, Service, free_port, settings_for

KEY = re.compile(r"stl_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def served_env(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("SETTLEMENT_")}
    env["SETTLEMENT_TARIFFS"] = str(TARIFFS)
    env.update(extra)
    return env


def serve_demo(folder: Path) -> tuple[str, str]:
    """`settlement serve --demo` in `folder` (a shell's umask of 022): start it, settle nothing, read /health and
    the file modes while it runs (the SQLite -wal and -shm exist only then), stop it; (its output, the modes)."""
    port = free_port()
    log = folder / f"serve-{port}.log"
    modes = ""
    with log.open("wb") as output:
        process = subprocess.Popen([str(Path(sys.executable).parent / "settlement"), "serve", "--demo", "--port",
                                    str(port)], cwd=folder, env=served_env(), stdout=output,
                                   stderr=subprocess.STDOUT, preexec_fn=lambda: os.umask(0o022))
        try:
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, log.read_text(encoding="utf-8")
                assert time.monotonic() < deadline, "the server did not answer in 30 s"
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            var = folder / "var"
            modes = " ".join(f"{path.name}={mode(path):o}" for path in sorted([var, *var.iterdir()]))
        finally:
            process.terminate()
            process.wait(timeout=15)
    return log.read_text(encoding="utf-8"), modes


def test_serve_demo_makes_private_files_and_shows_the_keys_once(tmp_path: Path) -> None:
    first, modes = serve_demo(tmp_path)
    var = tmp_path / "var"
    assert mode(var) == 0o700, modes
    for name in ("settlement.sqlite3", "settlement.sqlite3-wal", "settlement.sqlite3-shm", "secret.key",
                 "credentials.key", "demo-keys.txt"):
        assert f"{name}=600" in modes.split(), modes
    assert not [part for part in modes.split() if not part.endswith(("=600", "=700"))], modes
    keys = (var / "demo-keys.txt").read_text(encoding="utf-8")
    assert len(KEY.findall(first)) == 4 and all(key in first for key in KEY.findall(keys))
    # The second start only says where they are.
    second, _ = serve_demo(tmp_path)
    assert KEY.findall(second) == [] and keys.split()[-1] not in second, second
    assert f"demo keys: kept in {Path('var') / 'demo-keys.txt'}" in second


def test_a_database_made_with_a_looser_mode_is_made_private_at_start(tmp_path: Path) -> None:
    database = tmp_path / "shared" / "settlement.sqlite3"
    database.parent.mkdir()
    database.parent.chmod(0o755)  # explicit: a command run in this process before may have set the umask to 077
    database.touch()
    database.chmod(0o644)
    application = build(settings_for(f"sqlite:///{database}", tmp_path / "data"))
    try:
        assert mode(database) == 0o600
        assert mode(database.parent) == 0o755  # a folder the operator made keeps its mode
        assert mode(tmp_path / "data") == 0o700 and mode(tmp_path / "data" / "credentials.key") == 0o600
    finally:
        application.dispose()


def test_clearing_statements_are_private(service: Service, tmp_path: Path) -> None:
    reports = tmp_path / "new" / "reports"
    files = [Path(name) for name in run_clearing(service.app.context, "2024-06", reports, "admin:test")["files"]]
    for path in files:
        assert mode(path) == 0o600, path
        folder = path.parent
        while folder != tmp_path:
            assert mode(folder) == 0o700, folder
            folder = folder.parent


# Item 14: the key that signs quote ids


@pytest.mark.parametrize("value", ["CHANGE-ME", "change-me-to-48-random-characters", "test-secret", "bench",
                                   "x" * 31, "a" * 64, "ab" * 32, "0123" * 16, "Replace_Me_" + "k" * 40,
                                   "your-secret-key-" + secrets.token_urlsafe(32)])
def test_weak_secret_keys_are_refused(value: str, tmp_path: Path) -> None:
    assert weak_secret(value) is not None
    with pytest.raises(ServiceError, match="SETTLEMENT_SECRET_KEY is too weak"):
        build(settings_for(f"sqlite:///{tmp_path / 'db.sqlite3'}", tmp_path, secret_key=value), migrate=False)


def test_generated_keys_pass() -> None:
    for _ in range(500):
        assert weak_secret(secrets.token_urlsafe(48)) is None
        assert weak_secret(secrets.token_hex(32)) is None
        assert weak_secret(secrets.token_urlsafe(24)) is None  # 32 characters
    assert weak_secret(TEST_SECRET_KEY) is None


def test_a_weak_key_file_is_refused_too(tmp_path: Path) -> None:
    (tmp_path / "secret.key").write_text("changeme\n", encoding="utf-8")
    with pytest.raises(ServiceError, match=r"secret\.key is too weak"):
        build(settings_for(f"sqlite:///{tmp_path / 'db.sqlite3'}", tmp_path, secret_key=""), migrate=False)


def test_the_service_does_not_start_with_the_example_key(tmp_path: Path) -> None:
    result = subprocess.run([str(Path(sys.executable).parent / "settlement"), "db", "upgrade"], cwd=tmp_path,
                            env=served_env(SETTLEMENT_SECRET_KEY="CHANGE-ME"), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "SETTLEMENT_SECRET_KEY is too weak" in result.stderr.replace("\n", " ")
    assert not (tmp_path / "var" / "settlement.sqlite3").exists()  # refused before anything is made
