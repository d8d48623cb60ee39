"""Tariff versions and the choice of the one in force: read from tariffs/ (one folder per region, one YAML file
per version, catalogues as CSV beside them) or from the database's version documents.

A version is in force from its effective date until its own end date, if it has one, or until the next version
of its region starts. A county's version may inherit from its city (`inherits: "611000"`): the city's version in
force on the same date is taken and the county's keys override it (mappings merge key by key, layers by id,
catalogue items by code). Settlements name the exact result by region, a version label and the sha256 of its
canonical JSON.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from settlement.domain.claim import day_of
from settlement.domain.errors import ErrorCode, Problem, TariffError
from settlement.domain.tariff import Tariff
from settlement.tariffstore.build import build_tariff, canonical_json, reference_problems, sha256_of
from settlement.tariffstore.schema import TariffDocument

CATALOGUE_COLUMNS = ("code", "name", "kind", "class", "share", "share_by_category", "price_cap", "unit", "note")


@dataclass(frozen=True)
class VersionFile:
    """One version as written (a file, or a document in the database), before inheritance is applied."""

    origin: str  # where it came from, for messages: a file path or "tariff version 12"
    region: str
    version: str
    inherits: str | None
    effective_from: date
    effective_to: date | None  # the version's own end date, if it has one
    raw: dict[str, Any]
    id: int | None = None  # the database row, for versions read from the database

    @property
    def label(self) -> str:
        return f"{self.region}/{self.version}"


@dataclass(frozen=True)
class ResolvedTariff:
    tariff: Tariff
    document: TariffDocument
    canonical: str  # what is hashed and stored
    origins: tuple[str, ...]
    version: VersionFile
    parent: VersionFile | None


def _problem(path: Path | str, where: str, message: str, code: ErrorCode = ErrorCode.TARIFF_INVALID) -> Problem:
    location = f"{path}: {where}" if where else str(path)
    return Problem(code, location, message)


def _loc(parts: tuple[int | str, ...]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def validation_problems(error: ValidationError, origin: Path | str) -> list[Problem]:
    return [_problem(origin, _loc(tuple(item["loc"])), item["msg"].removeprefix("Value error, "))
            for item in error.errors()]


def read_catalogue_csv(path: Path) -> tuple[list[dict[str, Any]], list[Problem]]:
    items: list[dict[str, Any]] = []
    problems: list[Problem] = []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        return [], [_problem(path, "", f"cannot read catalogue: {error}")]
    reader = csv.DictReader(text.splitlines())
    if tuple(reader.fieldnames or ()) != CATALOGUE_COLUMNS:
        return [], [_problem(path, "line 1", f"header must be {','.join(CATALOGUE_COLUMNS)}")]
    for row in reader:
        line = reader.line_num
        if None in row or any(value is None for value in row.values()):
            problems.append(_problem(path, f"line {line}", f"expected {len(CATALOGUE_COLUMNS)} columns"))
            continue
        item: dict[str, Any] = {key: value for key, value in row.items() if value != ""}
        shares = item.pop("share_by_category", "")
        if shares:
            try:
                item["share_by_category"] = dict(pair.split("=", 1) for pair in shares.split(";"))
            except ValueError:
                problems.append(_problem(path, f"line {line}.share_by_category",
                                         "write category=share pairs separated by semicolons"))
                continue
        item["_line"] = line
        items.append(item)
    return items, problems


def _merge(base: Any, override: Any) -> Any:
    """Deep merge: mappings key by key, layers by id, catalogue items by code; anything else is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    if isinstance(base, list) and isinstance(override, list) and all(
            isinstance(item, dict) for item in [*base, *override]):
        key = next((k for k in ("id", "code") if all(k in item for item in [*base, *override])), None)
        if key is not None:
            by_key = {item[key]: item for item in base}
            order = [item[key] for item in base]
            for item in override:
                if item[key] not in by_key:
                    order.append(item[key])
                by_key[item[key]] = _merge(by_key.get(item[key], {}), item)
            return [by_key[name] for name in order]
    return override


def in_force_until(version: VersionFile, successor: VersionFile | None) -> date | None:
    """The last day a version is in force: its own end date, or the day before its successor starts."""
    ends = [day for day in (version.effective_to,
                            None if successor is None else successor.effective_from - timedelta(days=1))
            if day is not None]
    return min(ends) if ends else None


