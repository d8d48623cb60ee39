"""The canonical XML that every dialect's mapping reads or writes: the REST JSON, spelled as XML.

A dialect's request mapping turns the hospital's message into

    <request>
      <transaction_id>…</transaction_id>
      <claim><hospital><code>…</code>…</hospital>…<lines><item>…</item></lines></claim>
    </request>

which is read back into exactly the JSON object REST accepts, so that both interfaces share one validation.
Rules, both ways: an element with child elements is an object; an element whose children are all `<item>` is a
list (an empty `<lines/>`-style element named in LISTS is an empty list); a leaf is a string; an empty leaf is
absent. Object keys that are not XML names (fund codes such as 390100) are written `<entry key="390100">`.

The result the dialect's reply mapping reads is `<result operation="settle" status="201" replayed="false">`
holding the REST reply, or `<error operation="…" status="422">` holding the problem (code, detail, problems).
Traces are left out of SOAP replies (they are served with the settlement over REST).
"""

from __future__ import annotations

import functools
import re
from decimal import Decimal
from typing import Any

from lxml import etree

LISTS = frozenset({"lines", "categories", "payers", "problems", "entries", "items"})
OMITTED = frozenset({"trace"})
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def to_json(element: etree._Element) -> Any:
    """The JSON value an element of the canonical request spells."""
    children = list(element.iterchildren(etree.Element))  # elements only, filtered in C
    if not children:
        if _local_name(element.tag) in LISTS:
            return []
        return element.text or ""
    names = [_local_name(child.tag) for child in children]
    if names.count("item") == len(names):
        return [to_json(child) for child in children]
    result: dict[str, Any] = {}
    for name, child in zip(names, children, strict=True):
        key = child.get("key") if name == "entry" else name
        if key is None or (not len(child) and not child.text and name not in LISTS):
            continue  # an empty leaf is an absent field
        result[key] = to_json(child)
    return result


@functools.cache
def _local_name(tag: object) -> str:
    return str(tag).rpartition("}")[2]  # canonical XML has no namespace; tolerate one


def request_json(root: etree._Element) -> dict[str, Any]:
    value = to_json(root)
    return value if isinstance(value, dict) else {}


@functools.cache
def _is_name(key: str) -> bool:
    return _NAME.match(key) is not None


def fill(element: etree._Element, value: Any) -> None:
    sub = etree.SubElement
    if isinstance(value, dict):
        for key, item in value.items():
            name = str(key)
            if name in OMITTED:
                continue
            child = sub(element, name) if _is_name(name) else sub(element, "entry", key=name)
            if isinstance(item, str):
                child.text = item
            else:
                fill(child, item)
    elif isinstance(value, list):
        for item in value:
            child = sub(element, "item")
            if isinstance(item, str):
                child.text = item
            else:
                fill(child, item)
    elif value is None:
        return
    elif isinstance(value, bool):
        element.text = "true" if value else "false"
    else:
        element.text = str(value)


# Fund groups by the national fund codes (domain.md): what legacy replies report as one amount each.
FUND_GROUPS = (("basic", ("310100", "390100")), ("critical_illness", ("390200",)),
               ("assistance", ("610100", "610102", "610103")), ("guarantee", ("640100",)))


def derived(body: dict[str, Any]) -> dict[str, Any]:
    """Sums a reply mapping would otherwise compute in XPath 1.0, whose numbers are floating point: money is
    added here, in Decimal, and handed to the mapping as decimal strings."""
    payers = body.get("payers")
    if not isinstance(payers, list):
        return {}
    by_fund: dict[str, Decimal] = {}
    for payer in payers:
        by_fund[payer["fund"]] = by_fund.get(payer["fund"], Decimal(0)) + Decimal(payer["paid"])
    groups = {name: sum((by_fund.get(fund, Decimal(0)) for fund in funds), Decimal(0))
              for name, funds in FUND_GROUPS}
    known = {fund for _, funds in FUND_GROUPS for fund in funds}
    groups["other"] = sum((amount for fund, amount in by_fund.items() if fund not in known), Decimal(0))
    funds_paid = sum(by_fund.values(), Decimal(0))
    return {
        "fund_totals": {fund: f"{amount:.2f}" for fund, amount in by_fund.items()},
        "group_totals": {name: f"{amount:.2f}" for name, amount in groups.items()},
        "funds_paid": f"{funds_paid:.2f}",
        "fully_self_paid": f"{Decimal(body['out_of_catalogue']) + Decimal(body['over_price_limit']):.2f}",
    }


def result_xml(operation: str, status: int, body: dict[str, Any], replayed: bool = False,
               request: dict[str, Any] | None = None) -> etree._Element:
    """The canonical result (or, for a status of 400 and above, the canonical error) of an operation.

    Besides the REST reply it holds `<derived>` sums (see `derived`) and, when given, the canonical `<request>`,
    so that a dialect can echo what its replies traditionally repeat (message id, name, visit number).
    """
    root = etree.Element("error" if status >= 400 else "result", operation=operation, status=str(status),
                         replayed="true" if replayed else "false")
    fill(root, body)
    extra = derived(body) if status < 400 else {}
    if extra:
        fill(etree.SubElement(root, "derived"), extra)
    if request is not None:
        # The echo is for what replies traditionally repeat (ids, names), not for the bill's lines.
        claim = request.get("claim")
        echo = {**request, "claim": {k: v for k, v in claim.items() if k != "lines"}} \
            if isinstance(claim, dict) else request
        fill(etree.SubElement(root, "request"), echo)
    return root
