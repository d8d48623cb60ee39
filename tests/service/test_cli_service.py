"""The operator's commands against a real database and a real server: hospitals and keys, migrations, and
`settlement serve --demo` run as a subprocess end to end."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, inspect, text
from typer.testing import CliRunner

from settlement.cli.main import app as cli
from tests.factories import ROOT, TARIFFS
from tests.service.conftest import LiveServer, Service, act_as, claim_body, free_port, new_id_number

KEY = re.compile(r"stl_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")
runner = CliRunner()


def printed_key(output: str) -> str:
    keys = KEY.findall(output)
    assert len(keys) == 1, output
    key: str = keys[0]
    return key


def test_hospitals_add_prints_a_key_that_works(cli_env: Service, live: LiveServer,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    act_as(cli_env, monkeypatch)
    code = f"H{new_id_number()[-8:]}"
    result = runner.invoke(cli, ["hospitals", "add", code, "商州区测试医院", "--level", "county", "--region", "611002"])
    assert result.exit_code == 0, result.output
    key = printed_key(result.output)
    body = {"transaction_id": "CLI-1", "claim": claim_body(code, "county", new_id_number())}
    with live.client(key) as client:
        settled = client.post("/v1/settlements", json=body)
        assert settled.status_code == 201, settled.text
        assert settled.json()["patient_pays"] == "550.00"
    with live.client(key[:-1] + ("A" if key[-1] != "A" else "B")) as client:
        assert client.post("/v1/settlements", json=body).status_code == 401
    again = runner.invoke(cli, ["hospitals", "add", code, "重复", "--level", "county", "--region", "611002"])
    assert again.exit_code == 2 and "already exists" in again.output
    bad_level = runner.invoke(cli, ["hospitals", "add", "HNEW1", "x", "--level", "clinic", "--region", "611002"])
    assert bad_level.exit_code == 2 and "REQUEST_MALFORMED" in bad_level.output


def test_keys_add_finance_and_admin(cli_env: Service, live: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    act_as(cli_env, monkeypatch)
    code, hospital_key = cli_env.hospital()
    with live.client(hospital_key) as client:
        assert client.post("/v1/settlements", json={"transaction_id": "K-1", "claim": claim_body(
            code, "county", new_id_number())}).status_code == 201
    person = f"张会计{new_id_number()[-6:]}"  # one person, one key: a name of this test's own
    result = runner.invoke(cli, ["keys", "add", "finance", person])
    assert result.exit_code == 0, result.output
    finance = printed_key(result.output)
    window = {"from": "2024-06-01", "to": "2024-06-30", "hospital": code}
    with live.client(finance) as client:
        listed = client.get("/v1/settlements", params=window)
        assert listed.status_code == 200, listed.text
        assert [item["transaction_id"] for item in listed.json()["items"]] == ["K-1"]
        refused = client.post("/v1/settlements", json={"transaction_id": "K-2", "claim": claim_body(
            code, "county", new_id_number())})
        assert refused.status_code == 403
    admin = printed_key(runner.invoke(cli, ["keys", "add", "admin", f"管理员{new_id_number()[-6:]}"]).output)
    roster = f"id_number,name,scheme,region,category,valid_from,valid_to\n{new_id_number()},测试,resident,611002," \
             "orphan,2024-01-01,\n"
    with live.client(admin) as client:
        uploaded = client.post("/v1/admin/roster", files={"file": ("r.csv", roster.encode(), "text/csv")})
        assert uploaded.status_code == 200 and uploaded.json()["accepted"] == 1
    wrong = runner.invoke(cli, ["keys", "add", "hospital", "someone"])
    assert wrong.exit_code == 2 and "kind must be finance or admin" in wrong.output


def schema(url: str) -> tuple[list[str], list[str], int]:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as connection:
            tables = sorted(inspect(connection).get_table_names())
            versions = [row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version"))]
            if engine.dialect.name == "postgresql":
                triggers = connection.execute(text(
                    "SELECT COUNT(*) FROM pg_trigger WHERE NOT tgisinternal")).scalar_one()
            else:
                triggers = connection.execute(text(
                    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger'")).scalar_one()
            return tables, versions, int(triggers)
    finally:
        engine.dispose()


def test_db_upgrade_is_idempotent(cli_env: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = cli_env.app.settings.database_url
    code, _ = cli_env.hospital()
    before = schema(url)
    for _ in range(2):
        result = runner.invoke(cli, ["db", "upgrade"])
        assert result.exit_code == 0, result.output
        assert "latest schema" in result.output
        assert schema(url) == before
    with cli_env.app.context.uow() as tx:
        assert tx.repo.hospital_by_code(code) is not None  # the data survived
    # On an empty database the first run creates the schema and the second changes nothing.
    fresh = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    monkeypatch.setenv("SETTLEMENT_DATABASE_URL", fresh)
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    created = schema(fresh)
    # The triggers: 7 append-only tables x 2 (UPDATE, DELETE), the 3 guards of tariff versions, and the 10 that
    # move the credentials generation (principals and hospitals: UPDATE, DELETE; SOAP passwords and dialect
    # bindings: INSERT too).
    assert "settlements" in created[0] and created[1] == before[1] and created[2] == 27
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    assert schema(fresh) == created


def test_serve_demo_end_to_end(tmp_path: Path) -> None:
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("SETTLEMENT_")}
    env["SETTLEMENT_TARIFFS"] = str(TARIFFS)
    executable = Path(sys.executable).parent / "settlement"
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen([str(executable), "serve", "--demo", "--port", str(port)], cwd=tmp_path,
                                   env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, log.read_text(encoding="utf-8")
                assert time.monotonic() < deadline, "the server did not answer /health in 30 s"
                try:
                    if httpx.get(f"{url}/health", timeout=1).json() == {"status": "ok"}:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            # The WSDL gives the address `--port` serves at (the workers see it too), whatever the Host header.
            for host in (f"127.0.0.1:{port}", "evil.example"):
                wsdl = httpx.get(f"{url}/soap", params={"wsdl": ""}, headers={"Host": host}, timeout=10).text
                assert f'location="{url}/soap"' in wsdl, (host, wsdl[-400:])
            keys = {}  # "hospital H61100200011 <key>", "admin <key>", "finance <key>"
            for line in (tmp_path / "var" / "demo-keys.txt").read_text(encoding="utf-8").splitlines():
                words = line.split()
                keys[words[0]] = words[-1]
            request = json.loads((ROOT / "examples" / "requests" / "settle-dibao-county.json").read_text("utf-8"))
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys['hospital']}"},
                              timeout=30) as client:
                settled = client.post("/v1/settlements", json=request)
                assert settled.status_code == 201, settled.text
                data = settled.json()
                assert data["patient_pays"] == "2949.74"
                assert data["categories"] == ["dibao_rural_a"]
                again = client.post("/v1/settlements", json=request)
                assert again.content == settled.content and again.headers["idempotent-replayed"] == "true"
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {keys['finance']}"}) as client:
                assert client.post("/v1/settlements", json=request).status_code == 403
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:  # pragma: no cover - only when shutdown hangs
                process.kill()
                process.wait()
    assert (tmp_path / "var" / "settlement.sqlite3").exists()
    served = log.read_text(encoding="utf-8")
    assert "serving on" in served
    assert request["claim"]["patient"]["id_number"] not in served  # the server's own log keeps the ID out
