"""Bad input at the SOAP endpoint (reliability.md, "Bad input").

- XML attacks (billion laughs, quadratic blowup, external entities to a file and to the network, external DTDs,
  parameter entities, XInclude, a DOCTYPE of any kind, deep nesting, oversized bodies, compression bombs), in the
  envelope and hidden in the XML string of the legacy-gbk (inputXml) and rural-ncms (requestXml) dialects: each is
  a SOAP 1.1 Client fault with a stable code, within 100 ms, in bounded memory, with no file content in the reply
  and no outbound connection (every network reference points at a loopback listener that counts connections and
  would serve the secret marker). Refused before authentication, they record nothing; an inner string is read
  after authentication, so its refusal leaves only the masked envelope log row.
- Wrong encodings, truncated documents, non-SOAP bodies, SOAP 1.2, unknown dialects: a Client fault with a stable
  code, and nothing recorded (not even an envelope log row); an unknown trade code is refused after the credentials.
- Bad bills over SOAP with valid credentials: the engine's own code, nothing settled; a keyed settlement's failure is
  kept under its message id by design, and a retry gets the same fault.
- Controls: a naive parser does expand, read and fetch what these payloads ask for, the listener does notice a
  connection, the memory measure does notice an unbounded inflate and the timing measure a slow handler, so the
  checks above can fail.
"""

from __future__ import annotations

import functools
import gc
import gzip
import math
import re
import secrets
import select
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import httpx
import pytest
from lxml import etree
from sqlalchemy import text
from sqlalchemy.engine import Engine

from settlement.api.app import create_app
from settlement.bootstrap import Application, build, prepare
from settlement.paths import default_adapters_dir
from settlement.soap.gateway import Answer, Gateway
from tests.rawhttp import chunked, pieces, raw_http
from tests.service.conftest import Clock, LiveServer, Service, new_id_number, settings_for, start_server
from tests.soap.conftest import SoapHospital, soap_hospital_for, wsse_header

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
FAULT_NS = "urn:settlement:soap:fault"
NS = "urn:settlement:soap:v1"
LEGACY_NS = "http://webservice.yb.legacy/"
RURAL_NS = "http://ncms.webservice/"
XINCLUDE = "http://www.w3.org/2001/XInclude"
LIMIT = 1024 * 1024  # the default soap_max_body_bytes
BUDGET = 0.100  # seconds: "a SOAP client fault within 100 ms"
PYTHON_MEMORY_BOUND = 8 * 1024 * 1024  # tracemalloc peak while handling a bomb
PROCESS_MEMORY_BOUND = 32 * 1024 * 1024  # growth of the process's peak resident set (libxml2 allocates in C)
UTF8 = "text/xml; charset=utf-8"
GBK = "text/xml; charset=GBK"
SETTLE_EXAMPLE = default_adapters_dir() / "standard" / "examples" / "settle" / "request.xml"
MONEY_TABLES = ("settlements", "ledger_entries", "reversals", "person_years", "fund_years")
TABLES = (*MONEY_TABLES, "idempotency_records", "soap_exchanges", "wsse_nonces", "audit_log")
_SAFE = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


# The secret on disk, and the listener every network reference points at

@dataclass(frozen=True)
class Secret:
    """A file with a unique marker and a passwd-like line: neither may ever appear in a reply."""

    path: Path
    marker: str
    evil_dtd: Path  # a local DTD whose entity reads the secret (the second stage of a parameter-entity attack)

    @property
    def uri(self) -> str:
        return self.path.as_uri()

    @property
    def needles(self) -> tuple[bytes, ...]:
        return self.marker.encode("ascii"), b"root:x:0:0"


