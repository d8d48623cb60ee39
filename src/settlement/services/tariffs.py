"""Tariff administration: versions are imported as drafts, approved by a second administrator, activated to be in
force from their effective date; catalogue updates with their diff; impact simulation; and the recomputation
of past settlements under the versions they recorded.

History is never rewritten: a version's document never changes (the database refuses it), a version only takes
effect from a date after today (Asia/Shanghai), and never over a date some settlement already used another
version for. Every step writes an audit row in its own transaction.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from settlement.db.models import Settlement, TariffVersion
from settlement.db.repositories import Repository
from settlement.domain.accumulators import Accumulators
from settlement.domain.claim import SHANGHAI
from settlement.domain.errors import ErrorCode, Problem, SettlementError, TariffError
from settlement.domain.money import ZERO, fmt, from_fen, to_fen
from settlement.domain.privacy import mask_id_number, mask_id_numbers
from settlement.domain.settle import Settlement as Computed
from settlement.domain.settle import settle
from settlement.domain.text import NOTE_MAX, PATH_MAX
from settlement.services.context import Context
from settlement.services.errors import ServiceCode, ServiceError
from settlement.services.settlements import limit_movements_of, movements_of
from settlement.services.tariff_schedule import version_of
from settlement.services.text import CsvUnreadable, checked, csv_rows
from settlement.tariffstore.schema import CatalogueItem, TariffDocument
from settlement.tariffstore.store import (
    ResolvedTariff,
    TariffStore,
    VersionFile,
    load_store,
    overlaps,
    read_document,
    read_version_file,
    validation_problems,
)
from settlement.wire.claims import ServiceClaimIn

MAX_UPLOAD_BYTES = 8 * 1024 * 1024
MAX_VERSION_ID = 2**31 - 1  # the id column is a 32-bit integer
PAGE = 1000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # before any settlement
CATALOGUE_REQUIRED = ("code", "name", "class")
CATALOGUE_OPTIONAL = ("kind", "share", "share_by_category", "price_cap", "unit", "note", "effective_from")
Movement = tuple[int, int, int]  # fen: paid, per-year deductible used, cumulative base


# Reading and naming versions


def canonical_content(raw: dict[str, Any]) -> str:
    """The stored form of a document: sorted keys, no formatting (dates as ISO strings)."""
    return json.dumps(raw, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=_iso)


def _iso(value: object) -> str:
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a tariff value")


def today_in_shanghai(context: Context) -> date:
    return context.clock().astimezone(SHANGHAI).date()


def midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, SHANGHAI)


def find_version(repo: Repository, reference: str, *, for_update: bool = False) -> TariffVersion:
    """A version by its id ("12") or its name ("611000/2027-01-01"); `for_update` locks its row, so that two
    administrators taking the same step at once take it one after the other (the second is refused)."""
    row: TariffVersion | None = None
    # ASCII digits only ("²" and "٣" are digits to str.isdigit, not to int or the database), within the column.
    if reference.isascii() and reference.isdigit():
        if int(reference) <= MAX_VERSION_ID:
            row = repo.tariff_version(int(reference), for_update=for_update)
    elif "/" in reference:
        region, _, version = reference.partition("/")
        row = repo.tariff_version_by_label(region, version, for_update=for_update)
    if row is None:
        raise ServiceError(ServiceCode.NOT_FOUND, f"no tariff version {reference!r} (give its id or region/version)")
    return row


def _rejected(origin: str, problems: list[Problem]) -> ServiceError:
    """Refused with every problem listed; the message names the first."""
    first = f"{problems[0].path}: {problems[0].message}" if problems else "unreadable"
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    return ServiceError(ServiceCode.TARIFF_REJECTED, f"{origin}: {first}{more}; nothing recorded", problems)


def stretched(version: VersionFile) -> VersionFile:
    """A version as if it were in force at every date (to re-run past settlements under a draft)."""
    return replace(version, effective_from=date.min, effective_to=None)


# Checking a version against the active ones


def draft_problems(store: TariffStore, version: VersionFile) -> list[Problem]:
    """What would go wrong if `version` joined the versions of `store`: ranges overlapping one of its region's,
    and any resolution it takes part in (its own with its parents, its region's children's with it)."""
    def span(v: VersionFile) -> str:
        return f"{v.effective_from} to {v.effective_to or 'its successor'}"

    problems = [Problem(ErrorCode.TARIFF_OVERLAP, "effective",
                        f"{version.label} ({span(version)}) overlaps {other.label} ({span(other)})")
                for pair in overlaps(store.versions(version.region)) if version.label in (pair[0].label, pair[1].label)
                for other in pair if other.label != version.label]
    pairs: list[tuple[VersionFile, VersionFile | None]] = []
    if version.inherits is None:
        pairs.append((version, None))
    else:
        parents = store.parents_of(version)
        if not parents:
            problems.append(Problem(ErrorCode.TARIFF_NOT_FOUND, "inherits",
                                    f"no active version of {version.inherits} is in force while {version.label} is"))
        pairs.extend((version, parent) for parent in parents)
    for region in store.regions():
        for child in store.versions(region):
            if child.inherits == version.region and version.label in {p.label for p in store.parents_of(child)}:
                pairs.append((child, version))
    for child, parent in pairs:
        try:
            store.resolved_pair(child, parent)
        except TariffError as error:
            problems.extend(error.problems)
    return problems


# Views


def _state(row: TariffVersion, until: date | None, today: date) -> str:
    if row.status != "active":
        return str(row.status)
    if row.effective_from > today:
        return "scheduled"
    return "in force" if until is None or today <= until else "ended"


Resolutions = dict[tuple[str, str | None], ResolvedTariff]


def resolved_hashes(row: TariffVersion, store: TariffStore, cache: Resolutions | None = None) -> list[dict[str, Any]]:
    """The sha256 a settlement records for this version (its canonical JSON after inheritance, catalogue inlined),
    per parent version it resolves with: one for a version that inherits nothing, one per city version in force
    beside a county's. A version not in force is resolved beside the versions that are."""
    version = next((v for v in store.versions(row.region) if v.id == row.id), None)
    if version is None:
        version = version_of(row)
        others = [v for region in store.regions() for v in store.versions(region) if v.label != version.label]
        store = TariffStore.of(str(store.root), [*others, version], cache)
    parents: list[VersionFile | None] = [None] if version.inherits is None else [*store.parents_of(version)]
    hashes = []
    for parent in parents:
        try:
            resolved = store.resolved_pair(version, parent)
        except TariffError:  # a draft whose parent is gone: nothing a settlement could record
            continue
        hashes.append({"with": parent.label if parent is not None else None, "sha256": resolved.tariff.ref.sha256,
                       "version": resolved.tariff.ref.version})
    return hashes


