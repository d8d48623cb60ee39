"""Keys and passwords have a life (issue 15, item 6): administrators list, add, revoke and rotate keys and disable
hospitals, over REST and at the command line; one person holds one active key per role; every change counts on
the server within a second (the credentials generation; the several-worker run is test_credentials_workers.py).
Both databases.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import text
from typer.testing import CliRunner

from settlement.cli.main import app as cli
from settlement.db.engine import make_engine
from settlement.db.migrate import upgrade
from settlement.services import admin
from settlement.services.auth import Caller, CallerCache, CredentialsWatch, authenticate
from settlement.services.errors import ServiceError
from settlement.services.soap_access import bind_dialects, issue_password
from tests.service.conftest import LiveServer, Service, act_as, new_id_number
from tests.service.test_api import assert_problem
from tests.soap.conftest import soap_envelope, wsse_header
from tests.soap.test_wsse import eligibility_xml, fault_of, post

runner = CliRunner()
WITHIN = 1.0
WINDOW = {"from": "2024-06-01", "to": "2024-06-01"}
COUNTED = ("principals", "hospitals", "audit_log", "soap_credentials")


def counts(service: Service) -> dict[str, int]:
    with service.app.engine.connect() as connection:
        return {table: connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one() for table in COUNTED}


def within_a_second(check: Callable[[], bool]) -> float:
    """Seconds until `check` holds; fails if it does not within WITHIN."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < WITHIN, "not within a second"
        time.sleep(0.02)
    return time.monotonic() - start


def status(live: LiveServer, key: str) -> int:
    with live.client(key) as client:
        return client.get("/v1/settlements", params=WINDOW).status_code


def last_audit(service: Service, action: str) -> tuple[str, str]:
    with service.app.engine.connect() as connection:
        row = connection.execute(text("SELECT actor, entity_id FROM audit_log WHERE action = :a ORDER BY id DESC"),
                                 {"a": action}).first()
    assert row is not None, action
    return str(row[0]), str(row[1])


# The watch and the caches, on a clock the test moves


class Ticking:
    def __init__(self) -> None:
        self.now = 100.0
        self.generation = 1
        self.reads = 0

    def clock(self) -> float:
        return self.now

    def read(self) -> int:
        self.reads += 1
        return self.generation


def test_the_watch_reads_the_generation_at_most_once_per_interval() -> None:
    database = Ticking()
    watch = CredentialsWatch(database.read, interval=0.5, clock=database.clock)
    assert watch.fresh() is None  # nothing read yet: no cache may answer
    assert watch.current() == 1 and database.reads == 1
    for _ in range(100):  # requests within the interval: no query
        database.now += 0.004
        assert watch.fresh() == 1 and watch.current() == 1
    assert database.reads == 1
    database.generation = 2  # a revocation commits
    database.now += 0.2  # 0.6 s after the read: stale
    assert watch.fresh() is None
    assert watch.current() == 2 and database.reads == 2


def test_a_cached_caller_is_given_only_under_its_generation() -> None:
    cache = CallerCache()
    caller = Caller(1, "hospital", "H1", 1, "H1", "county")
    cache.put("stl_x_y", caller, 7, now=0.0)
    assert cache.get("stl_x_y", 7, now=1.0) == caller
    assert cache.get("stl_x_y", 8, now=1.0) is None  # the generation moved: ask the database again
    assert cache.get("stl_x_y", 7, now=31.0) is None  # and never older than its time to live


# Over REST


