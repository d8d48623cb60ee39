"""Importing the civil-affairs roster: who is in which assistance category, from when to when.

The file is a CSV with a header: id_number,name,scheme,region,category,valid_from,valid_to (valid_to empty
while open-ended; dates as YYYY-MM-DD; UTF-8 or GBK). Rows with errors are reported (line, reason, the ID
number masked) and skipped; the valid rows are kept. Importing the same rows again changes nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from settlement.db.models import Person, PersonCategory, RosterImport
from settlement.domain.claim import Scheme
from settlement.domain.idcard import id_number_problem
from settlement.domain.privacy import mask_id_number
from settlement.services.auth import Caller
from settlement.services.context import Context
from settlement.services.errors import ServiceCode, ServiceError
from settlement.tariffstore.store import TariffStore

COLUMNS = ("id_number", "name", "scheme", "region", "category", "valid_from", "valid_to")
MAX_BYTES = 50 * 1024 * 1024


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
    report = RosterReport(filename, hashlib.sha256(data).hexdigest())
    reader = csv.DictReader(io.StringIO(decode(data)))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise ServiceError(ServiceCode.ROSTER_INVALID, f"the header must be {','.join(COLUMNS)}")
    now = context.clock()
    with context.uow() as tx:
        repo = tx.repo
        categories = known_categories(context.tariffs.current(repo))
        persons: dict[str, Person] = {}
        for row in reader:
            report.rows += 1
            line = reader.line_num
            reason = _row_problem(row, categories)
            id_number = (row.get("id_number") or "").strip()
            if reason is not None:
                report.rejected.append({"line": line, "person": mask_id_number(id_number), "reason": reason})
                continue
            report.accepted += 1
            person = persons.get(id_number) or repo.person(id_number)
            wanted = (row["name"].strip(), row["scheme"].strip(), row["region"].strip())
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
            valid_to = date.fromisoformat(row["valid_to"].strip()) if (row["valid_to"] or "").strip() else None
            existing = repo.category_row(person.id, row["category"].strip(), valid_from)
            if existing is None:
                repo.add(PersonCategory(person_id=person.id, category=row["category"].strip(),
                                        valid_from=valid_from, valid_to=valid_to))
                repo.flush()
                report.changed += 1
            elif existing.valid_to != valid_to:
                existing.valid_to = valid_to
                report.changed += 1
        if report.changed == 0:
            report.already_imported = True
            return report  # nothing changed: nothing is recorded, not even the import
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


def _row_problem(row: dict[str, str | None], categories: set[str]) -> str | None:
    if None in row or any(value is None for value in row.values()):
        return f"expected {len(COLUMNS)} columns"
    values = {key: (value or "").strip() for key, value in row.items()}
    problem = id_number_problem(values["id_number"])
    if problem is not None:
        return f"id_number: {problem}"
    if not values["name"]:
        return "name is empty"
    if values["scheme"] not in set(Scheme):
        return f"scheme must be one of {sorted(Scheme)}"
    if not (len(values["region"]) == 6 and values["region"].isascii() and values["region"].isdigit()):
        return "region must be a 6-digit division code"
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