def overlaps(versions: list[VersionFile]) -> list[tuple[VersionFile, VersionFile]]:
    """Pairs of one region's versions whose ranges overlap: two starting the same day, or a later one starting
    before an earlier one's own end date. (An open-ended version simply ends when the next one starts.)"""
    ordered = sorted(versions, key=lambda v: v.effective_from)
    found = []
    for index, earlier in enumerate(ordered):
        for later in ordered[index + 1:]:
            if later.effective_from == earlier.effective_from or (
                    earlier.effective_to is not None and later.effective_from <= earlier.effective_to):
                found.append((earlier, later))
    return found


@dataclass
class TariffStore:
    root: Path | str
    files: dict[str, list[VersionFile]] = field(default_factory=dict)  # by region, ordered by start date
    _cache: dict[tuple[str, str | None], ResolvedTariff] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, origin: str, versions: list[VersionFile],
           cache: dict[tuple[str, str | None], ResolvedTariff] | None = None) -> TariffStore:
        """A store of the given versions (from the database); `cache` may be shared, as versions never change."""
        store = cls(origin)
        if cache is not None:
            store._cache = cache
        for version in sorted(versions, key=lambda v: v.effective_from):
            store.files.setdefault(version.region, []).append(version)
        return store

    def regions(self) -> list[str]:
        return sorted(self.files)

    def versions(self, region: str) -> list[VersionFile]:
        return list(self.files.get(region, ()))

    def region_for(self, region: str) -> str:
        """The region whose tariff applies: the region itself, else its city (xxxx00), else its province."""
        for candidate in (region, region[:4] + "00", region[:2] + "0000"):
            if candidate in self.files:
                return candidate
        raise TariffError([_problem(self.root, "", f"no tariff for region {region} or its city or province",
                                    ErrorCode.TARIFF_NOT_FOUND)])

    def successor(self, version: VersionFile) -> VersionFile | None:
        return next((later for later in self.files.get(version.region, ())
                     if later.effective_from > version.effective_from), None)

    def until(self, version: VersionFile) -> date | None:
        return in_force_until(version, self.successor(version))

    def version_file(self, region: str, day: date) -> VersionFile:
        """The version in force on `day`: the latest to have started, unless its own end date has passed."""
        chosen = None
        for version in self.files.get(region, ()):
            if version.effective_from <= day:
                chosen = version
        if chosen is None or (chosen.effective_to is not None and day > chosen.effective_to):
            raise TariffError([_problem(self.root, region, f"no tariff version of {region} in force on {day}",
                                        ErrorCode.TARIFF_NOT_FOUND)])
        return chosen

    def resolve(self, region: str, day: date) -> ResolvedTariff:
        """The tariff in force for a patient of `region` on `day` (a date in Asia/Shanghai)."""
        version = self.version_file(self.region_for(region), day)
        parent = None if version.inherits is None else self.version_file(version.inherits, day)
        return self._resolved(version, parent)

    def tariff(self, region: str, day: date) -> Tariff:
        return self.resolve(region, day).tariff

    def resolve_for(self, region: str, admission: date, discharge: date, settled_on: date) -> ResolvedTariff:
        """The tariff that settles a claim with these dates: the version in force on the settlement date says, in
        its `dates.tariff`, which date's version in force applies (a new version's transition rule decides whether
        a stay it finds half done keeps the old one)."""
        in_force = self.resolve(region, settled_on)
        day = day_of(in_force.tariff.tariff_date, admission, discharge, settled_on)
        return in_force if day == settled_on else self.resolve(region, day)

    def resolved_pair(self, version: VersionFile, parent: VersionFile | None) -> ResolvedTariff:
        return self._resolved(version, parent)

    def _resolved(self, version: VersionFile, parent: VersionFile | None) -> ResolvedTariff:
        # By name and row: a draft checked before it had a row must not stand in for the recorded version.
        key = (f"{version.label}#{version.id}", None if parent is None else f"{parent.label}#{parent.id}")
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        raw = dict(version.raw)
        raw.pop("inherits", None)
        origins: tuple[str, ...] = (version.origin,)
        label = version.version
        if parent is not None:
            merged = _merge({k: v for k, v in parent.raw.items() if k not in ("region", "version", "effective",
                                                                              "name")}, raw)
            raw = merged
            origins = (version.origin, parent.origin)
            label = f"{version.version}+{parent.region}@{parent.version}"
        try:
            document = TariffDocument.model_validate(raw)
        except ValidationError as error:
            raise TariffError(validation_problems(error, version.origin)) from None
        problems = reference_problems(document)
        if problems:
            raise TariffError([_problem(version.origin, p.path, p.message) for p in problems])
        canonical = canonical_json(document)
        resolved = ResolvedTariff(build_tariff(document, label, sha256_of(canonical)), document, canonical, origins,
                                  version, parent)
        self._cache[key] = resolved
        return resolved

    def parents_of(self, version: VersionFile) -> list[VersionFile]:
        """The versions of the region `version` inherits from that are in force at some time it is."""
        if version.inherits is None:
            return []
        end = self.until(version) or date.max
        return [parent for parent in self.files.get(version.inherits, ())
                if parent.effective_from <= end and (self.until(parent) or date.max) >= version.effective_from]

    def all_resolutions(self) -> Iterator[tuple[VersionFile, VersionFile | None]]:
        """Every (version, parent version) pair that can be in force together."""
        for versions in self.files.values():
            for version in versions:
                if version.inherits is None:
                    yield version, None
                else:
                    yield from ((version, parent) for parent in self.parents_of(version))

    def validate_all(self) -> list[Problem]:
        problems: list[Problem] = []
        for version, parent in self.all_resolutions():
            try:
                self._resolved(version, parent)
            except TariffError as error:
                problems.extend(error.problems)
        for versions in self.files.values():
            for version in versions:
                if version.inherits is not None and version.inherits not in self.files:
                    problems.append(_problem(version.origin, "inherits", f"no tariff folder for {version.inherits}"))
            for earlier, later in overlaps(versions):
                problems.append(_problem(later.origin, "effective",
                                         f"overlaps {earlier.label} ({earlier.effective_from} to "
                                         f"{earlier.effective_to or 'its successor'})", ErrorCode.TARIFF_OVERLAP))
        return problems


