"""Requests to the service, shared by REST and the SOAP dialects."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from settlement.domain.text import CODE_MAX, NOTE_MAX, REASON_MAX
from settlement.wire.claims import ServiceClaimIn, Wire
from settlement.wire.fields import IsoDate, Text
from settlement.wire.freetext import FreeText

# The caller's message id: institution code + timestamp + sequence in practice; the idempotency key.
TransactionId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


class QuoteRequest(Wire):
    claim: ServiceClaimIn


class SettleRequest(Wire):
    transaction_id: TransactionId
    claim: ServiceClaimIn
    quote_id: Annotated[str, Text(1024)] | None = Field(
        default=None, description="settle exactly as quoted, or be told what changed since")


class ReverseRequest(Wire):
    transaction_id: TransactionId
    reason: Annotated[FreeText, Text(REASON_MAX, multiline=True)] = ""


class CancelRequest(Wire):
    """Reverse what an uncertain call did, by its transaction id (the national 2601)."""

    transaction_id: TransactionId
    original_transaction_id: TransactionId
    reason: Annotated[FreeText, Text(REASON_MAX, multiline=True)] = ""


class ReconciliationRequest(Wire):
    payer: Annotated[str, Text(CODE_MAX, min_length=1)]
    business_date: IsoDate


class ResolutionRequest(Wire):
    action: Annotated[str, Text(32), Field(description="accept_payer | correct | reverse | write_off")]
    note: Annotated[FreeText, Text(NOTE_MAX, min_length=1, multiline=True)]
    amount: Annotated[str, Text(20), Field(description="the correction, e.g. \"-12.50\" (action correct)")] \
        | None = None


class WithdrawalRequest(Wire):
    reason: Annotated[FreeText, Text(NOTE_MAX, min_length=1, multiline=True),
                      Field(description="why the version is set aside")]


class PeriodRequest(Wire):
    """A period of settlement dates (Asia/Shanghai), both inclusive."""

    from_: IsoDate = Field(alias="from")
    to: IsoDate
    top: Annotated[int, Field(ge=1, le=1000, description="how many most affected settlements (simulation)")] = 20