class Listener:
    """A TCP server on loopback that counts the connections made to it. It answers anything with a DTD declaring
    entities that hold the marker, so that a fetch that did happen would also show in a reply."""

    def __init__(self, marker: str) -> None:
        self.reply = f'<!ENTITY remote "{marker}"><!ENTITY leak "{marker}">'.encode("ascii")
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.05)  # accept never blocks for long, even if a pending connection vanished
        self.port: int = self._sock.getsockname()[1]
        self._accepted = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([self._sock], [], [], 0.05)
            if not readable:
                continue
            with self._lock:  # accepting and counting together: a connection is either pending or counted
                try:
                    conn, _ = self._sock.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                self._accepted += 1
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/xml-dtd\r\nContent-Length: "
                                 + str(len(self.reply)).encode() + b"\r\n\r\n" + self.reply)
                except OSError:
                    pass

    def connections(self) -> int:
        """Connections accepted so far, plus one waiting in the backlog (a completed handshake not yet accepted)."""
        with self._lock:
            pending, _, _ = select.select([self._sock], [], [], 0)
            return self._accepted + (1 if pending else 0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()


@pytest.fixture(scope="module")
def secret(tmp_path_factory: pytest.TempPathFactory) -> Secret:
    folder = tmp_path_factory.mktemp("secret")
    marker = f"SECRET-{secrets.token_hex(8)}"
    path = folder / "secret.txt"
    path.write_text(f"{marker}\nroot:x:0:0:root:/root:/bin/bash\n", encoding="ascii")
    evil = folder / "evil.dtd"
    evil.write_text(f'<!ENTITY leak SYSTEM "{path.as_uri()}">\n', encoding="ascii")
    return Secret(path, marker, evil)


@pytest.fixture(scope="module")
def listener(secret: Secret) -> Iterator[Listener]:
    """One listener for the whole module: after every test of the module, it must still have seen nothing."""
    running = Listener(secret.marker)
    yield running
    seen = running.connections()
    running.close()
    assert seen == 0, f"the endpoint made {seen} outbound connection(s) to the listener"


# A SQLite-only application for the parser-level tests (fast; they touch the database only to count rows)

@dataclass
class Env:
    app: Application
    gateway: Gateway
    clock: Clock
    hospital: SoapHospital

    def header(self) -> str:
        """A valid WS-Security header with a fresh nonce."""
        return wsse_header(self.hospital.code, self.hospital.password, self.clock())


def gateway_of(application: Application) -> Gateway:
    gateway = create_app(application).state.soap
    assert isinstance(gateway, Gateway)
    return gateway


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("bad-input-db")
    application = build(settings_for(f"sqlite:///{tmp / 'settlement.sqlite3'}", tmp))
    clock = Clock()
    application.context.clock = clock
    prepare(application)
    hospital = soap_hospital_for(Service(application, clock, tmp))
    yield Env(application, gateway_of(application), clock, hospital)
    application.engine.dispose()


@pytest.fixture(scope="module")
def env_live(env: Env) -> Iterator[LiveServer]:
    running = start_server(env.app)
    yield running
    running.server.should_exit = True
    running.thread.join(timeout=10)


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {table: int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
                for table in TABLES}


def changed(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {table: after[table] - before[table] for table in TABLES if after[table] != before[table]}


def exchanges_holding(engine: Engine, needle: str) -> int:
    with engine.connect() as connection:
        return int(connection.execute(
            text("SELECT count(*) FROM soap_exchanges WHERE request LIKE :n OR reply LIKE :n"),
            {"n": f"%{needle}%"}).scalar_one())


# Calls and faults

@dataclass(frozen=True)
class Call:
    raw: bytes
    content_type: str | None = UTF8
    content_encoding: str | None = None
    dialect: str | None = None  # POST /soap/<dialect>

    @property
    def path(self) -> str:
        return f"/soap/{self.dialect}" if self.dialect else "/soap"

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": self.content_type} if self.content_type else {}
        if self.content_encoding:
            headers["Content-Encoding"] = self.content_encoding
        return headers


@dataclass(frozen=True)
class Fault:
    faultcode: str
    faultstring: str
    code: str
    status: str


def read_fault(body: bytes) -> Fault:
    envelope = etree.fromstring(body, _SAFE)
    fault = envelope.find(f"{{{SOAP11}}}Body/{{{SOAP11}}}Fault")
    assert fault is not None, f"not a SOAP 1.1 fault: {body[:400]!r}"
    detail = fault.find(f"detail/{{{FAULT_NS}}}error")
    assert detail is not None, f"a fault without the stable code: {body[:400]!r}"
    return Fault(fault.findtext("faultcode") or "", fault.findtext("faultstring") or "",
                 detail.findtext(f"{{{FAULT_NS}}}code") or "", detail.findtext(f"{{{FAULT_NS}}}status") or "")


def assert_client_fault(body: bytes, code: str) -> Fault:
    fault = read_fault(body)
    assert (fault.faultcode, fault.code) == ("soap:Client", code), fault
    assert fault.faultstring.startswith(f"{code}: ")
    return fault


_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")


def refusal(body: bytes) -> tuple[str, str]:
    """(channel, stable code) of a refusal: ("fault", code) for a SOAP Client fault, or ("reply", code) for the
    failure reply of a dialect that answers failures in its own codes (legacy-gbk: prm_appcode -1 and
    prm_errcode; rural-ncms: resultCode -1 and errorCode)."""
    envelope = etree.fromstring(body, _SAFE)
    if envelope.find(f"{{{SOAP11}}}Body/{{{SOAP11}}}Fault") is not None:
        fault = read_fault(body)
        assert fault.faultcode == "soap:Client", fault
        return "fault", fault.code
    holder = envelope.find(f"{{{SOAP11}}}Body/*/*")
    assert holder is not None and holder.text, f"neither a fault nor a string reply: {body[:400]!r}"
    message = etree.fromstring(_DECLARATION.sub("", holder.text, count=1), _SAFE)
    if message.tag == "output":  # legacy-gbk
        assert message.findtext("prm_appcode") == "-1", holder.text[:400]
        return "reply", message.findtext("prm_errcode") or ""
    assert message.tag == "response", holder.text[:400]  # rural-ncms
    assert message.findtext("head/resultCode") == "-1", holder.text[:400]
    return "reply", message.findtext("head/errorCode") or ""


def assert_no_leak(body: bytes, secret: Secret) -> None:
    """No file content and nothing expanded: no marker, no passwd line, no run of expanded entity text."""
    for needle in (*secret.needles, b"lollollol", b"A" * 64):
        assert needle not in body, f"the reply holds {needle[:20]!r}"
    assert len(body) < 4096, f"a {len(body)}-byte reply to a refused body"


def handle(gateway: Gateway, call: Call) -> Answer:
    return gateway.handle(call.raw, call.content_type, call.content_encoding, call.dialect)


def best_of_three(gateway: Gateway, make: Callable[[], Call]) -> tuple[Answer, float]:
    """The answer and the best of three timings of Gateway.handle (each run with a freshly built call: a nonce is
    accepted once). The best run shows what the work costs, without a noisy neighbour's share."""
    best, answer = math.inf, None
    for _ in range(3):
        call = make()
        start = time.perf_counter()
        answer = handle(gateway, call)
        best = min(best, time.perf_counter() - start)
    assert answer is not None
    return answer, best


def _peak_rss_kib() -> tuple[int, int] | None:
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:  # pragma: no cover - not Linux
        return None
    hwm, rss = re.search(r"VmHWM:\s+(\d+)", status), re.search(r"VmRSS:\s+(\d+)", status)
    return (int(hwm.group(1)), int(rss.group(1))) if hwm and rss else None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5", encoding="ascii")  # Linux: the peak RSS restarts from now
    except OSError:  # pragma: no cover - not Linux, or not allowed
        return False
    return True


def measure_memory(work: Callable[[], object]) -> tuple[int, int | None]:
    """(tracemalloc peak of Python allocations, growth of the process's peak RSS in bytes or None) during work."""
    gc.collect()
    start = _peak_rss_kib() if _reset_peak_rss() else None
    tracemalloc.start()
    try:
        work()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    end = _peak_rss_kib()
    growth = (end[0] - start[1]) * 1024 if start is not None and end is not None else None
    return peak, growth


# Hostile payloads: (prolog before the root element, content inside a text-bearing element)

@dataclass(frozen=True)
class Target:
    secret: Secret
    url: str  # the listener


def billion_laughs(root: str, levels: int = 10) -> tuple[str, str]:
    """lol0 is "lol"; each level is ten of the one below: &lol{levels-1}; is 3 x 10^(levels-1) characters."""
    entities = '<!ENTITY lol0 "lol">' + "".join(
        f'<!ENTITY lol{level} "{f"&lol{level - 1};" * 10}">' for level in range(1, levels))
    return f"<!DOCTYPE {root} [{entities}]>", f"&lol{levels - 1};"


def quadratic_blowup(root: str, size: int = 100_000, references: int = 9_000) -> tuple[str, str]:
    """One 100 kB entity referenced 9,000 times: 900 MB once expanded, in a 150 kB body."""
    return f'<!DOCTYPE {root} [<!ENTITY big "{"A" * size}">]>', "&big;" * references


def hostile(kind: str, root: str, target: Target) -> tuple[str, str]:
    url, uri = target.url, target.secret.uri
    match kind:
        case "billion_laughs":
            return billion_laughs(root)
        case "quadratic_blowup":
            return quadratic_blowup(root)
        case "file_entity":
            return f'<!DOCTYPE {root} [<!ENTITY xxe SYSTEM "{uri}">]>', "&xxe;"
        case "network_entity":
            return f'<!DOCTYPE {root} [<!ENTITY xxe SYSTEM "{url}/entity.xml">]>', "&xxe;"
        case "external_dtd":
            return f'<!DOCTYPE {root} SYSTEM "{url}/evil.dtd">', "&remote;"
        case "public_dtd":
            return f'<!DOCTYPE {root} PUBLIC "-//Evil//DTD Evil 1.0//EN" "{url}/public.dtd">', "&remote;"
        case "parameter_entities":
            return (f'<!DOCTYPE {root} [<!ENTITY % local SYSTEM "{target.secret.evil_dtd.as_uri()}"> %local; '
                    f'<!ENTITY % remote SYSTEM "{url}/evil.dtd"> %remote;]>', "&leak;")
        case "xinclude_file":
            return "", f'<xi:include xmlns:xi="{XINCLUDE}" href="{uri}" parse="text"/>'
        case "xinclude_network":
            return "", f'<xi:include xmlns:xi="{XINCLUDE}" href="{url}/include.xml" parse="text"/>'
        case "harmless_doctype":
            return f"<!DOCTYPE {root}>", new_id_number()
        case "empty_internal_subset":
            return f"<!DOCTYPE {root} []>", new_id_number()
        case "deep_300":
            return "", "<a>" * 300 + "x" + "</a>" * 300
        case "deep_60":  # over the gateway's own limit of 48, under libxml2's 256
            return "", "<a>" * 60 + "x" + "</a>" * 60
    raise AssertionError(kind)  # pragma: no cover


KINDS = {  # kind -> the stable code it is refused with
    "billion_laughs": "XML_FORBIDDEN", "quadratic_blowup": "XML_FORBIDDEN", "file_entity": "XML_FORBIDDEN",
    "network_entity": "XML_FORBIDDEN", "external_dtd": "XML_FORBIDDEN", "public_dtd": "XML_FORBIDDEN",
    "parameter_entities": "XML_FORBIDDEN", "xinclude_file": "XML_FORBIDDEN", "xinclude_network": "XML_FORBIDDEN",
    "harmless_doctype": "XML_FORBIDDEN", "empty_internal_subset": "XML_FORBIDDEN", "deep_300": "XML_TOO_DEEP",
    "deep_60": "XML_TOO_DEEP",
}


def standard_text(prolog: str, content: str, header: str) -> str:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n{prolog}'
            f'<soap:Envelope xmlns:soap="{SOAP11}">{header}<soap:Body>'
            f'<EligibilityRequest xmlns="{NS}"><idNumber>{content}</idNumber></EligibilityRequest>'
            "</soap:Body></soap:Envelope>")


def legacy_input(prolog: str, content: str) -> str:
    """The legacy dialect's <input> message, as the hospital writes it before escaping it into inputXml."""
    return f'<?xml version="1.0" encoding="GBK"?>{prolog}<input><prm_aac002>{content}</prm_aac002></input>'


def legacy_envelope(inner: str, header: str, trade_code: str = "03", cdata: bool = False) -> bytes:
    """CallService(tradeCode, inputXml) in GBK, the inner document escaped (or in a CDATA section)."""
    holder = f"<![CDATA[{inner}]]>" if cdata else escape(inner)
    envelope = (f'<?xml version="1.0" encoding="GBK"?>\n<soap:Envelope xmlns:soap="{SOAP11}">{header}<soap:Body>'
                f'<ns:CallService xmlns:ns="{LEGACY_NS}"><tradeCode>{trade_code}</tradeCode>'
                f"<inputXml>{holder}</inputXml></ns:CallService></soap:Body></soap:Envelope>")
    return envelope.encode("gb18030")


def rural_input(prolog: str, content: str, function: str = "B010001") -> str:
    """The rural-ncms dialect's <request> message, before it is escaped into requestXml."""
    return (f'<?xml version="1.0" encoding="UTF-8"?>{prolog}<request><head><version>2000</version>'
            f'<functionNo>{function}</functionNo><healthcareprovider identity="H61100200011"/></head>'
            f"<body><D504_05>{content}</D504_05></body></request>")


def rural_envelope(inner: str, header: str, cdata: bool = False) -> bytes:
    """invoke(requestXml) in UTF-8, the inner document escaped (or in a CDATA section)."""
    holder = f"<![CDATA[{inner}]]>" if cdata else escape(inner)
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<soap:Envelope xmlns:soap="{SOAP11}">{header}<soap:Body>'
            f'<ns:invoke xmlns:ns="{RURAL_NS}"><requestXml>{holder}</requestXml></ns:invoke>'
            "</soap:Body></soap:Envelope>").encode()


