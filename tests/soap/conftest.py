"""Fixtures for the SOAP endpoint: the service fixtures (real SQLite and PostgreSQL, a live uvicorn on loopback)
plus a hospital with a WS-Security password bound to every dialect, and builders for raw envelopes."""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass
from datetime import datetime

import pytest

from settlement.services.soap_access import bind_dialects, issue_password
from settlement.soap.wsse import DIGEST_TYPE, WSSE, WSU, password_digest
from tests.service.conftest import (  # noqa: F401 - fixtures shared with the service tests
    Clock,
    LiveServer,
    Service,
    claim_body,
    database_url,
    fresh_pg_url,
    import_roster_rows,
    live,
    new_id_number,
    own_database_url,
    own_service,
    pg_service,
    pg_url,
    service,
)

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"


@dataclass
class SoapHospital:
    code: str
    api_key: str
    password: str
    level: str = "county"


def soap_hospital_for(service: Service, dialects: list[str] | None = None) -> SoapHospital:
    """A new hospital with an API key and a WS-Security password, bound to the named dialects (default: all)."""
    code, key = service.hospital()
    known = set(service.app.dialects.dialects)
    bind_dialects(service.app.context, code, sorted(known) if dialects is None else dialects, known, "test")
    password = issue_password(service.app.context, service.app.cipher, code, "test")
    return SoapHospital(code, key, password)


@pytest.fixture
def soap_hospital(service: Service) -> SoapHospital:
    return soap_hospital_for(service)


def wsse_header(username: str, password: str, created: datetime, nonce: bytes | None = None,
                digest: bytes | None = None) -> str:
    """A SOAP 1.1 Header with a UsernameToken password digest, as zeep and most SOAP stacks send it."""
    nonce = nonce if nonce is not None else os.urandom(16)
    stamp = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = digest if digest is not None else password_digest(nonce, stamp, password)
    return (
        f'<soap:Header><wsse:Security xmlns:wsse="{WSSE}" xmlns:wsu="{WSU}"><wsse:UsernameToken>'
        f"<wsse:Username>{username}</wsse:Username>"
        f'<wsse:Password Type="{DIGEST_TYPE}">{base64.b64encode(digest).decode()}</wsse:Password>'
        f"<wsse:Nonce>{base64.b64encode(nonce).decode()}</wsse:Nonce>"
        f"<wsu:Created>{stamp}</wsu:Created>"
        "</wsse:UsernameToken></wsse:Security></soap:Header>"
    )


def soap_envelope(body: str, header: str = "", encoding: str = "UTF-8") -> bytes:
    """An envelope around a body element (given as XML text), encoded as declared."""
    text = (f'<?xml version="1.0" encoding="{encoding}"?>\n'
            f'<soap:Envelope xmlns:soap="{SOAP11}">{header}<soap:Body>{body}</soap:Body></soap:Envelope>')
    return text.encode("gb18030" if encoding.upper() in ("GBK", "GB2312", "GB18030") else encoding)


def message_id(code: str) -> str:
    return f"{code}-{secrets.token_hex(6)}"
