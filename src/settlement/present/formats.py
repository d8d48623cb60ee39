"""Amounts with thousands separators, times in Beijing time, and the Chinese names of the engine's codes."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

BEIJING = ZoneInfo("Asia/Shanghai")

LEVELS = {"township": "乡镇（社区）医疗机构", "county": "县级医疗机构", "city": "市级医疗机构",
          "provincial": "省级医疗机构"}
SCHEMES = {"resident": "城乡居民基本医疗保险", "employee": "职工基本医疗保险"}
VISIT_TYPES = {"inpatient": "住院", "outpatient": "普通门诊", "chronic_outpatient": "门诊慢特病"}
# The national fund codes (docs/domain.md); a tariff's layer names say more (住院, 门诊...), these name the fund.
FUNDS = {
    "390100": "城乡居民基本医疗保险统筹基金",
    "390200": "城乡居民大病保险资金",
    "310100": "职工基本医疗保险统筹基金",
    "330100": "职工大额医疗费用补助资金",
    "610100": "医疗救助基金",
    "610102": "医疗救助基金（二次救助）",
    "610103": "健康扶贫基金",
    "640100": "政府兜底保障资金",
}


def yuan(amount: Decimal | str) -> str:
    """6253.75 -> '6,253.75' (two places, thousands separated); negatives keep their sign."""
    return f"{Decimal(str(amount)):,.2f}"


def percent(rate: Decimal | str) -> str:
    """0.75 -> '75%', 0.705 -> '70.5%'."""
    value = (Decimal(str(rate)) * 100).normalize()
    return f"{value:f}%"


def beijing(instant: datetime) -> str:
    """An instant as Beijing time, to the second: '2024-03-12 10:15:00'."""
    return instant.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def day(value: date | str | None) -> str:
    if value is None:
        return ""
    return value.isoformat() if isinstance(value, date) else value


def fund_name(code: str) -> str:
    return FUNDS.get(code, code)