def string_call(dialect: str, inner_prolog: str, content: str, header: str, cdata: bool = False) -> Call:
    """A call of a dialect whose message travels as an XML string inside the body element."""
    if dialect == "legacy-gbk":
        return Call(legacy_envelope(legacy_input(inner_prolog, content), header, cdata=cdata), GBK)
    return Call(rural_envelope(rural_input(inner_prolog, content), header, cdata=cdata), UTF8)


ROOTS = {"standard": "soap:Envelope", "legacy-gbk": "input", "rural-ncms": "request"}
SHORT = {"legacy-gbk": "legacy", "rural-ncms": "rural"}


def padded(text: str, size: int) -> str:
    """The document with whitespace before its closing tag, to `size` characters."""
    cut = text.rindex("</soap:Envelope>")
    return text[:cut] + " " * max(0, size - len(text)) + text[cut:]


BOMB_SIZE = 10 * LIMIT  # 10 MiB of XML in about 10 kB
EXAMPLE_ID = "611002196804120038"


@functools.cache
def bomb(how: str, legacy: bool = False) -> bytes:
    """A compression bomb: a well-formed envelope padded with 10 MiB of whitespace, compressed (made once; it is
    refused before authentication, so it needs no credentials)."""
    if legacy:
        data = legacy_envelope(legacy_input("", EXAMPLE_ID) + " " * BOMB_SIZE, "")
    else:
        data = padded(standard_text("", EXAMPLE_ID, ""), BOMB_SIZE).encode("utf-8")
    return gzip.compress(data, compresslevel=9, mtime=0) if how == "gzip" else zlib.compress(data, 9)


@dataclass(frozen=True)
class Attack:
    name: str
    code: str
    make: Callable[[Target, Callable[[], str]], Call]  # (target, a fresh WS-Security header) -> the call
    inner: bool = False  # hidden in a dialect's XML string and reaching its parser, which runs after authentication


# Markers the envelope rules find even inside an escaped string or a CDATA section: refused before authentication.
OUTER_VISIBLE = {"xinclude_file", "xinclude_network"}


def _standard(kind: str) -> Attack:
    def make(target: Target, header: Callable[[], str]) -> Call:
        prolog, content = hostile(kind, ROOTS["standard"], target)
        return Call(standard_text(prolog, content, header()).encode("utf-8"))

    return Attack(kind, KINDS[kind], make)


def _inner(dialect: str, kind: str, cdata: bool = False) -> Attack:
    def make(target: Target, header: Callable[[], str]) -> Call:
        prolog, content = hostile(kind, ROOTS[dialect], target)
        return string_call(dialect, prolog, content, header(), cdata)

    inner = not cdata and kind not in OUTER_VISIBLE  # a CDATA section shows "<!DOCTYPE" to the envelope rules
    return Attack(f"{SHORT[dialect]}_{kind}{'_cdata' if cdata else ''}", KINDS[kind], make, inner)


def _utf16_doctype(target: Target, header: Callable[[], str]) -> Call:
    prolog, content = hostile("file_entity", "soap:Envelope", target)
    text_ = standard_text(prolog, content, header()).replace('encoding="UTF-8"', 'encoding="UTF-16"')
    return Call(text_.encode("utf-16"), "text/xml")  # with a byte-order mark; the check runs on decoded text


def _oversized(target: Target, header: Callable[[], str]) -> Call:
    return Call(padded(standard_text("", new_id_number(), header()), LIMIT + 1).encode("utf-8"))


def _gzip_bomb(target: Target, header: Callable[[], str]) -> Call:
    return Call(bomb("gzip"), UTF8, "gzip")


