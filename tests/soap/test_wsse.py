"""WS-Security UsernameToken on the live SOAP endpoint (both databases), with raw envelopes: the password digest,
the Created window, nonces used once, dialect bindings, password re-issue, and the password kept encrypted.

Every refused call records nothing: no settlement, no key, no audit row, no nonce and no envelope-log row (the log
keeps exchanges of authenticated hospitals only). Time is moved on the service's clock, never slept."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet, InvalidToken
from lxml import etree
from sqlalchemy import text

from settlement.paths import default_adapters_dir
from settlement.services.soap_access import issue_password
from settlement.soap.wsse import DIGEST_TYPE, TEXT_TYPE, WSSE, WSU, password_digest
from tests.service.conftest import LiveServer, Service, claim_body, new_id_number, start_server
from tests.soap.conftest import SOAP11, SoapHospital, message_id, soap_envelope, soap_hospital_for, wsse_header

NS = "urn:settlement:soap:v1"
FAULT_NS = "urn:settlement:soap:fault"
COUNTED = ("settlements", "ledger_entries", "reversals", "idempotency_records", "audit_log", "soap_exchanges",
           "wsse_nonces")
WINDOW = timedelta(seconds=300)


# Helpers shared with the other SOAP test files


def settle_xml(key: str, claim: dict[str, Any], quote_id: str | None = None) -> str:
    """A standard-dialect SettleRequest for a REST claim (as claim_body builds it)."""
    hospital, visit, patient = claim["hospital"], claim["visit"], claim["patient"]
    lines = "".join(
        f"<line><id>{line['id']}</id><code>{line['code']}</code><name>{line['name']}</name>"
        f"<quantity>{line['quantity']}</quantity><unitPrice>{line['unit_price']}</unitPrice>"
        f"<amount>{line['amount']}</amount></line>" for line in claim["lines"])
    quote = f"<quoteId>{quote_id}</quoteId>" if quote_id else ""
    return (
        f'<SettleRequest xmlns="{NS}"><messageId>{key}</messageId>{quote}<claim>'
        f"<hospital><code>{hospital['code']}</code><level>{hospital['level']}</level></hospital>"
        f"<visit><id>{visit['id']}</id><type>{visit['type']}</type>"
        f"<admissionDate>{visit['admission_date']}</admissionDate>"
        f"<dischargeDate>{visit['discharge_date']}</dischargeDate><settledAt>{visit['settled_at']}</settledAt></visit>"
        f"<patient><idNumber>{patient['id_number']}</idNumber><name>{patient['name']}</name>"
        f"<scheme>{patient['scheme']}</scheme><region>{patient['region']}</region></patient>"
        f"<lines>{lines}</lines></claim></SettleRequest>")


def eligibility_xml(person: str) -> str:
    return f'<EligibilityRequest xmlns="{NS}"><idNumber>{person}</idNumber></EligibilityRequest>'


def post(live: LiveServer, envelope: bytes, path: str = "/soap",
         content_type: str = "text/xml; charset=utf-8") -> httpx.Response:
    return httpx.post(f"{live.url}{path}", content=envelope, headers={"Content-Type": content_type}, timeout=30)


def fault_of(reply: httpx.Response) -> tuple[int, str, int]:
    """(HTTP status, fault code, the code's status) of a SOAP fault."""
    root = etree.fromstring(reply.content)
    code = root.find(f".//{{{FAULT_NS}}}code")
    status = root.find(f".//{{{FAULT_NS}}}status")
    assert code is not None and status is not None, reply.text
    assert root.find(f".//{{{SOAP11}}}Fault") is not None
    return reply.status_code, str(code.text), int(str(status.text))


def counts(service: Service) -> dict[str, int]:
    with service.app.engine.connect() as connection:
        return {table: connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one() for table in COUNTED}


@contextmanager
def records_nothing(service: Service) -> Iterator[None]:
    before = counts(service)
    yield
    after = counts(service)
    assert {t: after[t] - before[t] for t in COUNTED if after[t] != before[t]} == {}


def settle_envelope(hospital: SoapHospital, header: str, key: str | None = None) -> bytes:
    claim = claim_body(hospital.code, hospital.level, new_id_number())
    return soap_envelope(settle_xml(key or message_id(hospital.code), claim), header)


def token_header(username: str, password_element: str, nonce: bytes | None, created: str | None) -> str:
    """A Security header built piece by piece, for the malformed and plain-text variants."""
    parts = [f"<wsse:Username>{username}</wsse:Username>", password_element]
    if nonce is not None:
        parts.append(f"<wsse:Nonce>{base64.b64encode(nonce).decode()}</wsse:Nonce>")
    if created is not None:
        parts.append(f"<wsu:Created>{created}</wsu:Created>")
    return (f'<soap:Header><wsse:Security xmlns:wsse="{WSSE}" xmlns:wsu="{WSU}"><wsse:UsernameToken>'
            f'{"".join(parts)}</wsse:UsernameToken></wsse:Security></soap:Header>')


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# The digest


def test_a_valid_digest_settles_and_naive_digests_do_not(service: Service, live: LiveServer,
                                                          soap_hospital: SoapHospital) -> None:
    now = service.clock()
    nonce = os.urandom(16)
    created = stamp(now)
    password = soap_hospital.password.encode()
    # Digests a careless client (or a careless server) might compute: each must be refused.
    naive = {
        "without the nonce": hashlib.sha1(created.encode() + password).digest(),
        "without the created time": hashlib.sha1(nonce + password).digest(),
        "of the password alone": hashlib.sha1(password).digest(),
        "over the Base64 nonce": hashlib.sha1(base64.b64encode(nonce) + created.encode() + password).digest(),
        "the password hashed first": hashlib.sha1(nonce + created.encode() + hashlib.sha1(password).digest())
        .digest(),
    }
    for reason, digest in naive.items():
        # The same nonce each time: a refused call does not use it up (it is remembered after the digest).
        header = wsse_header(soap_hospital.code, soap_hospital.password, now, nonce=nonce, digest=digest)
        with records_nothing(service):
            reply = post(live, settle_envelope(soap_hospital, header))
        assert fault_of(reply) == (401, "AUTH_INVALID", 401), reason
    before = counts(service)
    header = wsse_header(soap_hospital.code, soap_hospital.password, now, nonce=nonce)
    assert password_digest(nonce, created, soap_hospital.password) not in naive.values()
    reply = post(live, settle_envelope(soap_hospital, header))
    assert reply.status_code == 200, reply.text
    assert b"<status>settled</status>" in reply.content
    after = counts(service)
    assert after["settlements"] == before["settlements"] + 1
    assert after["soap_exchanges"] == before["soap_exchanges"] + 1
    assert after["wsse_nonces"] == before["wsse_nonces"] + 1


def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(service: Service, live: LiveServer,
                                                                   soap_hospital: SoapHospital) -> None:
    now = service.clock()
    nonce = os.urandom(16)
    other = soap_hospital_for(service)
    with records_nothing(service):
        wrong = post(live, settle_envelope(soap_hospital,
                                           wsse_header(soap_hospital.code, soap_hospital.password + "x", now, nonce)))
        unknown = post(live, settle_envelope(soap_hospital,
                                             wsse_header("HNOSUCHCODE", soap_hospital.password, now, nonce)))
        # Another hospital's password with this hospital's name is a wrong password too.
        crossed = post(live, settle_envelope(soap_hospital,
                                             wsse_header(soap_hospital.code, other.password, now, nonce)))
    assert fault_of(wrong) == (401, "AUTH_INVALID", 401)
    # Nothing tells an unknown user from a wrong password: the same bytes come back.
    assert unknown.content == wrong.content == crossed.content
    assert soap_hospital.password.encode() not in wrong.content


def test_a_plain_text_password_is_refused(service: Service, live: LiveServer, soap_hospital: SoapHospital) -> None:
    created = stamp(service.clock())
    password = soap_hospital.password
    variants = {
        "PasswordText": f'<wsse:Password Type="{TEXT_TYPE}">{password}</wsse:Password>',
        "no Type (PasswordText by default)": f"<wsse:Password>{password}</wsse:Password>",
        "an unknown Type": f'<wsse:Password Type="urn:x#PasswordPlain">{password}</wsse:Password>',
    }
    for reason, element in variants.items():
        header = token_header(soap_hospital.code, element, os.urandom(16), created)
        with records_nothing(service):
            reply = post(live, settle_envelope(soap_hospital, header))
        assert fault_of(reply) == (401, "AUTH_INVALID", 401), reason
        assert b"PasswordDigest" in reply.content or b"plain-text" in reply.content


def test_a_missing_token_is_auth_required(service: Service, live: LiveServer, soap_hospital: SoapHospital) -> None:
    digest = password_digest(b"0123456789abcdef", stamp(service.clock()), soap_hospital.password)
    password = f'<wsse:Password Type="{DIGEST_TYPE}">{base64.b64encode(digest).decode()}</wsse:Password>'
    headers = {
        "no Header": "",
        "an empty Header": "<soap:Header/>",
        "a Security without a token": f'<soap:Header><wsse:Security xmlns:wsse="{WSSE}"/></soap:Header>',
        "a token in the wrong namespace": wsse_header(soap_hospital.code, soap_hospital.password,
                                                      service.clock()).replace(WSSE, "urn:not-wsse"),
        "a token without a password": token_header(soap_hospital.code, "", b"0123456789abcdef",
                                                   stamp(service.clock())),
        "a token without a username": token_header("", password, b"0123456789abcdef", stamp(service.clock())),
    }
    for reason, header in headers.items():
        with records_nothing(service):
            reply = post(live, settle_envelope(soap_hospital, header))
        assert fault_of(reply) == (401, "AUTH_REQUIRED", 401), reason


def test_a_digest_without_nonce_or_created_is_invalid(service: Service, live: LiveServer,
                                                      soap_hospital: SoapHospital) -> None:
    created = stamp(service.clock())
    nonce = os.urandom(16)
    element = (f'<wsse:Password Type="{DIGEST_TYPE}">'
               f"{base64.b64encode(password_digest(nonce, created, soap_hospital.password)).decode()}</wsse:Password>")
    for reason, header in {
        "no nonce": token_header(soap_hospital.code, element, None, created),
        "no created": token_header(soap_hospital.code, element, nonce, None),
        "a created time without its zone": token_header(soap_hospital.code, element, nonce, created[:-1]),
        "a nonce of 4 bytes": token_header(soap_hospital.code, element, nonce[:4], created),
    }.items():
        with records_nothing(service):
            reply = post(live, settle_envelope(soap_hospital, header))
        assert fault_of(reply) == (401, "AUTH_INVALID", 401), reason


# The Created window


def test_created_outside_the_window_is_expired(service: Service, live: LiveServer,
                                               soap_hospital: SoapHospital) -> None:
    start = service.clock()
    for offset, expected in ((WINDOW + timedelta(seconds=1), "AUTH_EXPIRED"),
                             (-WINDOW - timedelta(seconds=1), "AUTH_EXPIRED"),
                             (timedelta(hours=-12), "AUTH_EXPIRED")):
        # The token was made at `start`; the server's clock has moved by `offset` (a negative offset: the
        # client's clock runs ahead of the server's).
        header = wsse_header(soap_hospital.code, soap_hospital.password, start)
        service.clock.now = start + offset
        with records_nothing(service):
            reply = post(live, settle_envelope(soap_hospital, header))
        assert fault_of(reply) == (401, expected, 401), offset
    # Exactly at the edge of the window, either side, is still inside it.
    for offset in (WINDOW, -WINDOW):
        header = wsse_header(soap_hospital.code, soap_hospital.password, start)
        service.clock.now = start + offset
        reply = post(live, settle_envelope(soap_hospital, header))
        assert reply.status_code == 200, (offset, reply.text)


def test_an_expired_token_with_a_wrong_password_is_invalid_not_expired(service: Service, live: LiveServer,
                                                                       soap_hospital: SoapHospital) -> None:
    """The password is checked first: the Created window tells nothing to someone who does not know it."""
    header = wsse_header(soap_hospital.code, "not-the-password", service.clock() - timedelta(hours=1))
    with records_nothing(service):
        reply = post(live, settle_envelope(soap_hospital, header))
    assert fault_of(reply) == (401, "AUTH_INVALID", 401)


# Nonces


def test_a_nonce_is_accepted_once(service: Service, live: LiveServer, soap_hospital: SoapHospital) -> None:
    start = service.clock()
    nonce = os.urandom(16)
    key = message_id(soap_hospital.code)
    claim = claim_body(soap_hospital.code, soap_hospital.level, new_id_number())
    envelope = soap_envelope(settle_xml(key, claim), wsse_header(soap_hospital.code, soap_hospital.password,
                                                                 start, nonce))
    first = post(live, envelope)
    assert first.status_code == 200, first.text
    with records_nothing(service):  # a captured envelope posted again: refused before anything is read
        replayed = post(live, envelope)
    assert fault_of(replayed) == (401, "AUTH_NONCE_REPLAYED", 401)
    # A fresh nonce on the same message is a retry of it: accepted, and the settlement replayed, not repeated.
    before = counts(service)
    retry = post(live, soap_envelope(settle_xml(key, claim), wsse_header(soap_hospital.code, soap_hospital.password,
                                                                         start)))
    assert retry.status_code == 200, retry.text
    assert b"<replayed>true</replayed>" in retry.content
    assert counts(service)["settlements"] == before["settlements"]
    # After the window the captured envelope is expired (its Created is signed) ...
    service.clock.now = start + WINDOW + timedelta(seconds=100)
    with records_nothing(service):
        assert fault_of(post(live, envelope)) == (401, "AUTH_EXPIRED", 401)
    # ... and the same nonce with a fresh Created is still refused: nonces are kept two windows at least (old ones
    # are purged now and then, only when older than that), so a nonce is never accepted twice within them.
    fresh = wsse_header(soap_hospital.code, soap_hospital.password, service.clock(), nonce)
    with records_nothing(service):
        assert fault_of(post(live, soap_envelope(settle_xml(key, claim), fresh))) == (401, "AUTH_NONCE_REPLAYED",
                                                                                      401)
    # Nonces belong to a hospital: another hospital may happen to draw the same one.
    other = soap_hospital_for(service)
    theirs = wsse_header(other.code, other.password, service.clock(), nonce)
    assert post(live, soap_envelope(eligibility_xml(new_id_number()), theirs)).status_code == 200


def test_a_purged_nonce_may_come_back_only_with_a_fresh_digest(service: Service, live: LiveServer,
                                                                soap_hospital: SoapHospital,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Nonces older than two windows are purged now and then (one call in 256, drawn at random; here always):
    after that the nonce is accepted again, but only in a token with a fresh Created, hence a fresh digest that
    needs the password. The captured envelope itself stays expired."""
    import secrets as real

    from settlement.services import soap_access

    start = service.clock()
    nonce = os.urandom(16)
    envelope = soap_envelope(eligibility_xml(new_id_number()),
                             wsse_header(soap_hospital.code, soap_hospital.password, start, nonce))
    assert post(live, envelope).status_code == 200
    monkeypatch.setattr(soap_access, "secrets", SimpleNamespace(randbelow=lambda _: 0,
                                                                token_urlsafe=real.token_urlsafe))
    service.clock.now = start + 2 * WINDOW + timedelta(seconds=1)
    # Any accepted call may purge: this one does.
    other = wsse_header(soap_hospital.code, soap_hospital.password, service.clock())
    assert post(live, soap_envelope(eligibility_xml(new_id_number()), other)).status_code == 200
    with records_nothing(service):
        assert fault_of(post(live, envelope)) == (401, "AUTH_EXPIRED", 401)
    again = wsse_header(soap_hospital.code, soap_hospital.password, service.clock(), nonce)
    assert post(live, soap_envelope(eligibility_xml(new_id_number()), again)).status_code == 200


# Dialect bindings


def _legacy_example_with(header: str) -> tuple[bytes, str] | None:
    """A legacy-gbk example envelope with the header put in, in its own encoding, or None without the dialect."""
    folder = default_adapters_dir() / "legacy-gbk" / "examples"
    requests = sorted(folder.glob("*/request.xml"))
    if not requests:
        return None
    document = etree.parse(str(requests[0]))
    envelope = document.getroot()
    for old in envelope.findall(f"{{{SOAP11}}}Header"):
        envelope.remove(old)
    wrapped = etree.fromstring(f'<soap:Envelope xmlns:soap="{SOAP11}">{header}</soap:Envelope>')
    envelope.insert(0, wrapped[0])
    encoding = str(document.docinfo.encoding or "UTF-8")
    data = etree.tostring(document, xml_declaration=True, encoding=encoding)
    assert isinstance(data, bytes)
    return data, encoding


def test_a_hospital_not_bound_to_the_dialect_is_refused(service: Service, live: LiveServer) -> None:
    unbound = soap_hospital_for(service, [])
    header = wsse_header(unbound.code, unbound.password, service.clock())
    with records_nothing(service):
        reply = post(live, settle_envelope(unbound, header))
    assert fault_of(reply) == (500, "DIALECT_NOT_BOUND", 403)
    # Bound to the standard dialect only, a hospital speaking legacy-gbk is refused the same way.
    standard_only = soap_hospital_for(service, ["standard"])
    if "legacy-gbk" in service.app.dialects.dialects:
        legacy = _legacy_example_with(wsse_header(standard_only.code, standard_only.password, service.clock()))
        assert legacy is not None
        envelope, encoding = legacy
        with records_nothing(service):
            reply = post(live, envelope, content_type=f"text/xml; charset={encoding}")
        assert fault_of(reply) == (500, "DIALECT_NOT_BOUND", 403)
    else:
        header = wsse_header(standard_only.code, standard_only.password, service.clock())
        assert post(live, soap_envelope(eligibility_xml(new_id_number()), header)).status_code == 200
    # Once bound it works (on a server whose principals are not cached from before: they are kept up to 30 s).
    from settlement.services.soap_access import bind_dialects

    bind_dialects(service.app.context, unbound.code, ["standard"], set(service.app.dialects.dialects), "test")
    fresh = start_server(service.app)
    try:
        header = wsse_header(unbound.code, unbound.password, service.clock())
        reply = post(fresh, settle_envelope(unbound, header))
        assert reply.status_code == 200, reply.text
    finally:
        fresh.server.should_exit = True
        fresh.thread.join(timeout=10)


# Passwords


def test_a_reissued_password_revokes_the_old_one(service: Service, live: LiveServer,
                                                 soap_hospital: SoapHospital) -> None:
    old = soap_hospital.password
    ask = eligibility_xml(new_id_number())
    assert post(live, soap_envelope(ask, wsse_header(soap_hospital.code, old, service.clock()))).status_code == 200
    new = issue_password(service.app.context, service.app.cipher, soap_hospital.code, "test")
    assert new != old
    # A running server keeps a hospital's credentials up to 30 s (SoapPrincipals.ttl, monotonic time): a server
    # started now reads them afresh, as every server does within 30 s.
    fresh = start_server(service.app)
    try:
        with records_nothing(service):
            refused = post(fresh, soap_envelope(ask, wsse_header(soap_hospital.code, old, service.clock())))
        assert fault_of(refused) == (401, "AUTH_INVALID", 401)
        accepted = post(fresh, soap_envelope(ask, wsse_header(soap_hospital.code, new, service.clock())))
        assert accepted.status_code == 200, accepted.text
    finally:
        fresh.server.should_exit = True
        fresh.thread.join(timeout=10)
    with service.app.engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT c.revoked_at FROM soap_credentials c JOIN hospitals h ON h.id = c.hospital_id "
            "WHERE h.code = :code ORDER BY c.id"), {"code": soap_hospital.code}).all()
    assert [row[0] is not None for row in rows] == [True, False]


def test_the_stored_password_is_encrypted(service: Service, soap_hospital: SoapHospital) -> None:
    with service.app.engine.connect() as connection:
        (secret,) = connection.execute(text(
            "SELECT c.secret_encrypted FROM soap_credentials c JOIN hospitals h ON h.id = c.hospital_id "
            "WHERE h.code = :code AND c.revoked_at IS NULL"), {"code": soap_hospital.code}).one()
    password = soap_hospital.password
    assert not reveals(secret, password)
    # It decrypts with the application's key, and with no other.
    assert service.app.cipher.decrypt(secret.encode()).decode() == password
    with pytest.raises(InvalidToken):
        Fernet(Fernet.generate_key()).decrypt(secret.encode())
    # The key lives outside the database, readable by its owner only.
    key_file = service.app.settings.data_dir / "credentials.key"
    assert Fernet(key_file.read_text(encoding="ascii").strip().encode()).decrypt(secret.encode()).decode() == password
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def reveals(stored: str, password: str) -> bool:
    """Whether a stored value shows the password: as it is, Base64-encoded or as a hex digest."""
    raw = password.encode()
    shown = (password, base64.b64encode(raw).decode().rstrip("="), base64.urlsafe_b64encode(raw).decode().rstrip("="),
             hashlib.sha256(raw).hexdigest(), raw.hex())
    return any(form in stored for form in shown)


def test_the_reveal_check_catches_naive_storage() -> None:
    """The planted faults: a password stored as it is, merely encoded, or hashed, is seen."""
    password = "Zt3-_q9PpLx7bWv2mN0cK1sR4uY6eA8d"
    raw = password.encode()
    for stored in (password, base64.urlsafe_b64encode(raw).decode(), base64.b64encode(raw).decode(),
                   hashlib.sha256(raw).hexdigest(), f"x{raw.hex()}x"):
        assert reveals(stored, password), stored
    assert not reveals(Fernet(Fernet.generate_key()).encrypt(raw).decode(), password)
