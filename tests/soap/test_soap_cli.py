"""The operator's SOAP commands: binding hospitals to dialects and issuing WS-Security passwords against a real
database (a password the command prints authenticates on the live server), and the offline `settlement soap`
commands on the dialect examples (no database)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from settlement.cli.main import app as cli
from settlement.paths import default_adapters_dir
from settlement.soap.dialects import load_registry
from tests.factories import TARIFFS
from tests.service.conftest import TEST_SECRET_KEY, LiveServer, Service, act_as, new_id_number
from tests.soap.conftest import soap_envelope, wsse_header
from tests.soap.test_wsse import eligibility_xml, fault_of, post

runner = CliRunner()
ADAPTERS = default_adapters_dir()
STANDARD_EXAMPLES = ADAPTERS / "standard" / "examples"
PASSWORD = re.compile(r"password \(shown once\): (\S+)")


@pytest.fixture
def cli_service(service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Service:
    """The command line pointed at the test's database, with the credentials key of the test's application (so
    that a password the command encrypts decrypts in the live server)."""
    monkeypatch.setenv("SETTLEMENT_DATABASE_URL", service.app.settings.database_url)
    monkeypatch.setenv("SETTLEMENT_TARIFFS", str(TARIFFS))
    monkeypatch.setenv("SETTLEMENT_DATA_DIR", str(tmp_path / "cli-data"))
    monkeypatch.setenv("SETTLEMENT_SECRET_KEY", TEST_SECRET_KEY)
    key = (service.app.settings.data_dir / "credentials.key").read_text(encoding="ascii").strip()
    monkeypatch.setenv("SETTLEMENT_CREDENTIALS_KEY", key)
    monkeypatch.delenv("SETTLEMENT_DEMO", raising=False)
    act_as(service, monkeypatch)  # an administrator's own key binds and issues
    return service


def printed_password(output: str) -> str:
    found = PASSWORD.findall(output)
    assert len(found) == 1, output
    return str(found[0])


def bound_dialects(service: Service, code: str) -> list[str]:
    from sqlalchemy import text

    with service.app.engine.connect() as connection:
        return sorted(row[0] for row in connection.execute(text(
            "SELECT d.dialect FROM hospital_dialects d JOIN hospitals h ON h.id = d.hospital_id WHERE h.code = :c"),
            {"c": code}))


def test_bind_and_soap_password_give_a_working_soap_login(cli_service: Service, live: LiveServer) -> None:
    code, _ = cli_service.hospital()
    known = set(cli_service.app.dialects.dialects)
    wanted = ["standard", "legacy-gbk"]
    bind = runner.invoke(cli, ["hospitals", "bind", code, *wanted])
    if set(wanted) <= known:
        assert bind.exit_code == 0, bind.output
        assert f"hospital {code} speaks: legacy-gbk, standard" in bind.output
        assert bound_dialects(cli_service, code) == sorted(wanted)
    else:  # the legacy dialect is not (yet) in adapters/: the whole binding is refused, nothing is bound
        assert bind.exit_code == 2 and "DIALECT_UNKNOWN" in bind.output, bind.output
        assert bound_dialects(cli_service, code) == []
        bind = runner.invoke(cli, ["hospitals", "bind", code, "standard"])
        assert bind.exit_code == 0, bind.output
    # Binding again is harmless.
    assert runner.invoke(cli, ["hospitals", "bind", code, "standard"]).exit_code == 0
    assert "standard" in bound_dialects(cli_service, code)

    issued = runner.invoke(cli, ["hospitals", "soap-password", code])
    assert issued.exit_code == 0, issued.output
    assert f"username {code}" in issued.output
    password = printed_password(issued.output)
    body = eligibility_xml(new_id_number())
    reply = post(live, soap_envelope(body, wsse_header(code, password, cli_service.clock())))
    assert reply.status_code == 200, reply.text
    # The planted fault: one character changed is refused.
    altered = password[:-1] + ("A" if password[-1] != "A" else "B")
    assert fault_of(post(live, soap_envelope(body, wsse_header(code, altered, cli_service.clock()))))[1] == \
        "AUTH_INVALID"


def test_bind_refuses_unknown_dialects_and_hospitals(cli_service: Service) -> None:
    code, _ = cli_service.hospital()
    unknown = runner.invoke(cli, ["hospitals", "bind", code, "standard", "klingon"])
    assert unknown.exit_code == 2, unknown.output
    assert "DIALECT_UNKNOWN" in unknown.output and "no dialect klingon" in unknown.output
    assert "standard" in unknown.output  # the known dialects are named
    assert bound_dialects(cli_service, code) == []  # all or nothing
    nobody = runner.invoke(cli, ["hospitals", "bind", "HNOSUCH", "standard"])
    assert nobody.exit_code == 2 and "NOT_FOUND" in nobody.output, nobody.output
    no_password = runner.invoke(cli, ["hospitals", "soap-password", "HNOSUCH"])
    assert no_password.exit_code == 2 and "NOT_FOUND" in no_password.output, no_password.output


def test_a_password_under_another_credentials_key_does_not_log_in(cli_service: Service, live: LiveServer,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The credentials key must be the server's: a password encrypted under another key cannot be checked."""
    from cryptography.fernet import Fernet

    code, _ = cli_service.hospital()
    assert runner.invoke(cli, ["hospitals", "bind", code, "standard"]).exit_code == 0
    monkeypatch.setenv("SETTLEMENT_CREDENTIALS_KEY", Fernet.generate_key().decode())
    password = printed_password(runner.invoke(cli, ["hospitals", "soap-password", code]).output)
    reply = post(live, soap_envelope(eligibility_xml(new_id_number()),
                                     wsse_header(code, password, cli_service.clock())))
    assert fault_of(reply) == (401, "AUTH_INVALID", 401)