def test_administrators_list_add_revoke_and_rotate_keys(service: Service, live: LiveServer) -> None:
    admin_key = service.staff("admin")
    code, hospital_key = service.hospital()
    assert status(live, hospital_key) == 200  # cached by this worker from now on
    with live.client(admin_key) as client:
        listed = client.get("/v1/admin/keys", params={"kind": "hospital"})
        assert listed.status_code == 200, listed.text
        mine = next(key for key in listed.json() if key["hospital"] == code)
        assert (mine["kind"], mine["name"], mine["state"]) == ("hospital", code, "active")
        assert hospital_key.startswith(mine["prefix"]) and hospital_key not in listed.text  # never the secret

        # One person, one active key per role: a second is a conflict, and nothing is recorded.
        name = f"会计{new_id_number()[-6:]}"
        assert client.post("/v1/admin/keys", json={"kind": "finance", "name": name}).status_code == 201
        before = counts(service)
        assert_problem(client.post("/v1/admin/keys", json={"kind": "finance", "name": name}), 409,
                       "PRINCIPAL_EXISTS")
        assert counts(service) == before

        # Rotation: the old key is refused within a second, the new one works at once.
        rotated = client.post(f"/v1/admin/keys/{mine['id']}/rotation")
        assert rotated.status_code == 201, rotated.text
        new_key = rotated.json()["key"]
        assert status(live, new_key) == 200
        within_a_second(lambda: status(live, hospital_key) == 401)
        assert last_audit(service, "principal.rotate")[0].startswith("admin:")

        # Revocation, twice: the second is KEY_REVOKED; an unknown id is 404.
        new_id = rotated.json()["id"]
        assert client.post(f"/v1/admin/keys/{new_id}/revocation").json()["state"] == "revoked"
        within_a_second(lambda: status(live, new_key) == 401)
        assert_problem(client.post(f"/v1/admin/keys/{new_id}/revocation"), 409, "KEY_REVOKED")
        assert_problem(client.post("/v1/admin/keys/2147483647/revocation"), 404, "NOT_FOUND")
        revoked = client.get("/v1/admin/keys", params={"kind": "hospital", "revoked": "true"}).json()
        assert {key["id"]: key["state"] for key in revoked if key["hospital"] == code} == {
            mine["id"]: "revoked", new_id: "revoked"}

    # Only administrators.
    for other in (service.staff("finance"), service.hospital()[1]):
        with live.client(other) as client:
            assert_problem(client.get("/v1/admin/keys"), 403, "FORBIDDEN")
            assert_problem(client.post(f"/v1/admin/keys/{mine['id']}/rotation"), 403, "FORBIDDEN")


def test_a_disabled_hospital_is_refused_over_rest_and_soap_until_enabled(service: Service, live: LiveServer) -> None:
    admin_key = service.staff("admin")
    code, key = service.hospital()
    bind_dialects(service.app.context, code, ["standard"], set(service.app.dialects.dialects), "test")
    password = issue_password(service.app.context, service.app.cipher, code, "test")

    def soap_status() -> int:
        reply = post(live, soap_envelope(eligibility_xml(new_id_number()), wsse_header(code, password,
                                                                                         service.clock())))
        return 200 if reply.status_code == 200 else fault_of(reply)[2]  # the code's status (HTTP: WS-I's 500)

    assert status(live, key) == 200 and soap_status() == 200
    with live.client(admin_key) as client:
        disabled = client.post(f"/v1/admin/hospitals/{code}/disablement")
        assert disabled.status_code == 200 and disabled.json()["enabled"] is False
        within_a_second(lambda: status(live, key) == 403)
        within_a_second(lambda: soap_status() == 403)
        with live.client(key) as hospital:
            assert_problem(hospital.get("/v1/settlements", params=WINDOW), 403, "HOSPITAL_DISABLED")
        reply = post(live, soap_envelope(eligibility_xml(new_id_number()), wsse_header(code, password,
                                                                                         service.clock())))
        assert fault_of(reply) == (500, "HOSPITAL_DISABLED", 403)  # a fault travels with HTTP 500 (WS-I)
        assert client.post(f"/v1/admin/hospitals/{code}/disablement").json()["changed"] is False
        assert client.post(f"/v1/admin/hospitals/{code}/enablement").json()["enabled"] is True
        within_a_second(lambda: status(live, key) == 200)
        within_a_second(lambda: soap_status() == 200)
        assert_problem(client.post("/v1/admin/hospitals/HNOSUCH/disablement"), 404, "NOT_FOUND")
        assert_problem(client.post("/v1/admin/hospitals/H%00X/disablement"), 422, "REQUEST_MALFORMED")
    assert last_audit(service, "hospital.disable") == (last_audit(service, "hospital.enable")[0], code)


def test_a_new_soap_password_over_rest_replaces_the_old_one_within_a_second(service: Service,
                                                                          live: LiveServer) -> None:
    admin_key = service.staff("admin")
    code, _ = service.hospital()
    bind_dialects(service.app.context, code, ["standard"], set(service.app.dialects.dialects), "test")
    old = issue_password(service.app.context, service.app.cipher, code, "test")

    def accepted(password: str) -> bool:
        reply = post(live, soap_envelope(eligibility_xml(new_id_number()), wsse_header(code, password,
                                                                                         service.clock())))
        return reply.status_code == 200

    assert accepted(old)  # cached
    with live.client(admin_key) as client:
        issued = client.post(f"/v1/admin/hospitals/{code}/soap-password")
    assert issued.status_code == 201, issued.text
    new = issued.json()["password"]
    within_a_second(lambda: accepted(new))
    within_a_second(lambda: not accepted(old))


def test_a_key_revoked_by_sql_is_refused_within_a_second(service: Service, live: LiveServer) -> None:
    _, key = service.hospital()
    assert status(live, key) == 200
    with service.app.engine.begin() as connection:
        connection.execute(text("UPDATE principals SET revoked_at = :now WHERE key_prefix = :prefix"),
                           {"now": datetime.now(UTC), "prefix": key.split("_")[1]})
    within_a_second(lambda: status(live, key) == 401)


