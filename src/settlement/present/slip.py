"""The patient's one-stop settlement slip (一站式结算单): what every payer covered and what the patient pays.

`slip_from_documents` builds the slip from what a settlement stored (its claim as received and its result), the
receipts issued for it, its reversal if any, and how many times it was printed; `render_html` writes it as one
HTML page with a print stylesheet for A4, and `render_pdf` prints that page to PDF with its fonts embedded
(WeasyPrint, with the machine's CJK fonts: Debian's fonts-noto-cjk). Nothing here reads the database or the clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from settlement.domain.numerals import capital
from settlement.domain.privacy import mask_id_number
from settlement.present import formats
from settlement.present.wording import payer_words


@dataclass(frozen=True)
class Receipt:
    """A fund's receipt (票据) for a settlement or its reversal, and the receipts it follows or cancels."""

    number: str
    fund: str
    amount: Decimal
    follows: tuple[str, ...] = ()  # the earlier layers' receipts of the same bill (票据衔接)
    cancels: str | None = None  # for a reversal's receipt: the receipt it cancels


@dataclass(frozen=True)
class PayerLine:
    fund: str
    fund_name: str
    layer_name: str
    paid: Decimal
    rule: str  # the trace in plain words
    receipt: Receipt | None = None


@dataclass(frozen=True)
class FundYear:
    fund: str
    fund_name: str
    paid: Decimal  # the year's payments after this settlement
    deductible_used: Decimal
    cumulative: Decimal


@dataclass(frozen=True)
class Reversal:
    reversal_id: str
    recorded_at: datetime
    receipts: tuple[Receipt, ...] = ()


@dataclass(frozen=True)
class Slip:
    settlement_id: str
    transaction_id: str
    recorded_at: datetime
    hospital_name: str
    hospital_code: str
    hospital_level: str
    patient_name: str
    id_number_masked: str
    scheme: str
    categories: tuple[str, ...]  # names, as the tariff gives them
    visit_type: str
    visit_id: str
    admission_date: str
    discharge_date: str
    diagnosis: str | None
    total: Decimal
    out_of_catalogue: Decimal
    over_price_limit: Decimal
    pre_self_pay: Decimal
    in_scope: Decimal
    payers: tuple[PayerLine, ...]
    year_to_date: tuple[FundYear, ...]
    year: int
    patient_pays: Decimal
    tariff: str  # region/version
    tariff_sha256: str
    printed_at: datetime
    print_number: int = 1  # 1: the first print; more: a reprint (补打)
    reversal: Reversal | None = None
    corrections: tuple[tuple[str, Decimal], ...] = field(default=())  # (fund, amount) agreed with a payer

    @property
    def paid_by_funds(self) -> Decimal:
        return sum((line.paid for line in self.payers), Decimal("0.00"))

    @property
    def patient_pays_in_words(self) -> str:
        return capital(self.patient_pays)


def _amount(value: Any) -> Decimal:
    return Decimal(str(value if value is not None else "0"))


def slip_from_documents(claim: Mapping[str, Any], result: Mapping[str, Any], *, printed_at: datetime,
                        print_number: int = 1, category_names: Mapping[str, str] | None = None,
                        receipts: Sequence[Receipt] = (), reversal: Reversal | None = None) -> Slip:
    """The slip of a stored settlement: `claim` as received, `result` as answered (and replayed)."""
    names = category_names or {}
    by_fund = {receipt.fund: receipt for receipt in receipts}
    hospital, visit, patient = claim["hospital"], claim["visit"], claim["patient"]
    payers = tuple(
        PayerLine(payer["fund"], formats.fund_name(payer["fund"]), payer["name"], _amount(payer["paid"]),
                  payer_words(payer), by_fund.get(payer["fund"]))
        for payer in result["payers"] if payer.get("eligible"))
    after = result["year_to_date"]["after"]
    funds = sorted(set(after.get("paid", {})) | set(after.get("cumulative", {})))
    year = tuple(FundYear(fund, formats.fund_name(fund), _amount(after.get("paid", {}).get(fund)),
                          _amount(after.get("deductible_used", {}).get(fund)),
                          _amount(after.get("cumulative", {}).get(fund))) for fund in funds)
    tariff = result["tariff"]
    return Slip(
        settlement_id=result["settlement_id"], transaction_id=result["transaction_id"],
        recorded_at=datetime.fromisoformat(result["recorded_at"]),
        hospital_name=hospital.get("name") or hospital["code"], hospital_code=hospital["code"],
        hospital_level=formats.LEVELS.get(hospital["level"], hospital["level"]),
        patient_name=patient.get("name") or "", id_number_masked=mask_id_number(patient["id_number"]),
        scheme=formats.SCHEMES.get(patient.get("scheme", ""), patient.get("scheme", "")),
        categories=tuple(names.get(code, code) for code in result.get("categories") or ()),
        visit_type=formats.VISIT_TYPES.get(visit["type"], visit["type"]), visit_id=visit["id"],
        admission_date=formats.day(visit.get("admission_date")),
        discharge_date=formats.day(visit.get("discharge_date")),
        diagnosis=visit.get("diagnosis"),
        total=_amount(result["total"]), out_of_catalogue=_amount(result["out_of_catalogue"]),
        over_price_limit=_amount(result["over_price_limit"]), pre_self_pay=_amount(result["pre_self_pay"]),
        in_scope=_amount(result["in_scope"]), payers=payers, year_to_date=year,
        year=int(result["year_to_date"]["after"].get("year", 0)), patient_pays=_amount(result["patient_pays"]),
        tariff=f"{tariff['region']}/{tariff['version']}", tariff_sha256=tariff["sha256"], printed_at=printed_at,
        print_number=print_number, reversal=reversal,
        corrections=tuple((c["fund"], _amount(c["amount"])) for c in result.get("corrections") or ()),
    )


@cache
def _environment() -> Environment:
    environment = Environment(loader=PackageLoader("settlement.present", "templates"),
                              autoescape=select_autoescape(default=True), undefined=StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)
    environment.filters["yuan"] = formats.yuan
    environment.filters["beijing"] = formats.beijing
    environment.filters["capital"] = capital
    return environment


def render_html(slip: Slip) -> str:
    """The slip as one self-contained HTML page (its stylesheet inline: nothing is fetched), A4 when printed."""
    return _environment().get_template("slip.html").render(slip=slip)


def render_pdf(slip: Slip) -> bytes:
    """The slip's page printed to PDF, fonts embedded (subset)."""
    from weasyprint import HTML  # type: ignore[import-untyped]  # imported when first used: it loads Pango, which the service needs only here

    pdf: bytes = HTML(string=render_html(slip)).write_pdf()
    return pdf
