"""Workbooks as a finance officer receives them, opened with openpyxl: numbers (never text or floats of
approximations) formatted #,##0.00, Chinese headers with English below, a title block, totals per group and a
grand total equal to the rows summed in fen, autofilter, frozen headers, print set-up; the CSV likewise."""

from __future__ import annotations

import csv
import io
import random
from decimal import Decimal

from openpyxl import load_workbook

from settlement.present.workbook import Column, Table, csv_bytes, workbook

COLUMNS = (Column("fund", "基金", "fund"), Column("hospital", "医疗机构", "hospital"),
           Column("count", "笔数", "count", "count"), Column("paid", "支付金额", "paid", "money"))


def table(rows: list[dict[str, object]]) -> Table:
    info = (("期间", "2024-06"), ("生成时间", "2024-07-01 02:00:00（北京时间）"), ("生成人", "李会计"),
            ("政策版本", "611000/2024-01-01"))
    return Table("清算", "2024年6月 医疗救助清算表", info,
                 COLUMNS, rows, group_by="fund", group_names={"610100": "医疗救助基金"})


def rows(seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    return [{"fund": rng.choice(["390100", "610100"]), "hospital": f"H{n:03d} 医院", "count": rng.randint(1, 90),
             "paid": rng.randint(-10_000, 10**9)} for n in range(40)]


def test_amounts_are_exact_numbers_with_their_format_and_the_totals_are_the_fen_sums() -> None:
    data = rows(7)
    book = load_workbook(io.BytesIO(workbook([table(data)])))
    sheet = book["清算"]
    assert sheet["A1"].value == "2024年6月 医疗救助清算表"
    assert [sheet.cell(r, 1).value for r in range(2, 6)] == [
        "期间：2024-06", "生成时间：2024-07-01 02:00:00（北京时间）", "生成人：李会计", "政策版本：611000/2024-01-01"]
    header = next(r for r in range(1, 12) if sheet.cell(r, 1).value == "基金")
    assert [c.value for c in sheet[header]] == ["基金", "医疗机构", "笔数", "支付金额"]
    assert [c.value for c in sheet[header + 1]] == ["fund", "hospital", "count", "paid"]
    first = header + 2
    for offset, row in enumerate(data):
        cell = sheet.cell(first + offset, 4)
        assert cell.data_type == "n" and cell.number_format == "#,##0.00"
        assert Decimal(str(cell.value)) == Decimal(int(row["paid"])) / 100  # type: ignore[call-overload]
        assert sheet.cell(first + offset, 3).number_format == "#,##0"
    labels = {sheet.cell(r, 1).value: r for r in range(first + len(data), sheet.max_row + 1)}
    grand = labels["合计"]
    assert Decimal(str(sheet.cell(grand, 4).value)) * 100 == sum(int(r["paid"]) for r in data)  # type: ignore[call-overload]
    for fund, label in (("390100", "小计（基金 390100）"), ("610100", "小计（基金 医疗救助基金）")):
        fen = sum(int(r["paid"]) for r in data if r["fund"] == fund)  # type: ignore[call-overload]
        assert Decimal(str(sheet.cell(labels[label], 4).value)) * 100 == fen
    assert sheet.freeze_panes == f"A{first}"
    assert sheet.auto_filter.ref == f"A{header + 1}:D{first + len(data) - 1}"
    assert sheet.page_setup.orientation == "landscape" and sheet.page_setup.fitToWidth == 1
    assert sheet.print_title_rows == f"${header}:${header + 1}"


def test_without_english_the_header_is_one_row() -> None:
    sheet = load_workbook(io.BytesIO(workbook([table(rows(1))], english=False))).active
    assert sheet is not None
    header = next(r for r in range(1, 12) if sheet.cell(r, 1).value == "基金")
    assert sheet.cell(header + 1, 1).value in ("390100", "610100")


def test_the_csv_carries_the_title_block_and_the_totals() -> None:
    data = rows(3)
    read = list(csv.reader(io.StringIO(csv_bytes(table(data)).decode("utf-8-sig"))))
    assert read[0] == ["# 2024年6月 医疗救助清算表"] and read[5] == ["基金", "医疗机构", "笔数", "支付金额"]
    total = next(row for row in read if row[0] == "合计")
    assert Decimal(total[3]) * 100 == sum(int(r["paid"]) for r in data)  # type: ignore[call-overload]
    assert all(len(row[3].split(".")[-1]) == 2 for row in read[7:] if row and row[3])


def test_control_a_float_total_drifts_where_the_fen_total_does_not() -> None:
    """Why totals are summed in fen: summing the cells' floats drifts off the ledger on ordinary amounts."""
    amounts = [10, 20, 30] * 1000  # 0.10, 0.20, 0.30 yuan
    assert sum(fen / 100 for fen in amounts) != sum(amounts) / 100
    assert sum(Decimal(fen) / 100 for fen in amounts) == Decimal(sum(amounts)) / 100