def version_view(row: TariffVersion, store: TariffStore, today: date,
                 cache: Resolutions | None = None) -> dict[str, Any]:
    """A version as administrators see it. `sha256` is the hash settlements record (the canonical tariff as
    resolved; `resolved` lists it per parent version when the version inherits); `document_sha256` is the hash of
    the document as stored, which only tells whether a re-import is the same document."""
    active = next((v for v in store.versions(row.region) if v.id == row.id), None)
    until = store.until(active) if active is not None else row.effective_to
    resolved = resolved_hashes(row, store, cache)
    return {
        "id": row.id, "region": row.region, "version": row.version, "status": row.status,
        "state": _state(row, until, today), "effective_from": row.effective_from.isoformat(),
        "effective_to": row.effective_to.isoformat() if row.effective_to else None,
        "in_force_until": until.isoformat() if until else None, "inherits": row.inherits,
        "sha256": resolved[0]["sha256"] if resolved else None, "resolved": resolved,
        "document_sha256": row.sha256, "origin": row.origin, "based_on": row.based_on_id,
        "created_by": row.created_by, "recorded_at": row.loaded_at.isoformat(),
        "approved_by": row.approved_by, "approved_at": row.approved_at.isoformat() if row.approved_at else None,
        "activated_by": row.activated_by,
        "activated_at": row.activated_at.isoformat() if row.activated_at else None,
        "withdrawn_by": row.withdrawn_by,
        "withdrawn_at": row.withdrawn_at.isoformat() if row.withdrawn_at else None, "note": row.note,
    }


def _audit_read(repo: Repository, context: Context, actor: str | None, action: str, subject: str,
                details: dict[str, Any]) -> None:
    """Reads by an administrator are audited too (who looked at which version when), apart from the version's
    own history, which records its steps."""
    if actor is not None:
        repo.audit(context.clock(), actor, action, "tariff_versions", subject, json.dumps(details))


def list_versions(context: Context, region: str | None = None, *, actor: str | None = None) -> list[dict[str, Any]]:
    with context.uow() as tx:
        store = context.tariffs.current(tx.repo)
        today = today_in_shanghai(context)
        views = [version_view(row, store, today, context.tariffs.shared_cache)
                 for row in tx.repo.tariff_versions(region=region)]
        _audit_read(tx.repo, context, actor, "tariff.list", region or "all", {"versions": len(views)})
        tx.commit()
        return views


def show_version(context: Context, reference: str, *, actor: str | None = None) -> dict[str, Any]:
    with context.uow() as tx:
        row = find_version(tx.repo, reference)
        store = context.tariffs.current(tx.repo)
        view = version_view(row, store, today_in_shanghai(context), context.tariffs.shared_cache)
        view["document"] = json.loads(row.content)
        view["history"] = [{"at": entry.at.isoformat(), "actor": entry.actor, "action": entry.action,
                            "details": json.loads(entry.details)}
                           for entry in tx.repo.audit_of("tariff_version", f"{row.region}/{row.version}")]
        _audit_read(tx.repo, context, actor, "tariff.show", f"{row.region}/{row.version}", {"id": row.id})
        tx.commit()
        return view


# Importing


def version_row(version: VersionFile, now: datetime, **life: Any) -> TariffVersion:
    """A new row for a version: its document in canonical form and that form's hash, and its life so far."""
    content = canonical_content(version.raw)
    return TariffVersion(region=version.region, version=version.version,
                         sha256=hashlib.sha256(content.encode("utf-8")).hexdigest(),
                         effective_from=version.effective_from, effective_to=version.effective_to,
                         inherits=version.inherits, content=content, loaded_at=now, **life)


def _record_draft(context: Context, version: VersionFile, origin: str, actor: str, note: str | None,
                  based_on: int | None) -> dict[str, Any]:
    # What an administrator typed (the note, a file's name) is kept with its ID numbers masked.
    origin, note = mask_id_numbers(origin), None if note is None else mask_id_numbers(note)
    now = context.clock()
    if note is not None:
        checked(note, "the note", NOTE_MAX, multiline=True)
    checked(origin, "the file's name", PATH_MAX)  # a path or an upload's name; kept to its first 256 characters
    row = version_row(version, now, status="draft", origin=origin[:256], based_on_id=based_on, created_by=actor,
                      note=note)
    with context.uow() as tx:
        existing = tx.repo.tariff_version_by_label(version.region, version.version)
        if existing is not None:
            if existing.sha256 != row.sha256:
                raise ServiceError(ServiceCode.TARIFF_VERSION_EXISTS,
                                   f"{version.label} is already recorded (id {existing.id}, {existing.status}) with "
                                   "other content; versions are never edited: give the new one a version name "
                                   "of its own")
            view = version_view(existing, context.tariffs.current(tx.repo), today_in_shanghai(context),
                                context.tariffs.shared_cache)
            return {"version": view, "already_recorded": True, "diff": None}
        active = tx.repo.tariff_versions(statuses=("active",))
        store = context.tariffs.store_of(active, "the active versions", [version])
        problems = draft_problems(store, version)
        if problems:
            raise _rejected(origin, problems)
        tx.repo.add(row)
        tx.repo.flush()
        tx.repo.audit(now, actor, "tariff.import", "tariff_version", version.label, json.dumps(
            {"id": row.id, "sha256": row.sha256, "origin": origin, "effective_from": version.effective_from.isoformat(),
             "note": note}, ensure_ascii=False))
        view = version_view(row, store, today_in_shanghai(context), context.tariffs.shared_cache)
        tx.commit()
    return {"version": view, "already_recorded": False, "diff": diff_versions(context, str(view["id"]))}


