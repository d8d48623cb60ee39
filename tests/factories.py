"""Builders for valid domain objects; tests change one thing at a time with dataclasses.replace."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

from settlement.domain.claim import SHANGHAI, Claim, Hospital, Line, Patient, Visit
from settlement.domain.idcard import check_character
from settlement.domain.money import money
from settlement.domain.tariff import (
    Catalogue,
    CatalogueEntry,
    ItemClass,
    Layer,
    Rates,
    Tariff,
    TariffRef,
)

ROOT = Path(__file__).resolve().parents[1]
TARIFFS = ROOT / "tariffs"
VALID_ID = "11010519491231002X"
OTHER_VALID_ID = "360426199101010071"


def person_id(first17: str = "61100219700101002") -> str:
    return first17 + check_character(first17)


def line(line_id: str, code: str, quantity: str, unit_price: str, amount: str | None = None) -> Line:
    q, p = Decimal(quantity), Decimal(unit_price)
    return Line(line_id, code, code, q, p, Decimal(amount) if amount is not None else money(q * p))


def make_claim(
    lines: tuple[Line, ...] | None = None,
    *,
    level: str = "county",
    visit_type: str = "inpatient",
    scheme: str = "resident",
    categories: tuple[str, ...] = (),
    discharge: date = date(2024, 6, 15),
    admission: date | None = None,
    settled_at: datetime | None = None,
    id_number: str = VALID_ID,
    region: str = "611000",
    referral: bool = False,
    disease: str | None = None,
    retired: bool = False,
) -> Claim:
    return Claim(
        hospital=Hospital("H0001", level),
        visit=Visit("V0001", visit_type, admission or discharge, discharge,
                    settled_at or datetime(discharge.year, discharge.month, discharge.day, 15, 0, tzinfo=SHANGHAI),
                    referral, disease),
        patient=Patient(id_number, "王喆", scheme, region, categories, retired),
        lines=lines if lines is not None else (line("1", "A1", "1", "100.00"),),
    )


SIMPLE_CATALOGUE = Catalogue({
    "A1": CatalogueEntry("A1", "class A", ItemClass.A),
    "B10": CatalogueEntry("B10", "class B", ItemClass.B, Decimal("0.10")),
    "C1": CatalogueEntry("C1", "class C", ItemClass.C),
})


def make_tariff(*layers: Layer, catalogue: Catalogue = SIMPLE_CATALOGUE) -> Tariff:
    return Tariff(TariffRef("610000", "test", "0" * 64), "test tariff", date(2000, 1, 1), None, catalogue,
                  layers)


def flat_layer(layer_id: str = "basic", fund: str = "390100", rate: str = "0.80") -> Layer:
    return Layer(layer_id, fund, layer_id, rates=Rates(rate=Decimal(rate)))
