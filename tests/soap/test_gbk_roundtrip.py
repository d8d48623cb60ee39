"""GBK round trips through the live server (both databases), with raw HTTP posts of GBK bytes.

- The legacy-gbk dialect keeps rare names exactly: 王喆堃 and 李堃 (喆 and 堃 are in GBK but not in GB 2312) come
  back in the eligibility (03), pre-settlement (43) and settlement (41) replies, which are GBK proper (they decode
  strictly with the gbk codec), and the settlement is stored with the name exactly; REST reads the same settlement.
- A name outside GBK (王𠮷, U+20BB7), sent as GB 18030 bytes labelled GBK, is settled and stored exactly; the GBK
  reply carries it as the character reference &#134071;, so it still decodes strictly as GBK and, read as XML
  (the inner reply string parsed again), gives the exact name back.
- Labels: a GB2312 (or GB18030) charset with a GBK declaration is one family and is accepted; UTF-8 bytes labelled
  GBK are ENCODING_MISMATCH and GBK bytes labelled UTF-8 are ENCODING_INVALID, both Client faults recording nothing.
- The rural-ncms dialect posted in GBK (its quote-gbk example) round-trips 李堃.
- The golden envelopes replay live: the legacy settle and quote examples, rewritten to the test's hospital, a fresh
  message id and a random person in the same roster category, give the golden replies byte for byte once the
  volatile values (settlement id, times, message id, quote id, ID number) are put back; the rural quote-gbk
  example gives its golden amounts.
- Controls: every check here fails on a planted fault (a GB 18030 or UTF-8 reply, a mangled name, one fen more,
  another stable code).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

import httpx
import pytest
from lxml import etree
from sqlalchemy import text

from settlement.paths import default_adapters_dir
from tests.service.conftest import LiveServer, Service, import_roster_rows, new_id_number
from tests.soap.conftest import SOAP11, SoapHospital, message_id, wsse_header
from tests.soap.test_bad_input import MONEY_TABLES, assert_client_fault, changed, counts

ADAPTERS = default_adapters_dir()
LEGACY_EXAMPLES = ADAPTERS / "legacy-gbk" / "examples"
RURAL_QUOTE_GBK = ADAPTERS / "rural-ncms" / "examples" / "quote-gbk"
LEGACY_NS = "http://webservice.yb.legacy/"
RURAL_NS = "http://ncms.webservice/"
GBK = "text/xml; charset=GBK"
UTF8 = "text/xml; charset=utf-8"
GBK_DECLARATION = '<?xml version="1.0" encoding="GBK"?>'
SAFE = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")

# The golden examples' volatile values and their demo hospital, patient and category (examples/roster).
GOLDEN_HOSPITAL = "H61100200011"
GOLDEN_PERSON = "611002196804120038"
GOLDEN_CATEGORY = ("dibao_rural_a", "2023-01-01")
RURAL_PERSON = "611024195007080022"
RURAL_CATEGORY = ("tekun_dispersed", "2020-07-01")

NAMES = ["王喆堃", "李堃"]  # 喆 (GBK 86 B4) and 堃 (GBK 88 D2): GBK's extension, not GB 2312
OUTSIDE_GBK = "王\U00020bb7"  # 王𠮷: 𠮷 is U+20BB7, a four-byte GB 18030 sequence, not in GBK
OUTSIDE_GBK_REFERENCE = b"&#134071;"


# Building legacy-gbk calls

def inner_text(holder: etree._Element | None) -> str:
    """The XML string a dialect carries in an element, without its declaration."""
    assert holder is not None and holder.text, "no XML string where the dialect keeps it"
    return _DECLARATION.sub("", holder.text, count=1)


def example_input(case: str) -> etree._Element:
    """The <input> message of a legacy-gbk example (a fresh copy each time)."""
    envelope = etree.fromstring((LEGACY_EXAMPLES / case / "request.xml").read_bytes(), SAFE)
    return etree.fromstring(inner_text(envelope.find(".//inputXml")).encode("utf-8"), SAFE)


def legacy_message(values: dict[str, str], case: str = "settle", drop: Iterable[str] = ()) -> str:
    """The example's <input> with some elements set (added when absent) and some removed (ElementPath), as the
    hospital writes it before escaping it into inputXml: declaring GBK."""
    root = example_input(case)
    for tag, value in values.items():
        element = root.find(tag)
        if element is None:
            element = etree.SubElement(root, tag)
        element.text = value
    for path in drop:
        for element in root.findall(path):
            parent = element.getparent()
            assert parent is not None
            parent.remove(element)
    return GBK_DECLARATION + etree.tostring(root, encoding="unicode")


def legacy_envelope(trade_code: str, inner: str, header: str, declared: str = "GBK") -> str:
    """CallService(tradeCode, inputXml) with a WS-Security header, the message escaped (as text: the caller
    encodes it)."""
    return (f'<?xml version="1.0" encoding="{declared}"?>\n<soap:Envelope xmlns:soap="{SOAP11}">{header}'
            f'<soap:Body><web:CallService xmlns:web="{LEGACY_NS}"><tradeCode>{trade_code}</tradeCode>'
            f"<inputXml>{escape(inner)}</inputXml></web:CallService></soap:Body></soap:Envelope>")


@dataclass
class Legacy:
    """A hospital calling the legacy-gbk dialect of a live server."""

    live: LiveServer
    service: Service
    hospital: SoapHospital

    def header(self) -> str:
        return wsse_header(self.hospital.code, self.hospital.password, self.service.clock())

    def post(self, data: bytes, content_type: str | None = GBK, path: str = "/soap") -> httpx.Response:
        headers = {"Content-Type": content_type} if content_type else {}
        return httpx.post(f"{self.live.url}{path}", content=data, headers=headers, timeout=30)

    def call(self, trade_code: str, inner: str, *, codec: str = "gbk", content_type: str | None = GBK,
             declared: str = "GBK") -> httpx.Response:
        return self.post(legacy_envelope(trade_code, inner, self.header(), declared).encode(codec), content_type)

    def values(self, person: str, name: str, key: str | None = None) -> dict[str, str]:
        """The settle example's bill for this hospital, a person and a name, a fresh message id and visit."""
        return {"prm_msgid": key or message_id(self.hospital.code), "prm_akb020": self.hospital.code,
                "prm_aac002": person, "prm_aac003": name, "prm_akc190": f"ZY{secrets.token_hex(6)}"}


