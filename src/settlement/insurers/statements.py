"""Payers' daily statements: the rows, the inbox files (CSV or XML) and the SOAP statement client.

A statement row says what the payer booked for one settlement's entry: the engine's settlement id, the entry
(settlement, reversal or correction), the fund, the hospital, the amount (a decimal string, yuan) and when.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

from lxml import etree

from settlement.insurers.config import PayerConfig

log = logging.getLogger("settlement.insurers")
WSDL = Path(__file__).with_name("statement.wsdl")
NAMESPACE = "urn:settlement:payer:v1"
ENTRY_KINDS = ("settlement", "reversal", "correction")
CSV_COLUMNS = ("settlement_id", "entry_kind", "fund", "hospital_code", "amount", "occurred_at")


@dataclass(frozen=True)
class StatementLine:
    settlement_id: str
    entry_kind: str
    fund: str
    hospital_code: str
    amount: Decimal
    occurred_at: datetime | None = None

    @property
    def amount_fen(self) -> int:
        return int((self.amount * 100).to_integral_value())


class StatementError(Exception):
    """A statement that could not be fetched or read: the run fails with this reason and can be run again."""


def _line(values: dict[str, str], where: str) -> StatementLine:
    try:
        amount = Decimal(values["amount"])
        if amount != amount.quantize(Decimal("0.01")):
            raise StatementError(f"{where}: amount {values['amount']!r} has more than two decimals")
        occurred = values.get("occurred_at") or None
        line = StatementLine(values["settlement_id"].strip(), values["entry_kind"].strip(), values["fund"].strip(),
                             values["hospital_code"].strip(), amount,
                             datetime.fromisoformat(occurred) if occurred else None)
    except (KeyError, InvalidOperation, ValueError) as error:
        raise StatementError(f"{where}: {type(error).__name__} {error}") from None
    if line.entry_kind not in ENTRY_KINDS:
        raise StatementError(f"{where}: entry_kind must be one of {', '.join(ENTRY_KINDS)}")
    return line


def read_csv(data: bytes) -> list[StatementLine]:
    text = data.decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    missing = set(CSV_COLUMNS) - set(reader.fieldnames or ())
    if missing:
        raise StatementError(f"the CSV lacks the columns {', '.join(sorted(missing))}")
    return [_line(row, f"line {number}") for number, row in enumerate(reader, start=2)]


def write_csv(lines: Iterable[StatementLine]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for line in lines:
        writer.writerow([line.settlement_id, line.entry_kind, line.fund, line.hospital_code, f"{line.amount:.2f}",
                         line.occurred_at.isoformat() if line.occurred_at else ""])
    return out.getvalue().encode("utf-8")


def read_xml(data: bytes) -> list[StatementLine]:
    """`<statement payer=".." date=".."><row settlementId=".." entryKind=".." fund=".." hospitalCode=".."
    amount=".." occurredAt=".."/>...</statement>`, parsed with the same hardening as SOAP requests."""
    from settlement.soap.xmlsafe import Limits, XmlRejected, parse_body

    try:
        root, _, _ = parse_body(data, None, Limits(max_bytes=512 * 1024 * 1024))
    except XmlRejected as error:
        raise StatementError(f"the XML statement is refused: {error.message}") from None
    lines = []
    for number, row in enumerate(root.iter("row"), start=1):
        lines.append(_line({"settlement_id": row.get("settlementId", ""), "entry_kind": row.get("entryKind", ""),
                            "fund": row.get("fund", ""), "hospital_code": row.get("hospitalCode", ""),
                            "amount": row.get("amount", ""), "occurred_at": row.get("occurredAt", "")},
                           f"row {number}"))
    return lines


def write_xml(payer: str, day: date, lines: Iterable[StatementLine]) -> bytes:
    root = etree.Element("statement", payer=payer, date=day.isoformat())
    for line in lines:
        etree.SubElement(root, "row", settlementId=line.settlement_id, entryKind=line.entry_kind, fund=line.fund,
                         hospitalCode=line.hospital_code, amount=f"{line.amount:.2f}",
                         occurredAt=line.occurred_at.isoformat() if line.occurred_at else "")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def inbox_file(inbox: Path, payer: PayerConfig, day: date) -> Path:
    return inbox / payer.code / f"{day.isoformat()}.{payer.statement.format}"


def read_inbox(inbox: Path, payer: PayerConfig, day: date) -> list[StatementLine]:
    path = inbox_file(inbox, payer, day)
    if not path.is_file():
        raise StatementError(f"no statement file {path} yet")
    data = path.read_bytes()
    return read_csv(data) if payer.statement.format == "csv" else read_xml(data)


def fetch_soap(payer: PayerConfig, day: date, request_id: str) -> list[StatementLine]:
    """Ask the payer's statement service, with a timeout per attempt; every attempt sends the same request id,
    so a payer that did the work but answered too late books the request once."""
    import requests
    from zeep import Client, Settings
    from zeep.exceptions import Error as ZeepError
    from zeep.transports import Transport

    source = payer.statement
    assert source.wsdl is not None
    last: Exception | None = None
    for attempt in range(1, source.retries + 1):
        try:
            transport = Transport(timeout=source.timeout_seconds,  # type: ignore[no-untyped-call]
                                  operation_timeout=source.timeout_seconds)
            client = Client(source.wsdl, transport=transport,  # type: ignore[no-untyped-call]
                            settings=Settings(strict=True, xml_huge_tree=False))
            reply = client.service.GetStatement(requestId=request_id, payer=payer.code, businessDate=day)
            rows = reply.row or [] if hasattr(reply, "row") else []
            return [StatementLine(row.settlementId, row.entryKind, row.fund, row.hospitalCode,
                                  Decimal(row.amount).quantize(Decimal("0.01")), row.occurredAt) for row in rows]
        except (requests.RequestException, ZeepError, OSError) as error:
            last = error
            log.warning("statement of %s for %s: attempt %d of %d failed (%s)", payer.code, day, attempt,
                        source.retries, type(error).__name__)
            if attempt < source.retries:
                time.sleep(min(2.0 ** (attempt - 1), 10.0))
    raise StatementError(f"the statement service of {payer.code} did not answer after {source.retries} attempts: "
                         f"{type(last).__name__}")


def fetch(payer: PayerConfig, day: date, request_id: str, inbox: Path) -> list[StatementLine]:
    if payer.statement.source == "soap":
        return fetch_soap(payer, day, request_id)
    return read_inbox(inbox, payer, day)