def _deflate_bomb(target: Target, header: Callable[[], str]) -> Call:
    return Call(bomb("deflate"), UTF8, "deflate")


def _unlabelled_gzip_bomb(target: Target, header: Callable[[], str]) -> Call:
    return Call(bomb("gzip"), UTF8, None)  # found by its magic number


def _gzip_billion_laughs(target: Target, header: Callable[[], str]) -> Call:
    prolog, content = billion_laughs("soap:Envelope")
    return Call(gzip.compress(standard_text(prolog, content, header()).encode("utf-8")), UTF8, "gzip")


def _legacy_oversized(target: Target, header: Callable[[], str]) -> Call:
    return Call(legacy_envelope(legacy_input("", new_id_number()) + " " * LIMIT, header()), GBK)


def _legacy_gzip_bomb(target: Target, header: Callable[[], str]) -> Call:
    return Call(bomb("gzip", legacy=True), GBK, "gzip")


ATTACKS = [
    *(_standard(kind) for kind in KINDS),
    Attack("utf16_file_entity", "XML_FORBIDDEN", _utf16_doctype),
    Attack("oversized", "XML_TOO_LARGE", _oversized),
    Attack("gzip_bomb", "XML_TOO_LARGE", _gzip_bomb),
    Attack("deflate_bomb", "XML_TOO_LARGE", _deflate_bomb),
    Attack("unlabelled_gzip_bomb", "XML_TOO_LARGE", _unlabelled_gzip_bomb),
    Attack("gzip_billion_laughs", "XML_FORBIDDEN", _gzip_billion_laughs),
    *(_inner(dialect, kind) for dialect in ("legacy-gbk", "rural-ncms") for kind in KINDS),
    _inner("legacy-gbk", "file_entity", cdata=True),
    _inner("legacy-gbk", "billion_laughs", cdata=True),
    _inner("rural-ncms", "external_dtd", cdata=True),
    Attack("legacy_oversized", "XML_TOO_LARGE", _legacy_oversized),
    Attack("legacy_gzip_bomb", "XML_TOO_LARGE", _legacy_gzip_bomb),
]
BY_NAME = {attack.name: attack for attack in ATTACKS}


BOMBS = ["billion_laughs", "quadratic_blowup", "gzip_bomb", "deflate_bomb", "unlabelled_gzip_bomb",
         "gzip_billion_laughs", "legacy_billion_laughs", "legacy_quadratic_blowup", "legacy_gzip_bomb",
         "rural_billion_laughs", "rural_quadratic_blowup"]


# 1. XML attacks

@pytest.mark.parametrize("attack", ATTACKS, ids=lambda attack: attack.name)
def test_an_xml_attack_is_a_quick_client_fault_leaking_and_fetching_nothing(
        env: Env, listener: Listener, secret: Secret, attack: Attack) -> None:
    target = Target(secret, listener.url)
    before = counts(env.app.engine)
    answer, elapsed = best_of_three(env.gateway, lambda: attack.make(target, env.header))
    after = counts(env.app.engine)

    # A fault in every dialect, even those that answer business failures in their own reply codes.
    fault = assert_client_fault(answer.body, attack.code)
    assert fault.status == ("413" if attack.code == "XML_TOO_LARGE" else "400")
    assert answer.status == (413 if attack.code == "XML_TOO_LARGE" else 500)  # WS-I: a fault travels with 500
    assert_no_leak(answer.body, secret)
    assert elapsed < BUDGET, f"{attack.name} took {elapsed * 1000:.1f} ms at best"
    assert listener.connections() == 0
    if attack.inner:
        # Refused after authentication (the inner string is read once the hospital is known): the envelope log
        # holds the masked call, under the refusal's code, but nothing else is recorded and no file content
        # reaches the log either.
        assert changed(before, after) == {"soap_exchanges": 3, "wsse_nonces": 3}
        assert last_exchange(env.app.engine)[1] == attack.code
        assert exchanges_holding(env.app.engine, secret.marker) == 0
    else:
        assert changed(before, after) == {}, "refused before authentication: nothing at all may be recorded"


@pytest.mark.parametrize("name", BOMBS)
def test_a_bomb_is_refused_in_bounded_memory(env: Env, listener: Listener, secret: Secret, name: str) -> None:
    call = BY_NAME[name].make(Target(secret, listener.url), env.header)
    answers: list[Answer] = []
    peak, growth = measure_memory(lambda: answers.append(handle(env.gateway, call)))
    assert_client_fault(answers[0].body, BY_NAME[name].code)
    assert peak < PYTHON_MEMORY_BOUND, f"{name}: {peak / 2**20:.1f} MiB of Python allocations"
    if growth is not None:
        assert growth < PROCESS_MEMORY_BOUND, f"{name}: the process grew by {growth / 2**20:.1f} MiB"
    assert listener.connections() == 0


def test_the_attacks_over_http_record_nothing_on_either_database(
        service: Service, live: LiveServer, soap_hospital: SoapHospital, listener: Listener,
        secret: Secret) -> None:
    """Every attack through the real server, on SQLite and on PostgreSQL."""
    target = Target(secret, listener.url)

    def header() -> str:
        return wsse_header(soap_hospital.code, soap_hospital.password, service.clock())

    before = counts(service.app.engine)
    authenticated = 0
    with httpx.Client(base_url=live.url, timeout=30) as client:
        for attack in ATTACKS:
            call = attack.make(target, header)
            reply = client.post(call.path, content=call.raw, headers=call.headers())
            assert reply.status_code == (413 if attack.code == "XML_TOO_LARGE" else 500), attack.name
            assert_client_fault(reply.content, attack.code)
            assert_no_leak(reply.content, secret)
            authenticated += attack.inner
    after = counts(service.app.engine)
    growth = changed(before, after)
    assert set(growth) <= {"soap_exchanges", "wsse_nonces"}
    assert growth.get("soap_exchanges", 0) == authenticated  # only refusals after authentication are logged
    assert exchanges_holding(service.app.engine, secret.marker) == 0
    assert listener.connections() == 0


# Size limits on the wire: honest and lying Content-Length, chunked uploads, compression

def _head(port: int, extra: str) -> bytes:
    return (f"POST /soap HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {UTF8}\r\nConnection: close\r\n"
            f"{extra}\r\n").encode("ascii")


