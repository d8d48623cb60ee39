"""Response shapes, for the OpenAPI document (the service builds the bodies from the domain result)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from settlement.wire.fields import IsoDate, Text

Money = Annotated[str, Field(pattern=r"^-?[0-9]+\.[0-9]{2}$", examples=["1234.50"])]


class Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class ProblemOut(Out):
    type: str
    title: str
    status: int
    code: str = Field(description="stable error code, e.g. CLAIM_AMOUNT_MISMATCH")
    detail: str
    problems: list[dict[str, str]] = Field(default_factory=list)


class PayerOut(Out):
    layer: str
    fund: str
    name: str
    eligible: bool
    base: Money
    deductible: Money
    paid: Money
    summary: str
    trace: list[dict[str, Any]]


class TariffRefOut(Out):
    region: str
    version: str
    sha256: str


class ResultOut(Out):
    total: Money
    out_of_catalogue: Money
    over_price_limit: Money
    pre_self_pay: Money
    in_scope: Money
    payers: list[PayerOut]
    patient_pays: Money
    tariff: TariffRefOut
    categories: list[str]


class QuoteOut(ResultOut):
    quote_id: str
    expires_at: str


class SettlementOut(ResultOut):
    settlement_id: str
    transaction_id: str
    status: str = Field(description="settled | reversed")
    recorded_at: str
    visit_id: str


class CorrectionOut(Out):
    """A correction moves money between a fund and the patient's share: amount + patient_pays = total = 0."""

    correction_id: str
    fund: str
    amount: Money
    patient_pays: Money
    total: Money
    recorded_at: str


class NetOut(Out):
    total: Money
    paid: dict[str, Money] = Field(description="per fund, summed from the ledger")
    patient_pays: Money


class SettlementReadOut(SettlementOut):
    """A settlement as read: its reply, its corrections, its reversal (with its entries) and what it amounts to
    now (`net`, after corrections and reversal): each balances to the fen."""

    corrections: list[CorrectionOut]
    net: NetOut
    reversal: dict[str, Any] | None = None


class ReversalOut(Out):
    reversal_id: str
    settlement_id: str
    transaction_id: str
    status: str
    recorded_at: str
    entries: list[dict[str, str]] = Field(description="per fund: the settlement's entries and its corrections, "
                                                      "reversed")
    total: Money
    patient_pays: Money
    corrections: list[str] = Field(default_factory=list, description="the corrections reversed with it")


class SettlementSummary(Out):
    settlement_id: str
    transaction_id: str
    visit_id: str
    recorded_at: str
    total: Money
    patient_pays: Money
    status: str
    person: str


class SettlementPage(Out):
    items: list[SettlementSummary]
    next_cursor: str | None


class EligibilityRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id_number: Annotated[str, Text(32, min_length=1)]
    on: IsoDate | None = None


class EligibilityOut(Out):
    person: str
    in_roster: bool
    scheme: str | None
    region: str | None
    on: str
    categories: list[dict[str, str | None]]
    year_to_date: dict[str, Any]


class RosterReportOut(Out):
    filename: str
    sha256: str
    rows: int
    accepted: int
    rejected: int
    changed: int
    already_imported: bool
    errors: list[dict[str, Any]]