@pytest.fixture
def legacy(service: Service, live: LiveServer, soap_hospital: SoapHospital) -> Legacy:
    return Legacy(live, service, soap_hospital)


# Reading replies

def read_gbk_reply(content: bytes, content_type: str) -> etree._Element:
    """The <output> of a legacy-gbk reply, checked on the way: labelled GBK, GBK bytes proper (a strict gbk decode
    of every byte), the envelope and its inner string both declaring GBK; the outer envelope is parsed from the
    bytes by libxml2 (its own GBK decoder) and must agree with Python's gbk codec."""
    charset = re.search(r"(?i);\s*charset=\"?([A-Za-z0-9_.-]+)", content_type)
    assert charset is not None and charset.group(1).upper() == "GBK", content_type
    decoded = content.decode("gbk")  # strict: a byte sequence GBK lacks raises UnicodeDecodeError
    assert decoded.startswith(GBK_DECLARATION), decoded[:80]
    envelope = etree.fromstring(content, SAFE)
    assert etree.tostring(envelope, encoding="unicode") == etree.tostring(
        etree.fromstring(_DECLARATION.sub("", decoded, count=1).encode("utf-8"), SAFE), encoding="unicode")
    holder = envelope.find(f"{{{SOAP11}}}Body/{{{LEGACY_NS}}}CallServiceResponse/CallServiceReturn")
    assert holder is not None and holder.text, decoded[:400]
    assert holder.text.startswith(GBK_DECLARATION), holder.text[:80]
    output = etree.fromstring(inner_text(holder).encode("utf-8"), SAFE)
    assert output.tag == "output", holder.text[:200]
    return output


def legacy_output(reply: httpx.Response) -> etree._Element:
    assert reply.status_code == 200, reply.content[:600]
    return read_gbk_reply(reply.content, reply.headers["content-type"])


def succeeded(output: etree._Element) -> etree._Element:
    assert (output.findtext("prm_appcode"), output.findtext("prm_appmsg")) == ("0", "成功"), \
        etree.tostring(output, encoding="unicode")[:600]
    return output


def assert_name(output: etree._Element, name: str) -> None:
    """The echoed name is exactly the name sent: same code points, nothing replaced, nothing normalised."""
    echoed = output.findtext("prm_aac003")
    assert echoed == name, f"sent {name!r} ({name.encode('unicode_escape')!r}), got back {echoed!r}"