def import_document(context: Context, raw: Any, origin: str, actor: str, *, base_dir: Path | None = None,
                    note: str | None = None, based_on: int | None = None) -> dict[str, Any]:
    """Record a version document (a YAML file's content or an upload) as a draft, with its diff."""
    origin = mask_id_numbers(origin)  # an upload's file name, repeated in errors and kept with the version
    problems: list[Problem] = []
    version = read_document(raw, origin, base_dir, problems)
    if version is None or problems:
        raise _rejected(origin, problems)
    return _record_draft(context, version, origin, actor, note, based_on)


def parse_upload(data: bytes, origin: str) -> Any:
    """An uploaded version: YAML or JSON (JSON is YAML), UTF-8."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise ServiceError(ServiceCode.TARIFF_REJECTED, f"{origin}: over {MAX_UPLOAD_BYTES // 1024 // 1024} MiB")
    try:
        return yaml.safe_load(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, yaml.YAMLError) as error:
        raise ServiceError(ServiceCode.TARIFF_REJECTED, f"{origin}: cannot read it as UTF-8 YAML or JSON: "
                                                        f"{str(error).splitlines()[0]}") from None


def import_path(context: Context, path: Path, actor: str, note: str | None = None) -> list[dict[str, Any]]:
    """A version file, or a whole tariff folder (every version not recorded yet), as drafts."""
    if path.is_dir():
        try:
            store = load_store(path)
        except TariffError as error:
            raise _rejected(str(path), error.problems) from None
        outcomes = []
        # Parents first: a county's draft is checked against its city's versions.
        for region in sorted(store.regions(), key=lambda r: (r.endswith("0000"), r.endswith("00")), reverse=True):
            for version in store.versions(region):
                outcomes.append(_record_draft(context, version, version.origin, actor, note, None))
        return outcomes
    problems: list[Problem] = []
    read = read_version_file(path, problems)
    if read is None or problems:
        raise _rejected(str(path), problems)
    return [_record_draft(context, read, str(path), actor, note, None)]


def read_catalogue_upload(data: bytes, origin: str) -> tuple[list[dict[str, Any]], list[tuple[int, date]],
                                                           list[Problem]]:
    """A catalogue CSV (UTF-8 or GBK): item code, name, class, class B share and shares by category, price cap,
    and each item's effective date. Returns the items (each with its `_line`), their (line, date) pairs and every
    problem with its line."""
    problems: list[Problem] = []
    for encoding in ("utf-8-sig", "gbk"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        return [], [], [Problem(ErrorCode.TARIFF_INVALID, origin, "the file is neither UTF-8 nor GBK text")]
    reader = csv.DictReader(io.StringIO(text))
    header = tuple(reader.fieldnames or ())
    missing = [name for name in CATALOGUE_REQUIRED if name not in header]
    unknown = [name for name in header if name not in CATALOGUE_REQUIRED + CATALOGUE_OPTIONAL]
    if missing or unknown:
        return [], [], [Problem(ErrorCode.TARIFF_INVALID, f"{origin}: line 1",
                                f"columns are {','.join(CATALOGUE_REQUIRED + CATALOGUE_OPTIONAL)}"
                                f"{'; missing ' + ','.join(missing) if missing else ''}"
                                f"{'; unknown ' + ','.join(unknown) if unknown else ''}")]
    items: list[dict[str, Any]] = []
    dates: list[tuple[int, date]] = []
    seen: set[str] = set()
    unreadable: list[CsvUnreadable] = []
    for row in csv_rows(reader, unreadable):
        where = f"{origin}: line {reader.line_num}"
        if None in row or any(value is None for value in row.values()):
            problems.append(Problem(ErrorCode.TARIFF_INVALID, where, f"expected {len(header)} columns"))
            continue
        item: dict[str, Any] = {key: value.strip() for key, value in row.items() if value.strip() != ""}
        day = item.pop("effective_from", None)
        shares = item.pop("share_by_category", None)
        try:
            if shares:
                item["share_by_category"] = dict(pair.split("=", 1) for pair in shares.split(";"))
            if day is not None:
                dates.append((reader.line_num, date.fromisoformat(day)))
            CatalogueItem.model_validate(item)
        except ValueError as error:
            if isinstance(error, ValidationError):
                problems.extend(validation_problems(error, where))
            else:
                problems.append(Problem(ErrorCode.TARIFF_INVALID, where,
                                        "share_by_category is category=share pairs separated by semicolons; "
                                        "effective_from is YYYY-MM-DD"))
            continue
        if item["code"] in seen:
            problems.append(Problem(ErrorCode.TARIFF_INVALID, where, f"item {item['code']} is listed twice"))
            continue
        seen.add(item["code"])
        items.append(item | {"_line": reader.line_num})
    problems.extend(Problem(ErrorCode.TARIFF_INVALID, f"{origin}: line {error.line}", str(error))
                    for error in unreadable)
    if not items and not problems:
        problems.append(Problem(ErrorCode.TARIFF_INVALID, origin, "the catalogue lists no items"))
    return items, dates, problems


def import_catalogue(context: Context, data: bytes, filename: str, region: str, actor: str, *,
                     effective: date | None = None, version_name: str | None = None,
                     note: str | None = None) -> dict[str, Any]:
    """A new catalogue for a region as a draft: the region's version in force on the effective date with its
    catalogue replaced. The effective date is given, or the latest of the items' dates."""
    origin = f"catalogue {filename}"
    if len(data) > MAX_UPLOAD_BYTES:
        raise ServiceError(ServiceCode.TARIFF_REJECTED, f"{origin}: over {MAX_UPLOAD_BYTES // 1024 // 1024} MiB")
    items, dates, problems = read_catalogue_upload(data, origin)
    if problems:
        raise _rejected(origin, problems)
    start = effective or (max(day for _, day in dates) if dates else None)
    if start is None:
        raise ServiceError(ServiceCode.TARIFF_REJECTED, f"{origin}: give the effective date (an effective_from "
                                                        "column, or --effective)")
    later = [Problem(ErrorCode.TARIFF_INVALID, f"{origin}: line {line}", f"dated {day}, after the version's "
                     f"effective date {start}: not in force yet (give it a version of its own)")
             for line, day in dates if day > start]
    if later:
        raise _rejected(origin, later)
    with context.uow() as tx:
        store = context.tariffs.current(tx.repo)
        try:
            base = store.version_file(region, start)
        except TariffError:
            raise ServiceError(ServiceCode.NOT_FOUND, f"no active version of {region} is in force on {start} to "
                                                      "take the policy parameters from; import a full version "
                                                      "instead") from None
        taken = {row.version for row in tx.repo.tariff_versions(region=region)}
        try:
            in_force = store.resolve(region, start).document
        except TariffError as error:
            raise _rejected(origin, error.problems) from None
    known = set(in_force.categories) | set(in_force.category_groups)
    unknown = [Problem(ErrorCode.TARIFF_INVALID, f"{origin}: line {item['_line']}",
                       f"share_by_category names {code!r}, not a category or group of {region}'s tariff")
               for item in items for code in item.get("share_by_category", {}) if code not in known]
    if unknown:
        raise _rejected(origin, unknown)
    items = [{key: value for key, value in item.items() if key != "_line"} for item in items]
    name = version_name or next(candidate for n in range(1, 1000)
                                if (candidate := start.isoformat() + ("" if n == 1 else f"-{n}")) not in taken)
    raw = dict(base.raw)
    raw["version"] = name
    raw["effective"] = {"from": start.isoformat()}
    old_catalogue = raw.get("catalogue") or {}
    raw["catalogue"] = {"items": items, "unknown_items": old_catalogue.get("unknown_items", "out_of_catalogue")}
    return import_document(context, raw, origin, actor, note=note, based_on=base.id)


