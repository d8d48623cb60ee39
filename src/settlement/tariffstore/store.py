"""Reads tariffs/: one folder per region, one YAML file per effective version, catalogues as CSV beside them.

A county's version may inherit from its city (`inherits: "611000"`): the city's version in force on the same
date is taken and the county's keys override it (mappings merge key by key, layers by id, catalogue items by
code). Settlements name the exact result by region, a version label and the sha256 of its canonical JSON.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from settlement.domain.errors import ErrorCode, Problem, TariffError
from settlement.domain.tariff import Tariff
from settlement.tariffstore.build import build_tariff, canonical_json, reference_problems, sha256_of
from settlement.tariffstore.schema import TariffDocument

CATALOGUE_COLUMNS = ("code", "name", "kind", "class", "share", "share_by_category", "price_cap", "unit", "note")


@dataclass(frozen=True)
class VersionFile:
    """One version file as written, before inheritance is applied."""

    path: Path
    region: str
    version: str
    inherits: str | None
    effective_from: date
    effective_to: date | None
    raw: dict[str, Any]

    def covers(self, day: date) -> bool:
        return self.effective_from <= day and (self.effective_to is None or day <= self.effective_to)


@dataclass(frozen=True)
class ResolvedTariff:
    tariff: Tariff
    document: TariffDocument
    canonical: str  # what is hashed and stored
    files: tuple[Path, ...]


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


@dataclass
class TariffStore:
    root: Path
    files: dict[str, list[VersionFile]] = field(default_factory=dict)  # by region, ordered by start date
    _cache: dict[tuple[str, str, str | None], ResolvedTariff] = field(default_factory=dict, repr=False)

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

    def version_file(self, region: str, day: date) -> VersionFile:
        for version in self.files.get(region, ()):
            if version.covers(day):
                return version
        raise TariffError([_problem(self.root / region, "", f"no tariff version of {region} in force on {day}",
                                    ErrorCode.TARIFF_NOT_FOUND)])

    def resolve(self, region: str, day: date) -> ResolvedTariff:
        """The tariff in force for a patient of `region` on `day` (a date in Asia/Shanghai)."""
        version = self.version_file(self.region_for(region), day)
        parent = None if version.inherits is None else self.version_file(version.inherits, day)
        return self._resolved(version, parent)

    def tariff(self, region: str, day: date) -> Tariff:
        return self.resolve(region, day).tariff

    def resolved_pair(self, version: VersionFile, parent: VersionFile | None) -> ResolvedTariff:
        return self._resolved(version, parent)

    def _resolved(self, version: VersionFile, parent: VersionFile | None) -> ResolvedTariff:
        key = (version.region, version.version, None if parent is None else parent.version)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        raw = dict(version.raw)
        raw.pop("inherits", None)
        files: tuple[Path, ...] = (version.path,)
        label = version.version
        if parent is not None:
            merged = _merge({k: v for k, v in parent.raw.items() if k not in ("region", "version", "effective",
                                                                              "name")}, raw)
            raw = merged
            files = (version.path, parent.path)
            label = f"{version.version}+{parent.region}@{parent.version}"
        try:
            document = TariffDocument.model_validate(raw)
        except ValidationError as error:
            raise TariffError(validation_problems(error, version.path)) from None
        problems = reference_problems(document)
        if problems:
            raise TariffError([_problem(version.path, p.path, p.message) for p in problems])
        canonical = canonical_json(document)
        resolved = ResolvedTariff(build_tariff(document, label, sha256_of(canonical)), document, canonical, files)
        self._cache[key] = resolved
        return resolved

    def all_resolutions(self) -> Iterator[tuple[VersionFile, VersionFile | None]]:
        """Every (version, parent version) pair that can be in force together."""
        for versions in self.files.values():
            for version in versions:
                if version.inherits is None:
                    yield version, None
                    continue
                parents = [p for p in self.files.get(version.inherits, ()) if _overlap(version, p)]
                yield from ((version, parent) for parent in parents)

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
                    problems.append(_problem(version.path, "inherits", f"no tariff folder for {version.inherits}"))
        return problems


def _overlap(a: VersionFile, b: VersionFile) -> bool:
    a_end = a.effective_to or date.max
    b_end = b.effective_to or date.max
    return a.effective_from <= b_end and b.effective_from <= a_end


def _read_version(path: Path, problems: list[Problem]) -> VersionFile | None:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        problems.append(_problem(path, "", f"cannot read YAML: {error}"))
        return None
    if not isinstance(raw, dict):
        problems.append(_problem(path, "", "a tariff version is a mapping at the top level"))
        return None
    catalogue = raw.get("catalogue")
    if isinstance(catalogue, dict) and isinstance(catalogue.get("file"), str):
        items, csv_problems = read_catalogue_csv(path.parent / catalogue["file"])
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
        problems.extend(validation_problems(error, path))
        return None
    if head.region != path.parent.name:
        problems.append(_problem(path, "region", f"region {head.region} differs from its folder {path.parent.name}"))
        return None
    return VersionFile(path, head.region, head.version, head.inherits, head.effective.from_, head.effective.to, raw)


def load_store(root: Path) -> TariffStore:
    """Read and validate every version under `root`; raise TariffError listing every problem found."""
    problems: list[Problem] = []
    store = TariffStore(root)
    if not root.is_dir():
        raise TariffError([_problem(root, "", "tariff directory not found", ErrorCode.TARIFF_NOT_FOUND)])
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit()):
        versions = [v for path in sorted(folder.glob("*.yaml")) if (v := _read_version(path, problems))]
        versions.sort(key=lambda v: v.effective_from)
        for earlier, later in itertools.pairwise(versions):
            if _overlap(earlier, later):
                problems.append(_problem(later.path, "effective",
                                         f"overlaps {earlier.path.name} ({earlier.effective_from} to "
                                         f"{earlier.effective_to or 'open'})", ErrorCode.TARIFF_OVERLAP))
        if len({v.version for v in versions}) != len(versions):
            problems.append(_problem(folder, "", "two files declare the same version"))
        store.files[folder.name] = versions
    problems.extend(store.validate_all())
    if problems:
        raise TariffError(problems)
    return store
