"""The finance workflow: the discrepancy queue, resolutions (never an edit: corrections are new linked ledger
entries), reconciliation reports and the monthly clearing statement."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from sqlalchemy import bindparam, text

from settlement.db.models import Timestamp
from settlement.domain.claim import SHANGHAI
from settlement.domain.money import fmt, from_fen, to_fen
from settlement.domain.privacy import mask_id_numbers
from settlement.domain.text import NOTE_MAX
from settlement.files import private_dir, write_private
from settlement.services.auth import Caller
from settlement.services.context import Context
from settlement.services.errors import ServiceCode, ServiceError
from settlement.services.reconciliation import KIND_CODES
from settlement.services.text import checked

ACTIONS = ("accept_payer", "correct", "reverse", "write_off")
_IDS_ALPHABET = "0123456789ABCDEF"


def _staff(caller: Caller) -> None:
    if caller.kind not in ("finance", "admin"):
        raise ServiceError(ServiceCode.FORBIDDEN, "discrepancies are worked by finance staff")


def _discrepancy_json(row: Any) -> dict[str, Any]:
    (id_, payer, business_date, kind, timing, settlement_id, entry_kind, fund, hospital, engine_fen, payer_fen,
     created_at, status, action, note, resolved_by, resolved_at) = row
    return {
        "id": int(id_), "payer": payer, "business_date": str(business_date), "kind": kind,
        "code": KIND_CODES[kind], "timing": bool(timing), "settlement_id": settlement_id, "entry_kind": entry_kind,
        "fund": fund, "hospital_code": hospital,
        "engine_amount": fmt(from_fen(int(engine_fen))) if engine_fen is not None else None,
        "payer_amount": fmt(from_fen(int(payer_fen))) if payer_fen is not None else None,
        "difference": fmt(from_fen(int(payer_fen or 0) - int(engine_fen or 0))),
        "created_at": str(created_at), "status": status, "action": action, "note": note,
        "resolved_by": resolved_by, "resolved_at": str(resolved_at) if resolved_at else None,
    }


_COLUMNS = ("id, payer, business_date, kind, timing, settlement_id, entry_kind, fund, hospital_code, engine_fen, "
            "payer_fen, created_at, status, action, note, resolved_by, resolved_at")


@dataclass(frozen=True)
class Filters:
    payer: str | None = None
    hospital: str | None = None
    kind: str | None = None
    status: str = "open"
    older_than_days: int | None = None  # age by business date
    business_date: date | None = None


def list_discrepancies(context: Context, caller: Caller, filters: Filters, limit: int = 100,
                       after_id: int | None = None) -> dict[str, Any]:
    _staff(caller)
    if filters.kind is not None and filters.kind not in KIND_CODES:
        raise ServiceError(ServiceCode.REQUEST_MALFORMED, f"kind is one of {', '.join(KIND_CODES)}")
    clauses: list[str] = ["1 = 1"]
    params: dict[str, Any] = {}
    for column, value in (("payer", filters.payer), ("hospital_code", filters.hospital), ("kind", filters.kind),
                          ("business_date", filters.business_date)):
        if value is not None:
            clauses.append(f"{column} = :{column}")
            params[column] = value
    if filters.status != "all":
        clauses.append("status = :status")
        params["status"] = filters.status
    if filters.older_than_days is not None:
        today = context.clock().astimezone(SHANGHAI).date()
        clauses.append("business_date <= :before")
        params["before"] = today - timedelta(days=filters.older_than_days)
    if after_id is not None:
        clauses.append("id > :after")
        params["after"] = after_id
    sql = (f"SELECT {_COLUMNS} FROM discrepancies WHERE {' AND '.join(clauses)} "  # noqa: S608 - constant columns
           "ORDER BY id LIMIT :limit")
    with context.uow() as tx:
        rows = tx.session.connection().execute(text(sql), {**params, "limit": limit + 1}).all()
    items = [_discrepancy_json(row) for row in rows[:limit]]
    return {"items": items, "next_cursor": str(items[-1]["id"]) if len(rows) > limit else None}


def resolve(context: Context, caller: Caller, discrepancy_id: int, action: str, note: str,
            amount: str | None = None) -> dict[str, Any]:
    """Resolve one discrepancy. accept_payer: a correction entry of (payer - engine) so that the ledger says what
    the payer paid; correct: a correction entry of `amount`; reverse: the settlement is reversed in full; write_off:
    closed with its note, the ledger untouched. The settlement itself is never edited."""
    _staff(caller)
    note = mask_id_numbers(note)  # kept in the discrepancy, the correction, the reversal and the audit log
    if action not in ACTIONS:
        raise ServiceError(ServiceCode.REQUEST_MALFORMED, f"action is one of {', '.join(ACTIONS)}")
    if not note.strip():
        raise ServiceError(ServiceCode.REQUEST_MALFORMED, "a resolution needs a note saying why")
    checked(note, "the note", NOTE_MAX, multiline=True)  # the command line's note has no wire model to bound it
    if action == "reverse":
        # The reversal first, under a key of the discrepancy's own (a retry reverses once); the discrepancy is
        # resolved below only once the reversal exists.
        _reverse_for_finance(context, discrepancy_id, note)
    now = context.clock()
    with context.uow() as tx:
        connection = tx.session.connection()
        row = connection.execute(text(f"SELECT {_COLUMNS} FROM discrepancies WHERE id = :id"),  # noqa: S608
                                 {"id": discrepancy_id}).first()
        if row is None:
            raise ServiceError(ServiceCode.NOT_FOUND, f"no discrepancy {discrepancy_id}")
        item = _discrepancy_json(row)
        if item["status"] != "open":
            raise ServiceError(ServiceCode.DISCREPANCY_CLOSED,
                               f"discrepancy {discrepancy_id} is {item['status']} already")
        settlement = tx.repo.settlement(item["settlement_id"])
        correction_id = None
        correction: dict[str, Any] | None = None
        if action in ("accept_payer", "correct"):
            if settlement is None:
                raise ServiceError(ServiceCode.NOT_FOUND, f"the engine has no settlement {item['settlement_id']}: "
                                   "write the discrepancy off or ask the payer to withdraw its row")
            delta = int(row[10] or 0) - int(row[9] or 0) if action == "accept_payer" else _amount_fen(amount)
            if delta == 0:
                raise ServiceError(ServiceCode.REQUEST_MALFORMED, "a correction of 0.00 changes nothing")
            correction_id, correction = _post_correction(tx, settlement, item["fund"], delta, note, caller,
                                                         discrepancy_id, now)
        elif action == "reverse" and settlement is None:
            raise ServiceError(ServiceCode.NOT_FOUND, f"the engine has no settlement {item['settlement_id']}")
        connection.execute(text(
            "UPDATE discrepancies SET status = 'resolved', action = :action, note = :note, resolved_by = :by, "
            "resolved_at = :now, correction_id = :correction WHERE id = :id AND status = 'open'").bindparams(
                bindparam("now", type_=Timestamp)),
            {"action": action, "note": note, "by": caller.actor, "now": now, "correction": correction_id,
             "id": discrepancy_id})
        tx.repo.audit(now, caller.actor, f"discrepancy.{action}", "discrepancy", str(discrepancy_id),
                      json.dumps({"note": note, "correction_id": correction_id, "settlement": item["settlement_id"],
                                  "fund": item["fund"]}, ensure_ascii=False))
        tx.commit()
    resolved: dict[str, Any] = list_discrepancies(context, caller, Filters(status="all", payer=item["payer"]),
                                                  limit=1, after_id=discrepancy_id - 1)["items"][0]
    if correction is not None:
        resolved["correction"] = correction
    return resolved


def _amount_fen(amount: str | None) -> int:
    try:
        value = Decimal(amount or "")
    except InvalidOperation:
        raise ServiceError(ServiceCode.REQUEST_MALFORMED,
                           "amount must be a decimal string such as \"-12.50\"") from None
    if value != value.quantize(Decimal("0.01")) or not value.is_finite():
        raise ServiceError(ServiceCode.REQUEST_MALFORMED, "amount has at most two decimals")
    return to_fen(value)


def _post_correction(tx: Any, settlement: Any, fund: str, delta_fen: int, note: str, caller: Caller,
                     discrepancy_id: int | None, now: datetime) -> tuple[int, dict[str, Any]]:
    """A correction row and its ledger entry, under the person's year lock, with the year figures moved: the
    figures stay the sum of the ledger. The bill's total does not change: what the fund pays more, the patient's
    share pays less (the hospital settles the difference with the patient), so the correction balances to the fen:
    amount + patient_pays = total = 0. Returns its row id and that view."""
    from settlement.services.settlements import _IDS

    repo = tx.repo
    connection = tx.session.connection()
    repo.lock_year(settlement.id_number, settlement.insurance_year)
    public_id = f"CR{now.astimezone(SHANGHAI):%Y%m%d}{_IDS.getrandbits(48):012X}"
    correction_id = int(connection.execute(text(
        "INSERT INTO corrections (public_id, discrepancy_id, settlement_id, fund, amount_fen, reason, actor, "
        "created_at) VALUES (:public_id, :discrepancy, :settlement, :fund, :amount, :reason, :actor, :now) "
        "RETURNING id").bindparams(bindparam("now", type_=Timestamp)),
        {"public_id": public_id, "discrepancy": discrepancy_id, "settlement": settlement.id, "fund": fund,
         "amount": delta_fen, "reason": note, "actor": caller.actor, "now": now}).scalar_one())
    connection.execute(text(
        "INSERT INTO ledger_entries (settlement_id, reversal_id, reverses_entry_id, hospital_id, id_number, "
        "insurance_year, fund, paid_fen, deductible_fen, cumulative_fen, created_at, correction_id) VALUES "
        "(:settlement, NULL, NULL, :hospital, :id_number, :year, :fund, :paid, 0, 0, :now, :correction)").bindparams(
            bindparam("now", type_=Timestamp)),
        {"settlement": settlement.id, "hospital": settlement.hospital_id, "id_number": settlement.id_number,
         "year": settlement.insurance_year, "fund": fund, "paid": delta_fen, "now": now,
         "correction": correction_id})
    repo.move_year(settlement.id_number, settlement.insurance_year, 0, {fund: (delta_fen, 0, 0)})
    view = {"correction_id": public_id, "settlement_id": settlement.public_id, "fund": fund,
            "amount": fmt(from_fen(delta_fen)), "patient_pays": fmt(from_fen(-delta_fen)), "total": "0.00",
            "recorded_at": now.isoformat()}
    repo.audit(now, caller.actor, "correction.create", "settlement", settlement.public_id,
               json.dumps({"correction": public_id, "fund": fund, "amount": view["amount"],
                           "patient_pays": view["patient_pays"], "discrepancy": discrepancy_id}, ensure_ascii=False))
    return correction_id, view


def _reverse_for_finance(context: Context, discrepancy_id: int, note: str) -> None:
    """Reverse the discrepancy's settlement on its hospital's behalf, keyed by the discrepancy: the key has a '/',
    which hospitals' transaction ids cannot, so no hospital can have used it."""
    from settlement.services.settlements import SettlementService
    from settlement.wire.requests import ReverseRequest

    with context.uow() as tx:
        row = tx.session.connection().execute(text("SELECT settlement_id, status FROM discrepancies WHERE id = :id"),
                                              {"id": discrepancy_id}).first()
        if row is None:
            raise ServiceError(ServiceCode.NOT_FOUND, f"no discrepancy {discrepancy_id}")
        if row[1] != "open":
            raise ServiceError(ServiceCode.DISCREPANCY_CLOSED, f"discrepancy {discrepancy_id} is {row[1]} already")
        settlement = tx.repo.settlement(row[0])
        if settlement is None:
            raise ServiceError(ServiceCode.NOT_FOUND, f"the engine has no settlement {row[0]}")
        hospital = tx.repo.hospital(settlement.hospital_id)
        assert hospital is not None
        on_behalf = Caller(0, "hospital", f"finance-for-{hospital.code}", hospital.id, hospital.code, hospital.level)
        public_id = settlement.public_id
    request = ReverseRequest.model_construct(transaction_id=f"finance/discrepancy/{discrepancy_id}",
                                             reason=f"finance: {note}"[:256])
    reply = SettlementService(context).reverse(on_behalf, public_id, request)
    if reply.status >= 400 and json.loads(reply.body).get("code") != ServiceCode.SETTLEMENT_ALREADY_REVERSED:
        problem = json.loads(reply.body)
        raise ServiceError(ServiceCode.REVERSAL_REFUSED, f"the reversal was refused: {problem.get('code')}: "
                                                         f"{problem.get('detail', '')}"[:300])


