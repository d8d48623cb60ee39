"""Workbooks a finance officer can sign and send: a title block, Chinese headers (English in a second row),
amounts as exact numbers formatted #,##0.00, totals per group and a grand total, autofilter, frozen headers, and a
print set-up (A4 landscape, fit to width, header rows repeated on every page). The same table as CSV for systems
that read CSV: UTF-8 with a BOM (Excel), the title block as leading lines, the totals after the rows.

Amounts arrive as integer fen and are divided by 100 once, as Decimal: the cell holds the exact amount (openpyxl
writes a Decimal as its text), and the totals are summed in fen, never from the cells.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from openpyxl import Workbook
from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

Kind = Literal["text", "money", "count"]
MONEY_FORMAT = "#,##0.00"
COUNT_FORMAT = "#,##0"
HEADER_FILL = PatternFill("solid", fgColor="DDE4EE")
THIN = Side(style="thin", color="808080")


@dataclass(frozen=True)
class Column:
    key: str
    zh: str
    en: str
    kind: Kind = "text"


@dataclass(frozen=True)
class Table:
    """One sheet: `rows` map column keys to values (money as int fen, counts as int, the rest as text)."""

    sheet: str  # the sheet's name (at most 31 characters)
    title: str
    info: Sequence[tuple[str, str]]  # the title block: (label, value), e.g. ("支付方", "医疗救助 (assistance)")
    columns: Sequence[Column]
    rows: Sequence[Mapping[str, Any]]
    group_by: str | None = None  # a column key: totals per value of it, then the grand total
    group_names: Mapping[str, str] = field(default_factory=dict)  # how a group value is shown in its total's label

    def totals(self) -> tuple[list[tuple[str, dict[str, int]]], dict[str, int]]:
        """Per group (in order of first appearance) and overall: the sums of the money and count columns."""
        summed = [column.key for column in self.columns if column.kind != "text"]
        groups: dict[str, dict[str, int]] = {}
        grand = dict.fromkeys(summed, 0)
        for row in self.rows:
            name = str(row.get(self.group_by, "")) if self.group_by else ""
            group = groups.setdefault(name, dict.fromkeys(summed, 0))
            for key in summed:
                value = int(row.get(key) or 0)
                group[key] += value
                grand[key] += value
        return (list(groups.items()) if self.group_by else []), grand


def money(fen: int) -> Decimal:
    return Decimal(fen) / 100


def _display_width(value: object) -> int:
    text = f"{value:,.2f}" if isinstance(value, Decimal) else str(value)
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def _cell_value(column: Column, value: Any) -> Any:
    if value is None or value == "":
        return None
    if column.kind == "money":
        return money(int(value))
    if column.kind == "count":
        return int(value)
    return str(value)


def _write_sheet(sheet: Worksheet, table: Table, english: bool) -> None:
    width = len(table.columns)
    sheet.title = table.sheet[:31]
    sheet.append([table.title])
    sheet.cell(1, 1).font = Font(bold=True, size=14)
    sheet.merge_cells(start_row=1, start_column=1, end_row=1, end_column=width)
    for label, value in table.info:
        sheet.append([f"{label}：{value}"])
        sheet.merge_cells(start_row=sheet.max_row, start_column=1, end_row=sheet.max_row, end_column=width)
    sheet.append([])
    sheet.append([column.zh for column in table.columns])
    header_row = sheet.max_row
    if english:
        sheet.append([column.en for column in table.columns])
    last_header = sheet.max_row
    for row in sheet.iter_rows(min_row=header_row, max_row=last_header, max_col=width):
        for cell in row:
            cell.font = Font(bold=cell.row == header_row, italic=cell.row != header_row,
                             color="000000" if cell.row == header_row else "555555")
            cell.fill = HEADER_FILL
            cell.border = Border(bottom=THIN)
            cell.alignment = Alignment(horizontal="center", vertical="center", wrap_text=True)
    formats = {"money": MONEY_FORMAT, "count": COUNT_FORMAT}
    for item in table.rows:
        sheet.append([_cell_value(column, item.get(column.key)) for column in table.columns])
        for column_index, column in enumerate(table.columns, start=1):
            if column.kind in formats:
                sheet.cell(sheet.max_row, column_index).number_format = formats[column.kind]
    last_data = sheet.max_row
    sheet.freeze_panes = f"A{last_header + 1}"
    sheet.auto_filter.ref = f"A{last_header}:{get_column_letter(width)}{max(last_data, last_header)}"

    groups, grand = table.totals()
    if any(column.kind != "text" for column in table.columns):
        sheet.append([])
        label_of = {column.key: index for index, column in enumerate(table.columns, start=1)}
        by = next((column.zh for column in table.columns if column.key == table.group_by), "")
        for group, sums in groups:
            name = table.group_names.get(group, group)
            _total_row(sheet, table, label_of, f"小计（{by} {name}）".replace("  ", " "), sums, bold=False)
        _total_row(sheet, table, label_of, "合计", grand, bold=True)

    for index, column in enumerate(table.columns, start=1):
        widths = [_display_width(column.zh), _display_width(column.en) if english else 0]
        widths += [_display_width(_cell_value(column, row.get(column.key)) or "") for row in table.rows[:2000]]
        sheet.column_dimensions[get_column_letter(index)].width = min(max(widths) + 2, 60)
    setup = sheet.page_setup
    setup.orientation = "landscape"
    setup.paperSize = sheet.PAPERSIZE_A4
    setup.fitToWidth = 1
    setup.fitToHeight = 0
    if sheet.sheet_properties.pageSetUpPr is not None:
        sheet.sheet_properties.pageSetUpPr.fitToPage = True
    sheet.print_title_rows = f"{header_row}:{last_header}"
    if sheet.oddFooter is not None and sheet.oddFooter.center is not None:
        sheet.oddFooter.center.text = "第 &P 页，共 &N 页"


def _total_row(sheet: Worksheet, table: Table, label_of: Mapping[str, int], label: str, sums: Mapping[str, int],
               *, bold: bool) -> None:
    values: list[Any] = [None] * len(table.columns)
    values[0] = label
    for key, amount in sums.items():
        column = table.columns[label_of[key] - 1]
        values[label_of[key] - 1] = money(amount) if column.kind == "money" else amount
    sheet.append(values)
    for index, column in enumerate(table.columns, start=1):
        cell = sheet.cell(sheet.max_row, index)
        cell.font = Font(bold=bold)
        if bold:
            cell.border = Border(top=THIN, bottom=Side(style="double", color="000000"))
        if column.kind == "money":
            cell.number_format = MONEY_FORMAT
        elif column.kind == "count":
            cell.number_format = COUNT_FORMAT


def workbook(tables: Sequence[Table], *, english: bool = True) -> bytes:
    book = Workbook()
    for index, table in enumerate(tables):
        sheet = book.active if index == 0 else book.create_sheet()
        assert sheet is not None
        _write_sheet(sheet, table, english)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def csv_bytes(table: Table, *, english: bool = True) -> bytes:
    """The table as CSV: title block lines, the header(s), the rows, then the totals; amounts as 1234.50."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([f"# {table.title}"])
    for label, value in table.info:
        writer.writerow([f"# {label}：{value}"])
    writer.writerow([column.zh for column in table.columns])
    if english:
        writer.writerow([column.en for column in table.columns])

    def text(column: Column, value: Any) -> str:
        shown = _cell_value(column, value)
        return "" if shown is None else (f"{shown:.2f}" if column.kind == "money" else str(shown))

    for row in table.rows:
        writer.writerow([text(column, row.get(column.key)) for column in table.columns])
    groups, grand = table.totals()
    if any(column.kind != "text" for column in table.columns):
        by = next((column.zh for column in table.columns if column.key == table.group_by), "")
        for label, sums in [*((f"小计（{by} {table.group_names.get(g, g)}）", s) for g, s in groups), ("合计", grand)]:
            writer.writerow([label if index == 0 else text(column, sums[column.key]) if column.key in sums else ""
                             for index, column in enumerate(table.columns)])
    return ("\ufeff" + out.getvalue()).encode("utf-8")
