"""What the envelope log keeps (both databases): a refused message only as its size, sha256 and a short masked
prefix, whatever its size; a long envelope truncated, with the size and hash of the whole; and a retention, with
a purge the append-only guard lets through and nothing else."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from settlement.cli.main import app as cli
from settlement.jobs.scheduler import Jobs
from settlement.services.errors import ServiceError
from settlement.services.reconciliation import Reconciler
from settlement.services.soap_access import purge_exchanges, record_exchange
from settlement.soap.gateway import REFUSED_REPLY_CHARS, REFUSED_REQUEST_CHARS, Gateway
from tests.service.conftest import Service, new_id_number, point_cli_at
from tests.soap.conftest import soap_envelope, soap_hospital_for, wsse_header
from tests.soap.test_bad_input import GBK, Call, gateway_of, handle, legacy_envelope, legacy_input
from tests.soap.test_wsse import NS

FORBIDDEN = '<!DOCTYPE input [<!ENTITY xxe SYSTEM "file:///nonexistent/secret.txt">]>'


@pytest.fixture
def own(own_service: Service) -> Service:
    """A service on a database of its own: the tests measure and delete whole tables."""
    return own_service


def hostile(kind: str, size: int, header: str, person: str) -> Call:
    """An authenticated legacy call whose inner message is refused, padded to about `size` bytes."""
    padding = "A" * size
    if kind == "forbidden":
        inner = legacy_input(FORBIDDEN, f"{person}{padding}")
    elif kind == "deep":
        inner = legacy_input("", "<a>" * 80 + f"{person}{padding}" + "</a>" * 80)
    else:  # malformed: an element never closed
        inner = legacy_input("", f"<prm_aac003>王喆 {person}{padding}")
    return Call(legacy_envelope(inner, header), GBK)


def log_size(service: Service) -> tuple[int, int]:
    """(rows, bytes of their request and reply text) of the envelope log."""
    if service.app.engine.dialect.name == "postgresql":
        sizes = "coalesce(sum(octet_length(request) + octet_length(reply)), 0)"
    else:
        sizes = "coalesce(sum(length(CAST(request AS BLOB)) + length(CAST(reply AS BLOB))), 0)"
    with service.app.engine.connect() as connection:
        rows, size = connection.execute(text(f"SELECT count(*), {sizes} FROM soap_exchanges")).one()
    return int(rows), int(size)


def test_a_flood_of_refused_bodies_grows_the_log_by_a_bounded_size_per_exchange(own: Service) -> None:
    hospital = soap_hospital_for(own)
    gateway = gateway_of(own.app)
    person = new_id_number()
    growth: dict[int, float] = {}
    for size in (1_000, 300_000):  # the body 300 times larger: the row must not grow with it
        before = log_size(own)
        for kind in ("forbidden", "deep", "malformed") * 4:
            handle(gateway, hostile(kind, size, wsse_header(hospital.code, hospital.password, own.clock()), person))
        after = log_size(own)
        assert set(outcomes(own)[-12:]) == {"XML_FORBIDDEN", "XML_TOO_DEEP", "XML_MALFORMED"}
        assert after[0] - before[0] == 12
        growth[size] = (after[1] - before[1]) / 12
        print(f"refused bodies of about {size:,} bytes: 12 rows, {after[1] - before[1]:,} bytes of text, "
              f"{growth[size]:,.0f} bytes per row")
    # What a refused row may hold: a 256-character prefix and a 1,024-character fault (up to 3 bytes a character
    # in UTF-8), and the notes; nothing in proportion to the body.
    assert max(growth.values()) <= 3 * (REFUSED_REQUEST_CHARS + REFUSED_REPLY_CHARS) + 200
    assert abs(growth[300_000] - growth[1_000]) <= 64
    with own.app.engine.connect() as connection:
        rows = connection.execute(text("SELECT request, reply, request_bytes, request_sha256, outcome "
                                       "FROM soap_exchanges ORDER BY id")).all()
    big = rows[-1]
    assert big.request_bytes > 300_000 and len(big.request_sha256) == 64
    for row in rows:
        assert person not in row.request and person[6:14] not in row.request and "王喆" not in row.request
        assert "characters; the first 256 kept]" in row.request


def test_the_prefix_keeps_no_part_of_a_number_it_cuts(own: Service) -> None:
    """An ID number split by the cut leaves none of its digits: the window is masked, the run into the cut
    dropped (the number is placed to start 10 characters before the cut)."""
    hospital = soap_hospital_for(own)
    gateway = gateway_of(own.app)

    def send(content: str) -> str:
        inner = legacy_input("", f"</prm_aac002><prm_aae013>{content}")  # never closed: XML_MALFORMED
        handle(gateway, Call(legacy_envelope(inner, wsse_header(hospital.code, hospital.password, own.clock())),
                             GBK))
        with own.app.engine.connect() as connection:
            return str(connection.execute(text("SELECT request FROM soap_exchanges ORDER BY id DESC")).scalars()
                       .first())

    offset = send("MARK").index("MARK")
    person = new_id_number()
    stored = send("B" * (REFUSED_REQUEST_CHARS - offset - 10) + person + "C" * 50)
    assert "B" * 20 in stored and "C" not in stored  # the number was indeed split by the cut
    assert person[:10] not in stored and person[6:10] not in stored


def test_a_long_accepted_envelope_is_kept_truncated_with_its_size_and_hash(own: Service) -> None:
    hospital = soap_hospital_for(own)
    gateway: Gateway = gateway_of(own.app)
    gateway.log_max_chars = 2_000
    person = new_id_number()
    small = soap_envelope(f'<EligibilityRequest xmlns="{NS}"><idNumber>{person}</idNumber></EligibilityRequest>',
                          wsse_header(hospital.code, hospital.password, own.clock()))
    padded = wsse_header(hospital.code, hospital.password, own.clock()).replace(
        "</soap:Header>", '<x:Note xmlns:x="urn:note">' + "z" * 5_000 + "</x:Note></soap:Header>")
    long = soap_envelope(f'<EligibilityRequest xmlns="{NS}"><idNumber>{person}</idNumber></EligibilityRequest>',
                         padded)
    for raw in (small, long):
        assert handle(gateway, Call(raw, "text/xml; charset=UTF-8")).status == 200
    with own.app.engine.connect() as connection:
        rows = connection.execute(text("SELECT request, reply, request_bytes, request_sha256, reply_bytes, "
                                       "reply_sha256, outcome FROM soap_exchanges ORDER BY id")).all()
    kept, cut = rows
    assert kept.outcome == cut.outcome == "ok"
    assert "kept]" not in kept.request and kept.request_bytes == len(small)
    assert kept.request_sha256 == hashlib.sha256(small).hexdigest()
    assert cut.request.endswith("characters; the first 2,000 kept]") and len(cut.request) < 2_100
    assert cut.request_bytes == len(long) and cut.request_sha256 == hashlib.sha256(long).hexdigest()
    assert kept.reply_bytes > 0 and len(kept.reply_sha256) == 64
    assert person not in kept.request + cut.request


def exchange(service: Service, at: datetime, hospital_id: int, outcome: str) -> None:
    service.clock.now = at
    record_exchange(service.app.context, {
        "hospital_id": hospital_id, "dialect": "standard", "operation": "eligibility", "code": "-",
        "message_id": None, "settlement_id": None, "outcome": outcome, "request": "<r/>", "reply": "<r/>",
        "request_bytes": 4, "request_sha256": "0" * 64, "reply_bytes": 4, "reply_sha256": "0" * 64})


def hospital_id_of(service: Service, code: str) -> int:
    with service.app.context.uow() as tx:
        found = tx.repo.hospital_by_code(code)
        assert found is not None
        return found.id


def outcomes(service: Service) -> list[str]:
    with service.app.engine.connect() as connection:
        return list(connection.execute(text("SELECT outcome FROM soap_exchanges ORDER BY id")).scalars())


def refused(service: Service, statement: str, **params: Any) -> str:
    with pytest.raises(DBAPIError) as caught, service.app.engine.begin() as connection:
        connection.execute(text(statement), params)
    return str(caught.value)


def test_the_purge_removes_only_rows_past_the_retention(own: Service) -> None:
    hospital = soap_hospital_for(own)
    hospital_id = hospital_id_of(own, hospital.code)
    now = own.clock()
    for days, name in ((400, "old"), (181, "past"), (179, "within"), (10, "recent"), (0, "today")):
        exchange(own, now - timedelta(days=days), hospital_id, name)
    own.clock.now = now
    assert purge_exchanges(own.app.context, 180, batch=1).rows == 2  # batches of one: a loop of transactions
    assert outcomes(own) == ["within", "recent", "today"]
    assert purge_exchanges(own.app.context, 180).rows == 0  # again: nothing more
    with pytest.raises(ServiceError, match="at least 30 days"):
        purge_exchanges(own.app.context, 29)
    assert outcomes(own) == ["within", "recent", "today"]
    # The guard still refuses everything else: a DELETE of any row, old or recent, and any UPDATE.
    for statement in ("DELETE FROM soap_exchanges WHERE outcome = 'today'", "DELETE FROM soap_exchanges",
                      "UPDATE soap_exchanges SET request = '' WHERE outcome = 'within'"):
        assert "APPEND_ONLY" in refused(own, statement)
    assert outcomes(own) == ["within", "recent", "today"]


def test_the_database_refuses_a_purge_of_rows_younger_than_thirty_days(own: Service) -> None:
    """Whatever the application asks: a row of the last 30 days (by the database's clock) stays."""
    hospital = soap_hospital_for(own)
    hospital_id = hospital_id_of(own, hospital.code)
    exchange(own, datetime.now(UTC) - timedelta(days=1), hospital_id, "yesterday")
    with pytest.raises(DBAPIError, match=r"RETENTION_TOO_SHORT|APPEND_ONLY"), own.app.context.uow() as tx:
        tx.repo.purge_exchanges(datetime.now(UTC) + timedelta(days=1), 100)
    assert outcomes(own) == ["yesterday"]
    # The planted contrast: the same purge with a cutoff 31 days back goes through (and finds nothing to do).
    with own.app.context.uow() as tx:
        assert tx.repo.purge_exchanges(datetime.now(UTC) - timedelta(days=31), 100) == 0
        tx.commit()


def test_the_command_and_the_scheduler_purge(own: Service, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    hospital = soap_hospital_for(own)
    hospital_id = hospital_id_of(own, hospital.code)
    real_now = datetime.now(UTC)
    for days, name in ((200, "a"), (190, "b"), (100, "c"), (2, "d")):
        exchange(own, real_now - timedelta(days=days), hospital_id, name)
    point_cli_at(own, tmp_path, monkeypatch)
    runner = CliRunner()
    result = runner.invoke(cli, ["soap", "purge-exchanges"])
    assert result.exit_code == 0, result.output
    assert "purged 2 SOAP exchanges" in result.output and "(kept 180 days)" in result.output
    result = runner.invoke(cli, ["soap", "purge-exchanges", "--retention-days", "7"])
    assert result.exit_code != 0 and "at least 30 days" in result.output
    assert outcomes(own) == ["c", "d"]
    own.clock.now = real_now
    jobs = Jobs(own.app.context, Reconciler(own.app.context, {}, tmp_path), tmp_path, exchange_retention_days=90)
    outcome = jobs.purge_exchanges()
    assert (outcome.job, outcome.status) == ("exchange-purge", "done") and outcome.reason.startswith("1 rows")
    assert outcomes(own) == ["d"]
