"""Hostile-input-safe XML: size, compression, encoding and structure are checked before anything is trusted.

The rules (reliability.md, "Bad input"):
- the body's size is checked before parsing, and compressed bodies are inflated only up to the same limit;
- the encoding is decided from the byte-order mark, the XML declaration and the HTTP charset, which must agree
  (a byte-order mark contradicting the declaration is a fatal error in XML 1.0, 4.3.3), and the bytes are decoded
  strictly by Python's codecs (GBK is read as GB 18030, its superset, so that rare characters such as 喆 and 堃
  survive even from systems that send the extended code points);
- only the encodings hospital systems write Chinese in are read: UTF-8, UTF-16, GB 2312/GBK/GB 18030 and
  US-ASCII (ISO-8859-1 too while its bytes are ASCII, as SOAP stacks label ASCII so). XML 1.0 obliges a parser
  to read UTF-8 and UTF-16 only and makes an encoding it will not process a fatal error; one in which ASCII
  characters lose their values (UTF-7 may write "<" as "+ADw-") cannot declare itself at all (Appendix F);
- a DOCTYPE of any kind, an entity declaration or an XInclude element is refused before the parser runs, and
  the parser itself is configured never to load a DTD, expand an entity or touch the network;
- nesting deeper than the limit is refused while parsing, not after.

Every refusal is an `XmlRejected` with a stable code and a message that never echoes the document's content.
"""

from __future__ import annotations

import codecs
import functools
import re
import threading
import zlib
from dataclasses import dataclass

from lxml import etree

from settlement.services.errors import ServiceCode, ServiceError

DEFAULT_MAX_BYTES = 1024 * 1024
DEFAULT_MAX_DEPTH = 48
_DECLARATION = re.compile(rb"^<\?xml[^>]{0,200}?encoding\s*=\s*[\"']([A-Za-z0-9._-]{1,40})[\"']")
_DECLARATION_TEXT = re.compile(r"^\s*<\?xml[^>]{0,200}?\?>")
_DECLARED_TEXT = re.compile(r"^\s*<\?xml[^>]{0,200}?encoding\s*=\s*[\"']([A-Za-z0-9._-]{1,40})[\"']")
_FORBIDDEN = re.compile(r"<!DOCTYPE|<!ENTITY|<!ELEMENT|<!ATTLIST|http://www\.w3\.org/2001/XInclude", re.IGNORECASE)
# The GB family names one encoding for our purposes: GB 18030 decodes GB 2312 and GBK text identically.
_GB_FAMILY = {"gb2312", "gbk", "gb18030", "cp936", "euc-cn", "euc_cn", "x-gbk", "936", "ms936"}


_NOT_DOCUMENT_ENCODINGS = frozenset({"undefined", "punycode", "idna", "raw-unicode-escape", "unicode-escape",
                                     "mbcs", "oem", "charmap"})
_READ = frozenset({"utf-8", "utf-16", "utf-16-le", "utf-16-be", "gb18030", "ascii"})
_LATIN = frozenset({"iso8859-1", "latin-1"})  # read while the bytes are ASCII
ACCEPTED = "UTF-8, UTF-16, GBK (GB 2312, GB 18030) or US-ASCII"


class XmlRejected(ServiceError):
    """A body refused before its content was trusted: always a Client fault, never recorded."""


@dataclass(frozen=True)
class Limits:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH


