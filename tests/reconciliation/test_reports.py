"""Reports: a run's CSV and workbook (totals sheet, discrepancies sheet) hold exactly the run's figures; the
monthly clearing statement (CSV and workbook) says per fund and hospital settled + reversed + corrected = owed,
equal to the ledger's sums over the month in Asia/Shanghai, and a rerun keeps one clearing record. A tampered
workbook fails the same checks."""

from __future__ import annotations

import csv
import io
import re
import shutil
import stat
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook
from sqlalchemy import select

from settlement.db.models import Hospital, LedgerEntry
from settlement.services.finance import resolve, run_clearing, run_report
from tests.reconciliation.helpers import (
    FINANCE,
    SHANGHAI,
    FakePayer,
    at,
    change,
    day_lines,
    desk,
    drop,
    listed,
    new_payer,
    phantom,
    reconciler,
    scalar,
    seed_day,
)
from tests.service.conftest import Service

D = date(2024, 6, 14)
TOTALS_HEADER = ["fund", "hospital", "engine count", "engine total", "payer count", "payer total", "difference"]
ITEMS_HEADER = ["id", "kind", "national code", "timing", "settlement", "entry", "fund", "hospital", "engine amount",
                "payer amount", "difference", "status", "action", "note"]
CLEARING_HEADER = ["fund", "hospital", "hospital name", "settlements", "settled", "reversed", "corrected", "owed"]


