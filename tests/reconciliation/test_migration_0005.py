"""Migration 0005 on a database that the engine of revision 0004 used: its statement rows (a sequence id each,
runs interleaved) become rows keyed by (run, line), numbered from 1 within each run in the order of their old
ids, with nothing else changed; the ledger gains the partial index of its correction entries; a downgrade gives
the old shape back (ids in line order, a working sequence) and an upgrade after it works again. Both databases.

Planted-fault control: rows numbered across the whole table instead of within each run (what a ROW_NUMBER()
without its PARTITION BY gives) fail the numbering check."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from settlement.db.engine import make_engine
from settlement.db.migrate import alembic_config, upgrade

OLD = sa.table("statement_rows", *(sa.column(name) for name in (
    "id", "run_id", "settlement_id", "entry_kind", "fund", "hospital_code", "amount_fen")))
# Two runs' rows, interleaved by id as two runs stored at once would leave them (id, run, settlement, fen).
ROWS = [(1, 7, "ST20240614A", 1000), (2, 9, "ST20240615A", -250), (3, 7, "ST20240614B", 2000),
        (5, 9, "ST20240615B", 30), (8, 7, "ST20240614C", 3000)]


@pytest.fixture
def engine(own_database_url: str) -> Iterator[sa.Engine]:
    made = make_engine(own_database_url)
    yield made
    made.dispose()


def downgrade(engine: sa.Engine, revision: str) -> None:
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def stored(engine: sa.Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(sa.text(
            "SELECT run_id, line, settlement_id, entry_kind, fund, hospital_code, amount_fen FROM statement_rows "
            "ORDER BY run_id, line"))]


def check_numbered(rows: list[tuple[Any, ...]]) -> None:
    """Each run's rows numbered 1, 2, ... in the order of their old ids, each keeping its fields."""
    expected = []
    for run in sorted({run for _, run, _, _ in ROWS}):
        mine = sorted((id_, settlement, fen) for id_, owner, settlement, fen in ROWS if owner == run)
        expected += [(run, line, settlement, "settlement", "390100", "H1", fen)
                     for line, (_, settlement, fen) in enumerate(mine, 1)]
    assert rows == expected


def test_statement_rows_are_numbered_within_their_run_and_come_back_on_a_downgrade(engine: sa.Engine) -> None:
    upgrade(engine, "0004")
    with engine.begin() as connection:
        connection.execute(sa.insert(OLD), [
            {"id": id_, "run_id": run, "settlement_id": settlement, "entry_kind": "settlement", "fund": "390100",
             "hospital_code": "H1", "amount_fen": fen} for id_, run, settlement, fen in ROWS])
    upgrade(engine)
    check_numbered(stored(engine))
    inspector = sa.inspect(engine)
    assert inspector.get_pk_constraint("statement_rows")["constrained_columns"] == ["run_id", "line"]
    assert [index["name"] for index in inspector.get_indexes("statement_rows")] == []
    assert "ix_ledger_entries_correction_created_at" in {index["name"] for index in
                                                         inspector.get_indexes("ledger_entries")}
    with engine.connect() as connection, pytest.raises(sa.exc.IntegrityError):  # the key refuses a second line 1
        connection.execute(sa.text(
            "INSERT INTO statement_rows (run_id, line, settlement_id, entry_kind, fund, hospital_code, amount_fen) "
            "VALUES (7, 1, 'ST20240614Z', 'settlement', '390100', 'H1', 1)"))

    downgrade(engine, "0004")
    with engine.begin() as connection:
        old = [tuple(row) for row in connection.execute(sa.text(
            "SELECT id, run_id, settlement_id FROM statement_rows ORDER BY id"))]
        assert old == [(n, run, settlement) for n, (run, settlement) in enumerate(
            sorted((run, settlement) for _, run, settlement, _ in ROWS), 1)]
        connection.execute(sa.text(  # the id is given by its sequence again
            "INSERT INTO statement_rows (run_id, settlement_id, entry_kind, fund, hospital_code, amount_fen) "
            "VALUES (9, 'ST20240615C', 'settlement', '390100', 'H1', 40)"))
    inspector = sa.inspect(engine)
    assert inspector.get_pk_constraint("statement_rows")["constrained_columns"] == ["id"]
    assert [index["name"] for index in inspector.get_indexes("statement_rows")] == ["ix_statement_rows_run_id"]
    assert "ix_ledger_entries_correction_created_at" not in {index["name"] for index in
                                                             inspector.get_indexes("ledger_entries")}
    upgrade(engine)
    assert [row[:3] for row in stored(engine)][-1] == (9, 3, "ST20240615C")


def test_control_rows_numbered_across_the_table_fail_the_numbering_check() -> None:
    across = sorted(ROWS)
    rows = sorted((run, line, settlement, "settlement", "390100", "H1", fen)
                  for line, (_, run, settlement, fen) in enumerate(across, 1))
    with pytest.raises(AssertionError):
        check_numbered(rows)
