"""Hospital dialects as data: every folder of adapters/ with a manifest.yaml is one dialect.

A dialect says where the hospital's message sits in the SOAP body (the body element itself, or an XML string
inside it), how the operation is chosen (the element's name, a trade-code parameter, a function number in the
message's head), the XSD its messages must satisfy, and two XSLT mappings run by lxml: the message to the
canonical request (settlement.soap.canonical), and the canonical result to the reply. Adding a dialect is adding
a folder; the test suite runs every folder's examples.
"""

from __future__ import annotations

import codecs
import re
import threading
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from lxml import etree
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from settlement.services.errors import ServiceCode, ServiceError

OPERATIONS = ("eligibility", "quote", "settle", "reverse", "cancel", "get")
Operation = Literal["eligibility", "quote", "settle", "reverse", "cancel", "get"]
_SAFE_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MessageSpec(_Strict):
    elements: list[str] = Field(min_length=1, description="local names of the SOAP body elements it answers")
    string: str | None = Field(default=None, description="child of the body element holding the message as an "
                                                         "XML string; absent when the element is the message")
    schema_file: str = Field(alias="schema", description="XSD of the message")
    operation_on: Literal["element", "message"] = "element"
    operation: str = Field(description="XPath 1.0 expression giving the operation code, e.g. local-name(.)")
    message_id: str | None = Field(default=None, description="XPath on the message giving the caller's message id "
                                   "for operations without a key (echoed in replies and the envelope log)")


class ReplySpec(_Strict):
    element: str | None = Field(default=None, description="the body element that carries a string reply")
    string: str | None = Field(default=None, description="its child holding the reply document as a string")


