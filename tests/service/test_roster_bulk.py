"""The roster import in chunks (a few statements per thousand rows) against the row-by-row import it replaced,
kept here as the reference: on files with repeated persons, repeated category rows, changes and bad rows, imported
one after another, both give the same reports and leave the same roster, on both databases, with chunk
boundaries falling inside a person's rows."""

from __future__ import annotations

import csv
import io
import random
import secrets
import threading
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from settlement.bootstrap import SYSTEM
from settlement.db.models import Person, PersonCategory
from settlement.db.repositories import Repository
from settlement.services import roster
from settlement.services.context import Context
from tests.service.conftest import Service, new_id_number, running_service, scratch_database

CATEGORIES = ["dibao_rural_a", "dibao_rural_b", "low_income", "orphan"]
NAMES = ["王喆", "李堃", "张三", "赵六"]


def last_rows(text: str, categories: set[str]) -> tuple[dict[str, tuple[str, str, str]], dict[Any, str]]:
    """What the file's last valid row of each person and each category row says."""
    persons: dict[str, tuple[str, str, str]] = {}
    ends: dict[Any, str] = {}
    for row in csv.DictReader(io.StringIO(text)):
        if roster._row_problem(row, categories) is None:
            values = {key: (value or "").strip() for key, value in row.items()}
            persons[values["id_number"]] = (values["name"], values["scheme"], values["region"])
            ends[(values["id_number"], values["category"], values["valid_from"])] = values["valid_to"]
    return persons, ends


def row_by_row_import(context: Context, data: bytes) -> dict[str, Any]:
    """The import as it was before chunks (four statements a row), each row taking its person's and its category
    row's last values in the file: the reference the chunked import must equal."""
    report = roster.RosterReport("r.csv", "")
    reader = csv.DictReader(io.StringIO(roster.decode(data)))
    with context.uow() as tx:
        repo = tx.repo
        categories = roster.known_categories(context.tariffs.current(repo))
        last_person, last_end = last_rows(roster.decode(data), categories)
        persons: dict[str, Person] = {}
        for row in reader:
            report.rows += 1
            reason = roster._row_problem(row, categories)
            id_number = (row.get("id_number") or "").strip()
            if reason is not None:
                report.rejected.append({"line": reader.line_num, "person": id_number, "reason": reason})
                continue
            report.accepted += 1
            person = persons.get(id_number) or repo.person(id_number)
            wanted = last_person[id_number]
            if person is None:
                person = Person(id_number=id_number, name=wanted[0], scheme=wanted[1], region=wanted[2])
                repo.add(person)
                repo.flush()
                report.changed += 1
            elif (person.name, person.scheme, person.region) != wanted:
                person.name, person.scheme, person.region = wanted
                report.changed += 1
            persons[id_number] = person
            valid_from = date.fromisoformat(row["valid_from"].strip())
            end = last_end[(id_number, row["category"].strip(), row["valid_from"].strip())]
            valid_to = date.fromisoformat(end) if end else None
            existing = tx.session.scalar(select(PersonCategory).where(
                PersonCategory.person_id == person.id, PersonCategory.category == row["category"].strip(),
                PersonCategory.valid_from == valid_from))
            if existing is None:
                repo.add(PersonCategory(person_id=person.id, category=row["category"].strip(),
                                        valid_from=valid_from, valid_to=valid_to))
                repo.flush()
                report.changed += 1
            elif existing.valid_to != valid_to:
                existing.valid_to = valid_to
                report.changed += 1
        tx.commit()
    return {"rows": report.rows, "accepted": report.accepted, "changed": report.changed,
            "rejected": [line["line"] for line in report.rejected]}


def chunked_import(context: Context, data: bytes) -> dict[str, Any]:
    report = roster.import_roster(context, SYSTEM, "r.csv", data).as_dict()
    return {"rows": report["rows"], "accepted": report["accepted"], "changed": report["changed"],
            "rejected": [line["line"] for line in report["errors"]]}


def roster_state(service: Service) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    with service.app.engine.connect() as connection:
        persons = {tuple(row) for row in connection.execute(text(
            "SELECT id_number, name, scheme, region FROM persons"))}
        spans = {tuple(row) for row in connection.execute(text(
            "SELECT p.id_number, c.category, CAST(c.valid_from AS TEXT), CAST(c.valid_to AS TEXT) "
            "FROM person_categories c JOIN persons p ON p.id = c.person_id"))}
    return persons, spans


def files(seed: int) -> list[bytes]:
    """Files for one roster, imported in turn: the first; a second that renames some, moves some end dates, repeats
    rows (the same person and category row twice with other end dates) and adds persons; the second again; the
    first again (which changes some back)."""
    rng = random.Random(seed)
    people = [new_id_number() for _ in range(40)]
    bad_check = people[0][:17] + ("0" if people[0][17] != "0" else "1")

    def line(person: str, category: int, start: str, end: str, name: int = 0) -> str:
        return f"{person},{NAMES[name]},resident,611002,{CATEGORIES[category]},{start},{end}"

    first = [line(p, rng.randrange(4), f"2024-0{rng.randrange(1, 4)}-01", rng.choice(["", "2024-12-31"]))
             for p in people for _ in range(rng.randrange(1, 4))]
    first.insert(5, line(bad_check, 0, "2024-01-01", ""))
    first.insert(9, line(people[3], 1, "2024-13-01", ""))
    second = list(first)
    for index in rng.sample(range(len(second)), 15):
        person, _, scheme, region, category, start, _ = second[index].split(",")
        second[index] = f"{person},{NAMES[rng.randrange(4)]},{scheme},{region},{category},{start}," + rng.choice(
            ["", "2024-06-30", "2025-01-31"])
    second += rng.sample(second, 10)  # repeated rows, later in the file
    second += [line(new_id_number(), rng.randrange(4), "2024-05-01", "") for _ in range(6)]
    rng.shuffle(second)
    header = "id_number,name,scheme,region,category,valid_from,valid_to\n"
    return [(header + "\n".join(rows) + "\n").encode("utf-8") for rows in (first, second, second, first)]


