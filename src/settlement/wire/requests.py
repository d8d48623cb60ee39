"""Requests to the service, shared by REST and the SOAP dialects."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from pydantic import Field

from settlement.wire.claims import ServiceClaimIn, Wire
from settlement.wire.freetext import FreeText

# The caller's message id: institution code + timestamp + sequence in practice; the idempotency key.
TransactionId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


class QuoteRequest(Wire):
    claim: ServiceClaimIn


class SettleRequest(Wire):
    transaction_id: TransactionId
    claim: ServiceClaimIn
    quote_id: Annotated[str, Field(max_length=1024)] | None = Field(
        default=None, description="settle exactly as quoted, or be told what changed since")


class ReverseRequest(Wire):
    transaction_id: TransactionId
    reason: Annotated[FreeText, Field(max_length=256)] = ""


class CancelRequest(Wire):
    """Reverse what an uncertain call did, by its transaction id (the national 2601)."""

    transaction_id: TransactionId
    original_transaction_id: TransactionId
    reason: Annotated[FreeText, Field(max_length=256)] = ""


class ReconciliationRequest(Wire):
    payer: Annotated[str, Field(min_length=1, max_length=32)]
    business_date: date


class ResolutionRequest(Wire):
    action: str = Field(description="accept_payer | correct | reverse | write_off")
    note: Annotated[FreeText, Field(min_length=1, max_length=2000)]
    amount: Annotated[str, Field(max_length=20, description="the correction, e.g. \"-12.50\" (action correct)")] \
        | None = None


class WithdrawalRequest(Wire):
    reason: Annotated[FreeText, Field(min_length=1, max_length=2000, description="why the version is set aside")]


class PeriodRequest(Wire):
    """A period of settlement dates (Asia/Shanghai), both inclusive."""

    from_: date = Field(alias="from")
    to: date
    top: Annotated[int, Field(ge=1, le=1000, description="how many most affected settlements (simulation)")] = 20