# Offline: no database, no credentials


def test_soap_dialects_lists_every_dialect_with_its_operations() -> None:
    result = runner.invoke(cli, ["soap", "dialects"])
    assert result.exit_code == 0, result.output
    registry = load_registry(ADAPTERS)
    assert "standard" in registry.dialects
    for name, dialect in registry.dialects.items():
        assert name in result.output
        for code, operation in dialect.manifest.operations.items():
            assert f"{code}={operation}" in result.output, (name, code)


def test_soap_map_prints_the_canonical_request() -> None:
    example = STANDARD_EXAMPLES / "settle"
    result = runner.invoke(cli, ["soap", "map", str(example / "request.xml")])
    assert result.exit_code == 0, result.output
    expected = json.loads((example / "canonical.json").read_text(encoding="utf-8"))
    assert json.loads(result.stdout) == expected
    assert expected["request"]["transaction_id"] == "H61100200011-20240312101500-0001"
    # The planted fault: another example maps to another request.
    other = runner.invoke(cli, ["soap", "map", str(STANDARD_EXAMPLES / "quote" / "request.xml")])
    assert other.exit_code == 0 and json.loads(other.stdout) != expected


def test_soap_map_refuses_what_is_not_an_envelope(tmp_path: Path) -> None:
    not_soap = tmp_path / "claim.xml"
    not_soap.write_text('<?xml version="1.0" encoding="UTF-8"?><claim/>', encoding="utf-8")
    result = runner.invoke(cli, ["soap", "map", str(not_soap)])
    assert result.exit_code == 2 and "SOAP_INVALID" in result.output, result.output
    hostile = tmp_path / "doctype.xml"
    hostile.write_text('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>',
                       encoding="utf-8")
    refused = runner.invoke(cli, ["soap", "map", str(hostile)])
    assert refused.exit_code == 2 and "root:" not in refused.output, refused.output


def test_soap_render_prints_the_golden_reply_bytes() -> None:
    example = STANDARD_EXAMPLES / "settle"
    result = runner.invoke(cli, ["soap", "render", "standard", str(example / "result.json")])
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == (example / "reply.xml").read_bytes()
    # The planted fault: another result renders to other bytes.
    other = runner.invoke(cli, ["soap", "render", "standard", str(STANDARD_EXAMPLES / "quote" / "result.json")])
    assert other.exit_code == 0 and other.stdout_bytes != (example / "reply.xml").read_bytes()
    unknown = runner.invoke(cli, ["soap", "render", "klingon", str(example / "result.json")])
    assert unknown.exit_code == 2 and "DIALECT_UNKNOWN" in unknown.output, unknown.output