def stored_claim(service: Service, settlement_id: str) -> dict[str, Any]:
    with service.app.engine.connect() as connection:
        claim = connection.execute(text("SELECT claim FROM settlements WHERE public_id = :sid"),
                                   {"sid": settlement_id}).scalar_one()
    loaded: dict[str, Any] = json.loads(claim)
    return loaded


def assert_stored_name(service: Service, settlement_id: str, name: str) -> None:
    stored = stored_claim(service, settlement_id)["patient"]["name"]
    assert stored == name, f"stored {stored!r}, sent {name!r}"


def exchanges_of(service: Service, code: str) -> list[tuple[str, str]]:
    with service.app.engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT x.request, x.reply FROM soap_exchanges x JOIN hospitals h ON h.id = x.hospital_id "
            "WHERE h.code = :code ORDER BY x.id"), {"code": code}).all()
    return [(str(request), str(reply)) for request, reply in rows]


# 1. Rare GBK names through 03, 43 and 41

@pytest.mark.parametrize("name", NAMES, ids=["wang_zhe_kun", "li_kun"])
def test_a_legacy_settle_keeps_a_rare_gbk_name_exactly(legacy: Legacy, service: Service, name: str) -> None:
    person = new_id_number()
    import_roster_rows(service, [(person, *GOLDEN_CATEGORY, "")])
    # The envelope really is GBK: the gbk codec writes it, and it is not UTF-8.
    sample = legacy_envelope("41", legacy_message(legacy.values(person, name)), legacy.header()).encode("gbk")
    assert name.encode("gbk") in sample
    with pytest.raises(UnicodeDecodeError):
        sample.decode("utf-8")

    eligibility = succeeded(legacy_output(legacy.call("03", legacy_message(
        {"prm_msgid": message_id(legacy.hospital.code), "prm_akb020": legacy.hospital.code,
         "prm_aac002": person, "prm_aae036": "20240312101000"}, case="eligibility"))))
    assert eligibility.findtext("prm_inroster") == "1"
    assert eligibility.findtext("prm_aac002") == f"{person[:6]}********{person[-4:]}"
    assert eligibility.findtext("categories/row/prm_catname") == "农村低保对象 A类"  # GBK text in the reply

    quoted = succeeded(legacy_output(legacy.call("43", legacy_message(legacy.values(person, name), case="quote"))))
    assert_name(quoted, name)
    assert quoted.findtext("prm_aac002") == person
    assert quoted.findtext("prm_yka055") == "904.00"

    values = legacy.values(person, name)
    settled = succeeded(legacy_output(legacy.call("41", legacy_message(values))))
    assert_name(settled, name)
    assert settled.findtext("prm_msgid") == values["prm_msgid"]
    assert settled.findtext("prm_status") == "settled"
    # The settlement has the figures the pre-settlement gave.
    for share in ("prm_yka055", "prm_yka904", "prm_akb067"):
        assert settled.findtext(share) == quoted.findtext(share), share
    settlement_id = settled.findtext("prm_yka103")
    assert settlement_id

    assert_stored_name(service, settlement_id, name)
    claim = stored_claim(service, settlement_id)
    assert claim["patient"]["id_number"] == person and claim["hospital"]["code"] == legacy.hospital.code
    with pytest.raises(AssertionError):  # the stored-name check tells a mangled name
        assert_stored_name(service, settlement_id, name.encode("gb2312", "replace").decode("gb2312"))

    with legacy.live.client(legacy.hospital.api_key) as client:
        got = client.get(f"/v1/settlements/{settlement_id}")
    assert got.status_code == 200, got.text
    body = got.json()
    assert (body["settlement_id"], body["transaction_id"], body["status"]) == (
        settlement_id, values["prm_msgid"], "settled")
    assert (body["total"], body["patient_pays"]) == (settled.findtext("prm_yka055"), settled.findtext("prm_akb067"))

    # Sent again (same message id): the stored answer, with the same name.
    again = succeeded(legacy_output(legacy.call("41", legacy_message(values))))
    assert (again.findtext("prm_yka103"), again.findtext("prm_replayed")) == (settlement_id, "1")
    assert_name(again, name)


# 2. A name outside GBK

