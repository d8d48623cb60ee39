"""Importing the civil-affairs roster: who is in which assistance category, from when to when.

The file is a CSV with a header: id_number,name,scheme,region,category,valid_from,valid_to (valid_to empty
while open-ended; dates as YYYY-MM-DD; UTF-8 or GBK), and optionally a last column `retired` (1 or 0, true or
false: the employee scheme's 退休; a file without it leaves what is stored). A row with an empty category (and
empty dates) records the person alone. Rows with errors are reported (line, reason, the ID number masked) and
skipped; the valid rows are kept. Where a file names a person, or a person's category from one
date, on several rows, its last row says what they are (so a file that contradicts itself still imports to one
result). Importing the same rows again changes nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any, NamedTuple

from settlement.db.models import RosterImport
from settlement.db.repositories import Repository
from settlement.domain.claim import Scheme
from settlement.domain.idcard import id_number_problem
from settlement.domain.privacy import mask_id_number, mask_id_numbers
from settlement.domain.text import FILENAME_MAX, PERSON_NAME_MAX, text_problem
from settlement.services.auth import Caller
from settlement.services.context import Context
from settlement.services.errors import ServiceCode, ServiceError
from settlement.services.text import CsvUnreadable, checked, csv_rows
from settlement.tariffstore.store import TariffStore

COLUMNS = ("id_number", "name", "scheme", "region", "category", "valid_from", "valid_to")
RETIRED = "retired"  # an optional last column
RETIRED_VALUES = {"1": True, "true": True, "0": False, "false": False}
MAX_BYTES = 50 * 1024 * 1024
CHUNK_ROWS = 1000  # rows read and written together: a few statements per chunk instead of four per row


@dataclass
class RosterReport:
    filename: str
    sha256: str
    rows: int = 0
    accepted: int = 0
    changed: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    already_imported: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"filename": self.filename, "sha256": self.sha256, "rows": self.rows, "accepted": self.accepted,
                "rejected": len(self.rejected), "changed": self.changed, "already_imported": self.already_imported,
                "errors": self.rejected}


def decode(data: bytes) -> str:
    for encoding in ("utf-8-sig", "gbk"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ServiceError(ServiceCode.ROSTER_INVALID, "the file is neither UTF-8 nor GBK text")


def known_categories(tariffs: TariffStore) -> set[str]:
    """Every category some version in force names (the roster may list a category of any region)."""
    codes: set[str] = set()
    for region in tariffs.regions():
        for version in tariffs.versions(region):
            codes |= set(version.raw.get("categories") or {})
    return codes


def import_roster(context: Context, caller: Caller, filename: str, data: bytes) -> RosterReport:
    if caller.kind != "admin":
        raise ServiceError(ServiceCode.FORBIDDEN, "importing the roster needs an administrator's key")
    if len(data) > MAX_BYTES:
        raise ServiceError(ServiceCode.ROSTER_INVALID, f"the file is over {MAX_BYTES // (1024 * 1024)} MiB")
    checked(filename, "the file's name", FILENAME_MAX)
    report = RosterReport(filename, hashlib.sha256(data).hexdigest())
    reader = csv.DictReader(io.StringIO(decode(data)))
    if tuple(reader.fieldnames or ()) not in (COLUMNS, (*COLUMNS, RETIRED)):
        raise ServiceError(ServiceCode.ROSTER_INVALID, f"the header must be {','.join(COLUMNS)}[,{RETIRED}]")
    now = context.clock()
    with context.uow() as tx:
        repo = tx.repo
        repo.lock_roster()
        categories = known_categories(context.tariffs.current(repo))
        try:
            rows = list(_accepted_rows(reader, categories, report))
        except CsvUnreadable as error:
            raise ServiceError(ServiceCode.ROSTER_INVALID, str(error)) from None
        final = _final_values(rows)
        for start in range(0, len(rows), CHUNK_ROWS):
            _import_chunk(repo, rows[start:start + CHUNK_ROWS], final, report)
        if report.changed == 0:
            report.already_imported = True
            return report  # nothing changed: nothing is recorded, not even the import
        filename = mask_id_numbers(filename)  # typed by whoever named the file
        record = RosterImport(sha256=report.sha256, filename=filename[:256], imported_at=now, rows=report.rows,
                              accepted=report.accepted, rejected=len(report.rejected), changed=report.changed,
                              report=json.dumps(report.rejected, ensure_ascii=False))
        repo.add(record)
        repo.flush()
        repo.audit(now, caller.actor, "roster.import", "roster_import", str(record.id), json.dumps(
            {"filename": filename[:256], "sha256": report.sha256, "rows": report.rows, "accepted": report.accepted,
             "rejected": len(report.rejected), "changed": report.changed}))
        tx.commit()
    return report


class RosterRow(NamedTuple):
    id_number: str
    name: str
    scheme: str
    region: str
    category: str  # empty: the row records the person alone
    valid_from: date | None
    valid_to: date | None
    retired: bool | None  # None: the file does not say


def _accepted_rows(reader: csv.DictReader[str], categories: set[str], report: RosterReport) -> Iterator[RosterRow]:
    """The file's valid rows, in order; the others are reported (line, masked person, reason)."""
    for row in csv_rows(reader):
        reason = _row_problem(row, categories)
        report.rows += 1
        id_number = (row.get("id_number") or "").strip()
        if reason is not None:
            # A reason may quote a value (an unknown category), and a shifted row puts a number anywhere.
            report.rejected.append({"line": reader.line_num, "person": mask_id_number(id_number),
                                    "reason": mask_id_numbers(reason)})
            continue
        report.accepted += 1
        yield _parsed(row)


