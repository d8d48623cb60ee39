"""An auditor holding a settlement finds the tariff version it used by its hash (issue 15, item 5): the listings
(`tariffs list/show`, GET /v1/admin/tariffs[/{id}]) show the canonical hash settlements record (the tariff as
resolved, after inheritance, catalogue inlined), per parent version for a county; the stored document's own hash
is shown apart, labelled `document_sha256`. Before, the listings showed only the document's hash, which no
settlement records: the match below failed for every version."""

from __future__ import annotations

import json
import secrets
from typing import Any

from sqlalchemy import text
from typer.testing import CliRunner

from settlement.cli.main import app as cli
from tests.service.conftest import LiveServer, Service, claim_body, new_id_number

runner = CliRunner()


def settle(live: LiveServer, key: str, code: str, region: str) -> dict[str, Any]:
    claim = claim_body(code, "county", new_id_number(region), region=region)
    with live.client(key) as client:
        reply = client.post("/v1/settlements", json={"transaction_id": f"T-{secrets.token_hex(6)}", "claim": claim})
    assert reply.status_code == 201, reply.text
    body: dict[str, Any] = reply.json()
    return body


def recorded_hash(service: Service, settlement_id: str) -> str:
    with service.app.context.uow() as tx:
        return str(tx.session.execute(text("SELECT tariff_sha256 FROM settlements WHERE public_id = :p"),
                                      {"p": settlement_id}).scalar_one())


def matching(views: list[dict[str, Any]], sha256: str) -> list[str]:
    """Every listed version (region/version) showing `sha256`, as its hash or as one of its resolutions'."""
    return [f"{view['region']}/{view['version']}" for view in views
            if sha256 in {view["sha256"], *(resolved["sha256"] for resolved in view.get("resolved", ()))}]


def test_a_settlements_hash_is_found_in_every_listing(cli_env: Service, live: LiveServer) -> None:
    service = cli_env
    code, key = service.hospital("county")
    admin_key = service.staff("admin")
    city = settle(live, key, code, "611002")  # no folder of its own: the city's tariff, 611000
    county = settle(live, key, code, "611021")  # Luonan inherits the city's version
    with live.client(admin_key) as client:
        listed = client.get("/v1/admin/tariffs")
        assert listed.status_code == 200, listed.text
        views: list[dict[str, Any]] = listed.json()
        shown = {view["id"]: client.get(f"/v1/admin/tariffs/{view['id']}").json() for view in views
                 if view["region"] in ("611000", "611021") and view["version"] == "2024-01-01"}
    cli_listed = runner.invoke(cli, ["tariffs", "list", "--json"])
    assert cli_listed.exit_code == 0, cli_listed.output
    cli_views = json.loads(cli_listed.stdout)

    for settled, label in ((city, "611000/2024-01-01"), (county, "611021/2024-01-01")):
        sha256 = settled["tariff"]["sha256"]
        assert recorded_hash(service, settled["settlement_id"]) == sha256
        assert matching(views, sha256) == [label], (label, sha256)
        assert matching(list(shown.values()), sha256) == [label]
        assert matching(cli_views, sha256) == [label]
        view = next(v for v in views if f"{v['region']}/{v['version']}" == label)
        # One city version in force: one resolution, and `sha256` is it; the stored document's hash is another.
        assert view["sha256"] == sha256
        assert view["resolved"][0] == {"with": "611000/2024-01-01" if label.startswith("611021") else None,
                                       "sha256": sha256, "version": settled["tariff"]["version"]}
        # The county inherits the city's shipped 2025 version too, from its start: a second resolution.
        assert [item["with"] for item in view["resolved"][1:]] == (
            ["611000/2025-01-01"] if label.startswith("611021") else [])
        assert view["document_sha256"] != sha256 and len(view["document_sha256"]) == 64
        printed = runner.invoke(cli, ["tariffs", "show", label])
        assert printed.exit_code == 0, printed.output
        assert f"sha256 {sha256}  as settlements record it: {settled['tariff']['version']}" in \
            printed.output.replace("\n", "")
        assert f"document sha256 {view['document_sha256']}" in printed.output.replace("\n", "")
    table = runner.invoke(cli, ["tariffs", "list"], terminal_width=200)
    assert table.exit_code == 0 and city["tariff"]["sha256"][:12] in table.output, table.output
    assert county["tariff"]["version"] == "2024-01-01+611000@2024-01-01"
