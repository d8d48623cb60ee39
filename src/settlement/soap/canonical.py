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

from settlement.soap.xmlsafe import safe_parser

LISTS = frozenset({"lines", "categories", "payers", "problems", "entries", "items"})
OMITTED = frozenset({"trace"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")  # fullmatch: "$" would let a trailing newline through


def to_json(element: etree._Element) -> Any:
    """The JSON value an element of the canonical request spells."""
    children = list(element.iterchildren(etree.Element))  # elements only, filtered in C
    if not children:
        return [] if _local_name(element.tag) in LISTS else (element.text or "")
    names = [_local_name(child.tag) for child in children]
    if names.count("item") == len(names):
        return [to_json(child) for child in children]
    result: dict[str, Any] = {}
    for name, child in zip(names, children, strict=True):
        if name == "entry":
            key = child.get("key")
            if key is None:
                continue
        else:
            key = name
        # Leaves (most elements) are read here rather than by a call each.
        if len(child):
            result[key] = to_json(child)
        elif name in LISTS:
            result[key] = []
        elif child.text:
            result[key] = child.text
        # an empty leaf is an absent field
    return result


@functools.cache
def _local_name(tag: object) -> str:
    return str(tag).rpartition("}")[2]  # canonical XML has no namespace; tolerate one


def request_json(root: etree._Element) -> dict[str, Any]:
    value = to_json(root)
    return value if isinstance(value, dict) else {}


@functools.cache
def _is_name(key: str) -> bool:
    return _NAME.fullmatch(key) is not None


def _escaped(text: str) -> str:
    """Character data as XML text; a carriage return is kept (a parser would turn a raw one into a newline)."""
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    if "\r" in text:
        text = text.replace("\r", "&#13;")
    return text


def _attribute(text: str) -> str:
    """An attribute value in double quotes; white space kept (a parser would normalise raw tabs and newlines)."""
    return _escaped(text).replace('"', "&quot;").replace("\t", "&#9;").replace("\n", "&#10;")


@functools.lru_cache(maxsize=4096)  # keys are mostly the reply's own field names and fund codes; bounded all the same
def _tags(key: str) -> tuple[str, str] | None:
    """The opening and closing tags of an object's key (None: the key is left out)."""
    if key in OMITTED:
        return None
    if _is_name(key):
        return f"<{key}>", f"</{key}>"
    return f'<entry key="{_attribute(key)}">', "</entry>"


def write(parts: list[str], value: Any) -> None:
    """Append the canonical XML of a JSON value (an element's content) to `parts`."""
    append = parts.append
    if isinstance(value, dict):
        for key, item in value.items():
            tags = _tags(str(key))
            if tags is None:
                continue
            if isinstance(item, str):
                # Most leaves are amounts and codes with nothing to escape: tested inline, without a call.
                if "&" in item or "<" in item or ">" in item or "\r" in item:
                    item = _escaped(item)
                append(tags[0] + item + tags[1])
            else:
                append(tags[0])
                write(parts, item)
                append(tags[1])
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, str):
                append(f"<item>{_escaped(item)}</item>")
            else:
                append("<item>")
                write(parts, item)
                append("</item>")
    elif value is None:
        return
    elif isinstance(value, bool):
        append("true" if value else "false")
    else:
        append(_escaped(str(value)))


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
    # Written as text and parsed once, in C: several times faster than building the tree node by node.
    name = "error" if status >= 400 else "result"
    parts = [f'<{name} operation="{_attribute(operation)}" status="{status}" '
             f'replayed="{"true" if replayed else "false"}">']
    write(parts, body)
    extra = derived(body) if status < 400 else {}
    if extra:
        parts.append("<derived>")
        write(parts, extra)
        parts.append("</derived>")
    if request is not None:
        # The echo is for what replies traditionally repeat (ids, names), not for the bill's lines.
        claim = request.get("claim")
        echo = {**request, "claim": {k: v for k, v in claim.items() if k != "lines"}} \
            if isinstance(claim, dict) else request
        parts.append("<request>")
        write(parts, echo)
        parts.append("</request>")
    parts.append(f"</{name}>")
    # Our own text, every value escaped; still parsed by the hardened parser, like every document here.
    return etree.fromstring("".join(parts).encode("utf-8"), safe_parser())
