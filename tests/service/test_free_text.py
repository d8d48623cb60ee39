"""Free text given by a person or a file is bounded, with a clear limit and code, on both databases: a hospital's
name of 300,000 characters was stored (SQLite keeps whatever it is given; PostgreSQL's column refused it with a
server error), and so would a note or a roster name. Names, notes, reasons and file names taken without a wire
model (the command line, uploaded files) follow the wire models' rule (settlement.domain.text): at most so many
characters, no control characters. Each check is shown at its limit (taken) and one past it (refused)."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from settlement.bootstrap import SYSTEM
from settlement.cli.main import app as cli
from settlement.domain.text import KEY_HOLDER_MAX, NAME_MAX, NOTE_MAX, PERSON_NAME_MAX
from settlement.services import tariffs
from settlement.services.admin import add_hospital, add_staff
from settlement.services.auth import Caller
from settlement.services.errors import ServiceCode, ServiceError
from settlement.services.finance import resolve
from settlement.services.roster import import_roster
from tests.service.conftest import LiveServer, Service, new_id_number, shipped_document

COUNTED = ("hospitals", "principals", "persons", "person_categories", "roster_imports", "tariff_versions",
           "audit_log")
HEADER = "id_number,name,scheme,region,category,valid_from,valid_to\n"
runner = CliRunner()


def counts(service: Service) -> dict[str, int]:
    with service.app.engine.connect() as connection:
        return {table: connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one() for table in COUNTED}


def refused(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(ServiceError) as error:
        call(*args, **kwargs)
    assert error.value.code == ServiceCode.REQUEST_MALFORMED, error.value
    return error.value.message


def new_code() -> str:
    return f"HF{secrets.token_hex(4).upper()}"


def test_a_hospital_name_is_bounded_from_the_command_line(cli_env: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    service = cli_env
    monkeypatch.setenv("SETTLEMENT_KEY", service.staff("admin"))  # the command acts as the key's holder
    before = counts(service)
    huge = runner.invoke(cli, ["hospitals", "add", new_code(), "院" * 300_000, "--level", "county",
                               "--region", "611002"])
    assert huge.exit_code == 2, huge.output[-500:]
    assert "REQUEST_MALFORMED" in huge.output and f"longer than {NAME_MAX} characters" in huge.output
    assert counts(service) == before
    taken = runner.invoke(cli, ["hospitals", "add", new_code(), "院" * NAME_MAX, "--level", "county",
                                "--region", "611002"])
    assert taken.exit_code == 0, taken.output


def test_names_and_codes_of_hospitals_and_key_holders(service: Service) -> None:
    before = counts(service)
    assert "longer than 128" in refused(add_hospital, service.app.context, new_code(), "院" * (NAME_MAX + 1),
                                        "county", "611002", "test")
    assert "U+0000" in refused(add_hospital, service.app.context, new_code(), "商州\x00医院", "county", "611002",
                               "test")
    assert "U+0085" in refused(add_hospital, service.app.context, "H\x85" + new_code(), "商州医院", "county",
                               "611002", "test")
    assert "longer than 32" in refused(add_hospital, service.app.context, "H" * 33, "商州医院", "county", "611002",
                                       "test")
    assert "longer than 64" in refused(add_staff, service.app.context, "admin", "a" * (KEY_HOLDER_MAX + 1), "test")
    assert "U+000A" in refused(add_staff, service.app.context, "finance", "alice\nadmin", "test")
    assert counts(service) == before
    add_hospital(service.app.context, new_code(), "院" * NAME_MAX, "county", "611002", "test")
    add_staff(service.app.context, "admin", "a" * KEY_HOLDER_MAX, "test")


def test_roster_names_are_bounded_row_by_row(service: Service) -> None:
    people = [new_id_number() for _ in range(4)]
    names = ["王" * PERSON_NAME_MAX, "王" * (PERSON_NAME_MAX + 1), "王\x00喆", "王\u009f喆"]
    data = HEADER + "".join(f"{person},{name},resident,611002,dibao,2024-01-01,\n"
                            for person, name in zip(people, names, strict=True))
    report = import_roster(service.app.context, SYSTEM, "names.csv", data.encode("utf-8")).as_dict()
    assert (report["accepted"], report["rejected"]) == (1, 3), report
    assert [error["reason"] for error in report["errors"]] == [
        f"name is longer than {PERSON_NAME_MAX} characters", "name holds a control character (U+0000)",
        "name holds a control character (U+009F)"]
    with service.app.engine.connect() as connection:
        stored = connection.execute(text("SELECT id_number, name FROM persons WHERE id_number IN (:a, :b, :c, :d)"),
                                    dict(zip("abcd", people, strict=True))).all()
    assert stored == [(people[0], names[0])]


def test_a_roster_field_past_the_csv_modules_limit_is_a_refusal(service: Service) -> None:
    """Python's csv module stops at a field of 128 KiB with csv.Error: that was a server error."""
    before = counts(service)
    data = HEADER + f"{new_id_number()},{'王' * 200_000},resident,611002,dibao,2024-01-01,\n"
    with pytest.raises(ServiceError) as error:
        import_roster(service.app.context, SYSTEM, "huge.csv", data.encode("utf-8"))
    assert error.value.code == ServiceCode.ROSTER_INVALID and "line 2" in error.value.message
    assert counts(service) == before