class Manifest(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{1,31}$")
    title: str
    soap_style: Literal["document", "rpc"]
    encoding: str = Field(description="the encoding the dialect's replies are written in")
    namespace: str
    wsdl: str
    schemas: list[str] = Field(default_factory=list, description="files served beside the WSDL")
    message: MessageSpec
    operations: dict[str, Operation]
    request_mapping: str
    reply_mapping: str
    reply: ReplySpec = ReplySpec()
    personal: list[str] = Field(default_factory=list, description="local names of message elements holding a "
                                "person's name: masked in the envelope log even when the message cannot be mapped")
    errors: Literal["fault", "reply"] = Field(
        default="fault", description="business failures as SOAP faults, or in the dialect's own reply codes")

    @model_validator(mode="after")
    def _string_reply_is_complete(self) -> Manifest:
        if (self.reply.element is None) != (self.reply.string is None):
            raise ValueError("reply.element and reply.string go together")
        return self


class DialectError(Exception):
    """A dialect folder that cannot be loaded: the service refuses to start on it."""


class Dialect:
    def __init__(self, folder: Path, manifest: Manifest) -> None:
        self.folder = folder
        self.manifest = manifest
        self.name = manifest.name
        self._local = threading.local()  # compiled XSLT and XSD are used by one thread at a time
        for file in (manifest.wsdl, manifest.message.schema_file, manifest.request_mapping, manifest.reply_mapping,
                     *manifest.schemas):
            if not (folder / file).is_file():
                raise DialectError(f"{folder.name}: {file} is named in the manifest but missing")
        # Compile once now so that a broken mapping stops the service at start, not at the first request.
        self._compiled()
        try:
            self._operation_xpath = etree.XPath(manifest.message.operation)
            self._message_id_xpath = etree.XPath(manifest.message.message_id) if manifest.message.message_id \
                else None
        except etree.XPathSyntaxError as error:
            raise DialectError(f"{folder.name}: an XPath of the manifest is invalid: {error}") from None

    @property
    def qualified_elements(self) -> list[str]:
        return [f"{{{self.manifest.namespace}}}{local}" for local in self.manifest.message.elements]

    @cached_property
    def personal_pattern(self) -> re.Pattern[str] | None:
        """The text of the manifest's personal elements, plain (<name>) or escaped inside a string (&lt;name&gt;)."""
        if not self.manifest.personal:
            return None
        names = "|".join(re.escape(name) for name in self.manifest.personal)
        return re.compile(rf"((?:<|&lt;)(?:[\w-]+:)?(?:{names})(?:\s[^>&]*)?(?:>|&gt;))([^<&]*)")

    @cached_property
    def reply_codec(self) -> str:
        """The codec replies are written with: exactly the labelled encoding (a GBK reply holds GBK bytes only;
        other characters become &#NNNN; references), though requests labelled GBK are read as GB 18030."""
        from settlement.soap.xmlsafe import _codec  # the same label rules as requests

        _codec(self.manifest.encoding, "dialect manifest")  # refuses unknown labels
        return codecs.lookup(self.manifest.encoding).name

    def _compiled(self) -> tuple[etree.XSLT, etree.XSLT, etree.XMLSchema]:
        cached: tuple[etree.XSLT, etree.XSLT, etree.XMLSchema] | None = getattr(self._local, "compiled", None)
        if cached is None:
            try:
                deny = etree.XSLTAccessControl.DENY_ALL  # type: ignore[attr-defined]  # the stubs lack it
                request = etree.XSLT(etree.parse(str(self.folder / self.manifest.request_mapping), _SAFE_PARSER),
                                     access_control=deny)
                reply = etree.XSLT(etree.parse(str(self.folder / self.manifest.reply_mapping), _SAFE_PARSER),
                                   access_control=deny)
                schema = etree.XMLSchema(etree.parse(str(self.folder / self.manifest.message.schema_file),
                                                     _SAFE_PARSER))
            except (etree.XMLSyntaxError, etree.XSLTParseError, etree.XMLSchemaParseError) as error:
                raise DialectError(f"{self.folder.name}: {error}") from None
            cached = (request, reply, schema)
            self._local.compiled = cached
        return cached

    def operation_code(self, element: etree._Element) -> str:
        value: Any = self._operation_xpath(element)
        if isinstance(value, list):
            value = value[0] if value else ""
        return str(value).strip()

    def message_id(self, message: etree._Element) -> str | None:
        if self._message_id_xpath is None:
            return None
        value: Any = self._message_id_xpath(message)
        if isinstance(value, list):
            value = value[0] if value else ""
        return str(value).strip()[:64] or None

    def operation(self, code: str) -> Operation | None:
        return self.manifest.operations.get(code)

    def validate(self, message: etree._Element) -> list[str]:
        """The XSD's complaints about a message, as 'line N: reason' without the offending values."""
        schema = self._compiled()[2]
        if schema.validate(message):
            return []
        return [f"line {entry.line}: {_without_values(entry.message)}" for entry in _entries(schema.error_log)[:5]]

    def to_canonical(self, message: etree._Element, code: str, operation: str) -> etree._Element:
        """The canonical request; a message the mapping cannot read (it produces nothing, or stops with
        xsl:message terminate) is refused as MESSAGE_INVALID."""
        try:
            result = self._compiled()[0](message, code=etree.XSLT.strparam(code),
                                         operation=etree.XSLT.strparam(operation))
        except etree.XSLTApplyError as error:
            raise ServiceError(ServiceCode.MESSAGE_INVALID,
                               f"the {self.name} mapping cannot read this message: {str(error)[:160]}") from None
        root = result.getroot()
        if root is None:
            raise ServiceError(ServiceCode.MESSAGE_INVALID, f"the {self.name} mapping cannot read this message")
        return root

    def from_canonical(self, result: etree._Element, code: str, message_id: str) -> etree._Element:
        out = self._compiled()[1](result, code=etree.XSLT.strparam(code),
                                  message_id=etree.XSLT.strparam(message_id))
        root = out.getroot()
        if root is None:
            raise DialectError(f"{self.name}: the reply mapping produced nothing")
        return root

    def wsdl(self, address: str, files_base: str) -> bytes:
        text = (self.folder / self.manifest.wsdl).read_text(encoding="utf-8")
        text = text.replace("SOAP_ADDRESS", address)
        for schema in self.manifest.schemas:
            text = text.replace(f'schemaLocation="{schema}"', f'schemaLocation="{files_base}/{schema}"')
        return text.encode("utf-8")

    def served_file(self, name: str) -> bytes | None:
        if name not in self.manifest.schemas:
            return None
        return (self.folder / name).read_bytes()


def _entries(log: Any) -> list[Any]:
    return list(log)


def _without_values(message: str) -> str:
    """libxml2 quotes the offending value ('... : '11010519491231002X' is not a valid value ...'): drop it, it may
    be an ID number or a name."""
    parts = message.split("'")
    # Keep quoted element names ("Element 'prm_aac002'") and drop quoted values ("'abc' is not a valid value").
    kept: list[str] = []
    for index, part in enumerate(parts):
        if index % 2 == 1 and not (kept and kept[-1].rstrip().endswith(("Element", "element", "attribute"))):
            kept.append("…")
        else:
            kept.append(part)
    return "'".join(kept)


class Registry:
    def __init__(self, dialects: list[Dialect]) -> None:
        self.dialects = {dialect.name: dialect for dialect in dialects}
        self.by_element: dict[str, Dialect] = {}
        for dialect in dialects:
            for qualified in dialect.qualified_elements:
                other = self.by_element.get(qualified)
                if other is not None:
                    raise DialectError(f"{dialect.name} and {other.name} both answer the body element {qualified}")
                self.by_element[qualified] = dialect

    def get(self, name: str) -> Dialect | None:
        return self.dialects.get(name)

    def for_element(self, qualified: str) -> Dialect | None:
        return self.by_element.get(qualified)


def load_dialect(folder: Path) -> Dialect:
    try:
        raw = yaml.safe_load((folder / "manifest.yaml").read_text(encoding="utf-8"))
        manifest = Manifest.model_validate(raw)
    except (OSError, yaml.YAMLError) as error:
        raise DialectError(f"{folder.name}/manifest.yaml: {error}") from None
    except ValidationError as error:
        reasons = "; ".join(f"{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in error.errors())
        raise DialectError(f"{folder.name}/manifest.yaml: {reasons}") from None
    if manifest.name != folder.name:
        raise DialectError(f"{folder.name}/manifest.yaml: name {manifest.name!r} must be the folder's name")
    return Dialect(folder, manifest)


def load_registry(adapters_dir: Path) -> Registry:
    folders = sorted(path.parent for path in adapters_dir.glob("*/manifest.yaml"))
    if not folders:  # a service without any dialect answers no SOAP at all: an incomplete install, never intended
        raise DialectError(f"{adapters_dir}: no dialect (a folder with a manifest.yaml)"
                           + ("" if adapters_dir.is_dir() else ": no such folder"))
    return Registry([load_dialect(folder) for folder in folders])
