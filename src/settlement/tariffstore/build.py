"""Turn a validated tariff document into the domain's value objects, checking cross-references first."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from decimal import Decimal

from settlement.domain.errors import ErrorCode, Problem
from settlement.domain.tariff import (
    NO_CAP,
    AdmissionCount,
    AdmissionOrdinal,
    Band,
    BandBounds,
    BasePart,
    Caps,
    Catalogue,
    CatalogueEntry,
    CategoryRule,
    Condition,
    DateBasis,
    Deductible,
    DeductiblePer,
    Eligibility,
    Guarantee,
    GuaranteeBase,
    GuaranteeDirection,
    ItemClass,
    Layer,
    Limit,
    Measure,
    RateMode,
    Rates,
    Tariff,
    TariffRef,
    UnknownItemPolicy,
)
from settlement.tariffstore.schema import CategoryCaps, LayerSpec, TariffDocument


def canonical_json(document: TariffDocument) -> str:
    """The form that is hashed and stored: formatting and comments of the YAML do not change the hash."""
    data = document.model_dump(mode="json", by_alias=True, exclude_none=True)
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def sha256_of(canonical: str) -> str:
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def reference_problems(document: TariffDocument) -> list[Problem]:
    """Names that must exist elsewhere in the document: sources, categories, groups, layer ids."""
    found: list[Problem] = []
    known = set(document.categories)

    def bad(path: str, message: str) -> None:
        found.append(Problem(ErrorCode.TARIFF_INVALID, path, message))

    for group, members in document.category_groups.items():
        if group in known:
            bad(f"category_groups.{group}", "a group cannot share its name with a category")
        for member in members:
            if member not in known:
                bad(f"category_groups.{group}", f"unknown category {member!r}")
    names = known | set(document.category_groups)

    def check_categories(path: str, codes: Iterable[str]) -> None:
        for code in codes:
            if code not in names:
                bad(path, f"unknown category or group {code!r}")

    def check_source(path: str, source: str | None) -> None:
        if source is not None and source not in document.sources:
            bad(path, f"unknown source {source!r}; declare it under sources")

    seen: set[str] = set()
    for index, layer in enumerate(document.layers):
        path = f"layers[{index}]"
        if layer.id in seen:
            bad(f"{path}.id", f"layer id {layer.id!r} is used twice")
        for other in layer.above_cap_of or ():
            if other not in seen:
                bad(f"{path}.above_cap_of", f"{other!r} is not a layer before this one")
        seen.add(layer.id)
        check_categories(f"{path}.eligible.categories", layer.eligible.categories or ())
        check_categories(f"{path}.eligible.excluded_categories", layer.eligible.excluded_categories)
        for rule_index, rule in enumerate(layer.category_rules):
            check_categories(f"{path}.category_rules[{rule_index}].categories", rule.categories or ())
            check_source(f"{path}.category_rules[{rule_index}].source", rule.source)
        for block, spec_source in (("deductible", layer.deductible and layer.deductible.source),
                                   ("rate", layer.rate and layer.rate.source), ("caps", layer.caps.source),
                                   ("guarantee", layer.guarantee and layer.guarantee.source),
                                   ("limit", layer.limit and layer.limit.source)):
            check_source(f"{path}.{block}.source", spec_source or None)
    for index, item in enumerate(document.catalogue.items):
        check_categories(f"catalogue.items[{index}].share_by_category", item.share_by_category)
    return found


def build_tariff(document: TariffDocument, version_label: str, sha256: str) -> Tariff:
    groups = {name: frozenset(members) for name, members in document.category_groups.items()}

    def expand(codes: Iterable[str]) -> frozenset[str]:
        result: set[str] = set()
        for code in codes:
            result |= groups.get(code, frozenset((code,)))
        return frozenset(result)

    entries = {}
    for item in document.catalogue.items:
        by_category: dict[str, Decimal] = {}
        for code, share in item.share_by_category.items():
            for category in expand((code,)):
                by_category[category] = min(share, by_category.get(category, share))
        entries[item.code] = CatalogueEntry(
            code=item.code, name=item.name, item_class=ItemClass(item.item_class),
            share=item.share if item.share is not None else Decimal(0),
            share_by_category=by_category, price_cap=item.price_cap)
    catalogue = Catalogue(entries, UnknownItemPolicy(document.catalogue.unknown_items))
    layers = tuple(_layer(spec, expand) for spec in document.layers)
    names = {code: category.name for code, category in document.categories.items()}
    dates = document.dates
    return Tariff(
        ref=TariffRef(document.region, version_label, sha256),
        name=document.name,
        effective_from=document.effective.from_,
        effective_to=document.effective.to,
        catalogue=catalogue,
        layers=layers,
        category_names=names,
        tariff_date=DateBasis(dates.tariff) if dates is not None and dates.tariff else DateBasis.SETTLEMENT,
        categories_date=DateBasis(dates.categories) if dates is not None and dates.categories
        else DateBasis.SETTLEMENT,
    )


def _cap_value(value: Decimal | None) -> Decimal:
    return NO_CAP if value is None else value


def _category_cap(caps: CategoryCaps | None, field: str) -> Decimal | None:
    value = None if caps is None else getattr(caps, field)
    if value is None:
        return None
    return NO_CAP if value == "none" else Decimal(value)


def _layer(spec: LayerSpec, expand: Callable[[Iterable[str]], frozenset[str]]) -> Layer:
    who = spec.eligible
    eligibility = Eligibility(
        schemes=None if who.schemes is None else frozenset(who.schemes),
        categories=None if who.categories is None else expand(who.categories),
        excluded_categories=expand(who.excluded_categories),
        visit_types=None if who.visit_types is None else frozenset(who.visit_types),
        hospital_levels=None if who.hospital_levels is None else frozenset(who.hospital_levels),
        conditions=tuple(Condition(Measure(c.measure), c.at_least, c.above, c.at_most, c.below)
                         for c in who.conditions),
    )
    deductible = None
    if spec.deductible is not None:
        d = spec.deductible
        repeat = d.repeat_admission
        deductible = Deductible(
            per=DeductiblePer(d.per),
            amount=d.amount if d.amount is not None else Decimal(0),
            by_level={str(level): amount for level, amount in d.by_level.items()},
            repeat_step=repeat.step if repeat and repeat.step is not None else Decimal(0),
            repeat_floor=repeat.floor if repeat and repeat.floor is not None else Decimal(1),
            source=d.source,
            repeat_counted=AdmissionCount(repeat.counted) if repeat and repeat.counted else AdmissionCount.YEAR,
            repeat_step_amount=repeat.step_amount if repeat else None,
            repeat_floor_amount=repeat.floor_amount if repeat and repeat.floor_amount is not None else Decimal(0),
            repeat_amounts={str(level): tuple(amounts) for level, amounts in (repeat.amounts or {}).items()}
            if repeat else {},
        )
    rates = None
    if spec.rate is not None:
        r = spec.rate
        bands: list[Band] = []
        lower = Decimal(0)
        for band in r.bands:
            bands.append(Band(lower, band.to, band.rate))
            lower = band.to if band.to is not None else lower
        by_level = {str(level): rate for level, rate in r.by_level.items()}
        rates = Rates(mode=RateMode(r.mode), rate=r.rate, by_level=by_level, bands=tuple(bands), source=r.source,
                      bounds=BandBounds(r.bounds) if r.bounds is not None else None)
    rules = tuple(
        CategoryRule(
            categories=None if rule.categories is None else expand(rule.categories),
            waive_deductible=rule.deductible == "waive",
            deductible_scale=rule.deductible_scale,
            rate=rule.rate,
            rate_add=rule.rate_add if rule.rate_add is not None else Decimal(0),
            per_visit_cap=_category_cap(rule.caps, "per_visit"),
            per_year_cap=_category_cap(rule.caps, "per_year"),
            label=rule.label or "",
            source=rule.source,
            referral=rule.referral,
            retired=rule.retired,
            admissions=AdmissionOrdinal(rule.admissions) if rule.admissions is not None else None,
            deductible_amount=rule.deductible_amount,
            rate_subtract=rule.rate_subtract if rule.rate_subtract is not None else Decimal(0),
        )
        for rule in spec.category_rules
    )
    guarantee = None
    if spec.guarantee is not None:
        g = spec.guarantee
        guarantee = Guarantee(GuaranteeDirection(g.direction), g.share, GuaranteeBase(g.base), g.source)
    limit = None
    if spec.limit is not None:
        lim = spec.limit
        limit = Limit(lim.name, lim.per_year, dict(lim.by_disease or {}), lim.source)
    return Layer(
        id=spec.id, fund=spec.fund, name=spec.name, eligibility=eligibility,
        base_parts=tuple(BasePart(part) for part in spec.base),
        deductible=deductible, rates=rates,
        caps=Caps(_cap_value(spec.caps.per_visit), _cap_value(spec.caps.per_year), spec.caps.source),
        category_rules=rules, guarantee=guarantee, limit=limit, above_cap_of=tuple(spec.above_cap_of or ()),
    )