def read_document(raw: Any, origin: str, base: Path | None, problems: list[Problem]) -> VersionFile | None:
    """A version document (a YAML file's content, or an upload): its catalogue file, if it names one and `base`
    says where to look, is read into it; the head (region, version, range, parent) is checked."""
    if not isinstance(raw, dict):
        problems.append(_problem(origin, "", "a tariff version is a mapping at the top level"))
        return None
    catalogue = raw.get("catalogue")
    if isinstance(catalogue, dict) and isinstance(catalogue.get("file"), str):
        if base is None:
            problems.append(_problem(origin, "catalogue.file", "an upload carries its catalogue inline (items:) "
                                                               "or is imported as a catalogue CSV"))
            return None
        items, csv_problems = read_catalogue_csv(base / catalogue["file"])
        problems.extend(csv_problems)
        inline = catalogue.get("items") or []
        merged_items = _merge(items, inline) if inline else items
        for item in merged_items:
            item.pop("_line", None)
        catalogue = {k: v for k, v in catalogue.items() if k != "file"} | {"items": merged_items}
        raw = raw | {"catalogue": catalogue}
    try:
        head = TariffDocument.model_validate(
            {**{k: raw.get(k) for k in ("region", "name", "version", "effective")},
             "inherits": raw.get("inherits")})
    except ValidationError as error:
        problems.extend(validation_problems(error, origin))
        return None
    return VersionFile(origin, head.region, head.version, head.inherits, head.effective.from_, head.effective.to,
                       raw)


def read_version_file(path: Path, problems: list[Problem]) -> VersionFile | None:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        problems.append(_problem(path, "", f"cannot read YAML: {error}"))
        return None
    return read_document(raw, str(path), path.parent, problems)


def load_store(root: Path) -> TariffStore:
    """Read and validate every version under `root`; raise TariffError listing every problem found."""
    problems: list[Problem] = []
    store = TariffStore(root)
    if not root.is_dir():
        raise TariffError([_problem(root, "", "tariff directory not found", ErrorCode.TARIFF_NOT_FOUND)])
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name.isascii() and p.name.isdigit()):
        versions = []
        for path in sorted(folder.glob("*.yaml")):
            version = read_version_file(path, problems)
            if version is None:
                continue
            if version.region != folder.name:
                problems.append(_problem(path, "region",
                                         f"region {version.region} differs from its folder {folder.name}"))
                continue
            versions.append(version)
        versions.sort(key=lambda v: v.effective_from)
        if len({v.version for v in versions}) != len(versions):
            problems.append(_problem(folder, "", "two files declare the same version"))
        store.files[folder.name] = versions
    problems.extend(store.validate_all())
    if problems:
        raise TariffError(problems)
    return store