def exact(value: Any) -> Any:
    """A workbook cell as an exact decimal when it is a number (openpyxl reads the stored text back as a float,
    whose shortest repr is that text); other values as they are."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def sheet_rows(path: Path, title: str) -> list[list[Any]]:
    book = load_workbook(path, read_only=True)
    assert title in book.sheetnames, book.sheetnames
    found = [[exact(value) for value in row] for row in book[title].iter_rows(values_only=True)]
    book.close()
    return found


def csv_rows(path: Path) -> list[list[str]]:
    data = path.read_bytes()
    assert data.startswith("\ufeff".encode()), "a BOM, so that Excel reads the Chinese text"
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))


def text_of(value: Any) -> str:
    return "" if value is None else str(value)


def check_run_report(xlsx: Path, csv_path: Path, totals: list[list[Any]], items: list[list[Any]],
                     hospitals: set[str], groups: int) -> None:
    """The workbook's totals rows for the given hospitals, and its discrepancy rows, are exactly those expected;
    the CSV holds the same discrepancy rows."""
    book = load_workbook(xlsx, read_only=True)
    assert book.sheetnames == ["totals", "discrepancies"]
    book.close()
    total_rows = sheet_rows(xlsx, "totals")
    assert total_rows[0] == TOTALS_HEADER and len(total_rows) == groups + 1
    assert [row for row in total_rows[1:] if row[1] in hospitals] == totals
    item_rows = sheet_rows(xlsx, "discrepancies")
    assert item_rows[0] == ITEMS_HEADER
    assert item_rows[1:] == [[None if value == "" else value for value in row] for row in items]  # empty cells
    written = csv_rows(csv_path)
    assert written[0] == ITEMS_HEADER
    assert written[1:] == [[text_of(value) for value in row] for row in items]


def tamper(path: Path, title: str, row: int, column: int, change_by: Decimal) -> Path:
    copy = path.with_name("tampered-" + path.name)
    shutil.copy(path, copy)
    book = load_workbook(copy)
    cell = book[title].cell(row=row, column=column)
    cell.value = exact(cell.value) + change_by
    book.save(copy)
    return copy


def test_the_run_report_holds_the_runs_totals_and_discrepancies(service: Service) -> None:
    desks, seeded = seed_day(service, D, 10, hospitals=2, patients=5)
    late = desks[1].settle(at(D, 23, 59))
    payer = new_payer()
    engine = day_lines(service, payer, D)
    line = {row.settlement_id: row for row in engine}
    gone, shifted = seeded[0].settlement_id, seeded[3].settlement_id
    extra = phantom(D, desks[1].code, "19.99")
    statement = [*change(drop(engine, [gone, late]), {shifted: Decimal("-0.05")}), extra]
    result = reconciler(service, payer, FakePayer({D: statement})).run(payer.code, D)
    assert result.status == "done"
    by_sid = {item["settlement_id"]: item for item in listed(service, payer.code)}
    service.clock.now = at(D + timedelta(days=1), 9).astimezone(UTC)
    resolve(service.app.context, FINANCE, by_sid[extra.settlement_id]["id"], "write_off", "付款方重复记录")

    paths = run_report(service.app.context, payer.code, D, service.tmp / "reports")
    csv_path, xlsx = paths
    assert (csv_path.name, xlsx.name) == (f"{payer.code}-{D}-discrepancies.csv", f"{payer.code}-{D}.xlsx")
    assert csv_path.parent == service.tmp / "reports" / "reconciliation" / payer.code
    # Readable by the service's user only (issue 15, item 13): files 0600, the folders made for them 0700.
    assert {stat.S_IMODE(path.stat().st_mode) for path in paths} == {0o600}
    assert {stat.S_IMODE(folder.stat().st_mode) for folder in (csv_path.parent, csv_path.parent.parent,
                                                               service.tmp / "reports")} == {0o700}

    codes = {cashier.code for cashier in desks}
    totals = []
    for code in sorted(codes):
        ours = [row for row in engine if row.hospital_code == code]
        theirs = [row for row in statement if row.hospital_code == code]
        engine_total, payer_total = sum(row.amount for row in ours), sum(row.amount for row in theirs)
        totals.append(["390100", code, len(ours), engine_total, len(theirs), payer_total, payer_total - engine_total])
    def item(sid: str, kind: str, code: int, timing: str, engine_amount: Decimal | None,
             payer_amount: Decimal | None, status: str = "open", action: str = "", note: str = "") -> list[Any]:
        source = line.get(sid) or extra
        return [by_sid[sid]["id"], kind, code, timing, sid, "settlement", "390100", source.hospital_code,
                engine_amount, payer_amount, (payer_amount or 0) - (engine_amount or 0), status, action, note]
    items = sorted([
        item(gone, "engine_only", 2, "", line[gone].amount, None),
        item(late, "engine_only", 2, "yes", line[late].amount, None),
        item(shifted, "amount_differs", 3, "", line[shifted].amount, line[shifted].amount - Decimal("0.05")),
        item(extra.settlement_id, "payer_only", 1, "", None, Decimal("19.99"), "resolved", "write_off",
             "付款方重复记录"),
    ], key=lambda row: int(row[0]))
    check_run_report(xlsx, csv_path, totals, items, codes, len(result.totals))

    # Planted faults: a workbook with one amount moved by a fen, or one discrepancy row less, fails the check.
    moved = tamper(xlsx, "discrepancies", 2, 11, Decimal("0.01"))  # a difference
    with pytest.raises(AssertionError):
        check_run_report(moved, csv_path, totals, items, codes, len(result.totals))
    row_of_ours = next(n for n, row in enumerate(sheet_rows(xlsx, "totals")) if row[1] in codes) + 1
    moved_total = tamper(xlsx, "totals", row_of_ours, 6, Decimal("-0.01"))
    with pytest.raises(AssertionError):
        check_run_report(moved_total, csv_path, totals, items, codes, len(result.totals))
    with pytest.raises(AssertionError):
        check_run_report(xlsx, csv_path, totals, items[:-1], codes, len(result.totals))


def ledger_month(service: Service, month_start: datetime, month_end: datetime,
                 codes: set[str] | None = None) -> dict[tuple[str, str], dict[str, int]]:
    """The ledger's sums per (fund, hospital) over the entries created in [start, end), computed here in Python."""
    sums: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    with service.app.context.uow() as tx:
        query = select(LedgerEntry.fund, Hospital.code, LedgerEntry.paid_fen, LedgerEntry.reversal_id,
                       LedgerEntry.correction_id, LedgerEntry.created_at).join(
            Hospital, Hospital.id == LedgerEntry.hospital_id)
        if codes is not None:
            query = query.where(Hospital.code.in_(sorted(codes)))
        for fund, code, paid, reversal, correction, created in tx.session.execute(query):
            if not month_start <= created < month_end:
                continue
            part = "reversed" if reversal is not None else "corrected" if correction is not None else "settled"
            sums[(fund, code)][part] += paid
            sums[(fund, code)]["owed"] += paid
            if part == "settled" and paid != 0:
                sums[(fund, code)]["settlements"] += 1
    return sums