# Comparing versions


def _resolve_for_diff(store: TariffStore, version: VersionFile, day: date) -> TariffDocument:
    parent = None
    if version.inherits is not None:
        parent = next((p for p in store.parents_of(version)
                       if p.effective_from <= max(day, version.effective_from)), None)
        parent = parent or next(iter(store.parents_of(version)), None)
    return store.resolved_pair(version, parent).document


def _flatten(value: Any, path: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key in sorted(value):
            _flatten(value[key], f"{path}.{key}" if path else str(key), out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) and "id" in v for v in value):
        for item in value:
            _flatten({k: v for k, v in item.items() if k != "id"}, f"{path}[{item['id']}]", out)
    else:
        out[path] = value


def document_diff(old: TariffDocument | None, new: TariffDocument) -> dict[str, Any]:
    """Catalogue items added, removed and changed (class, shares, cap, name), and every policy parameter that
    changed, by path (layers by id)."""
    def items(document: TariffDocument | None) -> dict[str, dict[str, Any]]:
        if document is None:
            return {}
        return {item.code: item.model_dump(mode="json", by_alias=True, exclude_none=True)
                for item in document.catalogue.items}

    before, after = items(old), items(new)
    changed = []
    for code in sorted(set(before) & set(after)):
        fields = {key: [before[code].get(key), after[code].get(key)]
                  for key in sorted(set(before[code]) | set(after[code]))
                  if before[code].get(key) != after[code].get(key)}
        if fields:
            changed.append({"code": code, "name": after[code]["name"], "changes": fields})
    parameters_before: dict[str, Any] = {}
    parameters_after: dict[str, Any] = {}
    for document, out in ((old, parameters_before), (new, parameters_after)):
        if document is not None:
            dumped = document.model_dump(mode="json", by_alias=True, exclude_none=True)
            dumped["catalogue"].pop("items", None)
            _flatten(dumped, "", out)
    parameters = [{"path": path, "before": parameters_before.get(path), "after": parameters_after.get(path)}
                  for path in sorted(set(parameters_before) | set(parameters_after))
                  if parameters_before.get(path) != parameters_after.get(path)]
    return {
        "catalogue": {
            "added": [{"code": code, "name": after[code]["name"], "class": after[code]["class"],
                       "share": after[code].get("share"), "price_cap": after[code].get("price_cap")}
                      for code in sorted(set(after) - set(before))],
            "removed": [{"code": code, "name": before[code]["name"], "class": before[code]["class"]}
                        for code in sorted(set(before) - set(after))],
            "changed": changed,
            "unchanged": len(set(before) & set(after)) - len(changed),
        },
        "parameters": parameters,
    }


