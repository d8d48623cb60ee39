"""The address a WSDL gives: the configured public URL, whatever Host header the request carries.

A WSDL that followed the Host header pointed wherever the sender (or a cache it poisoned) wanted; a hospital
system loading it would send its patients' bills there. Over a real server, for every dialect's WSDL: a poisoned
Host gets SETTLEMENT_PUBLIC_URL in every address and schema location; a host on SETTLEMENT_ALLOWED_HOSTS is
followed (for a service reached under several names). The naive variant (the request's host, as before) is kept:
the same check catches it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from lxml import etree
from typer.testing import CliRunner

from settlement.cli.main import app as cli
from settlement.soap.address import AddressError, PublicAddress
from tests.service.conftest import LiveServer, Service, running_service, serving
from tests.service.naive import NaiveAddress

PUBLIC = "https://settlement.example.gov.cn/hub"
WSDL = "http://schemas.xmlsoap.org/wsdl/"
POISONED = ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "settlement.internal:9999",
            "settlement.internal@evil.example", "evil.example/soap#"]
_SAFE = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Service, LiveServer]]:
    with running_service(f"sqlite:///{tmp_path / 'wsdl.sqlite3'}", tmp_path, public_url=PUBLIC + "/",
                         allowed_hosts="settlement.internal:8443, 127.0.0.1") as service, \
            serving(service.app) as live:
        yield service, live


def wsdl_paths(service: Service) -> list[str]:
    names = sorted(service.app.dialects.dialects)
    assert {"standard", "legacy-gbk", "rural-ncms"} <= set(names)
    return ["/soap" if name == "standard" else f"/soap/{name}" for name in names]


def addresses(live: LiveServer, path: str, host: str) -> list[str]:
    """Every address a WSDL names (its service's location, the schemas it imports), fetched with a Host header."""
    reply = httpx.get(f"{live.url}{path}", params={"wsdl": ""}, headers={"Host": host}, timeout=10)
    assert reply.status_code == 200, reply.text[:300]
    document = etree.fromstring(reply.content, _SAFE)
    attributes = document.xpath("//@location | //@schemaLocation")
    assert isinstance(attributes, list)
    found = [str(value) for value in attributes]
    assert any(item.endswith(path) for item in found), found  # the service's own location is among them
    return found


def assert_points_at(found: list[str], base: str) -> None:
    assert found and all(item.startswith(base + "/soap") for item in found), (base, found)


def test_a_poisoned_host_gets_the_configured_address_in_every_wsdl(server: tuple[Service, LiveServer]) -> None:
    service, live = server
    for path in wsdl_paths(service):
        for host in POISONED:
            assert_points_at(addresses(live, path, host), PUBLIC)


def test_an_allowed_host_is_followed(server: tuple[Service, LiveServer]) -> None:
    service, live = server
    port = live.url.rsplit(":", 1)[1]
    for path in wsdl_paths(service):
        assert_points_at(addresses(live, path, "settlement.internal:8443"), "http://settlement.internal:8443")
        assert_points_at(addresses(live, path, "SETTLEMENT.internal:8443"), "http://settlement.internal:8443")
        assert_points_at(addresses(live, path, f"127.0.0.1:{port}"), f"http://127.0.0.1:{port}")  # any port


def test_control_the_naive_address_follows_the_poisoned_host(server: tuple[Service, LiveServer]) -> None:
    service, live = server
    app = live.server.config.app
    assert isinstance(app, FastAPI)
    app.state.soap_address = NaiveAddress()
    for path in wsdl_paths(service):
        found = addresses(live, path, "evil.example")
        assert all(item.startswith("http://evil.example/soap") for item in found), found
        with pytest.raises(AssertionError):
            assert_points_at(found, PUBLIC)


def test_the_configured_address_and_its_default() -> None:
    assert PublicAddress.configured("", "", "0.0.0.0", 8000).default == "http://127.0.0.1:8000"
    assert PublicAddress.configured("", "", "::1", 8001).default == "http://[::1]:8001"
    assert PublicAddress.configured("", "", "10.1.2.3", 80).base("evil.example", "http") == "http://10.1.2.3:80"
    configured = PublicAddress.configured(" https://a.example/x/ ", "a.example, [::1]:8000", "127.0.0.1", 8000)
    assert configured.default == "https://a.example/x"
    assert configured.base("[::1]:8000", "http") == "http://[::1]:8000"
    assert configured.base("[::1]:8001", "http") == "https://a.example/x"
    assert configured.base("a.example.", "https") == "https://a.example"
    assert configured.base(None, "http") == "https://a.example/x"
    for url in ("ftp://a.example", "a.example", "https://", "https://a.example/?x=1", "https://a.example/#top"):
        with pytest.raises(AddressError):
            PublicAddress.configured(url, "", "127.0.0.1", 8000)
    for hosts in ("a.example/x", "user@a.example", "a.example:http", "a b"):
        with pytest.raises(AddressError):
            PublicAddress.configured("", hosts, "127.0.0.1", 8000)


def test_serve_refuses_an_address_it_cannot_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SETTLEMENT_DATABASE_URL", f"sqlite:///{tmp_path / 'serve.sqlite3'}")
    monkeypatch.setenv("SETTLEMENT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SETTLEMENT_PUBLIC_URL", "settlement.example.gov.cn")  # no scheme

    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("the server was started")

    monkeypatch.setattr("uvicorn.run", started)
    result = CliRunner().invoke(cli, ["serve"])
    assert result.exit_code == 3 and "SETTLEMENT_PUBLIC_URL" in result.output, result.output
