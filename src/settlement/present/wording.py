"""A payer layer's trace in plain Chinese words: which rule, which rate, which cap.

It reads the trace as stored with a settlement (`payers[].trace` of its result: rule names, inputs as strings),
so that a slip or a console page of a settlement made years ago reads the way it was computed. A rule this module
does not know is named by its code rather than dropped: the reader sees that a step happened.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from settlement.present.formats import percent, yuan

BASE_PARTS = {"in_scope": "政策范围内费用", "total": "医疗总费用", "pre_self_pay": "先行自付",
              "over_price_limit": "超限价自付", "out_of_catalogue": "目录外自费"}


def _band_words(bands: Sequence[str], rate_add: str | None) -> str:
    """Bands as stored ('0-30000.00@0.60', '100000.00-@0.80') read as '3万元以内60%，3万至10万元70%，10万元以上80%'."""
    add = Decimal(rate_add or "0")
    words = []
    for band in bands:
        span, _, rate = str(band).partition("@")
        lower, _, upper = span.partition("-")
        paid = percent(min(Decimal(1), max(Decimal(0), Decimal(rate) + add)))
        if upper:
            within = f"{yuan(lower)}至{yuan(upper)}元部分" if Decimal(lower) else f"{yuan(upper)}元以内"
            words.append(within + paid)
        else:
            words.append(f"{yuan(lower)}元以上部分{paid}")
    return "，".join(words)


def _bounds(inputs: Mapping[str, Any]) -> str:
    bounds = inputs.get("bounds")
    if bounds == "on_amount":
        return "（分段按政策范围内费用计算）"
    if bounds == "above_deductible":
        return "（分段按扣除起付线后的费用计算）"
    return ""


def step_words(rule: str, inputs: Mapping[str, Any], output: str | None) -> str | None:
    """One trace step as a phrase; None for steps a reader does not need (the base, an eligibility pass)."""
    if rule in ("base", "eligibility"):
        return None
    if rule == "category_rule":
        return f"按政策：{inputs.get('rule', '')}"
    if rule == "base.above_cap":
        layers = "、".join(str(layer) for layer in inputs.get("layers") or ())
        return f"只支付{layers}封顶线以上部分 {yuan(output or '0')} 元"
    if rule == "deductible.waived":
        return "免起付线"
    if rule == "deductible.per_visit":
        text = f"起付线 {yuan(output or '0')} 元"
        earlier = int(inputs.get("earlier_admissions") or 0)
        factor = Decimal(str(inputs.get("repeat_factor", "1")))
        if earlier and factor != 1:
            text += f"（本年第{earlier + 1}次住院，按 {percent(factor)} 计）"
        return text
    if rule == "deductible.per_year":
        annual = Decimal(str(inputs.get("annual", "0")))
        return (f"年度起付线 {yuan(annual)} 元，此前已计 {yuan(inputs.get('used_before', '0'))} 元，"
                f"本次计入 {yuan(output or '0')} 元")
    if rule == "rate.flat":
        return f"{yuan(inputs.get('amount', '0'))} 元 × {percent(inputs.get('rate', '0'))}"
    if rule == "rate.bands":
        bands = _band_words(inputs.get("bands") or (), inputs.get("rate_add"))
        return f"{yuan(inputs.get('amount', '0'))} 元分段报销：{bands}{_bounds(inputs)}"
    if rule == "rate.annual_cumulative":
        before, after = yuan(inputs.get("cumulative_before", "0")), yuan(inputs.get("cumulative_after", "0"))
        return (f"年度累计 {before} → {after} 元，"
                f"超过 {yuan(inputs.get('threshold', '0'))} 元的部分分段支付："
                f"{_band_words(inputs.get('bands') or (), inputs.get('rate_add'))}{_bounds(inputs)}")
    if rule == "guarantee.patient_share_at_most":
        base = BASE_PARTS.get(str(inputs.get("base", "in_scope")), str(inputs.get("base")))
        share, bound = percent(inputs.get("share", "0")), yuan(inputs.get("bound", "0"))
        return f"兜底保障：个人负担不超过{base}的 {share}（{bound} 元）"
    if rule == "guarantee.reimbursement_at_most":
        base = BASE_PARTS.get(str(inputs.get("base", "in_scope")), str(inputs.get("base")))
        return f"合计报销不超过{base}的 {percent(inputs.get('share', '0'))}（{yuan(inputs.get('bound', '0'))} 元）"
    if rule == "cap.per_visit":
        return f"达到单次最高支付限额 {yuan(inputs.get('cap', '0'))} 元"
    if rule == "cap.per_year":
        return (f"达到年度最高支付限额 {yuan(inputs.get('cap', '0'))} 元"
                f"（本年此前已支付 {yuan(inputs.get('paid_before', '0'))} 元）")
    if rule == "cap.limit":
        return (f"达到{inputs.get('limit', '')}年度限额 {yuan(inputs.get('amount', '0'))} 元"
                f"（本年此前已支付 {yuan(inputs.get('paid_before', '0'))} 元）")
    if rule == "cap.line":
        return f"封顶线 {yuan(inputs.get('line', '0'))} 元"
    return rule


def payer_words(payer: Mapping[str, Any]) -> str:
    """A stored payer entry's trace as one sentence; an ineligible layer says so."""
    if not payer.get("eligible", True):
        return "不符合本项支付条件"
    phrases = [words for step in payer.get("trace") or ()
               if (words := step_words(str(step.get("rule")), step.get("inputs") or {}, step.get("output")))]
    return "；".join(phrases) if phrases else "按政策支付"