def diff_versions(context: Context, reference: str, against: str | None = None, *,
                  actor: str | None = None) -> dict[str, Any]:
    """How a version differs from another (by default the one it was based on, else the active version of its
    region in force on its effective date, else the one before it)."""
    with context.uow() as tx:
        row = find_version(tx.repo, reference)
        active = tx.repo.tariff_versions(statuses=("active",))
        version = version_of(row)
        others = [version_of(r) for r in active if r.id != row.id]
        base_row: TariffVersion | None = None
        if against is not None:
            base_row = find_version(tx.repo, against)
        elif row.based_on_id is not None:
            base_row = tx.repo.tariff_version(row.based_on_id)
        else:
            candidates = [r for r in active if r.region == row.region and r.id != row.id
                          and r.effective_from <= row.effective_from]
            base_row = candidates[-1] if candidates else None
        store = TariffStore.of("the active versions", [*others, version], context.tariffs.shared_cache)
        try:
            new_document = _resolve_for_diff(store, version, row.effective_from)
            old_document = None
            if base_row is not None:
                base = version_of(base_row)
                base_store = TariffStore.of("the active versions", [v for v in others if v.id != base.id] + [base],
                                            context.tariffs.shared_cache)
                old_document = _resolve_for_diff(base_store, base, row.effective_from)
        except TariffError as error:
            raise _rejected(f"{row.region}/{row.version}", error.problems) from None
        result = document_diff(old_document, new_document)
        result["version"] = f"{row.region}/{row.version}"
        result["against"] = None if base_row is None else f"{base_row.region}/{base_row.version}"
        _audit_read(tx.repo, context, actor, "tariff.diff", result["version"], {"against": result["against"]})
        tx.commit()
        return result


# The life of a version


def approve(context: Context, reference: str, actor: str) -> dict[str, Any]:
    """A second administrator approves a draft; its author cannot."""
    now = context.clock()
    with context.uow() as tx:
        row = find_version(tx.repo, reference, for_update=True)
        if row.status != "draft":
            raise ServiceError(ServiceCode.TARIFF_STATE, f"{row.region}/{row.version} is {row.status}; only a "
                                                         "draft is approved")
        if row.created_by == actor:
            raise ServiceError(ServiceCode.TARIFF_SELF_APPROVAL,
                               f"{row.region}/{row.version} was recorded by {actor}; another administrator "
                               "approves it")
        row.status, row.approved_by, row.approved_at = "approved", actor, now
        tx.repo.audit(now, actor, "tariff.approve", "tariff_version", f"{row.region}/{row.version}",
                      json.dumps({"id": row.id, "sha256": row.sha256, "author": row.created_by}))
        tx.commit()
        return version_view(row, context.tariffs.current(tx.repo), today_in_shanghai(context),
                            context.tariffs.shared_cache)


def _refuse_rewriting_history(repo: Repository, store: TariffStore, version: VersionFile, today: date) -> None:
    """A version takes effect only at a future midnight, and never where a settlement already used another."""
    if version.effective_from <= today:
        raise ServiceError(ServiceCode.TARIFF_RETROACTIVE,
                           f"{version.label} would take effect on {version.effective_from}, not after today "
                           f"({today}, Asia/Shanghai); settlements already made are never recomputed: give it a "
                           "later effective date in a new version")
    region = version.region
    affected = [v.id for name in {region, region[:4] + "00", region[:2] + "0000"} for v in store.versions(name)
                if v.id is not None and v is not version]
    if affected:
        found = repo.settlement_dated_from(affected, midnight(version.effective_from))
        if found is not None:
            raise ServiceError(ServiceCode.TARIFF_RETROACTIVE,
                               f"settlement {found} is already dated on or after {version.effective_from} under "
                               f"another version; {version.label} cannot take effect before it")


def activate(context: Context, reference: str, actor: str) -> dict[str, Any]:
    """Put an approved version in force from its effective date. Settlements in flight finish under the versions
    they started with; every later one sees the new schedule."""
    now = context.clock()
    today = today_in_shanghai(context)
    with context.uow() as tx:
        repo = tx.repo
        repo.lock_tariff_schedule(now)  # waits for settlements in flight; the next ones wait for this commit
        row = find_version(repo, reference, for_update=True)
        if row.status != "approved":
            hint = "approve it first" if row.status == "draft" else "it cannot be activated again"
            raise ServiceError(ServiceCode.TARIFF_STATE, f"{row.region}/{row.version} is {row.status}; {hint}")
        version = version_of(row)
        store = context.tariffs.store_of(repo.tariff_versions(statuses=("active",)), "the active versions",
                                         [version])
        _refuse_rewriting_history(repo, store, version, today)
        problems = draft_problems(store, version)
        if problems:
            raise ServiceError(ServiceCode.TARIFF_CONFLICT,
                               f"{version.label} conflicts with the versions in force: {problems[0].message}",
                               problems)
        row.status, row.activated_by, row.activated_at = "active", actor, now
        repo.audit(now, actor, "tariff.activate", "tariff_version", version.label, json.dumps(
            {"id": row.id, "sha256": row.sha256, "effective_from": row.effective_from.isoformat()}))
        tx.commit()
        return version_view(row, store, today, context.tariffs.shared_cache)


def withdraw(context: Context, reference: str, actor: str, reason: str) -> dict[str, Any]:
    """Set a draft or approved version aside, or cancel an active one before it takes effect."""
    now = context.clock()
    today = today_in_shanghai(context)
    with context.uow() as tx:
        repo = tx.repo
        if not reason.strip():
            raise ServiceError(ServiceCode.REQUEST_MALFORMED, "say why the version is withdrawn")
        checked(reason, "the reason", NOTE_MAX, multiline=True)
        reason = mask_id_numbers(reason)
        row = find_version(repo, reference, for_update=True)
        if row.status == "withdrawn":
            raise ServiceError(ServiceCode.TARIFF_STATE, f"{row.region}/{row.version} is already withdrawn")
        if row.status == "active":
            repo.lock_tariff_schedule(now)
            if row.effective_from <= today or repo.settlement_dated_from([row.id], EPOCH):
                raise ServiceError(ServiceCode.TARIFF_RETROACTIVE,
                                   f"{row.region}/{row.version} is in force since {row.effective_from}; end it with "
                                   "a new version instead")
        previous = row.status
        row.status, row.withdrawn_by, row.withdrawn_at, row.note = "withdrawn", actor, now, reason
        repo.audit(now, actor, "tariff.withdraw", "tariff_version", f"{row.region}/{row.version}",
                   json.dumps({"id": row.id, "was": previous, "reason": reason}, ensure_ascii=False))
        tx.commit()
        return version_view(row, context.tariffs.current(repo), today, context.tariffs.shared_cache)