def test_a_name_outside_gbk_is_kept_and_answered_as_a_character_reference(legacy: Legacy,
                                                                          service: Service) -> None:
    name = OUTSIDE_GBK
    with pytest.raises(UnicodeEncodeError):
        name.encode("gbk")
    person = new_id_number()
    values = legacy.values(person, name)
    data = legacy_envelope("41", legacy_message(values), legacy.header()).encode("gb18030")
    assert name.encode("gb18030") in data  # four-byte GB 18030 for 𠮷, under a GBK label

    reply = legacy.post(data)
    assert reply.status_code == 200, reply.content[:600]
    assert OUTSIDE_GBK_REFERENCE in reply.content  # 𠮷 as a character reference in the GBK bytes
    assert "王".encode("gbk") + OUTSIDE_GBK_REFERENCE in reply.content
    with pytest.raises(UnicodeDecodeError):  # the GB 18030 form the request used is not in the reply
        name.encode("gb18030").decode("gbk")
    assert name.encode("gb18030") not in reply.content
    settled = succeeded(read_gbk_reply(reply.content, reply.headers["content-type"]))
    assert_name(settled, name)
    settlement_id = settled.findtext("prm_yka103")
    assert settlement_id
    assert_stored_name(service, settlement_id, name)

    quoted = succeeded(legacy_output(legacy.post(legacy_envelope(
        "43", legacy_message(legacy.values(person, name), case="quote"), legacy.header()).encode("gb18030"))))
    assert_name(quoted, name)

    # The envelope log keeps neither form of the name (the text nor its reference).
    for request, logged_reply in exchanges_of(service, legacy.hospital.code):
        for form in (name, "王&#134071;"):
            assert form not in request and form not in logged_reply


# 3. Labels of the GB family, and mislabelled bodies

@pytest.mark.parametrize("charset", ["GB2312", "gb18030"])
def test_a_gb_family_charset_with_a_gbk_declaration_is_accepted(legacy: Legacy, service: Service,
                                                                charset: str) -> None:
    name = NAMES[0]  # 喆 and 堃 are not in GB 2312: the label names the family, the bytes are GBK
    with pytest.raises(UnicodeEncodeError):
        name.encode("gb2312")
    values = legacy.values(new_id_number(), name)
    settled = succeeded(legacy_output(legacy.call("41", legacy_message(values),
                                                  content_type=f"text/xml; charset={charset}")))
    assert_name(settled, name)
    settlement_id = settled.findtext("prm_yka103")
    assert settlement_id
    assert_stored_name(service, settlement_id, name)


@dataclass(frozen=True)
class Mislabelled:
    name: str
    code: str
    codec: str
    declared: str
    content_type: str


MISLABELLED = [
    Mislabelled("utf8_bytes_declared_and_sent_as_gbk", "ENCODING_MISMATCH", "utf-8", "GBK", GBK),
    Mislabelled("utf8_bytes_declared_gbk_no_charset", "ENCODING_MISMATCH", "utf-8", "GBK", "text/xml"),
    Mislabelled("gbk_bytes_declared_and_sent_as_utf8", "ENCODING_INVALID", "gbk", "UTF-8", UTF8),
    Mislabelled("gbk_bytes_declared_utf8_no_charset", "ENCODING_INVALID", "gbk", "UTF-8", "text/xml"),
]


def test_mislabelled_bodies_are_refused_and_record_nothing(legacy: Legacy, service: Service) -> None:
    start = counts(service.app.engine)
    for case in MISLABELLED:
        values = legacy.values(new_id_number(), NAMES[0])
        before = counts(service.app.engine)
        reply = legacy.call("41", legacy_message(values), codec=case.codec, content_type=case.content_type,
                            declared=case.declared)
        assert reply.status_code == 500, (case.name, reply.content[:300])
        fault = assert_client_fault(reply.content, case.code)
        assert fault.status == "400", (case.name, fault)
        for codec in ("utf-8", "gbk"):  # nothing of the body is echoed
            assert NAMES[0].encode(codec) not in reply.content, case.name
        assert changed(before, counts(service.app.engine)) == {}, f"{case.name}: refused, yet recorded"
        # And the same call, labelled truthfully, settles (the refusal came from the label alone).
        truthful = legacy.call("41", legacy_message(values), codec="gbk", content_type=GBK, declared="GBK")
        assert_name(succeeded(legacy_output(truthful)), NAMES[0])
    assert changed(start, counts(service.app.engine)).get("settlements") == len(MISLABELLED)