def inflate(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """The body, decompressed when it is gzip or deflate, never to more than `limit` bytes (a gzip bomb stops at
    the limit, having used no more memory than that)."""
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity") and body[:2] != b"\x1f\x8b":
        if len(body) > limit:
            raise XmlRejected(ServiceCode.XML_TOO_LARGE, f"the body is larger than {limit} bytes")
        return body
    if encoding in ("gzip", "x-gzip") or body[:2] == b"\x1f\x8b":
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        wbits = zlib.MAX_WBITS if body[:1] == b"\x78" else -zlib.MAX_WBITS  # zlib-wrapped or raw, both seen
    else:
        raise XmlRejected(ServiceCode.ENCODING_UNSUPPORTED,
                          f"Content-Encoding {encoding[:32]!r} is not supported (gzip, deflate or none)")
    inflater = zlib.decompressobj(wbits)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise XmlRejected(ServiceCode.XML_MALFORMED, "the compressed body is corrupt") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise XmlRejected(ServiceCode.XML_TOO_LARGE, f"the inflated body is larger than {limit} bytes")
    if not inflater.eof:
        raise XmlRejected(ServiceCode.XML_MALFORMED, "the compressed body is truncated")
    return data


def _codec(label: str, what: str) -> str:
    name = label.strip().lower()
    if name in _GB_FAMILY:
        return "gb18030"
    try:
        info = codecs.lookup(name)
    except LookupError:
        info = None
    # Python also names transforms (rot13, base64, zlib...) and oddities (undefined, punycode, idna) codecs:
    # only text encodings a document can be written in are accepted.
    if info is None or not getattr(info, "_is_text_encoding", True) or info.name in _NOT_DOCUMENT_ENCODINGS:
        raise XmlRejected(ServiceCode.ENCODING_UNSUPPORTED, f"unknown encoding {label[:40]!r} in the {what}")
    if info.name not in _READ and info.name not in _LATIN:
        raise XmlRejected(ServiceCode.ENCODING_UNSUPPORTED,
                          f"the encoding {label[:40]!r} in the {what} is not accepted: {ACCEPTED}")
    return info.name


def charset_of(content_type: str | None) -> str | None:
    for part in (content_type or "").split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            return value.strip().strip("\"'")
    return None


def decode(data: bytes, charset: str | None) -> tuple[str, str]:
    """(text, codec) of a document: the BOM, the XML declaration and the HTTP charset must agree."""
    bom_codec = None
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):  # before UTF-16's, which it begins with
        raise XmlRejected(ServiceCode.ENCODING_UNSUPPORTED, f"the body is UTF-32: it is not accepted: {ACCEPTED}")
    if data.startswith(codecs.BOM_UTF8):
        bom_codec, data = "utf-8", data[len(codecs.BOM_UTF8):]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        bom_codec = "utf-16"
    elif data[:2] in (b"<\x00", b"\x00<"):
        bom_codec = "utf-16-le" if data[:1] == b"<" else "utf-16-be"
    declared_label = None
    if bom_codec is None:
        match = _DECLARATION.match(data.lstrip()[:260])
        declared_label = match.group(1).decode("ascii") if match else None
    else:  # the declaration, read in the encoding the byte-order mark (or the first bytes) gives, must name it
        declared_text = _DECLARED_TEXT.match(data[:520].decode(bom_codec, "ignore").lstrip("\ufeff"))
        if declared_text is not None and not _codec(declared_text.group(1), "XML declaration").startswith(
                bom_codec[:6]):
            raise XmlRejected(ServiceCode.ENCODING_MISMATCH,
                              f"the body starts as {bom_codec} but its XML declaration says {declared_text.group(1)}")
    declared = _codec(declared_label, "XML declaration") if declared_label else None
    sent = _codec(charset, "Content-Type charset") if charset else None
    if bom_codec and sent and not sent.startswith(bom_codec[:6]):
        raise XmlRejected(ServiceCode.ENCODING_MISMATCH,
                          f"the body starts with a {bom_codec} byte-order mark but Content-Type says {charset}")
    if declared and sent and declared != sent:
        raise XmlRejected(ServiceCode.ENCODING_MISMATCH,
                          f"the XML declaration says {declared_label} but Content-Type says {charset}; "
                          "they must agree")
    codec = bom_codec or declared or sent or "utf-8"
    try:
        text = data.decode(codec)
    except UnicodeError as error:
        position = f" (byte {error.start})" if isinstance(error, UnicodeDecodeError) else ""
        if not codec.startswith("utf") and _reads_as_utf8_chinese(data):
            raise XmlRejected(ServiceCode.ENCODING_MISMATCH,
                              f"the body is labelled {declared_label or charset} but its bytes are UTF-8") from None
        hint = ""
        if codec == "utf-8" and _decodes(data, "gb18030"):
            hint = "; it looks like GBK: declare encoding=\"GBK\""
        raise XmlRejected(ServiceCode.ENCODING_INVALID,
                          f"the body is not valid {codec}{position}{hint}") from None
    if codec in _LATIN and not data.isascii():
        # Chinese cannot be written in ISO-8859-1: such bytes are GBK or UTF-8 mislabelled (every byte is a Latin-1
        # character, so decoding them never fails), and the patient's name would be stored garbled.
        read_as = "UTF-8" if _decodes(data, "utf-8") else "GBK" if _decodes(data, "gb18030") else None
        raise XmlRejected(ServiceCode.ENCODING_MISMATCH,
                          f"the body is labelled {declared_label or charset} but holds bytes beyond ASCII"
                          + (f"; they read as {read_as}: declare encoding=\"{read_as}\"" if read_as else ""))
    if codec not in ("utf-8", "utf-16", "utf-16-le", "utf-16-be", "ascii") and _reads_as_utf8_chinese(data):
        # UTF-8 bytes labelled GBK would settle a patient under a garbled name. GBK text can be valid UTF-8 by
        # chance (郑伟 is D6A3 CEB0: two Latin-range characters), but then it does not read as Chinese.
        raise XmlRejected(ServiceCode.ENCODING_MISMATCH,
                          f"the body is labelled {declared_label or charset} but its bytes are UTF-8")
    return text, codec


