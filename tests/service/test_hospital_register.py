"""The hospital register (issue 16): a region's network imported and diffed like a catalogue, on both databases,
through the service, the command line and REST.

The shipped example register (5 city, 24 county, 89 township hospitals, illustrative) imports whole; importing it
again changes nothing; a changed register is reported field by field (level, name, region, dialects) before it is
applied (`check`) and exactly so after; hospitals it no longer lists are reported and left alone; bad rows (mutated
inputs: an unknown level or dialect, a bad region, a code listed twice, a short row) are reported by line and
skipped. A level changed by the register is the one claims must name afterwards (HOSPITAL_MISMATCH otherwise).
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from settlement.bootstrap import SYSTEM
from settlement.cli.main import app as cli
from settlement.services.auth import Caller
from settlement.services.errors import ServiceCode, ServiceError
from settlement.services.hospital_register import import_register
from tests.factories import ROOT
from tests.service.conftest import LiveServer, Service, act_as, claim_body, new_id_number, point_cli_at, serving

REGISTER = ROOT / "examples/hospitals/611000-register.csv"
DIALECTS = {"standard", "legacy-gbk", "rural-ncms"}
HEADER = "code,name,level,region,dialects\n"
runner = CliRunner()


def imported(service: Service, data: bytes, *, check: bool = False) -> dict[str, Any]:
    return import_register(service.app.context, SYSTEM, "register.csv", data, DIALECTS, check=check).as_dict()


def recorded(service: Service) -> dict[str, tuple[Any, ...]]:
    with service.app.context.uow() as tx:
        return {hospital.code: (hospital.name, hospital.level, hospital.region, tuple(tx.repo.dialects_of(
            hospital.id))) for hospital in tx.repo.hospitals()}


def audit_count(service: Service) -> int:
    with service.app.engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM audit_log WHERE action LIKE 'hospital.%'"))
                   .scalar_one())


def test_the_shipped_register_imports_whole_and_again_changes_nothing(own_service: Service) -> None:
    service = own_service
    report = imported(service, REGISTER.read_bytes())
    assert (len(report["added"]), report["changed"], report["rejected"], report["absent"]) == (118, [], [], [])
    assert Counter(added["level"] for added in report["added"]) == {"city": 5, "county": 24, "township": 89}
    assert len(report["keys"]) == 118 and len(set(report["keys"].values())) == 118
    hospitals = recorded(service)
    assert hospitals["H61100200011"] == ("商州区人民医院", "county", "611002", ("legacy-gbk", "rural-ncms", "standard"))
    assert hospitals["H61100200107"][1:3] == ("township", "611002")
    assert audit_count(service) == 118

    again = imported(service, REGISTER.read_bytes())
    assert (again["added"], again["changed"], again["unchanged"], again["keys"]) == ([], [], 118, {})
    assert recorded(service) == hospitals and audit_count(service) == 118  # nothing written, not even an audit


def test_a_changed_register_is_reported_then_applied(own_service: Service) -> None:
    service = own_service
    service.hospital("county", code="H99900000001")  # recorded before, not in the register: left alone
    first = HEADER + ("H61100200011,商州区人民医院,county,611002,standard;legacy-gbk\n"
                      "H61100200101,商州区乡镇卫生院01,township,611002,rural-ncms\n"
                      "H61102100011,洛南县人民医院,county,611021,\n")
    assert len(imported(service, first.encode())["added"]) == 3
    changed = HEADER + ("# the county hospital became a city-level hospital, one township was renamed\n"
                        "H61100200011,商州区人民医院,city,611002,standard\n"
                        "H61100200101,商州区大荆镇中心卫生院,township,611002,rural-ncms\n"
                        "H61100200102,商州区乡镇卫生院02,township,611002,rural-ncms;standard\n"
                        "H61100200103,某医院,clinic,611002,\n"           # mutated: an unknown level
                        "H61100200104,某医院,township,6110,\n"           # a bad region
                        "H61100200105,某医院,township,611002,soap12\n"   # an unknown dialect
                        "H61100200102,重复,township,611002,\n"           # listed twice
                        "H61100200106,短行\n")                           # a short row
    before = recorded(service)
    check = imported(service, changed.encode("gbk"), check=True)  # a GBK file reads alike
    assert recorded(service) == before  # nothing changed
    assert check["checked_only"] and check["keys"] == {}
    assert [added["code"] for added in check["added"]] == ["H61100200102"]
    assert check["changed"] == [
        {"code": "H61100200011", "level": ["county", "city"], "dialects": [["legacy-gbk", "standard"], ["standard"]]},
        {"code": "H61100200101", "name": ["商州区乡镇卫生院01", "商州区大荆镇中心卫生院"]}]
    assert check["absent"] == ["H61102100011", "H99900000001"]
    assert [(problem["line"], problem["reason"].split(" ")[0]) for problem in check["rejected"]] == [
        (6, "level"), (7, "region"), (8, "no"), (9, "hospital"), (10, "expected")]
    applied = imported(service, changed.encode("gbk"))
    assert {key: applied[key] for key in ("added", "changed", "absent", "rejected")} == \
        {key: check[key] for key in ("added", "changed", "absent", "rejected")}
    after = recorded(service)
    assert after["H61100200011"] == ("商州区人民医院", "city", "611002", ("standard",))
    assert after["H61100200101"][0] == "商州区大荆镇中心卫生院"
    assert after["H61100200102"][3] == ("rural-ncms", "standard")
    assert after["H61102100011"] == before["H61102100011"] and "H99900000001" in after


def test_a_register_that_is_not_one_is_refused(own_service: Service) -> None:
    for data, reason in ((b"code,name,level\n", "header"), (b"\xff\xfe\x00bad", "UTF-8")):
        with pytest.raises(ServiceError) as refused:
            imported(own_service, data)
        assert refused.value.code is ServiceCode.HOSPITALS_INVALID and reason in refused.value.message
    finance = Caller(1, "finance", "finance:test", None)
    with pytest.raises(ServiceError) as refused:
        import_register(own_service.app.context, finance, "r.csv", REGISTER.read_bytes(), DIALECTS)
    assert refused.value.code is ServiceCode.FORBIDDEN


def test_over_rest_and_a_new_level_binds_the_claims(own_service: Service) -> None:
    service = own_service
    admin = service.staff("admin")
    with serving(service.app) as live:
        register = HEADER + "H61100200201,测试卫生院,township,611002,rural-ncms\n"
        with live.client(admin) as client:
            checked = client.post("/v1/admin/hospitals?check=true", files={"file": ("r.csv", register.encode())})
            assert checked.status_code == 200, checked.text
            assert checked.json()["checked_only"] and recorded(service) == {}
            done = client.post("/v1/admin/hospitals", files={"file": ("r.csv", register.encode())}).json()
            key = done["keys"]["H61100200201"]
            bad = client.post("/v1/admin/hospitals", files={"file": ("r.csv", b"nope\n")})
            assert bad.status_code == 422 and bad.json()["code"] == "HOSPITALS_INVALID"
        # The register moves the hospital to county level (before its key was first used: a key's hospital is
        # cached for 30 seconds): its claims must say so.
        moved = register.replace("township,611002", "county,611002")
        with live.client(admin) as client:
            assert client.post("/v1/admin/hospitals", files={"file": ("r.csv", moved.encode())}).json()[
                "changed"] == [{"code": "H61100200201", "level": ["township", "county"]}]
        with live.client(key) as hospital:
            forbidden = hospital.post("/v1/admin/hospitals", files={"file": ("r.csv", register.encode())})
            assert forbidden.status_code == 403
        refused = settle(live, key, "township", "T-2")
        assert refused.status_code == 422 and refused.json()["code"] == "HOSPITAL_MISMATCH", refused.text
        assert settle(live, key, "county", "T-3").status_code == 201


def settle(live: LiveServer, key: str, level: str, transaction: str) -> Any:
    with live.client(key) as client:
        return client.post("/v1/settlements", json={"transaction_id": transaction, "claim": claim_body(
            "H61100200201", level, new_id_number())})


def test_the_command_line(service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    point_cli_at(service, tmp_path, monkeypatch)
    register = tmp_path / "register.csv"
    code = f"H{new_id_number()[:11]}"
    register.write_text(HEADER + f"{code},命令行医院,county,611002,standard\n", encoding="utf-8")
    unknown = runner.invoke(cli, ["hospitals", "import", str(register), "--check"])
    assert unknown.exit_code == 2 and "AUTH_REQUIRED" in unknown.output  # whose import is it?
    act_as(service, monkeypatch, "finance")
    finance = runner.invoke(cli, ["hospitals", "import", str(register), "--check"])
    assert finance.exit_code == 2 and "FORBIDDEN" in finance.output
    actor = act_as(service, monkeypatch)
    checked = runner.invoke(cli, ["hospitals", "import", str(register), "--check"])
    assert checked.exit_code == 0, checked.output
    assert "1 hospitals would be added" in checked.output and f"+ {code} 命令行医院" in checked.output
    keys = tmp_path / "keys.txt"
    done = runner.invoke(cli, ["hospitals", "import", str(register), "--keys", str(keys)])
    assert done.exit_code == 0, done.output
    assert "1 hospitals were added" in done.output and str(keys) in done.output
    with service.app.engine.connect() as connection:  # recorded under the key's holder
        assert connection.execute(text("SELECT actor FROM audit_log WHERE action = 'hospital.create' AND "
                                       "entity_id = :code"), {"code": code}).scalar_one() == actor
    assert keys.read_text(encoding="utf-8").startswith(f"hospital {code} ")
    assert stat.S_IMODE(os.stat(keys).st_mode) == 0o600
    register.write_text(HEADER + f"{code},命令行医院,city,611002,\n", encoding="utf-8")
    changed = runner.invoke(cli, ["hospitals", "import", str(register)])
    assert changed.exit_code == 0, changed.output
    assert f"~ {code}: level county -> city; dialects standard -> none" in changed.output
    bad = tmp_path / "bad.csv"
    bad.write_text("code,name\n", encoding="utf-8")
    refused = runner.invoke(cli, ["hospitals", "import", str(bad)])
    assert refused.exit_code == 2 and "HOSPITALS_INVALID" in refused.output