def seed(context: Context, root: Path) -> list[str]:
    """On a database with no tariff versions at all: the shipped versions of `root`, active as of install."""
    with context.uow() as tx:
        if tx.repo.tariff_versions():
            return []
    try:
        store = load_store(root)
    except TariffError as error:
        raise _rejected(str(root), error.problems) from None
    now = context.clock()
    added = []
    with context.uow() as tx:
        tx.repo.lock_tariff_schedule(now)
        if tx.repo.tariff_versions():  # another process seeded it meanwhile
            return []
        for region in store.regions():
            for version in store.versions(region):
                tx.repo.add(version_row(
                    version, now, status="active", origin=str(Path(version.origin).relative_to(root.parent))
                    if Path(version.origin).is_relative_to(root.parent) else version.origin,
                    created_by="system", approved_by="system", approved_at=now, activated_by="system",
                    activated_at=now, note="shipped with the engine, in force at installation"))
                tx.repo.audit(now, "system", "tariff.seed", "tariff_version", version.label,
                              json.dumps({"origin": version.origin}, ensure_ascii=False))
                added.append(f"{version.region} {version.version}")
        tx.commit()
    return added


def unrecorded_files(context: Context, root: Path) -> list[str]:
    """Versions in the tariff folder that the database does not have (an operator's hint at start-up)."""
    try:
        store = load_store(root)
    except TariffError:
        return []
    with context.uow() as tx:
        known = {(row.region, row.version) for row in tx.repo.tariff_versions()}
    # A county version recorded before tariff administration is named with its city's ("2024-01-01+611000@...").
    recorded_resolved = {(region, label.split("+", 1)[0]) for region, label in known if "+" in label}
    return [v.label for region in store.regions() for v in store.versions(region)
            if (v.region, v.version) not in known | recorded_resolved]


# Recomputing settlements


def accumulators_of(stored: str) -> Accumulators:
    data = json.loads(stored)
    return Accumulators(int(data["year"]), int(data["admissions"]),
                        {fund: Decimal(v) for fund, v in data["deductible_used"].items()},
                        {fund: Decimal(v) for fund, v in data["cumulative"].items()},
                        {fund: Decimal(v) for fund, v in data["paid"].items()},
                        {level: int(count) for level, count in data.get("admissions_by_level", {}).items()},
                        {(fund, key): Decimal(v) for fund, keyed in data.get("limits", {}).items()
                         for key, v in keyed.items()})


def recompute(row: Stored, claim_in: ServiceClaimIn, resolved: ResolvedTariff,
              accumulators: Accumulators | None = None) -> Computed:
    """A stored settlement computed again from its claim as received (`claim_in`, read from `row.claim`), the
    roster categories and retirement it recorded and the year-to-date figures it started from (or others, for a
    simulation)."""
    claim = claim_in.build(claim_in.patient, tuple(json.loads(row.categories)), bool(row.retired))
    return settle(claim, resolved.tariff, accumulators or accumulators_of(row.accumulators_before))


def settling_tariff(store: TariffStore, claim_in: ServiceClaimIn) -> ResolvedTariff:
    """The version a stored claim is settled by in `store` (the date its tariff says decides)."""
    visit = claim_in.visit
    return store.resolve_for(claim_in.patient.region, visit.admission_date, visit.discharge_date,
                             visit.settled_at.astimezone(SHANGHAI).date())


@dataclass(frozen=True)
class Stored:
    """What a recomputation needs of a settlement, read in a short transaction and used after it ended."""

    id: int
    public_id: str
    id_number: str
    insurance_year: int
    settled_at: datetime
    created_at: datetime
    tariff_version_id: int
    tariff_parent_version_id: int | None
    tariff_sha256: str
    patient_fen: int
    claim: str
    categories: str
    accumulators_before: str
    entries: dict[str, Movement]  # what the settlement itself put in the ledger, by fund
    reversed_at: datetime | None
    retired: bool | None = None
    limits: dict[tuple[str, str], int] = field(default_factory=dict)  # its limit entries, by (fund, limit)


def _stored(row: Settlement, entries: dict[str, Movement], reversed_at: datetime | None,
            limits: dict[tuple[str, str], int]) -> Stored:
    return Stored(row.id, row.public_id, row.id_number, row.insurance_year, row.settled_at, row.created_at,
                  row.tariff_version_id, row.tariff_parent_version_id, row.tariff_sha256, row.patient_fen,
                  row.claim, row.categories, row.accumulators_before, entries, reversed_at, row.retired, limits)


def stored_pages(context: Context, start: date, end: date, versions: dict[int, VersionFile]) -> Iterator[list[Stored]]:
    """Settlements dated in [start, end], a page at a time, each page read in a transaction of its own (never
    holding the database while computing); the versions they name are added to `versions`."""
    after = 0
    low, high = midnight(start), midnight(end + timedelta(days=1))
    while True:
        with context.uow() as tx:
            repo = tx.repo
            rows = list(repo.settlements_dated(low, high, after, PAGE))
            if not rows:
                return
            ids = [row.id for row in rows]
            entries: dict[int, dict[str, Movement]] = {row_id: {} for row_id in ids}
            for entry in repo.original_entries(ids):
                entries[entry.settlement_id][entry.fund] = (entry.paid_fen, entry.deductible_fen,
                                                            entry.cumulative_fen)
            limits: dict[int, dict[tuple[str, str], int]] = {row_id: {} for row_id in ids}
            for limit in repo.original_limit_entries(ids):
                limits[limit.settlement_id][(limit.fund, limit.name)] = limit.paid_fen
            reversals = repo.reversal_times(ids)
            for row in rows:
                for version_id in (row.tariff_version_id, row.tariff_parent_version_id):
                    if version_id is not None and version_id not in versions:
                        version_row = repo.tariff_version(version_id)
                        assert version_row is not None  # a foreign key
                        versions[version_id] = version_of(version_row)
            page = [_stored(row, entries[row.id], reversals.get(row.id), limits[row.id]) for row in rows]
        yield page
        after = page[-1].id