def _is_cjk(character: str) -> bool:
    point = ord(character)
    return 0x2E80 <= point <= 0x9FFF or 0xF900 <= point <= 0xFAFF or 0xFF00 <= point <= 0xFFEF \
        or 0x20000 <= point <= 0x3FFFF


def _reads_as_utf8_chinese(data: bytes) -> bool:
    """Valid UTF-8 whose non-ASCII characters are mostly Chinese: what a UTF-8 document really is."""
    if data.isascii():
        return False
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    wide = [character for character in text if ord(character) > 0x7F]
    return sum(map(_is_cjk, wide)) * 2 >= len(wide)


def _decodes(data: bytes, codec: str) -> bool:
    try:
        data.decode(codec)
    except UnicodeError:
        return False
    return True


def parse_text(text: str, limits: Limits, what: str = "body") -> etree._Element:
    """Parse a decoded document with every hardening rule; the root element or XmlRejected."""
    if len(text) > limits.max_bytes:
        raise XmlRejected(ServiceCode.XML_TOO_LARGE, f"the {what} is larger than {limits.max_bytes} characters")
    # The regular expression runs only when its cheap necessary conditions hold (on a clean envelope it was the
    # slowest step of the parse): every match starts with "<!" or holds "nclude", which no case folding reaches.
    forbidden = _FORBIDDEN.search(text) if "<!" in text or "nclude" in text.lower() else None
    if forbidden is not None:
        what_found = "XInclude" if "XInclude" in forbidden.group(0) else forbidden.group(0).upper()
        raise XmlRejected(ServiceCode.XML_FORBIDDEN,
                          f"the {what} contains {what_found}: DTDs, entities and XInclude are not accepted")
    body = _DECLARATION_TEXT.sub("", text, count=1).encode("utf-8")
    try:
        root = etree.fromstring(body, safe_parser())
    except etree.XMLSyntaxError as error:
        message = str(error.msg or "not well-formed").splitlines()[0][:160]
        if "Excessive depth" in message:  # libxml2's own limit (256 levels) came before ours
            raise XmlRejected(ServiceCode.XML_TOO_DEEP,
                              f"the {what} is nested deeper than {limits.max_depth} elements") from None
        raise XmlRejected(ServiceCode.XML_MALFORMED, f"the {what} is not well-formed XML: {message}") from None
    if root is None:  # pragma: no cover - the parser raises on an empty document
        raise XmlRejected(ServiceCode.XML_MALFORMED, f"the {what} is empty")
    # One XPath evaluated in C: is there an element below the depth limit? (libxml2 itself stops at 256 levels,
    # so the parse above is bounded too.)
    if _deeper_than(limits.max_depth)(root):
        raise XmlRejected(ServiceCode.XML_TOO_DEEP, f"the {what} is nested deeper than {limits.max_depth} elements")
    return root


_local = threading.local()


def safe_parser() -> etree.XMLParser:
    """This thread's parser (lxml's parsers must not be shared between threads): no DTD, no entity expansion,
    no network, no huge trees; comments and processing instructions dropped."""
    parser: etree.XMLParser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = etree.XMLParser(encoding="utf-8", resolve_entities=False, no_network=True, load_dtd=False,
                                 dtd_validation=False, huge_tree=False, remove_comments=True, remove_pis=True,
                                 collect_ids=False)
        _local.parser = parser
    return parser


@functools.cache
def _deeper_than(depth: int) -> etree.XPath:
    return etree.XPath("boolean(/" + "/".join(["*"] * (depth + 1)) + ")")


def parse_body(data: bytes, content_type: str | None, limits: Limits) -> tuple[etree._Element, str, str]:
    """(root, decoded text, codec) of a request body that has already been inflated."""
    if not data.strip():
        raise XmlRejected(ServiceCode.XML_MALFORMED, "the body is empty")
    text, codec = decode(data, charset_of(content_type))
    return parse_text(text, limits), text, codec