@pytest.fixture(params=["sqlite", "postgres"])
def two_databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two empty databases of one kind: the chunked import's and the reference's."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'chunked.sqlite3'}", f"sqlite:///{tmp_path / 'reference.sqlite3'}"
        return
    base = request.getfixturevalue("pg_url").rsplit("/", 1)[1]
    chunked = scratch_database(f"{base}_{secrets.token_hex(4)}")
    reference = scratch_database(f"{base}_{secrets.token_hex(4)}")
    try:
        yield next(chunked), next(reference)
    finally:
        for database in (chunked, reference):
            next(database, None)


def compare_imports(urls: tuple[str, str], tmp_path: Path) -> None:
    """Import the same files into both databases, one chunked and one row by row: same reports, same roster."""
    with running_service(urls[0], tmp_path / "chunked") as chunked, \
            running_service(urls[1], tmp_path / "reference") as reference:
        for seed in (1, 2):
            reports = []
            for data in files(seed):
                ours, theirs = chunked_import(chunked.app.context, data), row_by_row_import(reference.app.context, data)
                assert ours == theirs
                assert roster_state(chunked) == roster_state(reference)
                reports.append(ours)
            # The files hold what the comparison is for (bad rows, changes, rows that contradict earlier ones), and
            # the second file again changes nothing though it contradicts itself: its last rows say what holds.
            assert reports[0]["rejected"] and reports[1]["accepted"] > reports[0]["accepted"]
            assert [report["changed"] == 0 for report in reports] == [False, False, True, False]


@pytest.mark.parametrize("chunk_rows", [7, roster.CHUNK_ROWS])
def test_the_chunked_import_equals_the_row_by_row_one(two_databases: tuple[str, str], tmp_path: Path,
                                                      chunk_rows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(roster, "CHUNK_ROWS", chunk_rows)
    compare_imports(two_databases, tmp_path)


def test_a_chunk_that_does_not_read_the_stored_categories_is_caught(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The planted fault for the check above: a chunk that takes every category row for new (it does not read
    what earlier chunks and imports stored) writes them again, which the comparison (or the database) refuses."""
    monkeypatch.setattr(roster, "CHUNK_ROWS", 7)
    monkeypatch.setattr(Repository, "category_spans", lambda self, person_ids: {})
    urls = (f"sqlite:///{tmp_path / 'chunked.sqlite3'}", f"sqlite:///{tmp_path / 'reference.sqlite3'}")
    with pytest.raises((AssertionError, IntegrityError)):
        compare_imports(urls, tmp_path)


def concurrent_imports(service: Service, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Two imports of files naming the same new persons, the second started while the first is between its
    chunks (its rows written, not committed): each thread's outcome, a report or the exception it raised."""
    people = [new_id_number() for _ in range(30)]
    header = "id_number,name,scheme,region,category,valid_from,valid_to\n"
    first = (header + "".join(f"{p},张三,resident,611002,dibao_rural_a,2024-01-01,\n" for p in people)).encode()
    second = (header + "".join(f"{p},张三,resident,611002,orphan,2024-02-01,\n" for p in people)).encode()
    monkeypatch.setattr(roster, "CHUNK_ROWS", 10)
    real_chunk = roster._import_chunk
    second_started = threading.Event()
    first_waited = threading.Event()

    def chunk(repo: Repository, rows: list[Any], final: roster.FinalValues, report: roster.RosterReport) -> None:
        if report.filename == "second.csv":
            second_started.set()
        real_chunk(repo, rows, final, report)
        if report.filename == "first.csv" and not first_waited.is_set():
            first_waited.set()
            second_started.wait(timeout=2)  # with the lock the second cannot start: it waits for this one

    monkeypatch.setattr(roster, "_import_chunk", chunk)
    outcomes: list[Any] = [None, None]

    def run(index: int, name: str, data: bytes) -> None:
        try:
            outcomes[index] = roster.import_roster(service.app.context, SYSTEM, name, data).as_dict()
        except Exception as error:  # the outcome is what the test looks at
            outcomes[index] = error

    threads = [threading.Thread(target=run, args=(0, "first.csv", first))]
    threads[0].start()
    assert first_waited.wait(timeout=30)
    threads.append(threading.Thread(target=run, args=(1, "second.csv", second)))
    threads[1].start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def test_two_roster_imports_at_once_run_one_after_the_other(pg_service: Service,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = concurrent_imports(pg_service, monkeypatch)
    assert isinstance(first, dict) and isinstance(second, dict), (first, second)
    assert (first["accepted"], first["changed"]) == (30, 60)  # 30 persons and their first category rows
    assert (second["accepted"], second["changed"]) == (30, 30)  # the persons known: their second category rows


def test_without_the_import_lock_the_second_import_fails_on_the_unique_index(pg_service: Service,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The planted fault for the test above."""
    monkeypatch.setattr(Repository, "lock_roster", lambda self: None)
    first, second = concurrent_imports(pg_service, monkeypatch)
    assert isinstance(first, dict)
    assert isinstance(second, IntegrityError)
