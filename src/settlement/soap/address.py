"""The address a WSDL gives hospitals: the configured public URL, never whatever Host header a request carries.

A WSDL that followed the Host header let anyone obtain (and a cache keep) a service description pointing at a
server of their choosing. The request's own host is used only when it is one of the allowed host names
(SETTLEMENT_ALLOWED_HOSTS: `name` for any port, `name:port` for one), for a service reached under several names;
anything else gets the configured address (SETTLEMENT_PUBLIC_URL, default http://HOST:PORT of the service).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

_HOST = re.compile(r"^(?P<name>\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?$")
_WILDCARD_BINDS = {"", "0.0.0.0", "::", "[::]"}  # noqa: S104 - recognised here, never bound


class AddressError(ValueError):
    """A public URL or allowed host that cannot be used: the service refuses to start on it."""


def _split(host: str) -> tuple[str, str | None] | None:
    """(name, port) of a Host header value, lower-cased, or None when it is not a host name with an optional port."""
    match = _HOST.match(host.strip().lower())
    if match is None:
        return None
    return match["name"].rstrip("."), match["port"]


@dataclass(frozen=True)
class PublicAddress:
    default: str  # scheme://host[:port][/prefix], without a trailing slash
    allowed: frozenset[tuple[str, str | None]]  # (name, port or None for any port)

    @classmethod
    def configured(cls, public_url: str, allowed_hosts: str, host: str, port: int) -> PublicAddress:
        if public_url.strip():
            default = public_url.strip().rstrip("/")
            parts = urlsplit(default)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
                raise AddressError(f"SETTLEMENT_PUBLIC_URL must be http(s)://host[:port][/path], not {public_url!r}")
        else:
            bound = "127.0.0.1" if host in _WILDCARD_BINDS else f"[{host}]" if ":" in host else host
            default = f"http://{bound}:{port}"
        allowed = set()
        for entry in filter(None, (item.strip() for item in allowed_hosts.split(","))):
            split = _split(entry)
            if split is None:
                raise AddressError(f"SETTLEMENT_ALLOWED_HOSTS: {entry!r} is not a host name (with an optional port)")
            allowed.add(split)
        return cls(default, frozenset(allowed))

    def base(self, host_header: str | None, scheme: str) -> str:
        """The base URL of the service for a request: its own Host when allowed, else the configured address."""
        split = _split(host_header) if host_header else None
        if split is not None and (split in self.allowed or (split[0], None) in self.allowed):
            name, port = split
            return f"{scheme}://{name}" + (f":{port}" if port else "")
        return self.default