def _port(server: LiveServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


def test_an_oversized_body_is_refused_by_its_content_length(env: Env, env_live: LiveServer, secret: Secret) -> None:
    port = _port(env_live)
    data = padded(standard_text("", new_id_number(), env.header()), 2 * LIMIT).encode("utf-8")
    before = counts(env.app.engine)
    status, body, _ = raw_http(port, _head(port, f"Content-Length: {len(data)}\r\n"), pieces(data))
    assert status == 413
    assert_client_fault(body, "XML_TOO_LARGE")
    assert_no_leak(body, secret)
    assert changed(before, counts(env.app.engine)) == {}


def test_a_lying_large_content_length_is_refused_without_waiting_for_the_body(env: Env, env_live: LiveServer) -> None:
    port = _port(env_live)
    small = standard_text("", new_id_number(), env.header()).encode("utf-8")
    status, body, elapsed = raw_http(port, _head(port, f"Content-Length: {50 * LIMIT}\r\n"), [small])
    assert status == 413
    assert_client_fault(body, "XML_TOO_LARGE")
    assert elapsed < 2, "the server waited for a body it had already refused"


def test_a_lying_small_content_length_reads_no_more_than_it_declares(env: Env, env_live: LiveServer,
                                                                    secret: Secret) -> None:
    """Two MiB sent under a Content-Length of 300: the server takes 300 bytes, which are a truncated envelope."""
    port = _port(env_live)
    data = padded(standard_text("", new_id_number(), env.header()), 2 * LIMIT).encode("utf-8")
    before = counts(env.app.engine)
    status, body, _ = raw_http(port, _head(port, "Content-Length: 300\r\n"), pieces(data))
    assert status == 500
    assert_client_fault(body, "XML_MALFORMED")
    assert_no_leak(body, secret)
    assert changed(before, counts(env.app.engine)) == {}
    assert httpx.get(f"{env_live.url}/health", timeout=10).status_code == 200  # the server is unharmed


def test_an_oversized_chunked_body_is_refused_as_it_streams(env: Env, env_live: LiveServer, secret: Secret) -> None:
    port = _port(env_live)
    data = padded(standard_text("", new_id_number(), env.header()), 2 * LIMIT).encode("utf-8")
    chunks = chunked(data)
    before = counts(env.app.engine)
    status, body, _ = raw_http(port, _head(port, "Transfer-Encoding: chunked\r\n"), chunks)
    assert status == 413
    assert_client_fault(body, "XML_TOO_LARGE")
    assert_no_leak(body, secret)
    assert changed(before, counts(env.app.engine)) == {}


def test_a_gzip_bomb_over_http_is_refused(env: Env, env_live: LiveServer, secret: Secret) -> None:
    data = bomb("gzip")
    assert len(data) < 16 * 1024 and len(zlib.decompress(data, 16 + zlib.MAX_WBITS)) > 8 * LIMIT  # a real bomb
    reply = httpx.post(f"{env_live.url}/soap", content=data,
                       headers={"Content-Type": UTF8, "Content-Encoding": "gzip"}, timeout=10)
    assert reply.status_code == 413
    assert_client_fault(reply.content, "XML_TOO_LARGE")
    assert_no_leak(reply.content, secret)


# 2. Encodings, envelopes, dialects

SETTLE_TEXT = SETTLE_EXAMPLE.read_text(encoding="utf-8")  # declares UTF-8; holds Chinese names


def _declared(label: str) -> str:
    return SETTLE_TEXT.replace("encoding='UTF-8'", f"encoding='{label}'", 1)


def _with_header(envelope: str, header: str) -> str:
    """The settle example with a WS-Security header (valid: every refusal below comes before authentication)."""
    return envelope.replace('xmlns:soap-env="', f'xmlns:soap="{SOAP11}" xmlns:soap-env="', 1).replace(
        "<soap-env:Body>", f"{header}<soap-env:Body>", 1)


@dataclass(frozen=True)
class Case:
    name: str
    code: str
    make: Callable[[str], Call]  # a valid WS-Security header -> the call


def _sent(name: str, code: str, text_: str, codec: str, content_type: str | None = UTF8,
          content_encoding: str | None = None, dialect: str | None = None) -> Case:
    return Case(name, code, lambda header: Call(_with_header(text_, header).encode(codec), content_type,
                                                content_encoding, dialect))


def _eligibility_text(label: str) -> str:
    """A small envelope whose only non-ASCII text is a patient's name (in a comment: it is decoded, not read)."""
    return (f"<?xml version='1.0' encoding='{label}'?>\n"
            f'<soap-env:Envelope xmlns:soap-env="{SOAP11}"><soap-env:Body><!-- 王喆 -->'
            f'<EligibilityRequest xmlns="{NS}"><idNumber>{EXAMPLE_ID}</idNumber></EligibilityRequest>'
            "</soap-env:Body></soap-env:Envelope>")


def _soap12(header: str) -> Call:
    return Call((f'<?xml version="1.0" encoding="UTF-8"?><env:Envelope xmlns:env="{SOAP12}"><env:Body>'
                 f'<EligibilityRequest xmlns="{NS}"><idNumber>{new_id_number()}</idNumber></EligibilityRequest>'
                 "</env:Body></env:Envelope>").encode(), "application/soap+xml; charset=utf-8")


ELIGIBILITY = f'<EligibilityRequest xmlns="{NS}"><idNumber>{EXAMPLE_ID}</idNumber></EligibilityRequest>'


def _body(element: str) -> Callable[[str], Call]:
    def make(header: str) -> Call:
        return Call((f'<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="{SOAP11}">{header}'
                     f"<soap:Body>{element}</soap:Body></soap:Envelope>").encode())

    return make


def _truncated_gzip(header: str) -> Call:
    return Call(gzip.compress(_with_header(SETTLE_TEXT, header).encode("utf-8"))[:-40], UTF8, "gzip")


def _corrupt_gzip(header: str) -> Call:
    data = bytearray(gzip.compress(_with_header(SETTLE_TEXT, header).encode("utf-8")))
    data[20:60] = b"\xff" * 40
    return Call(bytes(data), UTF8, "gzip")


def _truncated(header: str) -> Call:
    data = _with_header(SETTLE_TEXT, header).encode("utf-8")
    return Call(data[:len(data) // 2])


ENCODING_CASES = [
    _sent("gbk_bytes_declared_utf8", "ENCODING_INVALID", SETTLE_TEXT, "gb18030"),
    _sent("gbk_bytes_declared_utf8_no_charset", "ENCODING_INVALID", SETTLE_TEXT, "gb18030", "text/xml"),
    _sent("utf8_name_declared_gbk", "ENCODING_MISMATCH", _eligibility_text("GBK"), "utf-8", GBK),
    _sent("utf8_name_declared_gbk_no_charset", "ENCODING_MISMATCH", _eligibility_text("GBK"), "utf-8", "text/xml"),
    _sent("utf8_bill_declared_gbk", "ENCODING_MISMATCH", _declared("GBK"), "utf-8", GBK),
    _sent("utf8_bill_declared_gbk_no_charset", "ENCODING_MISMATCH", _declared("GBK"), "utf-8", "text/xml"),
    _sent("declaration_utf8_charset_gbk", "ENCODING_MISMATCH", SETTLE_TEXT, "utf-8", GBK),
    _sent("declaration_gbk_charset_utf8", "ENCODING_MISMATCH", _declared("GBK"), "gb18030", UTF8),
    _sent("utf8_bom_charset_gbk", "ENCODING_MISMATCH", "\ufeff" + SETTLE_TEXT, "utf-8", GBK),
    _sent("unknown_encoding_declared", "ENCODING_UNSUPPORTED", _declared("x-klingon-9"), "utf-8", "text/xml"),
    _sent("unknown_charset", "ENCODING_UNSUPPORTED", SETTLE_TEXT, "utf-8", "text/xml; charset=x-klingon-9"),
    _sent("unknown_content_encoding", "ENCODING_UNSUPPORTED", SETTLE_TEXT, "utf-8", UTF8, "br"),
    Case("truncated_document", "XML_MALFORMED", _truncated),
    Case("truncated_gzip", "XML_MALFORMED", _truncated_gzip),
    Case("corrupt_gzip", "XML_MALFORMED", _corrupt_gzip),
    Case("empty_body", "XML_MALFORMED", lambda header: Call(b"")),
    Case("blank_body", "XML_MALFORMED", lambda header: Call(b" \r\n\t ")),
    Case("not_xml", "XML_MALFORMED", lambda header: Call(b'{"claim": {"lines": []}}', "application/json")),
    Case("not_an_envelope", "SOAP_INVALID", lambda header: Call(
        f'<SettleRequest xmlns="{NS}"><messageId>M1</messageId></SettleRequest>'.encode())),
    Case("envelope_without_body_element", "SOAP_INVALID", _body("")),
    Case("soap_12", "SOAP_VERSION_MISMATCH", _soap12),
    Case("unknown_body_element", "DIALECT_UNKNOWN", _body(f'<TransferMoneyRequest xmlns="{NS}"/>')),
    Case("known_name_unknown_namespace", "DIALECT_UNKNOWN",
         _body('<SettleRequest xmlns="urn:someone:else"><messageId>M1</messageId></SettleRequest>')),
    _sent("unknown_dialect_path", "DIALECT_UNKNOWN", SETTLE_TEXT, "utf-8", dialect="no-such-dialect"),
    _sent("body_of_another_dialect", "DIALECT_UNKNOWN", SETTLE_TEXT, "utf-8", dialect="legacy-gbk"),
    _sent("rot13_declared", "ENCODING_UNSUPPORTED", _declared("rot13"), "utf-8", "text/xml"),
    _sent("zlib_declared", "ENCODING_UNSUPPORTED", _declared("zlib"), "utf-8", "text/xml"),
    _sent("base64_charset", "ENCODING_UNSUPPORTED", SETTLE_TEXT.replace(" encoding='UTF-8'", "", 1), "utf-8",
          "text/xml; charset=base64"),
    _sent("undefined_declared", "ENCODING_UNSUPPORTED", _declared("undefined"), "utf-8", "text/xml"),
    # XML 1.0, 4.3.3: a byte-order mark and a declaration that disagree are a fatal error.
    _sent("utf8_bom_declared_gbk", "ENCODING_MISMATCH", "\ufeff" + _declared("GBK"), "utf-8", "text/xml"),
    _sent("utf16_bom_declared_utf8", "ENCODING_MISMATCH", SETTLE_TEXT, "utf-16", "text/xml"),
    _sent("utf16_bom_declared_gbk", "ENCODING_MISMATCH", _declared("GBK"), "utf-16", "text/xml"),
    # GBK bytes labelled ISO-8859-1 decode without error (every byte is a Latin-1 character) into a garbled name.
    _sent("gbk_bytes_declared_latin1", "ENCODING_MISMATCH", _declared("ISO-8859-1"), "gb18030", "text/xml"),
    _sent("gbk_bytes_charset_latin1", "ENCODING_MISMATCH", _declared("ISO-8859-1"), "gb18030",
          "text/xml; charset=ISO-8859-1"),
    _sent("utf8_bytes_declared_latin1", "ENCODING_MISMATCH", _declared("latin1"), "utf-8", "text/xml"),
    # UTF-7 ("<" may be written "+ADw-") and the other encodings no hospital system writes Chinese in.
    _sent("utf7_declared", "ENCODING_UNSUPPORTED", _declared("UTF-7"), "utf-7", "text/xml"),
    _sent("utf7_charset", "ENCODING_UNSUPPORTED", SETTLE_TEXT.replace(" encoding='UTF-8'", "", 1), "utf-7",
          "text/xml; charset=utf-7"),
    _sent("utf32_declared", "ENCODING_UNSUPPORTED", _declared("UTF-32"), "utf-32", "text/xml"),
    _sent("big5_declared", "ENCODING_UNSUPPORTED", _eligibility_text("Big5").replace("喆", "哲"), "big5", "text/xml"),
    # One Header at most, one Body, one request in it: a second would have been ignored, not answered.
    Case("two_request_elements", "SOAP_INVALID", _body(ELIGIBILITY * 2)),
    Case("two_bodies", "SOAP_INVALID", _body(f"{ELIGIBILITY}</soap:Body><soap:Body>{ELIGIBILITY}")),
    Case("two_headers", "SOAP_INVALID", lambda header: _body(ELIGIBILITY)(header + header)),
]

@pytest.mark.parametrize("case", ENCODING_CASES, ids=lambda case: case.name)
def test_a_bad_encoding_or_envelope_is_a_client_fault_recording_nothing(env: Env, secret: Secret,
                                                                        case: Case) -> None:
    before = counts(env.app.engine)
    answer, elapsed = best_of_three(env.gateway, lambda: case.make(env.header()))
    assert_client_fault(answer.body, case.code)
    assert_no_leak(answer.body, secret)
    assert elapsed < BUDGET
    assert changed(before, counts(env.app.engine)) == {}, "refused before authentication: nothing recorded"


def test_bad_encodings_over_http_record_nothing_on_either_database(service: Service, live: LiveServer,
                                                                   soap_hospital: SoapHospital) -> None:
    before = counts(service.app.engine)
    with httpx.Client(base_url=live.url, timeout=30) as client:
        for case in ENCODING_CASES:
            call = case.make(wsse_header(soap_hospital.code, soap_hospital.password, service.clock()))
            reply = client.post(call.path, content=call.raw, headers=call.headers())
            assert reply.status_code == 500, (case.name, reply.text[:300])
            assert_client_fault(reply.content, case.code)
            assert "王喆" not in reply.text, case.name  # nothing of the body is echoed
    assert changed(before, counts(service.app.engine)) == {}


def _legacy_unknown(header: str) -> Call:
    return Call(legacy_envelope(legacy_input("", new_id_number()), header, trade_code="99"), GBK)


def _rural_unknown(header: str) -> Call:
    return Call(rural_envelope(rural_input("", new_id_number(), function="B999999"), header))


UNKNOWN_OPERATION: dict[str, Callable[[str], Call]] = {"legacy-gbk": _legacy_unknown, "rural-ncms": _rural_unknown}


def last_exchange(engine: Engine) -> tuple[str, str]:
    """(dialect, outcome) of the newest envelope log row."""
    with engine.connect() as connection:
        row = connection.execute(text("SELECT dialect, outcome FROM soap_exchanges ORDER BY id DESC")).first()
    assert row is not None
    return str(row[0]), str(row[1])


def test_an_unknown_trade_code_is_refused_after_the_credentials(service: Service, live: LiveServer,
                                                               soap_hospital: SoapHospital) -> None:
    """The dialect and the hospital's credentials are checked before the operation: without WS-Security an unknown
    trade code is AUTH_REQUIRED, recording nothing; with it, an OPERATION_UNKNOWN Client fault (in every dialect,
    even those answering business failures in their reply codes), with only the envelope log row."""
    with httpx.Client(base_url=live.url, timeout=30) as client:
        for dialect, make in UNKNOWN_OPERATION.items():
            before = counts(service.app.engine)
            anonymous = make("")
            reply = client.post(anonymous.path, content=anonymous.raw, headers=anonymous.headers())
            assert reply.status_code == 401
            assert_client_fault(reply.content, "AUTH_REQUIRED")
            assert changed(before, counts(service.app.engine)) == {}

            signed = make(wsse_header(soap_hospital.code, soap_hospital.password, service.clock()))
            reply = client.post(signed.path, content=signed.raw, headers=signed.headers())
            assert reply.status_code == 500, dialect
            fault = assert_client_fault(reply.content, "OPERATION_UNKNOWN")
            assert "'99'" in fault.faultstring or "'B999999'" in fault.faultstring
            growth = changed(before, counts(service.app.engine))
            assert growth.get("wsse_nonces") == 1 and set(growth) <= {"soap_exchanges", "wsse_nonces"}


def _legacy_hostile(header: str) -> Call:
    """An external entity in inputXml: refused when the inner string is parsed, after authentication."""
    prolog = '<!DOCTYPE input [<!ENTITY xxe SYSTEM "file:///nonexistent/secret.txt">]>'
    return Call(legacy_envelope(legacy_input(prolog, "&xxe;"), header), GBK)


def _legacy_schema_violation(header: str) -> Call:
    inner = legacy_input("", new_id_number()).replace("</input>", "<prm_unknown>1</prm_unknown></input>")
    return Call(legacy_envelope(inner, header), GBK)


def _legacy_foreign_digits(header: str) -> Call:
    """A region in Arabic-Indic digits: XML Schema's \\d is Unicode's, so the schema says [0-9]."""
    inner = legacy_input("", new_id_number()).replace("</input>", "<prm_aab301>٦١١٠٠٢</prm_aab301></input>")
    return Call(legacy_envelope(inner, header), GBK)


def _rural_schema_violation(header: str) -> Call:
    inner = rural_input("", new_id_number()).replace("</body>", "<D999_99>1</D999_99></body>")
    return Call(rural_envelope(inner, header))


@pytest.mark.parametrize("make", [_legacy_schema_violation, _rural_schema_violation, _legacy_foreign_digits],
                         ids=["legacy-gbk", "rural-ncms", "legacy-gbk-foreign-digits"])
def test_a_reply_coded_dialect_answers_a_schema_refusal_in_its_reply_codes(env: Env,
                                                                           make: Callable[[str], Call]) -> None:
    """adapters/README: with `errors: reply` a message its schema refuses is answered in the dialect's reply codes
    (once the caller is authenticated), and the envelope log names the refusal rather than "ok"."""
    before = counts(env.app.engine)
    answer = handle(env.gateway, make(env.header()))
    assert answer.status == 200
    assert refusal(answer.body) == ("reply", "MESSAGE_INVALID")
    growth = changed(before, counts(env.app.engine))
    assert growth.get("wsse_nonces") == 1 and set(growth) <= {"soap_exchanges", "wsse_nonces"}


@pytest.mark.parametrize(("make", "expected"), [
    pytest.param(_legacy_hostile, ("legacy-gbk", "XML_FORBIDDEN"), id="legacy-hostile-inner-string"),
    pytest.param(_legacy_unknown, ("legacy-gbk", "OPERATION_UNKNOWN"), id="legacy-unknown-trade-code"),
    pytest.param(_rural_unknown, ("rural-ncms", "OPERATION_UNKNOWN"), id="rural-unknown-function"),
    pytest.param(_legacy_schema_violation, ("legacy-gbk", "MESSAGE_INVALID"), id="legacy-schema-refusal"),
    pytest.param(_rural_schema_violation, ("rural-ncms", "MESSAGE_INVALID"), id="rural-schema-refusal"),
])
def test_an_authenticated_refusal_is_in_the_envelope_log_under_its_code(
        env: Env, make: Callable[[str], Call], expected: tuple[str, str]) -> None:
    """README: every exchange of an authenticated hospital is stored (masked); the outcome names the refusal."""
    before = counts(env.app.engine)
    handle(env.gateway, make(env.header()))
    assert changed(before, counts(env.app.engine)) == {"soap_exchanges": 1, "wsse_nonces": 1}
    assert last_exchange(env.app.engine) == expected


# 3. Bad bills over SOAP, with valid credentials (the standard dialect)

@dataclass(frozen=True)
class Bill:
    name: str
    code: str
    edits: tuple[tuple[str, str], ...]
    invalid_id: bool = False
    echo: str = ""  # a value of the bill the reply must not repeat

    @property
    def kept(self) -> bool:
        """Business failures of a keyed settle are kept under the message id; a schema violation is not."""
        return self.code.startswith("CLAIM_")


BILLS = [
    Bill("negative_quantity", "CLAIM_NON_POSITIVE_QUANTITY",
         (("<ns0:quantity>12</ns0:quantity>", "<ns0:quantity>-12</ns0:quantity>"),
          ("<ns0:amount>420.00</ns0:amount>", "<ns0:amount>-420.00</ns0:amount>"))),
    Bill("amount_not_quantity_times_price", "CLAIM_AMOUNT_MISMATCH",
         (("<ns0:amount>420.00</ns0:amount>", "<ns0:amount>421.00</ns0:amount>"),)),
    Bill("total_not_the_sum_of_the_lines", "CLAIM_TOTAL_MISMATCH",
         (("</ns0:lines>", "</ns0:lines>\n        <ns0:total>999.00</ns0:total>"),)),
    Bill("discharge_before_admission", "CLAIM_DATES_OUT_OF_ORDER",
         (("<ns0:admissionDate>2024-03-02<", "<ns0:admissionDate>2024-03-20<"),)),
    Bill("invalid_id_check_character", "CLAIM_INVALID_ID_NUMBER", (), invalid_id=True),
    Bill("schema_violation", "MESSAGE_INVALID",
         (("<ns0:quantity>12</ns0:quantity>", "<ns0:quantity>twelve</ns0:quantity>"),), echo="twelve"),
    # Characters XML 1.0 takes but no name holds (DEL, a C1 control): refused by the rule every wire model shares.
    Bill("delete_character_in_the_name", "REQUEST_MALFORMED", (("<ns0:name>王喆<", "<ns0:name>王&#127;喆<"),)),
    Bill("c1_control_in_an_item_name", "REQUEST_MALFORMED", (("<ns0:name>特级护理<", "<ns0:name>特级&#x85;护理<"),)),
]


def settle_envelope(hospital: SoapHospital, message_id: str, id_number: str, bill: Bill, header: str) -> bytes:
    text_ = SETTLE_TEXT.replace("H61100200011-20240312101500-0001", message_id).replace(
        "H61100200011", hospital.code).replace("611002196804120038", id_number)
    for old, new in bill.edits:
        assert old in text_, old
        text_ = text_.replace(old, new, 1)
    return _with_header(text_, header).encode("utf-8")


def _bad_check_character(id_number: str) -> str:
    return id_number[:-1] + ("0" if id_number[-1] != "0" else "1")


def test_the_valid_example_settles(service: Service, live: LiveServer, soap_hospital: SoapHospital) -> None:
    """The base every bad bill below edits is a good bill: the faults come from the edits alone."""
    good = Bill("good", "", ())
    header = wsse_header(soap_hospital.code, soap_hospital.password, service.clock())
    before = counts(service.app.engine)
    reply = httpx.post(f"{live.url}/soap", headers={"Content-Type": UTF8}, timeout=30,
                       content=settle_envelope(soap_hospital, f"OK{secrets.token_hex(6)}", new_id_number(), good,
                                               header))
    assert reply.status_code == 200, reply.text[:500]
    assert b"<status>settled</status>" in reply.content
    assert changed(before, counts(service.app.engine))["settlements"] == 1


@pytest.mark.parametrize("bill", BILLS, ids=lambda bill: bill.name)
def test_a_bad_bill_is_a_clear_fault_and_settles_nothing(service: Service, live: LiveServer,
                                                         soap_hospital: SoapHospital, bill: Bill) -> None:
    message_id = f"BAD{secrets.token_hex(6)}"
    id_number = new_id_number()
    if bill.invalid_id:
        id_number = _bad_check_character(id_number)
    before = counts(service.app.engine)
    faults = []
    with httpx.Client(base_url=live.url, timeout=30) as client:
        for _ in range(2):  # the call, then its retry with the same message id (and a fresh nonce)
            header = wsse_header(soap_hospital.code, soap_hospital.password, service.clock())
            reply = client.post("/soap", content=settle_envelope(soap_hospital, message_id, id_number, bill, header),
                                headers={"Content-Type": UTF8})
            assert reply.status_code == 500, reply.text[:500]
            faults.append(assert_client_fault(reply.content, bill.code))
            assert id_number not in reply.text  # the reply never repeats the ID number
            if bill.echo:
                assert bill.echo not in reply.text
    assert faults[0] == faults[1], "a retry of a failed key gets the same answer"

    growth = changed(before, counts(service.app.engine))
    assert not set(growth) & set(MONEY_TABLES), f"money recorded for a refused bill: {growth}"
    # A keyed settle's business failure is kept under its message id (reliability: "a key that failed keeps its
    # failure"), once; a message that breaks the schema never reaches the use case and keeps nothing.
    assert growth.get("idempotency_records", 0) == (1 if bill.kept else 0)
    assert growth.get("soap_exchanges", 0) == 2  # both authenticated calls are in the envelope log, masked
    with service.app.engine.connect() as connection:
        kept = connection.execute(text("SELECT count(*) FROM idempotency_records WHERE key = :k"),
                                  {"k": message_id}).scalar_one()
    assert kept == (1 if bill.kept else 0)
    assert exchanges_holding(service.app.engine, id_number) == 0, "the envelope log holds an unmasked ID number"


# 4. Controls: the checks above can fail

def naive_parser(huge_tree: bool = False) -> etree.XMLParser:
    """The parser a naive application writes: entities resolved, DTDs loaded, the network allowed."""
    return etree.XMLParser(resolve_entities=True, load_dtd=True, no_network=False, huge_tree=huge_tree)


class FetchingResolver(etree.Resolver):
    """What a naive application adds when libxml2 cannot fetch http: URLs itself (it is built without HTTP)."""

    def resolve(self, system_url: str, public_id: str, context: Any = None) -> Any:
        if system_url.startswith("http://"):
            return self.resolve_string(httpx.get(system_url, timeout=5).content, context, base_url=system_url)
        return None


def test_control_a_naive_parser_reads_the_file_the_payloads_name(secret: Secret, listener: Listener) -> None:
    target = Target(secret, listener.url)
    naive = naive_parser()
    for kind in ("file_entity", "parameter_entities"):
        prolog, content = hostile(kind, "soap:Envelope", target)
        if kind == "parameter_entities":  # libxml2 here has no HTTP: the remote stage would only fail to load
            prolog = prolog.replace(f'<!ENTITY % remote SYSTEM "{target.url}/evil.dtd"> %remote;', "")
        document = standard_text(prolog, content, "").encode("utf-8")
        echoed = etree.tostring(etree.fromstring(document, naive))
        assert secret.marker.encode() in echoed, kind
        with pytest.raises(AssertionError):  # and the leak check notices it
            assert_no_leak(echoed, secret)
    included = etree.fromstring(standard_text(*hostile("xinclude_file", "soap:Envelope", target), "").encode(),
                                naive).getroottree()
    included.xinclude()
    assert secret.marker.encode() in etree.tostring(included)


def test_control_a_naive_parser_expands_the_entity_bombs(secret: Secret, listener: Listener) -> None:
    """The same constructions, made small enough to expand safely: they do expand, by the factors claimed."""
    laughs = standard_text(*billion_laughs("soap:Envelope", levels=5), "").encode()
    expanded = etree.fromstring(laughs, naive_parser(huge_tree=True)).findtext(f".//{{{NS}}}idNumber")
    assert expanded == "lol" * 10**4
    blowup = standard_text(*quadratic_blowup("soap:Envelope", size=10_000, references=90), "").encode()
    expanded = etree.fromstring(blowup, naive_parser(huge_tree=True)).findtext(f".//{{{NS}}}idNumber")
    assert expanded is not None and len(expanded) == 10_000 * 90 > 50 * len(blowup)
    with pytest.raises(AssertionError):
        assert_no_leak(expanded.encode(), secret)


def test_control_the_listener_notices_a_fetch(secret: Secret) -> None:
    """A naive parser that fetches the external DTD connects to the listener and expands what it serves."""
    watched = Listener(secret.marker)
    try:
        assert watched.connections() == 0
        prolog, content = hostile("external_dtd", "soap:Envelope", Target(secret, watched.url))
        naive = naive_parser()
        naive.resolvers.add(FetchingResolver())
        parsed = etree.fromstring(standard_text(prolog, content, "").encode(), naive)
        assert parsed.findtext(f".//{{{NS}}}idNumber") == secret.marker
        assert watched.connections() == 1
        with socket.create_connection(("127.0.0.1", watched.port), timeout=5):
            pass
        deadline = time.monotonic() + 5
        while watched.connections() < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert watched.connections() == 2
    finally:
        watched.close()


def test_control_the_memory_measure_notices_an_unbounded_inflate() -> None:
    peak, _ = measure_memory(lambda: zlib.decompress(bomb("gzip"), 16 + zlib.MAX_WBITS))
    assert peak > PYTHON_MEMORY_BOUND


def test_control_the_timing_and_fault_checks_fail_on_a_slow_or_wrong_answer(env: Env, secret: Secret) -> None:
    """best_of_three measures the handler (a slow one fails the budget) and the fault check reads the code."""

    class Slow(Gateway):
        def handle(self, raw: bytes, content_type: str | None, content_encoding: str | None,
                   path_dialect: str | None = None) -> Answer:
            time.sleep(BUDGET)
            return super().handle(raw, content_type, content_encoding, path_dialect)

    slow = Slow(env.gateway.context, env.gateway.registry, env.gateway.principals, env.gateway.limits,
                env.gateway.window)
    answer, elapsed = best_of_three(slow, lambda: Call(b""))
    assert elapsed >= BUDGET
    with pytest.raises(AssertionError):
        assert_client_fault(answer.body, "XML_FORBIDDEN")
    assert_client_fault(answer.body, "XML_MALFORMED")
