"""Server-drawn SVG charts: well-formed, scaled to a round top, text escaped, nothing fetched."""

from __future__ import annotations

from decimal import Decimal

import pytest
from lxml import etree

from settlement.present.charts import _nice_top, bars, line

SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize(("value", "top"), [("0", "1"), ("0.3", "0.5"), ("7", "10"), ("10", "10"), ("11", "20"),
                                           ("4999.99", "5000"), ("123456", "200000")])
def test_the_axis_top_is_the_next_round_figure(value: str, top: str) -> None:
    assert _nice_top(Decimal(value)) == Decimal(top)


def test_stacked_bars_stack_to_the_total_and_escape_names() -> None:
    svg = bars(["06-01", "06-02"], {"<基本医保>": [Decimal(60), Decimal(10)], "医疗救助": [Decimal(40), Decimal(0)]},
               title="每日基金支付", unit="元")
    tree = etree.fromstring(svg.encode())
    rects = [r for r in tree.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert len(rects) == 3  # a zero segment is not drawn
    first_day = [float(r.get("height", "0")) for r in rects[:2]]
    assert sum(first_day) == pytest.approx(float(260 - 16 - 48))  # 100 of a 100 top fills the plot
    assert "&lt;基本医保&gt;" in svg and "<基本医保>" not in svg
    assert "http://" not in svg.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_a_line_has_a_point_per_label() -> None:
    svg = line([f"{d:02d}" for d in range(1, 31)], {"结算笔数": [Decimal(d) for d in range(30)]}, title="每日结算")
    polyline = etree.fromstring(svg.encode()).find(f"{SVG}polyline")
    assert polyline is not None and len(polyline.get("points", "").split()) == 30