# 4. The rural-ncms dialect in GBK

def test_the_rural_dialect_posted_in_gbk_round_trips_the_name(legacy: Legacy, service: Service) -> None:
    person = new_id_number(region="611024")
    import_roster_rows(service, [(person, *RURAL_CATEGORY, "")], region="611024")  # as the example's D504_06
    example = (RURAL_QUOTE_GBK / "request.xml").read_bytes().decode("gbk")
    header = legacy.header().replace("<soap:Header>", "<soapenv:Header>").replace("</soap:Header>",
                                                                                   "</soapenv:Header>")
    key = message_id(legacy.hospital.code)
    sent = (example.replace("H61100200011-20240403093000-0001", key).replace(GOLDEN_HOSPITAL, legacy.hospital.code)
            .replace(RURAL_PERSON, person).replace("<soapenv:Header/>", header, 1))
    assert "李堃" in sent and header in sent
    data = sent.encode("gbk")
    assert "李堃".encode("gbk") in data

    reply = legacy.post(data)
    assert reply.status_code == 200, reply.content[:600]
    assert reply.headers["content-type"].lower() == "text/xml; charset=utf-8"  # the dialect answers in UTF-8
    response = rural_response(reply.content)
    assert response.findtext("head/resultCode") == "1", reply.text[:600]
    assert response.findtext("body/D504_02") == "李堃"
    assert response.findtext("body/D504_14") == "330.00"

    golden = rural_response((RURAL_QUOTE_GBK / "reply.xml").read_bytes())
    assert figures(response, volatile=RURAL_VOLATILE) == figures(golden, volatile=RURAL_VOLATILE)


RURAL_VOLATILE = frozenset({"D504_17", "D504_30"})  # the quote id and its expiry


def rural_response(content: bytes) -> etree._Element:
    envelope = etree.fromstring(content, SAFE)
    holder = envelope.find(f"{{{SOAP11}}}Body/{{{RURAL_NS}}}invokeResponse/return")
    response = etree.fromstring(inner_text(holder).encode("utf-8"), SAFE)
    assert response.tag == "response"
    return response


