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

import re
from typing import Any

from lxml import etree

LISTS = frozenset({"lines", "categories", "payers", "problems", "entries", "items"})
OMITTED = frozenset({"trace"})
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def to_json(element: etree._Element) -> Any:
    """The JSON value an element of the canonical request spells."""
    children = [child for child in element if isinstance(child.tag, str)]
    if not children:
        if etree.QName(element).localname in LISTS:
            return []
        return element.text or ""
    if all(etree.QName(child).localname == "item" for child in children):
        return [to_json(child) for child in children]
    result: dict[str, Any] = {}
    for child in children:
        name = child.get("key") if etree.QName(child).localname == "entry" else etree.QName(child).localname
        value = to_json(child)
        if value == "" and not len(child):
            continue  # an empty leaf is an absent field
        if name is None:
            continue
        result[name] = value
    return result


def request_json(root: etree._Element) -> dict[str, Any]:
    value = to_json(root)
    return value if isinstance(value, dict) else {}


def _append(parent: etree._Element, name: str, value: Any) -> None:
    if name in OMITTED:
        return
    child = etree.SubElement(parent, name) if _NAME.match(name) else etree.SubElement(parent, "entry", key=name)
    fill(child, value)


def fill(element: etree._Element, value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _append(element, str(key), item)
    elif isinstance(value, list):
        for item in value:
            fill(etree.SubElement(element, "item"), item)
    elif value is None:
        return
    elif isinstance(value, bool):
        element.text = "true" if value else "false"
    else:
        element.text = str(value)


def result_xml(operation: str, status: int, body: dict[str, Any], replayed: bool = False) -> etree._Element:
    """The canonical result (or, for a status of 400 and above, the canonical error) of an operation."""
    root = etree.Element("error" if status >= 400 else "result", operation=operation, status=str(status),
                         replayed="true" if replayed else "false")
    fill(root, body)
    return root
