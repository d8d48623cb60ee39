"""The hospital network of a region as data: a register file imported and diffed like a catalogue.

The file is a CSV, UTF-8 or GBK, with the header code,name,level,region,dialects; `dialects` lists the SOAP
dialects the hospital speaks, separated by semicolons (empty: REST only). Lines starting with # are comments
(a register says there whether its codes and names are real or illustrative).

An import compares the file with the hospitals recorded: each listed hospital is added, changed (name, level,
region or dialects; the register is the word on all four) or unchanged; a recorded hospital the file does not list
is reported as absent and left alone (its settlements and keys stay). `check` reports the same without changing
anything. A hospital added gets its first API key (returned once, as `hospitals add` prints it). A row with an
error is reported with its line and skipped, the valid rows are imported; everything in one transaction, an audit
row per hospital added or changed.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from settlement.db.models import Hospital, HospitalDialect
from settlement.db.repositories import Repository
from settlement.domain.claim import HospitalLevel
from settlement.services.auth import Caller, add_principal
from settlement.services.context import Context
from settlement.services.errors import ServiceCode, ServiceError
from settlement.services.roster import decode

COLUMNS = ("code", "name", "level", "region", "dialects")
MAX_BYTES = 4 * 1024 * 1024
_CODE = re.compile(r"[A-Za-z0-9_-]{1,32}")
_REGION = re.compile(r"[0-9]{6}")


class Entry(NamedTuple):
    code: str
    name: str
    level: str
    region: str
    dialects: tuple[str, ...]  # sorted

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "name": self.name, "level": self.level, "region": self.region,
                "dialects": list(self.dialects)}


@dataclass
class RegisterReport:
    filename: str
    checked_only: bool
    rows: int = 0
    added: list[dict[str, Any]] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)  # code, and each field's [old, new]
    unchanged: int = 0
    absent: list[str] = field(default_factory=list)  # recorded, not in the file: left alone
    rejected: list[dict[str, Any]] = field(default_factory=list)  # line and reason
    keys: dict[str, str] = field(default_factory=dict)  # the added hospitals' API keys, shown once

    def as_dict(self) -> dict[str, Any]:
        return {"filename": self.filename, "checked_only": self.checked_only, "rows": self.rows,
                "added": self.added, "changed": self.changed, "unchanged": self.unchanged, "absent": self.absent,
                "rejected": self.rejected, "keys": self.keys}


def read_register(data: bytes, known_dialects: set[str]) -> tuple[list[tuple[int, Entry]], list[dict[str, Any]]]:
    """The file's valid rows (with their line numbers) and its rejected ones; a file that is not a register at all
    raises HOSPITALS_INVALID."""
    if len(data) > MAX_BYTES:
        raise ServiceError(ServiceCode.HOSPITALS_INVALID, f"the file is over {MAX_BYTES // (1024 * 1024)} MiB")
    try:
        text = decode(data)
    except ServiceError:
        raise ServiceError(ServiceCode.HOSPITALS_INVALID, "the file is neither UTF-8 nor GBK text") from None
    lines = text.splitlines()
    # The header is the first line that is neither blank nor a comment; later comments are blanked, not dropped,
    # so that line numbers stay those of the file.
    start = next((index for index, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")),
                 len(lines))
    body = ["" if line.lstrip().startswith("#") else line for line in lines[start:]]
    reader = csv.DictReader(io.StringIO("\n".join(body)))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise ServiceError(ServiceCode.HOSPITALS_INVALID, f"the header must be {','.join(COLUMNS)}")
    entries: list[tuple[int, Entry]] = []
    rejected: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for row in reader:
        line = start + reader.line_num
        entry, reason = _entry(row, known_dialects)
        if entry is not None and entry.code in seen:
            reason = f"hospital {entry.code} is listed on line {seen[entry.code]} already"
            entry = None
        if entry is None:
            rejected.append({"line": line, "code": (row.get("code") or "").strip()[:32], "reason": reason})
            continue
        seen[entry.code] = line
        entries.append((line, entry))
    return entries, rejected


def _entry(row: dict[str, Any], known_dialects: set[str]) -> tuple[Entry | None, str]:
    if None in row or any(value is None for value in row.values()):
        return None, f"expected {len(COLUMNS)} columns"
    values = {key: str(value).strip() for key, value in row.items()}
    if not _CODE.fullmatch(values["code"]):
        return None, "code: 1 to 32 letters, digits, - or _"
    if not values["name"] or len(values["name"]) > 128:
        return None, "name: 1 to 128 characters"
    if values["level"] not in set(HospitalLevel):
        return None, f"level must be one of {', '.join(sorted(HospitalLevel))}"
    if not _REGION.fullmatch(values["region"]):
        return None, "region must be a 6-digit division code"
    dialects = tuple(sorted({name.strip() for name in values["dialects"].split(";") if name.strip()}))
    unknown = sorted(set(dialects) - known_dialects)
    if unknown:
        return None, f"no dialect {', '.join(unknown)}; known: {', '.join(sorted(known_dialects))}"
    return Entry(values["code"], values["name"], values["level"], values["region"], dialects), ""


def import_register(context: Context, caller: Caller, filename: str, data: bytes, known_dialects: set[str], *,
                    check: bool = False) -> RegisterReport:
    """Compare the register with the hospitals recorded and, unless `check`, apply it (see the module)."""
    if caller.kind != "admin":
        raise ServiceError(ServiceCode.FORBIDDEN, "importing the hospital register needs an administrator's key")
    entries, rejected = read_register(data, known_dialects)
    report = RegisterReport(filename[:256], check, rows=len(entries) + len(rejected), rejected=rejected)
    now = context.clock()
    with context.uow() as tx:
        repo = tx.repo
        recorded = {hospital.code: hospital for hospital in repo.hospitals()}
        listed = {entry.code for _, entry in entries}
        report.absent = sorted(set(recorded) - listed)
        for _, entry in entries:
            hospital = recorded.get(entry.code)
            if hospital is None:
                report.added.append(entry.as_dict())
                if not check:
                    _add(tx.repo, entry, now, caller.actor, report)
                continue
            bound = tuple(repo.dialects_of(hospital.id))
            was = Entry(hospital.code, hospital.name, hospital.level, hospital.region, bound)
            differences = {name: [old, new] for name, old, new in zip(Entry._fields[1:], was[1:], entry[1:],
                                                                      strict=True) if old != new}
            if not differences:
                report.unchanged += 1
                continue
            report.changed.append({"code": entry.code, **{name: [_shown(old), _shown(new)]
                                                          for name, (old, new) in differences.items()}})
            if not check:
                hospital.name, hospital.level, hospital.region = entry.name, entry.level, entry.region
                for dialect in sorted(set(bound) - set(entry.dialects)):
                    repo.unbind_dialect(hospital.id, dialect)
                for dialect in sorted(set(entry.dialects) - set(bound)):
                    repo.add(HospitalDialect(hospital_id=hospital.id, dialect=dialect, created_at=now))
                repo.audit(now, caller.actor, "hospital.update", "hospital", entry.code, json.dumps(
                    {name: [_shown(old), _shown(new)] for name, (old, new) in differences.items()},
                    ensure_ascii=False))
        if not check and (report.added or report.changed):
            tx.commit()
    return report


def _shown(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def _add(repo: Repository, entry: Entry, now: datetime, actor: str, report: RegisterReport) -> None:
    hospital = Hospital(code=entry.code, name=entry.name, level=entry.level, region=entry.region, created_at=now)
    repo.add(hospital)
    repo.flush()
    for dialect in entry.dialects:
        repo.add(HospitalDialect(hospital_id=hospital.id, dialect=dialect, created_at=now))
    report.keys[entry.code] = add_principal(repo, "hospital", entry.code, hospital.id, now)
    repo.audit(now, actor, "hospital.create", "hospital", entry.code, json.dumps(
        {"name": entry.name, "level": entry.level, "region": entry.region, "dialects": list(entry.dialects),
         "from": "register"}, ensure_ascii=False))
