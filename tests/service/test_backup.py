"""Backups that restore, on both databases: `settlement db backup` taken while clients settle (pg_dump on
PostgreSQL, SQLite's online backup API), restored into a new database as deploy/README.md says (pg_restore; a copy
of the file), then on the restore: `settlement settlements verify` passes, the year figures equal the ledger,
nothing is paid twice, no cap is passed, every settlement in it is the original's byte for byte, and the service
serves from it (a settlement reads back, a resent call replays, a new settlement works, a hospital's SOAP password
works with the credentials key kept apart from the backup, and without that key it does not)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.engine import make_url

from settlement.db.backup import _program
from tests.factories import TARIFFS
from tests.invariants import Calls, bill, engine_for, load, problems
from tests.service.conftest import (
    TEST_SECRET_KEY,
    claim_body,
    import_roster_rows,
    new_id_number,
    running_service,
    scratch_database,
    serving,
)
from tests.service.test_concurrency import ASSISTANCE, ASSISTANCE_CAP_DIBAO, BASIC, BASIC_CAP, capped_tariffs, running
from tests.soap.conftest import soap_envelope, soap_hospital_for, wsse_header
from tests.soap.test_wsse import eligibility_xml

SETTLEMENT = str(Path(sys.executable).parent / "settlement")
CAPS = {BASIC: BASIC_CAP, ASSISTANCE: ASSISTANCE_CAP_DIBAO}


def command(*args: str, url: str, data: Path, tariffs: Path) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("SETTLEMENT_")}
    env.update({"SETTLEMENT_DATABASE_URL": url, "SETTLEMENT_DATA_DIR": str(data), "SETTLEMENT_TARIFFS": str(tariffs),
                "SETTLEMENT_SECRET_KEY": TEST_SECRET_KEY})
    return subprocess.run([SETTLEMENT, *args], env=env, capture_output=True, text=True, timeout=300, check=False)


@contextlib.contextmanager
def restored_from(url: str, backup: Path, tmp: Path) -> Iterator[str]:
    """The backup restored into a new database, as deploy/README.md says; its URL."""
    if make_url(url).get_backend_name() == "sqlite":
        target = tmp / "restored" / "settlement.sqlite3"
        target.parent.mkdir()
        shutil.copyfile(backup / "settlement.sqlite3", target)
        yield f"sqlite:///{target}"
        return
    with contextlib.contextmanager(scratch_database)(f"settlement_restored_{secrets.token_hex(4)}") as new:
        done = subprocess.run([_program("pg_restore"), "--no-owner", "--exit-on-error", "--dbname", new,
                               str(backup / "settlement.dump")], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        yield new


def soap_eligibility(live_url: str, code: str, password: str, clock: Any) -> httpx.Response:
    header = wsse_header(code, password, clock())
    return httpx.post(f"{live_url}/soap", content=soap_envelope(eligibility_xml(new_id_number()), header),
                      headers={"Content-Type": "text/xml; charset=utf-8"}, timeout=30)


def test_a_backup_taken_under_load_restores_and_serves(own_database_url: str, tmp_path: Path) -> None:
    tariffs = capped_tariffs(tmp_path)
    url = own_database_url
    calls = Calls()
    with running(url, tmp_path, tariffs) as (service, live):
        hospital = soap_hospital_for(service, ["standard"])
        persons = [new_id_number() for _ in range(3)]
        import_roster_rows(service, [(person, "dibao_rural_a", "2024-01-01", "") for person in persons])

        def client() -> httpx.Client:
            return httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {hospital.api_key}"},
                                timeout=30)

        def make(index: int, number: int) -> tuple[str, dict[str, Any]]:
            key = f"BK-{index}-{number}-{secrets.token_hex(2)}"
            return key, bill(hospital.code, persons[(index + number) % len(persons)], key, number, claim_body)

        stop = threading.Event()
        threads = load(calls, client, make, 4, stop)
        try:
            wait_for(lambda: len(calls.acknowledged) >= 30)
            taken = command("db", "backup", "--out", str(tmp_path / "backups"), "--keys-out", str(tmp_path / "keys"),
                            url=url, data=tmp_path, tariffs=tariffs)
            assert taken.returncode == 0, taken.stderr
            during = len(calls.acknowledged)
            wait_for(lambda: len(calls.acknowledged) >= during + 20)  # the load went on during and after it
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
        calls.resolve(client)
        assert problems(url, hospital.code, calls, CAPS) == []
        with engine_for(url).connect() as connection:
            original = dict(connection.execute(text("SELECT transaction_id, result FROM settlements")).all())
    backup = next((tmp_path / "backups").iterdir())
    keys = next((tmp_path / "keys").iterdir())
    assert sorted(path.name for path in keys.iterdir()) == ["credentials.key"]  # the secret key is a setting here
    assert not any(path.name.endswith(".key") for path in backup.rglob("*"))  # never beside the database's copy

    with restored_from(url, backup, tmp_path) as restored:
        verified = command("settlements", "verify", "--from", "2024-06-15", "--to", "2024-06-15", url=restored,
                           data=tmp_path / "verify", tariffs=tariffs)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        snapshot = Calls()  # what the restore must hold: a consistent snapshot, whichever calls it caught
        assert problems(restored, hospital.code, snapshot, CAPS, resolved=False) == []
        with engine_for(restored).connect() as connection:
            copied = dict(connection.execute(text("SELECT transaction_id, result FROM settlements")).all())
        assert 30 <= len(copied) < len(original)
        assert {key: original[key] for key in copied} == copied  # byte for byte
        # The service serves from the restore, with the key files kept apart.
        data = tmp_path / "restored-data"
        data.mkdir()
        shutil.copyfile(keys / "credentials.key", data / "credentials.key")
        with running_service(restored, data, tariffs_dir=tariffs) as again, serving(again.app) as live:
            key, text_ = next((k, v) for k, v in copied.items() if k in calls.acknowledged)
            with live.client(hospital.api_key) as rest:
                read = rest.get(f"/v1/settlements/{json.loads(text_)['settlement_id']}")
                assert read.status_code == 200 and read.json()["transaction_id"] == key, read.text
                replayed = rest.post("/v1/settlements", json=calls.bodies[key])
                assert replayed.status_code == 201 and replayed.text == calls.acknowledged[key]
                assert replayed.headers["idempotent-replayed"] == "true"
                fresh = rest.post("/v1/settlements", json=bill(hospital.code, persons[0], "BK-AFTER", 1,
                                                                 claim_body))
                assert fresh.status_code == 201, fresh.text
            assert soap_eligibility(live.url, hospital.code, hospital.password, again.clock).status_code == 200
        # Without the credentials key (lost with a host, or never kept), the SOAP passwords cannot be read.
        lost = tmp_path / "without-keys"
        lost.mkdir()
        with running_service(restored, lost, tariffs_dir=tariffs) as again, serving(again.app) as live:
            refused = soap_eligibility(live.url, hospital.code, hospital.password, again.clock)
            assert refused.status_code != 200 and b"AUTH_" in refused.content, refused.text


def test_the_key_files_are_refused_beside_the_databases_backup(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'settlement.sqlite3'}"
    assert command("db", "upgrade", url=url, data=tmp_path / "data", tariffs=TARIFFS).returncode == 0
    refused = command("db", "backup", "--out", str(tmp_path / "b"), "--keys-out", str(tmp_path / "b" / "keys"),
                      url=url, data=tmp_path / "data", tariffs=TARIFFS)
    assert refused.returncode == 6 and "BACKUP_FAILED" in refused.stderr


def wait_for(check: Any, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "the load did not get that far"
        time.sleep(0.05)


def test_planted_fault_year_figures_apart_from_the_ledger_are_found(service: Any, live: Any) -> None:
    """The restore's checks have teeth: year figures moved off the ledger (as a restore of the tables taken at
    different moments would leave them) are reported."""
    code, key = service.hospital()
    person = new_id_number()
    calls = Calls()
    with live.client(key) as client:
        calls.add("PF-1", bill(code, person, "PF-1", 1, claim_body))
        assert calls.send(client, "PF-1") == 201
    url = service.app.settings.database_url
    assert problems(url, code, calls, CAPS) == []
    with engine_for(url).begin() as connection:
        connection.execute(text("UPDATE fund_years SET paid_fen = paid_fen + 1 WHERE id_number = :p"), {"p": person})
    found = problems(url, code, calls, CAPS)
    assert found and all(problem.startswith("figures:") for problem in found), found