def check_clearing(xlsx: Path, csv_path: Path, lines: list[dict[str, Any]],
                   expected: dict[tuple[str, str], dict[str, int]], every_fund: dict[str, int]) -> None:
    """The statement's rows for the expected (fund, hospital) pairs hold the ledger's sums, with
    settled + reversed + corrected = owed; the by-fund sheet holds each fund's total; the CSV is the same."""
    table = sheet_rows(xlsx, "by hospital")
    assert table[0] == CLEARING_HEADER
    ours = {(row[0], row[1]): row for row in table[1:] if (row[0], row[1]) in expected}
    assert set(ours) == set(expected)
    for key, sums in expected.items():
        _fund, _code, _, count, settled, reversed_, corrected, owed = ours[key]
        assert count == sums["settlements"]
        assert (settled, reversed_, corrected, owed) == tuple(
            Decimal(sums[part]) / 100 for part in ("settled", "reversed", "corrected", "owed"))
        assert settled + reversed_ + corrected == owed and reversed_ <= 0
    for row in table[1:]:
        assert row[4] + row[5] + row[6] == row[7]
    assert {(line["fund"], line["hospital_code"]) for line in lines} == {(row[0], row[1]) for row in table[1:]}
    funds = sheet_rows(xlsx, "by fund")
    assert funds[0] == ["fund", "owed"]
    assert {row[0]: row[1] for row in funds[1:]} == {fund: Decimal(owed) / 100 for fund, owed in every_fund.items()}
    written = csv_rows(csv_path)
    assert written[0] == CLEARING_HEADER
    assert all(re.fullmatch(r"-?\d+\.\d\d", value) for row in written[1:] for value in row[4:]), \
        "amounts with two decimals"
    assert [row[:3] + [Decimal(value) for value in row[3:]] for row in written[1:]] == table[1:]