def figures(root: etree._Element, volatile: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """Every leaf of a message as (path, text), in order: its structure and values, volatile leaves left out."""
    tree = root.getroottree()
    return [(tree.getpath(element), element.text or "") for element in root.iter()
            if isinstance(element.tag, str) and len(element) == 0 and element.tag not in volatile]


# 5. The golden envelopes, live

@dataclass(frozen=True)
class Golden:
    case: str
    trade_code: str
    volatile: tuple[str, ...]  # the <output> elements whose values depend on the call (time, ids)


GOLDEN = [Golden("quote", "43", ("prm_msgid", "prm_quoteid", "prm_quoteexp")),
          Golden("settle", "41", ("prm_msgid", "prm_yka103", "prm_recordtime"))]


def golden_output(case: str) -> etree._Element:
    path = LEGACY_EXAMPLES / case / "reply.xml"
    return read_gbk_reply(path.read_bytes(), GBK)


def live_example(case: str, hospital: str, key: str, person: str, header: str) -> bytes:
    """The example envelope as sent, for the test's hospital, message id and person, with a WS-Security header."""
    original = (LEGACY_EXAMPLES / case / "request.xml").read_bytes().decode("gbk")
    golden_key = example_input(case).findtext("prm_msgid") or ""
    assert golden_key.startswith(GOLDEN_HOSPITAL) and "<soapenv:Header/>" in original
    header = header.replace("<soap:Header>", "<soapenv:Header>").replace("</soap:Header>", "</soapenv:Header>")
    sent = (original.replace(golden_key, key).replace(GOLDEN_HOSPITAL, hospital).replace(GOLDEN_PERSON, person)
            .replace("<soapenv:Header/>", header, 1))
    assert GOLDEN_HOSPITAL not in sent and GOLDEN_PERSON not in sent
    return sent.encode("gbk")


def normalised(content: bytes, output: etree._Element, golden: etree._Element, golden_case: Golden,
               person: str) -> bytes:
    """The live reply with its volatile values (and the person's ID number) replaced by the golden ones."""
    for tag in golden_case.volatile:
        live_value, golden_value = output.findtext(tag), golden.findtext(tag)
        assert live_value and golden_value, tag
        tagged = f"&lt;{tag}&gt;{{}}&lt;/{tag}&gt;"
        live_bytes, golden_bytes = tagged.format(live_value).encode("gbk"), tagged.format(golden_value).encode("gbk")
        assert content.count(live_bytes) == 1, tag
        content = content.replace(live_bytes, golden_bytes)
    return content.replace(person.encode("ascii"), GOLDEN_PERSON.encode("ascii"))


def assert_matches_golden(content: bytes, content_type: str, golden_case: Golden, person: str) -> None:
    output = succeeded(read_gbk_reply(content, content_type))
    golden = golden_output(golden_case.case)
    volatile = frozenset(golden_case.volatile)
    # Structure and amounts first (a readable difference), then the whole reply byte for byte.
    live_figures = [(path, GOLDEN_PERSON if value == person else value)
                    for path, value in figures(output, volatile)]
    assert live_figures == figures(golden, volatile)
    assert normalised(content, output, golden, golden_case, person) == (
        LEGACY_EXAMPLES / golden_case.case / "reply.xml").read_bytes()


def test_the_golden_legacy_envelopes_replay_live(legacy: Legacy, service: Service) -> None:
    """The quote and settle examples, as their hospital sends them, for a new person of the same roster category
    (dibao_rural_a since 2023-01-01, as examples/roster gives the example's patient)."""
    person = new_id_number()
    import_roster_rows(service, [(person, *GOLDEN_CATEGORY, "")])
    code = legacy.hospital.code
    for golden_case in GOLDEN:
        key = message_id(code)
        before = counts(service.app.engine)
        reply = legacy.post(live_example(golden_case.case, code, key, person, legacy.header()))
        assert reply.status_code == 200, reply.content[:600]
        assert_matches_golden(reply.content, reply.headers["content-type"], golden_case, person)
        output = read_gbk_reply(reply.content, reply.headers["content-type"])
        assert output.findtext("prm_msgid") == key
        recorded = {table: n for table, n in changed(before, counts(service.app.engine)).items()
                    if table in MONEY_TABLES}
        if golden_case.case == "settle":
            assert recorded.get("settlements") == 1
            settlement_id = output.findtext("prm_yka103")
            assert settlement_id
            assert_stored_name(service, settlement_id, "王喆堃")
        else:
            assert recorded == {}, "a quote records no money"


# 6. A correctly labelled GBK name whose bytes also happen to be valid UTF-8

ZHENG_WEI = "郑伟"  # one of the commonest names: GBK D6 A3 CE B0, which is also valid UTF-8 (U+05A3 U+03B0)


def test_a_gbk_name_whose_bytes_are_also_valid_utf8_is_accepted(legacy: Legacy, service: Service) -> None:
    """A legacy settle carrying codes only (no hospital, operator or item names: all optional) and the patient's
    name 郑伟, in GBK, labelled GBK everywhere."""
    values = legacy.values(new_id_number(), ZHENG_WEI)
    inner = legacy_message(values, drop=("prm_akb021", "prm_ykc141", "feedetail/row/prm_ake002"))
    data = legacy_envelope("41", inner, legacy.header()).encode("gbk")
    assert data.decode("gbk").count(ZHENG_WEI) == 1
    data.decode("utf-8")  # the precondition: the GBK bytes are valid UTF-8 as well (as "֣ΰ")
    reply = legacy.post(data)
    settled = succeeded(legacy_output(reply))
    assert_name(settled, ZHENG_WEI)
    settlement_id = settled.findtext("prm_yka103")
    assert settlement_id
    assert_stored_name(service, settlement_id, ZHENG_WEI)


# 7. Controls: the checks above fail on planted faults (no server needed)

def golden_reply(case: str = "settle") -> bytes:
    return (LEGACY_EXAMPLES / case / "reply.xml").read_bytes()


def test_control_the_golden_reply_passes_the_checks() -> None:
    """The base the planted faults edit: the golden settle reply passes every check unchanged."""
    output = succeeded(read_gbk_reply(golden_reply(), GBK))
    assert_name(output, "王喆堃")
    assert_matches_golden(golden_reply(), GBK, GOLDEN[1], GOLDEN_PERSON)


def test_control_a_reply_not_in_gbk_fails_the_encoding_checks() -> None:
    text_ = golden_reply().decode("gbk")
    # Written in UTF-8: a strict UTF-8 decode of the real (GBK) reply fails, and the UTF-8 bytes read as GBK
    # (where they may even decode) do not give the name back.
    with pytest.raises(UnicodeDecodeError):
        golden_reply().decode("utf-8")
    as_utf8 = text_.encode("utf-8")
    with pytest.raises((AssertionError, UnicodeDecodeError, etree.XMLSyntaxError)):
        assert_name(read_gbk_reply(as_utf8, GBK), "王喆堃")
    # Written in GB 18030 rather than with a character reference: 𠮷 fails the strict GBK decode.
    in_gb18030 = text_.replace("王喆堃", OUTSIDE_GBK).encode("gb18030")
    with pytest.raises(UnicodeDecodeError):
        read_gbk_reply(in_gb18030, GBK)
    # With the reference, as the service writes it, the same reply passes and gives 𠮷 back.
    referenced = text_.replace("王喆堃", OUTSIDE_GBK).encode("gbk", "xmlcharrefreplace")
    assert OUTSIDE_GBK_REFERENCE in referenced
    assert_name(read_gbk_reply(referenced, GBK), OUTSIDE_GBK)
    # Labelled anything but GBK.
    with pytest.raises(AssertionError):
        read_gbk_reply(golden_reply(), UTF8)


def test_control_a_mangled_name_is_detected() -> None:
    output = read_gbk_reply(golden_reply(), GBK)
    for mangled in ("王喆?", "王?堃", "王喆", "王喆堃 ", "王\u5586\u5803\u200b", "王喆坤"):
        prm = output.find("prm_aac003")
        assert prm is not None
        prm.text = mangled
        with pytest.raises(AssertionError):
            assert_name(output, "王喆堃")
    # A name that went through a GB 2312 codec on its way is mangled, and that is seen.
    through_gb2312 = "王喆堃".encode("gb2312", "replace").decode("gb2312")
    with pytest.raises(AssertionError):
        assert_name(read_gbk_reply(golden_reply().replace("王喆堃".encode("gbk"), through_gb2312.encode("gbk")),
                                   GBK), "王喆堃")


def test_control_the_golden_comparison_catches_one_fen_and_a_changed_structure() -> None:
    planted = {
        "one fen more to the patient": (b"&lt;prm_akb067&gt;213.30&lt;", b"&lt;prm_akb067&gt;213.31&lt;"),
        "a fund row's amount": (b"&lt;prm_fundpay&gt;357.70&lt;", b"&lt;prm_fundpay&gt;357.71&lt;"),
        "the name": ("王喆堃".encode("gbk"), "王喆".encode("gbk")),
        "an element renamed": (b"&lt;prm_yka904&gt;690.70&lt;/prm_yka904&gt;",
                               b"&lt;prm_yka905&gt;690.70&lt;/prm_yka905&gt;"),
        "a volatile value no longer volatile": (b"&lt;prm_status&gt;settled&lt;", b"&lt;prm_status&gt;reversed&lt;"),
    }
    for what, (old, new) in planted.items():
        assert old in golden_reply(), what
        with pytest.raises(AssertionError):
            assert_matches_golden(golden_reply().replace(old, new, 1), GBK, GOLDEN[1], GOLDEN_PERSON)
    # A change in the envelope outside <output> is caught by the byte comparison.
    with pytest.raises(AssertionError):
        assert_matches_golden(golden_reply().replace(b"<soap:Body>", b"<soap:Body> "), GBK, GOLDEN[1],
                              GOLDEN_PERSON)


def test_control_the_refusal_check_reads_the_code() -> None:
    fault = (b'<?xml version="1.0" encoding="GBK"?>\n<soap:Envelope xmlns:soap="' + SOAP11.encode() + b'">'
             b"<soap:Body><soap:Fault><faultcode>soap:Client</faultcode><faultstring>ENCODING_INVALID: x"
             b'</faultstring><detail><e:error xmlns:e="urn:settlement:soap:fault"><e:code>ENCODING_INVALID'
             b"</e:code><e:status>400</e:status></e:error></detail></soap:Fault></soap:Body></soap:Envelope>")
    assert_client_fault(fault, "ENCODING_INVALID")
    with pytest.raises(AssertionError):
        assert_client_fault(fault, "ENCODING_MISMATCH")
    with pytest.raises(AssertionError):  # a successful reply is no refusal
        assert_client_fault(golden_reply(), "ENCODING_MISMATCH")