def verify(context: Context, start: date, end: date, actor: str,
           progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Recompute every settlement dated in [start, end] under the version it recorded; report every difference
    from what was paid (each fund's entry, the patient's share) and any version whose content no longer hashes to
    what the settlement recorded, or that is not the version the schedule puts in force on its date (the schedule
    of a past date never changes: activation refuses that)."""
    versions: dict[int, VersionFile] = {}
    store = TariffStore.of("recorded versions", [], context.tariffs.shared_cache)
    with context.uow() as tx:
        schedule = context.tariffs.current(tx.repo)
    checked = 0
    differences: list[dict[str, Any]] = []
    for page in stored_pages(context, start, end, versions):
        for row in page:
            checked += 1
            parent = versions[row.tariff_parent_version_id] if row.tariff_parent_version_id else None
            problem = _verify_one(row, store, versions[row.tariff_version_id], parent, schedule)
            if problem is not None:
                differences.append(problem)
        if progress is not None:
            progress(len(page))
    report = {"from": start.isoformat(), "to": end.isoformat(), "checked": checked,
              "matched": checked - len(differences), "differences": differences}
    with context.uow() as tx:
        tx.repo.audit(context.clock(), actor, "settlements.verify", "settlements", f"{start}..{end}", json.dumps(
            {"checked": checked, "differences": len(differences),
             "settlements": [d["settlement_id"] for d in differences[:50]]}))
        tx.commit()
    return report


def _verify_one(row: Stored, store: TariffStore, version: VersionFile, parent: VersionFile | None,
                schedule: TariffStore) -> dict[str, Any] | None:
    head = {"settlement_id": row.public_id, "settled_at": row.settled_at.astimezone(SHANGHAI).isoformat(),
            "person": mask_id_number(row.id_number), "tariff": version.label + (f"+{parent.label}" if parent else "")}
    claim_in = ServiceClaimIn.model_validate_json(row.claim)
    try:
        in_force = settling_tariff(schedule, claim_in)
        expected = (in_force.version.id, in_force.parent.id if in_force.parent else None)
    except TariffError:
        expected = None
    if expected != (version.id, parent.id if parent else None):
        day = row.settled_at.astimezone(SHANGHAI).date()
        return {**head, "kind": "version_not_in_force",
                "detail": f"the schedule puts {in_force.tariff.ref.version if expected else 'no version'} in force "
                          f"for a claim settled on {day}, the settlement recorded {version.label}", "funds": []}
    try:
        resolved = store.resolved_pair(version, parent)
        if resolved.tariff.ref.sha256 != row.tariff_sha256:
            return {**head, "kind": "tariff_changed", "detail": f"the version now hashes to "
                                                                f"{resolved.tariff.ref.sha256[:12]}, the "
                                                                f"settlement recorded {row.tariff_sha256[:12]}",
                    "funds": []}
        computed = recompute(row, claim_in, resolved)
    except SettlementError as error:
        return {**head, "kind": "not_recomputable", "detail": f"{error.code}: {error}", "funds": []}
    again = movements_of(computed)
    funds = []
    for fund in sorted(set(again) | set(row.entries)):
        was, now = row.entries.get(fund, (0, 0, 0)), again.get(fund, (0, 0, 0))
        if was != now:
            funds.append({"fund": fund, "paid": fmt(from_fen(was[0])), "recomputed": fmt(from_fen(now[0])),
                          "deductible": [fmt(from_fen(was[1])), fmt(from_fen(now[1]))],
                          "cumulative": [fmt(from_fen(was[2])), fmt(from_fen(now[2]))]})
    limits_again = limit_movements_of(computed)
    for (fund, name) in sorted(set(limits_again) | set(row.limits)):
        was_paid, now_paid = row.limits.get((fund, name), 0), limits_again.get((fund, name), 0)
        if was_paid != now_paid:
            funds.append({"fund": fund, "limit": name, "paid": fmt(from_fen(was_paid)),
                          "recomputed": fmt(from_fen(now_paid))})
    patient = to_fen(computed.patient_pays)
    if not funds and patient == row.patient_fen:
        return None
    return {**head, "kind": "amounts_differ",
            "detail": f"patient paid {fmt(from_fen(row.patient_fen))}, recomputed "
                      f"{fmt(computed.patient_pays)}", "funds": funds}


@dataclass
class _Chain:
    """A person's year under the draft: the differences carried from earlier settlements of the period, per fund
    and per limit inside a fund."""

    moves: list[tuple[datetime, datetime | None, dict[str, Movement], dict[tuple[str, str], int]]] = field(
        default_factory=list)

    def shift(self, at: datetime) -> tuple[dict[str, Movement], dict[tuple[str, str], int]]:
        total: dict[str, Movement] = {}
        limits: dict[tuple[str, str], int] = {}
        for _, reversed_at, delta, limit_delta in self.moves:  # earlier settlements of the person's year, in order
            if reversed_at is None or reversed_at >= at:
                for fund, (a, b, c) in delta.items():
                    x, y, z = total.get(fund, (0, 0, 0))
                    total[fund] = (x + a, y + b, z + c)
                for key, paid in limit_delta.items():
                    limits[key] = limits.get(key, 0) + paid
        return total, limits


def _shifted(accumulators: Accumulators, shift: tuple[dict[str, Movement], dict[tuple[str, str], int]]) -> Accumulators:
    funds, limit_shift = shift

    def moved(values: Any, index: int) -> dict[str, Decimal]:
        result = dict(values)
        for fund, delta in funds.items():
            result[fund] = result.get(fund, ZERO) + from_fen(delta[index])
        return result

    limits = dict(accumulators.limits)
    for key, paid in limit_shift.items():
        limits[key] = limits.get(key, ZERO) + from_fen(paid)
    return Accumulators(accumulators.year, accumulators.admissions, moved(accumulators.deductible_used, 1),
                        moved(accumulators.cumulative, 2), moved(accumulators.paid, 0),
                        accumulators.admissions_by_level, limits)


def simulate(context: Context, reference: str, start: date, end: date, actor: str, *, top: int = 20,
             progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Re-run the settlements dated in [start, end] that the version's region decides, as if the version had been
    in force then; record nothing. Per fund, the totals as paid and as they would be, and the settlements most
    affected. A person's later settlements in the period start from the year-to-date figures the draft would
    have left (caps and deductibles carry over)."""
    with context.uow() as tx:
        row = find_version(tx.repo, reference)
        if row.status == "withdrawn":
            raise ServiceError(ServiceCode.TARIFF_STATE, f"{row.region}/{row.version} is withdrawn")
        draft = stretched(version_of(row))
        active = [version_of(r) for r in tx.repo.tariff_versions(statuses=("active",)) if r.region != row.region]
        label = f"{row.region}/{row.version}"
    if end < start:
        raise ServiceError(ServiceCode.REQUEST_MALFORMED, "the period ends before it starts")
    hypothetical = TariffStore.of("the simulation", [*active, draft], context.tariffs.shared_cache)
    funds: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # fund -> [as paid, under the draft]
    patient = [0, 0]
    chains: dict[tuple[str, int], _Chain] = defaultdict(_Chain)
    affected: list[dict[str, Any]] = []
    refused: dict[str, int] = defaultdict(int)
    rerun = considered = 0
    versions: dict[int, VersionFile] = {}
    for page in stored_pages(context, start, end, versions):
        for settlement in page:
            considered += 1
            claim_in = ServiceClaimIn.model_validate_json(settlement.claim)
            try:
                resolved = settling_tariff(hypothetical, claim_in)
            except TariffError:
                continue
            if draft.label not in (resolved.version.label, resolved.parent and resolved.parent.label):
                continue
            rerun += 1
            chain = chains[(settlement.id_number, settlement.insurance_year)]
            before = _shifted(accumulators_of(settlement.accumulators_before), chain.shift(settlement.created_at))
            try:
                computed = recompute(settlement, claim_in, resolved, before)
            except SettlementError as error:
                refused[str(error.code)] += 1
                continue
            was = settlement.entries
            now = movements_of(computed)
            delta = {fund: (n[0] - w[0], n[1] - w[1], n[2] - w[2])
                     for fund in set(now) | set(was)
                     for n, w in [(now.get(fund, (0, 0, 0)), was.get(fund, (0, 0, 0)))]}
            limits_now = limit_movements_of(computed)
            limit_delta = {key: limits_now.get(key, 0) - settlement.limits.get(key, 0)
                           for key in set(limits_now) | set(settlement.limits)}
            chain.moves.append((settlement.created_at, settlement.reversed_at,
                                {fund: d for fund, d in delta.items() if any(d)},
                                {key: d for key, d in limit_delta.items() if d}))
            if settlement.reversed_at is not None:
                continue  # reversed: it nets to nothing either way, but its figures carried until then
            new_patient = to_fen(computed.patient_pays)
            patient[0] += settlement.patient_fen
            patient[1] += new_patient
            for fund in set(now) | set(was):
                funds[fund][0] += was.get(fund, (0, 0, 0))[0]
                funds[fund][1] += now.get(fund, (0, 0, 0))[0]
            change = sum(abs(d[0]) for d in delta.values())  # the patient's share moves by the rest
            if change:
                affected.append({
                    "settlement_id": settlement.public_id, "settled_at": settlement.settled_at.astimezone(
                        SHANGHAI).isoformat(), "person": mask_id_number(settlement.id_number),
                    "patient_pays": [fmt(from_fen(settlement.patient_fen)), fmt(from_fen(new_patient))],
                    "funds": {fund: [fmt(from_fen(was.get(fund, (0, 0, 0))[0])),
                                     fmt(from_fen(now.get(fund, (0, 0, 0))[0]))]
                              for fund in sorted(set(now) | set(was))},
                    "_change": change})
                affected.sort(key=lambda item: -int(item["_change"]))
                del affected[top:]
        if progress is not None:
            progress(len(page))
    for item in affected:
        item["change"] = fmt(from_fen(item.pop("_change")))
    report = {
        "version": label, "from": start.isoformat(), "to": end.isoformat(), "settlements_considered": considered,
        "settlements_rerun": rerun, "refused_under_version": dict(refused),
        "funds": [{"fund": fund, "as_paid": fmt(from_fen(a)), "under_version": fmt(from_fen(b)),
                   "change": fmt(from_fen(b - a))} for fund, (a, b) in sorted(funds.items())],
        "patient_pays": {"as_paid": fmt(from_fen(patient[0])), "under_version": fmt(from_fen(patient[1])),
                         "change": fmt(from_fen(patient[1] - patient[0]))},
        "most_affected": affected,
    }
    with context.uow() as tx:
        tx.repo.audit(context.clock(), actor, "tariff.simulate", "tariff_version", label, json.dumps(
            {"from": report["from"], "to": report["to"], "rerun": rerun, "funds": report["funds"],
             "patient_pays": report["patient_pays"]}))
        tx.commit()
    return report
