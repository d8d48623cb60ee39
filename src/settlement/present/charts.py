"""Small charts drawn on the server as SVG: a page of the console needs no chart library and no script, prints
as it shows, and works on an isolated intranet. Text is escaped; amounts keep their thousands separators.

- `bars`: one bar per label (a day, a band of change), optionally stacked by series (what each fund paid).
- `line`: one or more series over the same labels (settlements per day).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from html import escape

PALETTE = ("#2f6fad", "#d9822b", "#3c9d5d", "#a23b72", "#6c5ba7", "#8a8a8a", "#c44536", "#1b998b")
WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 72, 16, 16, 48


def _nice_top(value: Decimal) -> Decimal:
    """The axis' top: the next 1, 2 or 5 times a power of ten at or above `value`."""
    if value <= 0:
        return Decimal(1)
    power = Decimal(10) ** value.adjusted()
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power  # pragma: no cover - the loop ends at 10


def _tick(value: Decimal) -> str:
    return f"{value:,.0f}" if value == value.to_integral_value() else f"{value:,.2f}"


def _frame(top: Decimal, labels: Sequence[str], title: str, unit: str) -> list[str]:
    plot_h = HEIGHT - TOP - BOTTOM
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-label="{escape(title)}" class="chart"><title>{escape(title)}</title>']
    for step in range(5):
        value = top * step / 4
        y = TOP + plot_h - plot_h * step / 4
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{_tick(value)}</text>')
    if unit:
        parts.append(f'<text x="4" y="{TOP - 4}" font-size="11" fill="#555">{escape(unit)}</text>')
    every = max(1, len(labels) // 10)
    slot = (WIDTH - LEFT - RIGHT) / max(1, len(labels))
    for index, label in enumerate(labels):
        if index % every == 0 or index == len(labels) - 1:
            x = LEFT + slot * (index + 0.5)
            parts.append(f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" font-size="10">'
                         f'{escape(label)}</text>')
    return parts


def _legend(series: Sequence[str]) -> list[str]:
    parts = []
    for index, name in enumerate(series):
        x = LEFT + index * 150
        parts.append(f'<rect x="{x}" y="{HEIGHT - 18}" width="10" height="10" fill="{PALETTE[index % len(PALETTE)]}"/>')
        parts.append(f'<text x="{x + 14}" y="{HEIGHT - 9}" font-size="11">{escape(name)}</text>')
    return parts


def bars(labels: Sequence[str], series: Mapping[str, Sequence[Decimal]], *, title: str, unit: str = "") -> str:
    """Stacked bars: for each label, one segment per series (values must not be negative)."""
    totals = [sum((values[i] for values in series.values()), Decimal(0)) for i in range(len(labels))]
    top = _nice_top(max(totals, default=Decimal(0)))
    parts = _frame(top, labels, title, unit)
    plot_h = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / max(1, len(labels))
    for index, label in enumerate(labels):
        base = Decimal(0)
        for number, (name, values) in enumerate(series.items()):
            value = values[index]
            if value <= 0:
                continue
            y0 = TOP + plot_h - float(plot_h * (base + value) / top)
            height = float(plot_h * value / top)
            parts.append(f'<rect x="{LEFT + slot * index + slot * 0.15:.1f}" y="{y0:.1f}" width="{slot * 0.7:.1f}" '
                         f'height="{height:.1f}" fill="{PALETTE[number % len(PALETTE)]}">'
                         f'<title>{escape(label)} {escape(name)}: {value:,.2f}</title></rect>')
            base += value
    if len(series) > 1:
        parts += _legend(list(series))
    parts.append("</svg>")
    return "".join(parts)


def line(labels: Sequence[str], series: Mapping[str, Sequence[Decimal]], *, title: str, unit: str = "") -> str:
    top = _nice_top(max((max(values, default=Decimal(0)) for values in series.values()), default=Decimal(0)))
    parts = _frame(top, labels, title, unit)
    plot_h = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / max(1, len(labels))
    for number, (name, values) in enumerate(series.items()):
        points = " ".join(f"{LEFT + slot * (i + 0.5):.1f},{TOP + plot_h - float(plot_h * v / top):.1f}"
                          for i, v in enumerate(values))
        color = PALETTE[number % len(PALETTE)]
        parts.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2">'
                     f'<title>{escape(name)}</title></polyline>')
    if len(series) > 1:
        parts += _legend(list(series))
    parts.append("</svg>")
    return "".join(parts)