# Reports

def _workbook(sheets: list[tuple[str, list[str], list[list[Any]]]]) -> bytes:
    book = Workbook()
    first = True
    for title, header, rows in sheets:
        sheet = book.active if first else book.create_sheet()
        assert sheet is not None
        first = False
        sheet.title = title
        sheet.append(header)
        for cell in sheet[1]:
            cell.font = Font(bold=True)
        for row in rows:
            sheet.append(row)
        for index, name in enumerate(header, start=1):
            width = max([len(str(name))] + [len(str(row[index - 1])) for row in rows[:500]]) + 2
            sheet.column_dimensions[get_column_letter(index)].width = min(width, 48)
        sheet.freeze_panes = "A2"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _csv(header: list[str], rows: list[list[Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return ("\ufeff" + out.getvalue()).encode("utf-8")  # the BOM lets Excel open Chinese text correctly


def _money(fen: int) -> Decimal:
    """Amounts go into workbooks as exact decimals (never floats): openpyxl writes a Decimal as its text."""
    return from_fen(fen)


def run_report(context: Context, payer: str, day: date, reports_dir: Path) -> list[Path]:
    """The run's CSV of discrepancies and its XLSX workbook (a totals sheet and a discrepancies sheet)."""
    from settlement.bootstrap import SYSTEM
    from settlement.services.reconciliation import Reconciler

    result = Reconciler(context, {}, reports_dir).result(payer, day)
    items = list_discrepancies(context, SYSTEM, Filters(payer=payer, business_date=day, status="all"),
                               limit=10_000_000)["items"]
    totals_header = ["fund", "hospital", "engine count", "engine total", "payer count", "payer total", "difference"]
    totals = [[row["fund"], row["hospital_code"], row["engine_count"], _money(row["engine_fen"]), row["payer_count"],
               _money(row["payer_fen"]), _money(row["payer_fen"] - row["engine_fen"])] for row in result.totals]
    header = ["id", "kind", "national code", "timing", "settlement", "entry", "fund", "hospital", "engine amount",
              "payer amount", "difference", "status", "action", "note"]
    rows = [[item["id"], item["kind"], item["code"], "yes" if item["timing"] else "", item["settlement_id"],
             item["entry_kind"], item["fund"], item["hospital_code"],
             Decimal(item["engine_amount"]) if item["engine_amount"] else None,
             Decimal(item["payer_amount"]) if item["payer_amount"] else None, Decimal(item["difference"]),
             item["status"], item["action"] or "", item["note"] or ""] for item in items]
    folder = private_dir(reports_dir / "reconciliation" / payer)
    stem = f"{payer}-{day.isoformat()}"
    csv_path, xlsx_path = folder / f"{stem}-discrepancies.csv", folder / f"{stem}.xlsx"
    write_private(csv_path, _csv(header, rows))
    write_private(xlsx_path, _workbook([("totals", totals_header, totals), ("discrepancies", header, rows)]))
    return [csv_path, xlsx_path]


# Monthly clearing

_CLEARING = text("""
    SELECT l.fund, h.code, h.name,
           SUM(CASE WHEN l.reversal_id IS NULL AND l.correction_id IS NULL THEN l.paid_fen ELSE 0 END),
           SUM(CASE WHEN l.reversal_id IS NOT NULL THEN l.paid_fen ELSE 0 END),
           SUM(CASE WHEN l.correction_id IS NOT NULL THEN l.paid_fen ELSE 0 END),
           SUM(l.paid_fen),
           SUM(CASE WHEN l.reversal_id IS NULL AND l.correction_id IS NULL AND l.paid_fen <> 0 THEN 1 ELSE 0 END)
    FROM ledger_entries l JOIN hospitals h ON h.id = l.hospital_id
    WHERE l.created_at >= :low AND l.created_at < :high
    GROUP BY l.fund, h.code, h.name ORDER BY l.fund, h.code
""").bindparams(bindparam("low", type_=Timestamp), bindparam("high", type_=Timestamp))


def month_bounds(month: str) -> tuple[datetime, datetime]:
    try:
        year, number = (int(part) for part in month.split("-"))
        first = date(year, number, 1)
    except ValueError:
        raise ServiceError(ServiceCode.REQUEST_MALFORMED, "month is YYYY-MM") from None
    if len(month) != 7 or not 2000 <= first.year <= 2099:
        raise ServiceError(ServiceCode.REQUEST_MALFORMED, "month is YYYY-MM, within 2000-2099")
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return datetime.combine(first, time.min, SHANGHAI), datetime.combine(following, time.min, SHANGHAI)


def run_clearing(context: Context, month: str, reports_dir: Path, actor: str = "clearing") -> dict[str, Any]:
    """What each fund owes each hospital for a month (Asia/Shanghai), net of reversals and corrections booked in
    that month: a CSV and an XLSX statement, and one clearing record per month (a rerun refreshes it). `actor`:
    the person who runs it (the scheduler's runs are 'clearing')."""
    low, high = month_bounds(month)
    now = context.clock()
    with context.uow() as tx:
        connection = tx.session.connection()
        rows = connection.execute(_CLEARING, {"low": low, "high": high}).all()
        lines = [{"fund": fund, "hospital_code": code, "hospital_name": name, "settled": fmt(from_fen(int(s))),
                  "reversed": fmt(from_fen(int(r))), "corrected": fmt(from_fen(int(c))), "owed": fmt(from_fen(int(n))),
                  "settlements": int(count)}
                 for fund, code, name, s, r, c, n, count in rows]
        # One record per month, whoever runs it: the insert of a concurrent run is absorbed, then refreshed.
        connection.execute(text("INSERT INTO clearing_runs (month, status, created_at, finished_at, totals) "
                                "VALUES (:month, 'running', :now, NULL, '[]') ON CONFLICT (month) DO NOTHING")
                           .bindparams(bindparam("now", type_=Timestamp)), {"month": month, "now": now})
        connection.execute(text("UPDATE clearing_runs SET status = 'done', finished_at = :now, totals = :totals "
                                "WHERE month = :month").bindparams(bindparam("now", type_=Timestamp)),
                           {"now": now, "totals": json.dumps(lines, ensure_ascii=False), "month": month})
        tx.repo.audit(now, actor, "clearing.run", "clearing_run", month,
                      json.dumps({"lines": len(lines)}))
        tx.commit()
    header = ["fund", "hospital", "hospital name", "settlements", "settled", "reversed", "corrected", "owed"]
    table = [[line["fund"], line["hospital_code"], line["hospital_name"], line["settlements"],
              Decimal(line["settled"]), Decimal(line["reversed"]), Decimal(line["corrected"]), Decimal(line["owed"])]
             for line in lines]
    by_fund: dict[str, Decimal] = {}
    for line in lines:
        by_fund[line["fund"]] = by_fund.get(line["fund"], Decimal(0)) + Decimal(line["owed"])
    folder = private_dir(reports_dir / "clearing")
    csv_path, xlsx_path = folder / f"clearing-{month}.csv", folder / f"clearing-{month}.xlsx"
    write_private(csv_path, _csv(header, table))
    write_private(xlsx_path, _workbook([("by hospital", header, table),
                                        ("by fund", ["fund", "owed"], [[f, v] for f, v in sorted(by_fund.items())])]))
    return {"month": month, "lines": lines, "owed_by_fund": {f: fmt(v) for f, v in sorted(by_fund.items())},
            "files": [str(csv_path), str(xlsx_path)]}
