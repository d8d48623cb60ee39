"""Migration 0009 on a database the engine of the revision before it used: its years gain their admissions by
hospital level, filled in from the settlements (the level of each claim as received) and their reversals, so that
a tariff counting repeat admissions per level sees the year as it was; the settlements recorded before it (no
retirement recorded) recompute unchanged; a downgrade removes what it added, the append-only guards of the settlements
survive both ways, and an upgrade after it works again. Both databases.

Planted-fault control: the filling-in without the reversals counts a reversed stay (the check sees it)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from settlement.db.engine import make_engine
from settlement.db.migrate import alembic_config, upgrade
from settlement.services import tariffs
from settlement.services.settlements import SettlementService
from settlement.wire.requests import ReverseRequest, SettleRequest
from tests.reconciliation.test_migration_0005 import downgrade
from tests.service.conftest import claim_body, new_id_number, running_service

BEFORE = str(ScriptDirectory.from_config(alembic_config()).get_revision("0009").down_revision)  # re-chained at merge
LEVEL_COLUMNS = "admissions, admissions_township, admissions_county, admissions_city, admissions_provincial"


def years(engine: sa.Engine) -> dict[str, tuple[int, ...]]:
    with engine.connect() as connection:
        return {row[0]: tuple(row[1:]) for row in connection.execute(sa.text(
            f"SELECT id_number, {LEVEL_COLUMNS} FROM person_years ORDER BY id_number"))}


def columns(engine: sa.Engine, table: str) -> set[str]:
    return {column["name"] for column in sa.inspect(engine).get_columns(table)}


def history(service: Any) -> tuple[dict[str, tuple[int, ...]], str]:
    """Two persons' stays: township, township (reversed), county, city; an outpatient visit: their years."""
    caller_of = {}
    from settlement.services.auth import authenticate

    for level in ("township", "county", "city"):
        code, key = service.hospital(level)
        with service.app.context.uow() as tx:
            caller_of[level] = (code, authenticate(tx.repo, key))
    settlements = SettlementService(service.app.context)
    first, second = new_id_number(), new_id_number()
    made = {}
    for index, (person, level, visit_type) in enumerate([(first, "township", "inpatient"),
                                                         (first, "township", "inpatient"),
                                                         (first, "county", "inpatient"),
                                                         (second, "city", "inpatient"),
                                                         (second, "township", "outpatient")]):
        code, caller = caller_of[level]
        request = SettleRequest.model_validate({"transaction_id": f"M-{index}", "claim": claim_body(
            code, level, person, visit_type=visit_type)})
        reply = settlements.settle(caller, request)
        assert reply.status == 201, reply.body
        made[index] = reply.json()["settlement_id"]
    code, caller = caller_of["township"]
    assert settlements.reverse(caller, made[1], ReverseRequest(transaction_id="M-1R", reason="test")).status == 201
    return years(service.app.engine), first


def backfill_without_reversals(engine: sa.Engine) -> None:
    """The planted fault: the filling-in of 0009 without the reversals."""
    level = ("CAST(settlement.claim AS json) -> 'hospital' ->> 'level'" if engine.dialect.name == "postgresql"
             else "json_extract(settlement.claim, '$.hospital.level')")
    with engine.begin() as connection:
        connection.execute(sa.text(
            "UPDATE person_years SET admissions_township = (SELECT COALESCE(SUM(settlement.admissions), 0) "
            "FROM settlements AS settlement WHERE settlement.id_number = person_years.id_number "
            f"AND settlement.insurance_year = person_years.year AND {level} = 'township')"))


@pytest.mark.parametrize("planted", [False, True], ids=["real", "forgets-reversals"])
def test_admissions_by_level_are_filled_in_from_history(own_database_url: str, tmp_path: Path,
                                                        planted: bool) -> None:
    with running_service(own_database_url, tmp_path) as service:
        before, first = history(service)
    # First person: one township stay left (the other reversed) and one county stay; second: one city stay.
    assert sorted(before.values()) == [(1, 0, 0, 1, 0), (2, 1, 1, 0, 0)]
    assert before[first] == (2, 1, 1, 0, 0)

    engine = make_engine(own_database_url)
    try:
        downgrade(engine, BEFORE)
        assert not {"admissions_county", "retired"} & (columns(engine, "person_years") | columns(engine, "persons")
                                                      | columns(engine, "settlements"))
        assert not {"limit_entries", "limit_years"} & set(sa.inspect(engine).get_table_names())
        with pytest.raises(Exception, match="APPEND_ONLY"), engine.begin() as connection:  # still guarded
            connection.execute(sa.text("UPDATE settlements SET patient_fen = 0"))
        upgrade(engine)
        if planted:
            backfill_without_reversals(engine)
            assert years(engine) != before
            return
        assert years(engine) == before
        with pytest.raises(Exception, match="APPEND_ONLY"), engine.begin() as connection:
            connection.execute(sa.text("DELETE FROM settlements"))
    finally:
        engine.dispose()
    with running_service(own_database_url, tmp_path) as service:
        report = tariffs.verify(service.app.context, date(2024, 1, 1), date(2024, 12, 31), "test")
        assert (report["checked"], report["differences"]) == (5, [])
