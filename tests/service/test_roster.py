"""Importing the civil-affairs roster over HTTP and from the command line: bad rows reported with the ID
masked, valid rows kept, re-imports change nothing, GBK and rare characters accepted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from settlement.cli.main import app as cli
from tests.service.conftest import LiveServer, Service, act_as, new_id_number

HEADER = "id_number,name,scheme,region,category,valid_from,valid_to\n"
COUNTED = ("persons", "person_categories", "roster_imports", "audit_log")


def counts(service: Service) -> dict[str, int]:
    with service.app.engine.connect() as connection:
        return {table: connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one() for table in COUNTED}


def categories_of(service: Service, id_number: str) -> list[tuple[str, str, str | None]]:
    with service.app.engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT c.category, c.valid_from, c.valid_to FROM person_categories c JOIN persons p "
            "ON p.id = c.person_id WHERE p.id_number = :i ORDER BY c.valid_from"), {"i": id_number})
        return [(category, str(start), str(end) if end else None) for category, start, end in rows]


def name_of(service: Service, id_number: str) -> str | None:
    with service.app.engine.connect() as connection:
        name: str | None = connection.execute(text("SELECT name FROM persons WHERE id_number = :i"),
                                              {"i": id_number}).scalar_one_or_none()
        return name


def masked(id_number: str) -> str:
    return id_number[:6] + "********" + id_number[-4:]


def upload(client: httpx.Client, data: bytes, filename: str = "roster.csv") -> httpx.Response:
    return client.post("/v1/admin/roster", files={"file": (filename, data, "text/csv")})


def mixed_roster() -> tuple[str, list[str], dict[int, tuple[str, str]]]:
    """A roster with two good people (three rows) and five bad rows; returns (csv, good IDs, bad line -> (ID,
    reason fragment))."""
    good_a, good_b = new_id_number(), new_id_number()
    bad_check = new_id_number()
    bad_check = bad_check[:17] + ("0" if bad_check[17] != "0" else "1")
    unknown, bad_date, backwards, short = (new_id_number() for _ in range(4))
    lines = [
        f"{good_a},王喆,resident,611002,dibao_rural_b,2022-01-01,2024-06-30",  # line 2
        f"{good_a},王喆,resident,611002,low_income,2024-07-01,",  # line 3
        f"{bad_check},张三,resident,611002,low_income,2024-01-01,",  # line 4
        f"{unknown},李四,resident,611002,millionaire,2024-01-01,",  # line 5
        f"{bad_date},王五,resident,611002,orphan,2024-13-01,",  # line 6
        f"{good_b},赵六,resident,611002,orphan,2024-01-01,",  # line 7
        f"{backwards},钱七,resident,611002,orphan,2024-05-01,2024-04-01",  # line 8
        f"{short},孙八,resident,611002,orphan",  # line 9
    ]
    bad = {4: (bad_check, "check character"), 5: (unknown, "unknown category"), 6: (bad_date, "YYYY-MM-DD"),
           8: (backwards, "before valid_from"), 9: (short, "columns")}
    return HEADER + "\n".join(lines) + "\n", [good_a, good_b], bad


def test_upload_reports_bad_rows_and_keeps_the_good_ones(service: Service, live: LiveServer) -> None:
    text_csv, (good_a, good_b), bad = mixed_roster()
    admin = service.staff("admin")
    before = counts(service)
    with live.client(admin) as client:
        response = upload(client, text_csv.encode("utf-8"))
        assert response.status_code == 200, response.text
        report: dict[str, Any] = response.json()
        assert (report["rows"], report["accepted"], report["rejected"]) == (8, 3, 5)
        assert report["changed"] == 5 and report["already_imported"] is False  # 2 persons + 3 category rows
        assert [error["line"] for error in report["errors"]] == sorted(bad)
        for error in report["errors"]:
            id_number, reason = bad[error["line"]]
            assert reason in error["reason"], error
            assert error["person"] == masked(id_number)
        for id_number, _ in bad.values():
            assert id_number not in response.text
        assert counts(service)["audit_log"] == before["audit_log"] + 1
        after_first = counts(service)

        # The valid rows are in force: the categories on either side of 1 July, and the orphan.
        june = client.post("/v1/eligibility", json={"id_number": good_a, "on": "2024-06-30"}).json()
        july = client.post("/v1/eligibility", json={"id_number": good_a, "on": "2024-07-01"}).json()
        assert [c["code"] for c in june["categories"]] == ["dibao_rural_b"]
        assert [c["code"] for c in july["categories"]] == ["low_income"]
        assert categories_of(service, good_b) == [("orphan", "2024-01-01", None)]
        for id_number, _ in bad.values():
            assert name_of(service, id_number) is None

        # The same file again changes nothing and records nothing.
        again = upload(client, text_csv.encode("utf-8"))
        assert again.status_code == 200
        assert (again.json()["changed"], again.json()["already_imported"]) == (0, True)
        assert again.json()["rejected"] == 5
        assert counts(service) == after_first

        # A real change (the orphan row now ends) is one change and one audit row.
        changed = text_csv.replace(f"{good_b},赵六,resident,611002,orphan,2024-01-01,",
                                   f"{good_b},赵六,resident,611002,orphan,2024-01-01,2024-12-31")
        third = upload(client, changed.encode("utf-8")).json()
        assert (third["changed"], third["already_imported"]) == (1, False)
        assert categories_of(service, good_b) == [("orphan", "2024-01-01", "2024-12-31")]
        assert counts(service)["audit_log"] == after_first["audit_log"] + 1


def test_roster_upload_needs_an_admin_key(service: Service, live: LiveServer) -> None:
    person = new_id_number()
    data = (HEADER + f"{person},测试,resident,611002,orphan,2024-01-01,\n").encode("utf-8")
    _, hospital_key = service.hospital()
    before = counts(service)
    for key, status, code in ((hospital_key, 403, "FORBIDDEN"), (service.staff("finance"), 403, "FORBIDDEN"),
                              (None, 401, "AUTH_REQUIRED"), ("stl_x_y", 401, "AUTH_INVALID")):
        with live.client(key) as client:
            response = upload(client, data)
        assert response.status_code == status and response.json()["code"] == code, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
    assert counts(service)["persons"] == before["persons"]
    assert name_of(service, person) is None
    with live.client(service.staff("admin")) as client:
        assert upload(client, data).status_code == 200
    assert name_of(service, person) == "测试"


def test_a_file_that_is_not_a_roster_is_refused(service: Service, live: LiveServer) -> None:
    admin = service.staff("admin")
    before = counts(service)
    with live.client(admin) as client:
        wrong_header = upload(client, b"id,name\n1,2\n")
        not_text = upload(client, b"\xff\xfe\x00\x81\x00\x00")
    for response in (wrong_header, not_text):
        assert response.status_code == 422 and response.json()["code"] == "ROSTER_INVALID", response.text
    assert counts(service) == before


def test_gbk_and_rare_characters(service: Service, live: LiveServer) -> None:
    gbk_person, utf8_person, astral_person = (new_id_number() for _ in range(3))
    # 堃 is outside GB2312 but inside GBK: a real civil-affairs export in GBK carries it.
    gbk_name, utf8_name, astral_name = "李堃", "王喆", "𠮷田"
    gbk = (HEADER + f"{gbk_person},{gbk_name},resident,611002,tekun_dispersed,2020-07-01,\n").encode("gbk")
    with pytest.raises(UnicodeDecodeError):
        gbk.decode("utf-8")
    with pytest.raises(UnicodeEncodeError):
        gbk_name.encode("gb2312")
    utf8 = (HEADER + f"{utf8_person},{utf8_name},resident,611002,dibao_rural_a,2023-01-01,\n"
            f"{astral_person},{astral_name},resident,611002,orphan,2023-01-01,\n").encode("utf-8")
    bom = b"\xef\xbb\xbf" + (HEADER + f"{new_id_number()},周,resident,611002,orphan,2023-01-01,\n").encode("utf-8")
    with live.client(service.staff("admin")) as client:
        for data in (gbk, utf8, bom):
            report = upload(client, data).json()
            assert report["rejected"] == 0 and report["accepted"] >= 1, report
    assert name_of(service, gbk_person) == gbk_name
    assert name_of(service, utf8_person) == utf8_name
    assert name_of(service, astral_person) == astral_name
    assert categories_of(service, gbk_person) == [("tekun_dispersed", "2020-07-01", None)]


def test_roster_import_command(cli_env: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    service = cli_env
    administrator = act_as(service, monkeypatch)
    text_csv, (good_a, good_b), bad = mixed_roster()
    file = tmp_path / "民政名单.csv"
    file.write_bytes(text_csv.encode("gbk"))
    runner = CliRunner()
    before = counts(service)
    result = runner.invoke(cli, ["roster", "import", str(file)])
    assert result.exit_code == 0, result.output
    assert "8 rows, 3 accepted, 5 rejected, 5 changes" in result.output
    for line, (id_number, reason) in bad.items():
        assert f"line {line}: " in result.output and masked(id_number) in result.output and reason in result.output
        assert id_number not in result.output
    assert categories_of(service, good_a) == [("dibao_rural_b", "2022-01-01", "2024-06-30"),
                                              ("low_income", "2024-07-01", None)]
    assert name_of(service, good_a) == "王喆" and name_of(service, good_b) == "赵六"
    after_first = counts(service)
    assert after_first["audit_log"] == before["audit_log"] + 1
    with service.app.engine.connect() as connection:  # the import names the key's holder
        assert connection.execute(text("SELECT actor FROM audit_log WHERE action = 'roster.import' ORDER BY id DESC "
                                       "LIMIT 1")).scalar_one() == administrator
    again = runner.invoke(cli, ["roster", "import", str(file)])
    assert again.exit_code == 0, again.output
    assert "0 changes" in again.output and "already imported" in again.output
    assert counts(service) == after_first
    broken = tmp_path / "broken.csv"
    broken.write_bytes(b"not,a,roster\n")
    refused = runner.invoke(cli, ["roster", "import", str(broken)])
    assert refused.exit_code == 2 and "ROSTER_INVALID" in refused.output