def test_an_uploaded_files_name_with_a_control_character_is_refused(service: Service, live: LiveServer) -> None:
    admin = service.staff("admin")
    data = (HEADER + f"{new_id_number()},王喆,resident,611002,dibao,2024-01-01,\n").encode("utf-8")
    before = counts(service)
    with live.client(admin) as client:
        # Written by hand: httpx would percent-encode the character in the file's name.
        body = (b'--B\r\nContent-Disposition: form-data; name="file"; filename="roster\x01.csv"\r\n'
                b"Content-Type: text/csv\r\n\r\n" + data + b"\r\n--B--\r\n")
        reply = client.post("/v1/admin/roster", content=body,
                            headers={"Content-Type": "multipart/form-data; boundary=B"})
        assert reply.status_code == 422 and reply.json()["code"] == "REQUEST_MALFORMED", reply.text
        assert "U+0001" in reply.json()["detail"]
        assert counts(service) == before
        assert client.post("/v1/admin/roster", files={"file": ("roster.csv", data, "text/csv")}).status_code == 200


def test_notes_and_reasons_are_bounded_and_keep_their_line_breaks(service: Service) -> None:
    context = service.app.context
    before = counts(service)
    document = shipped_document()
    document["version"] = f"free-text-{secrets.token_hex(3)}"
    document["effective"] = {"from": "2031-01-01"}
    assert "longer than 2000" in refused(tariffs.import_document, context, document, "test", "admin:alice",
                                         note="x" * (NOTE_MAX + 1))
    assert "U+0000" in refused(tariffs.import_document, context, document, "test", "admin:alice", note="a\x00b")
    assert "U+0000" in refused(tariffs.import_document, context, document, "upload a\x00.yaml", "admin:alice")
    finance = Caller(0, "finance", "finance:test", None)
    assert "longer than 2000" in refused(resolve, context, finance, 1, "write_off", "x" * (NOTE_MAX + 1))
    assert counts(service) == before
    draft = tariffs.import_document(context, document, "test", "admin:alice", note="第一行\n第二行\t完")
    version_id = str(draft["version"]["id"])
    assert "longer than 2000" in refused(tariffs.withdraw, context, version_id, "admin:bob", "x" * (NOTE_MAX + 1))
    assert "U+001B" in refused(tariffs.withdraw, context, version_id, "admin:bob", "\x1b[31mred")
    assert tariffs.withdraw(context, version_id, "admin:bob", "x" * NOTE_MAX)["status"] == "withdrawn"


def test_a_catalogue_field_past_the_csv_modules_limit_is_a_refusal(service: Service) -> None:
    data = ("code,name,class\n" + f"X1,{'药' * 200_000},A\n").encode("utf-8")
    with pytest.raises(ServiceError) as error:
        tariffs.import_catalogue(service.app.context, data, "huge.csv", "611000", "admin:alice",
                                 effective=None)
    assert error.value.code == ServiceCode.TARIFF_REJECTED
    assert any("line 2" in problem.path for problem in error.value.problems), error.value.problems
