"""WS-Security UsernameToken with a password digest (OASIS UsernameToken Profile 1.0).

    digest = Base64(SHA-1(nonce + created + password))

The created time must be inside the window around the server's clock, and a nonce is accepted once within the
window (settlement.services.soap_access.remember_nonce), so a captured message cannot be replayed. Plain-text
passwords are refused: the digest never reveals the password, even on a connection without TLS.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

from lxml import etree

from settlement.services.errors import ServiceCode, ServiceError

WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
DIGEST_TYPE = ("http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
               "#PasswordDigest")
TEXT_TYPE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText"


@dataclass(frozen=True)
class UsernameToken:
    username: str
    digest: bytes
    nonce: bytes
    created: str  # exactly as sent: it is part of the digest
    created_at: datetime

    @property
    def nonce_key(self) -> str:
        """What the nonce store keeps: a fixed-size fingerprint of the nonce."""
        return hashlib.sha256(self.nonce).hexdigest()


def _text(parent: etree._Element, tag: str) -> str | None:
    child = parent.find(tag)
    return child.text.strip() if child is not None and child.text else None


def read_token(header: etree._Element | None) -> UsernameToken:
    """The UsernameToken of a SOAP Header, or AUTH_REQUIRED / AUTH_INVALID."""
    security = header.find(f"{{{WSSE}}}Security") if header is not None else None
    token = security.find(f"{{{WSSE}}}UsernameToken") if security is not None else None
    if token is None:
        raise ServiceError(ServiceCode.AUTH_REQUIRED,
                           "send a WS-Security UsernameToken with a password digest in the SOAP header")
    username = _text(token, f"{{{WSSE}}}Username")
    password = token.find(f"{{{WSSE}}}Password")
    nonce_text = _text(token, f"{{{WSSE}}}Nonce")
    created = _text(token, f"{{{WSU}}}Created") or _text(token, f"{{{WSSE}}}Created")
    if not username or password is None or not password.text:
        raise ServiceError(ServiceCode.AUTH_REQUIRED, "the UsernameToken needs a Username and a Password")
    if password.get("Type", TEXT_TYPE) != DIGEST_TYPE:
        raise ServiceError(ServiceCode.AUTH_INVALID, "only PasswordDigest is accepted, never a plain-text password")
    if not nonce_text or not created:
        raise ServiceError(ServiceCode.AUTH_INVALID, "a password digest needs a Nonce and a Created time")
    try:
        digest = base64.b64decode(password.text.strip(), validate=True)
        nonce = base64.b64decode(nonce_text, validate=True)
    except (binascii.Error, ValueError):
        raise ServiceError(ServiceCode.AUTH_INVALID, "the password digest and nonce must be Base64") from None
    try:
        created_at = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        raise ServiceError(ServiceCode.AUTH_INVALID, "Created must be an ISO 8601 time with its zone") from None
    if created_at.tzinfo is None:
        raise ServiceError(ServiceCode.AUTH_INVALID, "Created must carry its time zone (e.g. Z)")
    if not 8 <= len(nonce) <= 64:
        raise ServiceError(ServiceCode.AUTH_INVALID, "the nonce must be 8 to 64 bytes")
    return UsernameToken(username[:64], digest, nonce, created, created_at)


def password_digest(nonce: bytes, created: str, password: str) -> bytes:
    return hashlib.sha1(nonce + created.encode("utf-8") + password.encode("utf-8")).digest()  # noqa: S324 - the profile's digest


def check_token(token: UsernameToken, password: str | None, now: datetime, window: timedelta) -> None:
    """Raise unless the digest matches and the created time is inside the window (either side, for clock skew).

    An unknown user and a wrong password give the same answer."""
    if password is None or not hmac.compare_digest(token.digest, password_digest(token.nonce, token.created,
                                                                                   password)):
        raise ServiceError(ServiceCode.AUTH_INVALID, "the username or the password digest is wrong")
    if abs(now - token.created_at) > window:
        raise ServiceError(ServiceCode.AUTH_EXPIRED,
                           f"Created is more than {int(window.total_seconds())} s from the server's time; "
                           "check the clock and send a fresh token")