# At the command line, with an administrator's own key


def test_keys_and_hospitals_commands(cli_env: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    service = cli_env
    administrator = act_as(service, monkeypatch)
    code, hospital_key = service.hospital()
    key_id = next(key["id"] for key in admin.list_keys(service.app.context, kind="hospital") if key["name"] == code)

    listed = runner.invoke(cli, ["keys", "list", "--kind", "hospital", "--json"])
    assert listed.exit_code == 0, listed.output
    assert any(key["id"] == key_id for key in json.loads(listed.stdout))
    assert hospital_key not in listed.output

    rotated = runner.invoke(cli, ["keys", "rotate", str(key_id)])
    assert rotated.exit_code == 0, rotated.output
    new_key = rotated.output.split("(shown once): ")[1].split()[0]
    with service.app.context.uow() as tx:
        assert authenticate(tx.repo, new_key).hospital_code == code
        with pytest.raises(ServiceError, match="AUTH_INVALID"):
            authenticate(tx.repo, hospital_key)
    assert last_audit(service, "principal.rotate") == (administrator, str(key_id))

    new_id = next(key["id"] for key in admin.list_keys(service.app.context, kind="hospital") if key["name"] == code)
    assert runner.invoke(cli, ["keys", "revoke", str(new_id)]).exit_code == 0
    again = runner.invoke(cli, ["keys", "revoke", str(new_id)])
    assert again.exit_code == 2 and "KEY_REVOKED" in again.output

    disabled = runner.invoke(cli, ["hospitals", "disable", code])
    assert disabled.exit_code == 0 and f"hospital {code} disabled" in disabled.output
    assert last_audit(service, "hospital.disable") == (administrator, code)
    enabled = runner.invoke(cli, ["hospitals", "enable", code])
    assert enabled.exit_code == 0 and f"hospital {code} enabled" in enabled.output

    person = f"出纳{new_id_number()[-6:]}"
    assert runner.invoke(cli, ["keys", "add", "finance", person]).exit_code == 0
    twice = runner.invoke(cli, ["keys", "add", "finance", person])
    assert twice.exit_code == 2 and "PRINCIPAL_EXISTS" in twice.output


def test_a_typed_name_cannot_act_and_a_wrong_or_revoked_key_records_nothing(
        cli_env: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    service = cli_env
    act_as(service, monkeypatch)
    code, hospital_key = service.hospital()
    revoked = service.staff("admin")
    revoked_id = next(key["id"] for key in admin.list_keys(service.app.context, kind="admin")
                      if revoked.startswith(key["prefix"]))
    admin.revoke_key(service.app.context, revoked_id, "admin:test")
    valid = act_as(service, monkeypatch)
    altered = hospital_key[:-1] + ("A" if hospital_key[-1] != "A" else "B")
    attempts = [
        ({}, ["hospitals", "disable", code, "--by", "admin:someone"], "No such option"),  # a name is no option here
        ({"SETTLEMENT_KEY": ""}, ["hospitals", "disable", code], "AUTH_REQUIRED"),
        ({"SETTLEMENT_KEY": "stl_garbage"}, ["hospitals", "disable", code], "AUTH_INVALID"),
        ({"SETTLEMENT_KEY": altered}, ["keys", "revoke", "1"], "AUTH_INVALID"),
        ({"SETTLEMENT_KEY": revoked}, ["hospitals", "disable", code], "AUTH_INVALID"),
        ({"SETTLEMENT_KEY": hospital_key}, ["hospitals", "disable", code], "FORBIDDEN"),
        ({"SETTLEMENT_KEY": service.staff("finance")}, ["keys", "add", "finance", "x"], "FORBIDDEN"),
        ({}, ["discrepancies", "resolve", "1", "--action", "write_off", "--note", "n", "--by", "张会计"],
         "--by is gone"),
        ({}, ["tariffs", "approve", "1", "--by", "demo-approver"], "--by is gone"),
    ]
    for env, arguments, said in attempts:
        before = counts(service)
        result = runner.invoke(cli, arguments, env=env or None)
        assert result.exit_code == 2, (arguments, result.output)
        assert said in result.output.replace("\n", " "), (arguments, result.output)
        assert counts(service) == before, arguments

    # --key-file instead of the environment; a file others can read is warned about.
    monkeypatch.delenv("SETTLEMENT_KEY")
    key_file = tmp_path / "my.key"
    key_file.write_text(service.staff("admin") + "\n", encoding="utf-8")
    key_file.chmod(0o644)
    result = runner.invoke(cli, ["hospitals", "disable", code, "--key-file", str(key_file)])
    assert result.exit_code == 0 and "readable by other users" in result.output, result.output
    assert last_audit(service, "hospital.disable")[0] != valid  # the file's holder, not the environment's
    key_file.chmod(0o600)
    result = runner.invoke(cli, ["hospitals", "enable", code, "--key-file", str(key_file)])
    assert result.exit_code == 0 and "readable" not in result.output


def test_the_first_administrator_is_the_operators_bootstrap(own_service: Service, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.service.conftest import point_cli_at

    service = point_cli_at(own_service, tmp_path, monkeypatch)
    first = runner.invoke(cli, ["keys", "add", "admin", "root"])
    assert first.exit_code == 0, first.output
    root_key = first.output.split("(shown once): ")[1].split()[0]
    assert last_audit(service, "principal.create") == ("system", "root")
    # Once an administrator exists, a key is needed, and the one who adds is recorded.
    second = runner.invoke(cli, ["keys", "add", "admin", "deputy"])
    assert second.exit_code == 2 and "AUTH_REQUIRED" in second.output
    second = runner.invoke(cli, ["keys", "add", "admin", "deputy"], env={"SETTLEMENT_KEY": root_key})
    assert second.exit_code == 0, second.output
    assert last_audit(service, "principal.create") == ("admin:root", "deputy")
    finance = runner.invoke(cli, ["keys", "add", "finance", "frank"])
    assert finance.exit_code == 2 and "AUTH_REQUIRED" in finance.output


# The migration


def test_the_migration_keeps_each_persons_newest_key_and_watches_every_change(own_database_url: str) -> None:
    engine = make_engine(own_database_url)
    try:
        upgrade(engine, "0006")
        principals = sa.table("principals", *(sa.column(name) for name in (
            "kind", "name", "hospital_id", "key_prefix", "key_hash", "created_at")))
        now = datetime(2024, 6, 1, tzinfo=UTC)
        stamp = now.replace(tzinfo=None) if engine.dialect.name == "sqlite" else now
        with engine.begin() as connection:
            connection.execute(principals.insert(), [
                {"kind": "admin", "name": "alice", "hospital_id": None, "key_prefix": f"a{n}", "key_hash": "x",
                 "created_at": stamp} for n in range(3)] + [
                {"kind": "finance", "name": "alice", "hospital_id": None, "key_prefix": "f0", "key_hash": "x",
                 "created_at": stamp}])
        upgrade(engine)
        with engine.begin() as connection:
            active = connection.execute(text("SELECT kind, key_prefix FROM principals WHERE revoked_at IS NULL "
                                             "ORDER BY kind")).all()
            assert [tuple(row) for row in active] == [("admin", "a2"), ("finance", "f0")]
            audited = connection.execute(text("SELECT actor, entity_id FROM audit_log WHERE action = "
                                              "'principal.revoke'")).all()
            assert len(audited) == 2 and {row[0] for row in audited} == {"system"}
            generation = connection.execute(text("SELECT generation FROM credentials_generation")).scalar_one()
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:  # one active key per person
            connection.execute(principals.insert(), [{"kind": "admin", "name": "alice", "hospital_id": None,
                                                      "key_prefix": "a9", "key_hash": "x", "created_at": stamp}])
        with engine.begin() as connection:  # a change by hand moves the generation (a new key does not)
            connection.execute(text("UPDATE principals SET revoked_at = created_at WHERE key_prefix = 'a2'"))
            moved = connection.execute(text("SELECT generation FROM credentials_generation")).scalar_one()
        assert moved > generation
    finally:
        engine.dispose()


def test_rotation_is_refused_for_no_one_and_names_are_checked(service: Service) -> None:
    with pytest.raises(ServiceError, match="NOT_FOUND"):
        admin.rotate_key(service.app.context, 2**31 - 1, "admin:test")
    for name in ("", " ", "x" * 129, "a\nb"):
        with pytest.raises(ServiceError, match="REQUEST_MALFORMED"):
            admin.add_staff(service.app.context, "finance", name, "admin:test")
    with pytest.raises(ServiceError, match="REQUEST_MALFORMED"):
        admin.add_staff(service.app.context, "hospital", "x", "admin:test")


def test_openapi_documents_the_admin_key_routes(live: LiveServer) -> None:
    paths = httpx.get(f"{live.url}/openapi.json").json()["paths"]
    for path in ("/v1/admin/keys", "/v1/admin/keys/{key_id}/revocation", "/v1/admin/keys/{key_id}/rotation",
                 "/v1/admin/hospitals/{code}/disablement", "/v1/admin/hospitals/{code}/enablement",
                 "/v1/admin/hospitals/{code}/soap-password"):
        assert path in paths, path
