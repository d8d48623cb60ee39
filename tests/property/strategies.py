"""Hypothesis strategies: random catalogues, random payer chains using every rule feature, random bills."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from hypothesis import strategies as st

from settlement.domain.accumulators import Accumulators
from settlement.domain.claim import SHANGHAI, Claim, Hospital, Line, Patient, Visit
from settlement.domain.money import from_fen, money
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
)
from tests.factories import VALID_ID

LEVELS = ("township", "county", "city", "provincial")
CATEGORIES = ("tekun", "dibao", "jiandang", "low_income")
FUNDS = ("390100", "390200", "610100", "610102", "640100")
DISEASES = ("hypertension", "diabetes")

rates = st.integers(min_value=0, max_value=100).map(lambda n: Decimal(n) / 100)
amounts = st.integers(min_value=0, max_value=5_000_000).map(lambda n: Decimal(n))  # whole yuan
caps = st.one_of(st.just(NO_CAP), st.integers(min_value=0, max_value=500_000).map(Decimal))


@st.composite
def catalogues(draw: st.DrawFn) -> Catalogue:
    entries = {}
    for index in range(draw(st.integers(min_value=1, max_value=12))):
        item_class = draw(st.sampled_from(list(ItemClass)))
        code = f"I{index}"
        share = draw(rates) if item_class is ItemClass.B else Decimal(0)
        by_category = draw(st.dictionaries(st.sampled_from(CATEGORIES), rates, max_size=2)) \
            if item_class is ItemClass.B else {}
        cap = draw(st.none() | st.integers(min_value=1, max_value=100_000).map(from_fen)) \
            if item_class is not ItemClass.C else None
        entries[code] = CatalogueEntry(code, code, item_class, share, by_category, cap)
    return Catalogue(entries)


@st.composite
def bands(draw: st.DrawFn) -> tuple[Band, ...]:
    edges = sorted(set(draw(st.lists(st.integers(min_value=1, max_value=2_000_000), min_size=0, max_size=4))))
    lower = Decimal(0)
    result = []
    for edge in edges:
        result.append(Band(lower, Decimal(edge), draw(rates)))
        lower = Decimal(edge)
    result.append(Band(lower, None, draw(rates)))
    return tuple(result)


@st.composite
def layers(draw: st.DrawFn, index: int) -> Layer:
    fund = draw(st.sampled_from(FUNDS))
    conditions = tuple(draw(st.lists(st.builds(
        Condition, st.sampled_from(list(Measure)), st.none() | amounts, st.none() | amounts), max_size=1)))
    eligibility = Eligibility(
        schemes=draw(st.none() | st.just(frozenset({"resident"}))),
        categories=draw(st.none() | st.frozensets(st.sampled_from(CATEGORIES), min_size=1)),
        excluded_categories=draw(st.frozensets(st.sampled_from(CATEGORIES), max_size=1)),
        visit_types=draw(st.none() | st.just(frozenset({"inpatient"}))),
        hospital_levels=draw(st.none() | st.frozensets(st.sampled_from(LEVELS), min_size=1)),
        conditions=conditions,
    )
    parts = draw(st.lists(st.sampled_from(list(BasePart)), min_size=1, max_size=4, unique=True))
    kind = draw(st.sampled_from(["rate", "rate", "rate", "floor", "ceiling"]))
    guarantee = None
    rate_spec = None
    deductible = None
    if kind != "floor":
        mode = draw(st.sampled_from(list(RateMode)))
        bounds = draw(st.none() | st.sampled_from(list(BandBounds)))
        if mode is RateMode.ANNUAL_CUMULATIVE:
            rate_spec = Rates(mode, bands=draw(bands()), bounds=bounds)
            per = DeductiblePer.YEAR
        else:
            shape = draw(st.sampled_from(["flat", "by_level", "bands"]))
            rate_spec = Rates(
                mode,
                rate=draw(rates) if shape == "flat" else None,
                by_level=dict(zip(LEVELS, draw(st.lists(rates, min_size=4, max_size=4)), strict=True))
                if shape == "by_level" else {},
                bands=draw(bands()) if shape == "bands" else (),
                bounds=bounds if shape == "bands" else None,
            )
            per = draw(st.sampled_from(list(DeductiblePer)))
        if draw(st.booleans()):
            repeat = draw(st.sampled_from(["share", "amount", "listed"])) if per is DeductiblePer.VISIT else ""
            small = amounts.map(lambda a: a / 100)
            deductible = Deductible(
                per, draw(amounts.map(lambda a: a / 10)),
                dict(zip(LEVELS, draw(st.lists(small, min_size=4, max_size=4)),
                         strict=True)) if draw(st.booleans()) else {},
                repeat_step=draw(rates) if repeat == "share" else Decimal(0),
                repeat_floor=draw(rates) if repeat == "share" else Decimal(1),
                repeat_counted=draw(st.sampled_from(list(AdmissionCount))),
                repeat_step_amount=draw(small) if repeat == "amount" else None,
                repeat_floor_amount=draw(small) if repeat == "amount" else Decimal(0),
                repeat_amounts=draw(st.dictionaries(st.sampled_from(LEVELS), st.lists(small, min_size=1, max_size=3)
                                                    .map(tuple), max_size=4)) if repeat == "listed" else {},
            )
    if kind != "rate":
        direction = GuaranteeDirection.PATIENT_SHARE_AT_MOST if kind == "floor" \
            else GuaranteeDirection.REIMBURSEMENT_AT_MOST
        guarantee = Guarantee(direction, draw(rates), draw(st.sampled_from(list(GuaranteeBase))))
    rules = tuple(draw(st.lists(st.builds(
        CategoryRule,
        categories=st.none() | st.frozensets(st.sampled_from(CATEGORIES), min_size=1),
        waive_deductible=st.booleans(),
        deductible_scale=st.none() | rates | st.just(Decimal("1.50")),
        rate=st.none() | rates,
        rate_add=st.sampled_from([Decimal(0), Decimal("0.05"), Decimal("0.50")]),
        per_visit_cap=st.none() | caps,
        per_year_cap=st.none() | caps,
        referral=st.none() | st.booleans(),
        retired=st.none() | st.booleans(),
        admissions=st.none() | st.sampled_from(list(AdmissionOrdinal)),
        deductible_amount=st.none() | amounts.map(lambda a: a / 100),
        rate_subtract=st.sampled_from([Decimal(0), Decimal("0.10"), Decimal("0.90")]),
    ), max_size=2)))
    limit = draw(st.none() | st.builds(Limit, st.just("limit"), st.none() | amounts.map(lambda a: a / 10),
                                       st.dictionaries(st.sampled_from(DISEASES), amounts.map(lambda a: a / 10))))
    above = tuple(draw(st.lists(st.sampled_from([f"layer{i}" for i in range(index)]), max_size=2, unique=True))) \
        if index and draw(st.booleans()) else ()
    return Layer(
        id=f"layer{index}", fund=fund, name=f"layer {index}", eligibility=eligibility,
        base_parts=tuple(parts), deductible=deductible, rates=rate_spec,
        caps=Caps(draw(caps), draw(caps)), category_rules=rules, guarantee=guarantee, limit=limit, above_cap_of=above,
    )


@st.composite
def tariffs(draw: st.DrawFn) -> Tariff:
    count = draw(st.integers(min_value=1, max_value=5))
    chain = tuple(draw(layers(index)) for index in range(count))
    return Tariff(TariffRef("610000", "random", "0" * 64), "random", date(2000, 1, 1), None,
                  draw(catalogues()), chain)


@st.composite
def claims(draw: st.DrawFn, catalogue: Catalogue, discharge: date = date(2024, 6, 15),
           max_lines: int = 40) -> Claim:
    codes = [*catalogue.entries, "UNLISTED"]
    lines = []
    for index in range(draw(st.integers(min_value=1, max_value=max_lines))):
        quantity = Decimal(draw(st.integers(min_value=1, max_value=10_000))) / draw(st.sampled_from([1, 10, 100]))
        # Unit prices from 0.0001 to 10,000,000 so that a bill reaches 100,000,000 yuan.
        unit_price = Decimal(draw(st.integers(min_value=1, max_value=10**11))) / 10_000
        lines.append(Line(str(index), draw(st.sampled_from(codes)), "item", quantity, unit_price,
                          money(quantity * unit_price)))
    return Claim(
        hospital=Hospital("H1", draw(st.sampled_from(LEVELS))),
        visit=Visit("V1", draw(st.sampled_from(["inpatient", "outpatient", "chronic_outpatient"])), discharge,
                    discharge, datetime(discharge.year, discharge.month, discharge.day, 12, tzinfo=SHANGHAI),
                    draw(st.booleans()), draw(st.none() | st.sampled_from(DISEASES))),
        patient=Patient(VALID_ID, "name", draw(st.sampled_from(["resident", "employee"])), "610000",
                        tuple(draw(st.lists(st.sampled_from(CATEGORIES), max_size=2, unique=True))),
                        draw(st.booleans())),
        lines=tuple(lines),
    )


@st.composite
def year_to_date(draw: st.DrawFn, year: int = 2024) -> Accumulators:
    fen = st.integers(min_value=0, max_value=50_000_000).map(from_fen)
    return Accumulators(
        year,
        draw(st.integers(min_value=0, max_value=6)),
        draw(st.dictionaries(st.sampled_from(FUNDS), fen, max_size=3)),
        draw(st.dictionaries(st.sampled_from(FUNDS), fen, max_size=3)),
        draw(st.dictionaries(st.sampled_from(FUNDS), fen, max_size=3)),
        draw(st.dictionaries(st.sampled_from(LEVELS), st.integers(min_value=0, max_value=4), max_size=2)),
        draw(st.dictionaries(st.tuples(st.sampled_from(FUNDS), st.sampled_from(
            ["limit", "limit:hypertension", "limit:diabetes", "limit:"])), fen, max_size=2)),
    )
