"""A settlement as JSON: amounts as decimal strings with two places, payers in chain order."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, cast

from settlement.domain.accumulators import Accumulators
from settlement.domain.decompose import LineResult
from settlement.domain.money import fmt
from settlement.domain.payers import LayerResult
from settlement.domain.settle import Settlement
from settlement.domain.tariff import Band


def rule_summary(payer: LayerResult) -> str:
    """One line a cashier can read: how the layer reached its share."""
    if not payer.eligible:
        reason = payer.trace[0].inputs[0][1] if payer.trace else ""
        return f"not eligible: {reason}"
    parts: list[str] = []
    for step in payer.trace:
        inputs = dict(step.inputs)
        if step.rule == "deductible.waived":
            parts.append("deductible waived")
        elif step.rule.startswith("deductible.") and step.output:
            parts.append(f"deductible {_amount(step.output)}")
        elif step.rule == "rate.flat":
            parts.append(f"{_percent(inputs['rate'])} of {_amount(inputs['amount'])}")
        elif step.rule == "rate.bands":
            above = f" above {_amount(inputs['above'])}" if "above" in inputs else ""
            parts.append(f"{_bands(inputs['bands'], inputs['rate_add'])} of {_amount(inputs['amount'])}{above}")
        elif step.rule == "rate.annual_cumulative":
            parts.append(f"year's cumulative {_amount(inputs['cumulative_before'])} -> "
                         f"{_amount(inputs['cumulative_after'])} above the threshold {_amount(inputs['threshold'])}, "
                         f"at {_bands(inputs['bands'], inputs['rate_add'])}")
        elif step.rule.startswith("guarantee."):
            what = "patient pays at most" if "patient" in step.rule else "reimbursement at most"
            parts.append(f"{what} {_percent(inputs['share'])} of {inputs['base']} "
                         f"({_amount(inputs['bound'])})")
        elif step.rule == "base.above_cap":
            layers = ", ".join(cast(tuple[str, ...], inputs["layers"]))
            parts.append(f"on {_amount(step.output)} above the cap line of {layers}")
        elif step.rule == "cap.line":
            parts.append(f"{_amount(step.output)} above its cap line")
        elif step.rule == "cap.limit":
            parts.append(f"limit {inputs['limit']} reached: {_amount(step.output)}")
        elif step.rule.startswith("cap."):
            parts.append(f"{step.rule.replace('_', '-').replace('.', ' ')} reached: {_amount(step.output)}")
    return "; ".join(parts)


def _amount(value: object) -> str:
    return f"{Decimal(str(value)):,.2f}"


def _bands(bands: object, rate_add: object) -> str:
    """Bands as '60% to 30,000.00, 70% above'."""
    assert isinstance(bands, tuple)
    add = Decimal(str(rate_add))
    words = []
    for band in bands:
        assert isinstance(band, Band)
        percent = _percent(min(Decimal(1), max(Decimal(0), band.rate + add)))
        words.append(f"{percent} to {_amount(band.upper)}" if band.upper is not None else f"{percent} above")
    return ", ".join(words)


def _percent(value: object) -> str:
    rate = Decimal(str(value))
    return f"{(rate * 100).normalize():f}%"


def accumulators_json(acc: Accumulators) -> dict[str, Any]:
    body: dict[str, Any] = {
        "year": acc.year,
        "admissions": acc.admissions,
        "deductible_used": {fund: fmt(v) for fund, v in sorted(acc.deductible_used.items())},
        "cumulative": {fund: fmt(v) for fund, v in sorted(acc.cumulative.items())},
        "paid": {fund: fmt(v) for fund, v in sorted(acc.paid.items())},
    }
    # Only when there is something to say: the figures of a year without them read as they always did.
    if acc.admissions_by_level:
        body["admissions_by_level"] = dict(sorted(acc.admissions_by_level.items()))
    if acc.limits:
        limits: dict[str, dict[str, str]] = {}
        for (fund, key), amount in sorted(acc.limits.items()):
            limits.setdefault(fund, {})[key] = fmt(amount)
        body["limits"] = limits
    return body


_UNLISTED_NOTE = "not in the catalogue: fully self-paid"


def _line_json(line: LineResult) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": line.line_id,
        "code": line.code,
        "class": line.item_class,
        "amount": fmt(line.amount),
        "out_of_catalogue": fmt(line.out_of_catalogue),
        "over_price_limit": fmt(line.over_price_limit),
        "pre_self_pay": fmt(line.pre_self_pay),
        "in_scope": fmt(line.in_scope),
    }
    # Keys added in this order, as they always were: a stored reply is replayed byte for byte.
    if line.share is not None:
        item["share"] = str(line.share)
    if line.price_cap is not None:
        item["price_cap"] = fmt(line.price_cap)
    if line.item_class == "unlisted":
        item["note"] = _UNLISTED_NOTE
    return item


def settlement_json(settlement: Settlement) -> dict[str, Any]:
    dec = settlement.decomposition
    return {
        "total": fmt(dec.total),
        "out_of_catalogue": fmt(dec.out_of_catalogue),
        "over_price_limit": fmt(dec.over_price_limit),
        "pre_self_pay": fmt(dec.pre_self_pay),
        "in_scope": fmt(dec.in_scope),
        "payers": [
            {
                "layer": payer.layer_id,
                "fund": payer.fund,
                "name": payer.name,
                "eligible": payer.eligible,
                "base": fmt(payer.base),
                "deductible": fmt(payer.deductible),
                "paid": fmt(payer.paid),
                "summary": rule_summary(payer),
                "trace": [step.as_dict() for step in payer.trace],
            }
            for payer in settlement.payers
        ],
        "patient_pays": fmt(settlement.patient_pays),
        "tariff": {
            "region": settlement.tariff.region,
            "version": settlement.tariff.version,
            "sha256": settlement.tariff.sha256,
        },
        "lines": [_line_json(line) for line in dec.lines],
        "year_to_date": {
            "before": accumulators_json(settlement.accumulators_before),
            "after": accumulators_json(settlement.accumulators_after),
        },
    }