def month(start: date) -> tuple[datetime, datetime]:
    following = date(start.year + start.month // 12, start.month % 12 + 1, 1)
    return datetime.combine(start, datetime.min.time(), SHANGHAI), \
        datetime.combine(following, datetime.min.time(), SHANGHAI)


def test_the_monthly_clearing_statement(service: Service) -> None:
    a, b = desk(service), desk(service)
    june = [a.settle(at(date(2024, 6, 3), 9 + n), amount=f"{900 + n * 111}.{n}0") for n in range(3)]
    june += [b.settle(at(date(2024, 6, 3), 14 + n), amount=f"{1500 + n}.25") for n in range(2)]
    june.append(a.settle(at(date(2024, 6, 20), 11)))
    a.settle(at(date(2024, 6, 1), 0, 0, 10))                     # 2024-05-31T16:00:10Z: June in Shanghai
    a.settle(at(date(2024, 5, 31), 23, 59, 30))                  # May
    b.settle(at(date(2024, 7, 1), 0, 0, 10))                     # 2024-06-30T16:00:10Z: July in Shanghai
    a.reverse(at(date(2024, 6, 10), 10), june[1])
    b.reverse(at(date(2024, 7, 2), 10), june[3])                 # a June settlement reversed in July
    payer = new_payer()
    engine = day_lines(service, payer, date(2024, 6, 3))
    runs = reconciler(service, payer, FakePayer({date(2024, 6, 3): change(engine, {june[4]: Decimal("3.21")})}))
    runs.run(payer.code, date(2024, 6, 3))
    service.clock.now = at(date(2024, 6, 12), 16).astimezone(UTC)
    (item,) = listed(service, payer.code)
    resolve(service.app.context, FINANCE, item["id"], "accept_payer", "the payer's amount")
    service.clock.now = at(date(2024, 7, 3), 2).astimezone(UTC)

    low, high = month(date(2024, 6, 1))
    codes = {a.code, b.code}
    expected = ledger_month(service, low, high, codes)
    assert expected[("390100", a.code)]["settlements"] == 5, "three on the 3rd, one on the 20th, one at 00:00:10"
    assert expected[("390100", b.code)]["settlements"] == 2
    assert expected[("390100", b.code)]["corrected"] == 321 and expected[("390100", b.code)]["reversed"] == 0
    assert expected[("390100", a.code)]["reversed"] < 0
    assert all(sums["owed"] == sums["settled"] + sums["reversed"] + sums["corrected"]
                                 for sums in expected.values())
    every_fund: dict[str, int] = defaultdict(int)
    for (fund, _), sums in ledger_month(service, low, high).items():
        every_fund[fund] += sums["owed"]

    out = service.tmp / "reports"
    result = run_clearing(service.app.context, "2024-06", out)
    csv_path, xlsx = (Path(name) for name in result["files"])
    assert (csv_path, xlsx) == (out / "clearing" / "clearing-2024-06.csv", out / "clearing" / "clearing-2024-06.xlsx")
    assert load_workbook(xlsx, read_only=True).sheetnames == ["by hospital", "by fund"]
    check_clearing(xlsx, csv_path, result["lines"], expected, every_fund)
    assert result["owed_by_fund"] == {fund: f"{Decimal(owed) / 100:.2f}" for fund, owed in sorted(every_fund.items())}
    assert scalar(service, "SELECT COUNT(*) FROM clearing_runs WHERE month = '2024-06'") == 1

    # Planted fault: a statement with one hospital's owed moved by a fen fails the check.
    row_of_ours = next(n for n, row in enumerate(sheet_rows(xlsx, "by hospital")) if row[1] == a.code) + 1
    with pytest.raises(AssertionError):
        check_clearing(tamper(xlsx, "by hospital", row_of_ours, 8, Decimal("0.01")), csv_path, result["lines"],
                       expected, every_fund)

    # A rerun after a late June booking: one record, refreshed figures.
    a.settle(at(date(2024, 6, 30), 23, 0))
    service.clock.now = at(date(2024, 7, 3), 3).astimezone(UTC)
    again = run_clearing(service.app.context, "2024-06", out)
    assert scalar(service, "SELECT COUNT(*) FROM clearing_runs WHERE month = '2024-06'") == 1
    refreshed = ledger_month(service, low, high, codes)
    assert refreshed[("390100", a.code)]["settlements"] == 6
    every_fund = defaultdict(int)
    for (fund, _), sums in ledger_month(service, low, high).items():
        every_fund[fund] += sums["owed"]
    assert again["files"] == result["files"]
    check_clearing(xlsx, csv_path, again["lines"], refreshed, every_fund)
    stored = scalar(service, "SELECT totals FROM clearing_runs WHERE month = '2024-06'")
    assert f'"hospital_code": "{a.code}"' in stored and '"settlements": 6' in stored

    # July: the reversal of a June settlement counts in July, with July's own settlement.
    july = run_clearing(service.app.context, "2024-07", out)
    line_b = next(line for line in july["lines"] if (line["fund"], line["hospital_code"]) == ("390100", b.code))
    july_sums = ledger_month(service, *month(date(2024, 7, 1)), codes)[("390100", b.code)]
    assert (line_b["settlements"], Decimal(line_b["reversed"]), Decimal(line_b["owed"])) == (
        1, Decimal(july_sums["reversed"]) / 100, Decimal(july_sums["owed"]) / 100)
    assert july_sums["reversed"] < 0
