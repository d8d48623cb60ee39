"""The settlement's movements travel as PostgreSQL array literals (text cast by the statement): whatever a fund's
name holds, PostgreSQL reads back exactly the values written."""

from __future__ import annotations

import psycopg
import pytest

from settlement.db.settling import _int_array, _text_array

AWKWARD = ["390100", "", "a,b", "{x}", 'say "hi"', "back\\slash", "NULL", " spaced ", "医疗救助", "\\\"", "}\\"]


def read_back(url: str, literal: str, cast: str) -> list[object]:
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute(f"SELECT %s::{cast}", (literal,)).fetchone()
    assert row is not None
    return list(row[0])


def test_strings_read_back_exactly(fresh_pg_url: str) -> None:
    assert read_back(fresh_pg_url, _text_array(AWKWARD), "text[]") == AWKWARD
    assert read_back(fresh_pg_url, _text_array([]), "text[]") == []


def test_integers_read_back_exactly(fresh_pg_url: str) -> None:
    values = [0, -1, 2**62, -(2**62), 123456]
    assert read_back(fresh_pg_url, _int_array(values), "bigint[]") == values


def test_unquoted_elements_would_not_survive(fresh_pg_url: str) -> None:
    """The control: the literal written without quoting loses or breaks the awkward names."""
    naive = "{" + ",".join(AWKWARD) + "}"
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        read_back(fresh_pg_url, naive, "text[]")
    assert read_back(fresh_pg_url, "{a,NULL}", "text[]") == ["a", None]