def _parsed(row: dict[str, str | None]) -> RosterRow:
    """A valid row (see _row_problem) as values."""
    def value(column: str) -> str:
        return (row[column] or "").strip()

    retired = (row.get(RETIRED) or "").strip().lower()
    return RosterRow(value("id_number"), mask_id_numbers(value("name")), value("scheme"), value("region"),
                     value("category"), date.fromisoformat(value("valid_from")) if value("valid_from") else None,
                     date.fromisoformat(value("valid_to")) if value("valid_to") else None,
                     RETIRED_VALUES[retired] if retired else None)


class FinalValues(NamedTuple):
    """What the file's last row of each says: a person's (name, scheme, region, retired), a category row's end
    date."""

    persons: dict[str, tuple[str, str, str, bool | None]]
    ends: dict[tuple[str, str, date], date | None]


def _final_values(rows: list[RosterRow]) -> FinalValues:
    """The values the file's last rows give (a row that does not say whether the person is retired keeps what an
    earlier one said)."""
    final = FinalValues({}, {})
    for row in rows:
        earlier = final.persons.get(row.id_number)
        retired = row.retired if row.retired is not None or earlier is None else earlier[3]
        final.persons[row.id_number] = (row.name, row.scheme, row.region, retired)
        if row.valid_from is not None:
            final.ends[(row.id_number, row.category, row.valid_from)] = row.valid_to
    return final


def _import_chunk(repo: Repository, rows: list[RosterRow], final: FinalValues, report: RosterReport) -> None:
    """Apply a chunk of valid rows, in file order, in a few statements: its persons and their categories are read
    at once (rows of earlier chunks are already written, in this transaction), then the new and changed ones are
    written in bulk.
    Each person and category row takes the file's final values (its last row's) the first time the file names it;
    a change is counted when that differs from what is stored, so a later row of the same one changes nothing."""
    if not rows:
        return
    stored = repo.persons_by_id_number({row.id_number for row in rows})  # id number -> (id, name, ..., retired)
    current: dict[str, tuple[str, str, str, bool]] = {number: person[1:] for number, person in stored.items()}
    new_persons: dict[str, dict[str, Any]] = {}
    changed_persons: dict[int, dict[str, Any]] = {}
    for row in rows:
        name, scheme, region, retired = final.persons[row.id_number]
        known = current.get(row.id_number)
        wanted = (name, scheme, region, retired if retired is not None else bool(known and known[3]))
        if known == wanted:
            continue
        report.changed += 1
        current[row.id_number] = wanted
        values = dict(zip(("name", "scheme", "region", "retired"), wanted, strict=True))
        if row.id_number in stored:
            person_id = stored[row.id_number][0]
            changed_persons[person_id] = {"id": person_id, **values}
        else:
            new_persons[row.id_number] = {"id_number": row.id_number, **values}
    ids = {number: person[0] for number, person in stored.items()}
    ids.update(repo.insert_persons(list(new_persons.values())))
    repo.update_persons(list(changed_persons.values()))

    spans = repo.category_spans({ids[number] for number in stored})  # (person, category, from) -> (id, to)
    ends: dict[tuple[int, str, date], date | None] = {key: span[1] for key, span in spans.items()}
    new_spans: dict[tuple[int, str, date], dict[str, Any]] = {}
    changed_spans: dict[int, dict[str, Any]] = {}
    for row in rows:
        if row.valid_from is None:
            continue  # the person alone
        key = (ids[row.id_number], row.category, row.valid_from)
        valid_to = final.ends[(row.id_number, row.category, row.valid_from)]
        if key in ends and ends[key] == valid_to:
            continue
        report.changed += 1
        ends[key] = valid_to
        if key in spans:
            span_id = spans[key][0]
            changed_spans[span_id] = {"id": span_id, "valid_to": valid_to}
        else:
            new_spans[key] = {"person_id": key[0], "category": row.category, "valid_from": row.valid_from,
                              "valid_to": valid_to}
    repo.insert_categories(list(new_spans.values()))
    repo.update_categories(list(changed_spans.values()))


def _row_problem(row: dict[str, str | None], categories: set[str]) -> str | None:
    if None in row or any(value is None for value in row.values()):
        return f"expected {len(COLUMNS)} columns"
    values = {key: (value or "").strip() for key, value in row.items()}
    problem = id_number_problem(values["id_number"])
    if problem is not None:
        return f"id_number: {problem}"
    if not values["name"]:
        return "name is empty"
    if (problem := text_problem(values["name"], PERSON_NAME_MAX)) is not None:
        return f"name {problem}"
    if values["scheme"] not in set(Scheme):
        return f"scheme must be one of {sorted(Scheme)}"
    if not (len(values["region"]) == 6 and values["region"].isascii() and values["region"].isdigit()):
        return "region must be a 6-digit division code"
    if values.get(RETIRED, "").lower() not in ("", *RETIRED_VALUES):
        return "retired must be 1 or 0 (true or false), or empty"
    if not values["category"]:
        return None if not values["valid_from"] and not values["valid_to"] else \
            "a row without a category records the person alone: leave its dates empty"
    if values["category"] not in categories:
        return f"unknown category {values['category']!r}"
    try:
        valid_from = date.fromisoformat(values["valid_from"])
        valid_to = date.fromisoformat(values["valid_to"]) if values["valid_to"] else None
    except ValueError:
        return "dates must be YYYY-MM-DD"
    if valid_to is not None and valid_to < valid_from:
        return "valid_to is before valid_from"
    return None
