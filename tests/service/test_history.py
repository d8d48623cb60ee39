"""History is append-only in the database itself, and every state change writes exactly one audit row in the
same transaction as the change."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from settlement.bootstrap import SYSTEM
from settlement.db.repositories import Repository
from settlement.services.auth import Caller, authenticate
from settlement.services.roster import import_roster
from settlement.services.settlements import SettlementService
from settlement.wire.requests import ReverseRequest, SettleRequest
from tests.service.conftest import Service, claim_body, new_id_number, roster_csv

HISTORY = ("settlements", "reversals", "ledger_entries", "audit_log")
COUNTED = (*HISTORY, "idempotency_records", "fund_years", "person_years", "persons", "person_categories",
           "roster_imports")


def counts(service: Service) -> dict[str, int]:
    with service.app.engine.connect() as connection:
        return {table: connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one() for table in COUNTED}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {table: after[table] - before[table] for table in before if after[table] != before[table]}


def audit_rows(service: Service) -> list[tuple[Any, ...]]:
    with service.app.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(
            text("SELECT id, actor, action, entity, entity_id, details FROM audit_log ORDER BY id"))]


def hospital_caller(service: Service) -> tuple[str, Caller]:
    code, key = service.hospital()
    with service.app.context.uow() as tx:
        return code, authenticate(tx.repo, key)


def settle(service: Service, caller: Caller, code: str, person: str, key: str, **claim: Any) -> dict[str, Any]:
    request = SettleRequest.model_validate({"transaction_id": key,
                                            "claim": claim_body(code, "county", person, **claim)})
    reply = SettlementService(service.app.context).settle(caller, request)
    body: dict[str, Any] = json.loads(reply.body)
    body["_status"] = reply.status
    return body


def reverse(service: Service, caller: Caller, settlement_id: str, key: str) -> dict[str, Any]:
    reply = SettlementService(service.app.context).reverse(caller, settlement_id,
                                                           ReverseRequest(transaction_id=key, reason="test"))
    body: dict[str, Any] = json.loads(reply.body)
    body["_status"] = reply.status
    return body


def snapshot(service: Service, table: str) -> list[tuple[Any, ...]]:
    with service.app.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(f"SELECT * FROM {table} ORDER BY id"))]


@pytest.mark.parametrize("table", HISTORY)
def test_history_refuses_update_and_delete(service: Service, table: str) -> None:
    code, caller = hospital_caller(service)
    first = settle(service, caller, code, new_id_number(), "H-1")
    assert first["_status"] == 201
    assert reverse(service, caller, first["settlement_id"], "H-R1")["_status"] == 201
    rows = snapshot(service, table)
    assert rows, f"{table} has rows to change"
    column = {"settlements": "patient_fen", "reversals": "reason", "ledger_entries": "paid_fen",
              "audit_log": "details"}[table]
    value = "'x'" if table in ("reversals", "audit_log") else "0"
    for statement in (f"UPDATE {table} SET {column} = {value}", f"DELETE FROM {table}",
                      f"DELETE FROM {table} WHERE id = {rows[-1][0]}"):
        with pytest.raises(Exception, match="APPEND_ONLY") as refused, service.app.engine.begin() as connection:
            connection.execute(text(statement))
        assert table in str(refused.value)
    if service.app.engine.dialect.name == "postgresql":
        with pytest.raises(Exception, match="APPEND_ONLY"), service.app.engine.begin() as connection:
            connection.execute(text(f"TRUNCATE {table} CASCADE"))
    assert snapshot(service, table) == rows


def test_fund_years_are_not_history(service: Service) -> None:
    """The year figures are a running total kept beside the ledger: they may be updated (the control case)."""
    code, caller = hospital_caller(service)
    person = new_id_number()
    assert settle(service, caller, code, person, "F-1")["_status"] == 201
    with service.app.engine.begin() as connection:
        changed = connection.execute(text("UPDATE fund_years SET paid_fen = paid_fen + 1 WHERE id_number = :p"),
                                     {"p": person})
        assert changed.rowcount >= 1
    with service.app.engine.connect() as connection:
        assert connection.execute(text("SELECT paid_fen FROM fund_years WHERE id_number = :p AND fund = '390100'"),
                                  {"p": person}).scalar_one() == 45001


def test_each_state_change_writes_exactly_one_audit_row(service: Service) -> None:
    code, caller = hospital_caller(service)
    person = new_id_number()
    before = counts(service)
    audit_before = audit_rows(service)
    created = settle(service, caller, code, person, "A-1")
    assert created["_status"] == 201
    assert delta(before, counts(service))["audit_log"] == 1
    added = audit_rows(service)[len(audit_before):]
    assert [(row[2], row[3], row[4]) for row in added] == [("settlement.create", "settlement",
                                                            created["settlement_id"])]
    assert person not in added[0][5] and person[:6] in added[0][5]  # the ID is masked

    before = counts(service)
    failed = settle(service, caller, code, person, "A-2", lines=[
        {"id": "1", "code": "X", "name": "", "quantity": "2", "unit_price": "1.00", "amount": "3.00"}])
    assert failed["_status"] == 422 and failed["code"] == "CLAIM_AMOUNT_MISMATCH"
    assert delta(before, counts(service)) == {"idempotency_records": 1}

    before = counts(service)
    reversed_ = reverse(service, caller, created["settlement_id"], "A-R1")
    assert reversed_["_status"] == 201
    moved = delta(before, counts(service))
    assert moved["audit_log"] == 1 and moved["reversals"] == 1
    assert audit_rows(service)[-1][2:5] == ("settlement.reverse", "settlement", created["settlement_id"])

    before = counts(service)
    again = reverse(service, caller, created["settlement_id"], "A-R2")
    assert again["_status"] == 409 and again["code"] == "SETTLEMENT_ALREADY_REVERSED"
    assert delta(before, counts(service)) == {"idempotency_records": 1}

    before = counts(service)
    data = roster_csv([(new_id_number(), "low_income", "2024-01-01", ""), (new_id_number(), "orphan",
                                                                          "2024-01-01", "")])
    import_roster(service.app.context, SYSTEM, "audit.csv", data)
    moved = delta(before, counts(service))
    assert moved["audit_log"] == 1 and moved["roster_imports"] == 1
    assert audit_rows(service)[-1][1:4] == ("admin:system", "roster.import", "roster_import")
    before = counts(service)
    import_roster(service.app.context, SYSTEM, "audit.csv", data)  # nothing changes: nothing is recorded
    assert delta(before, counts(service)) == {}


class AuditFailed(RuntimeError):
    pass


def failing_audit(self: Repository, *args: Any) -> None:
    self.session.flush()  # the change itself reached the database ...
    raise AuditFailed("the audit row could not be written")  # ... and is rolled back with the audit row


REFUSE_SETTLEMENT_AUDIT = {
    # A settlement writes its audit row in the same statement as everything else on PostgreSQL: the database
    # itself is made to refuse that row.
    "postgresql": ("CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                   "RAISE EXCEPTION 'the audit row could not be written'; END $$",
                   "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log FOR EACH ROW "
                   "WHEN (NEW.action = 'settlement.create') EXECUTE FUNCTION refuse_audit()"),
    "sqlite": ("CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log WHEN NEW.action = 'settlement.create' "
               "BEGIN SELECT RAISE(ABORT, 'the audit row could not be written'); END",),
}
ALLOW_SETTLEMENT_AUDIT = {"postgresql": ("DROP TRIGGER refuse_audit ON audit_log", "DROP FUNCTION refuse_audit()"),
                          "sqlite": ("DROP TRIGGER refuse_audit",)}


def run_sql(service: Service, statements: tuple[str, ...]) -> None:
    with service.app.engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))


def test_a_change_whose_audit_row_fails_is_not_recorded(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    code, caller = hospital_caller(service)
    person = new_id_number()
    created = settle(service, caller, code, person, "T-1")
    dialect = service.app.engine.dialect.name
    before = counts(service)
    run_sql(service, REFUSE_SETTLEMENT_AUDIT[dialect])
    try:
        with pytest.raises(DBAPIError, match="the audit row could not be written"):
            settle(service, caller, code, person, "T-2")
    finally:
        run_sql(service, ALLOW_SETTLEMENT_AUDIT[dialect])
    monkeypatch.setattr(Repository, "audit", failing_audit)
    with pytest.raises(AuditFailed):
        reverse(service, caller, created["settlement_id"], "T-R1")
    with pytest.raises(AuditFailed):
        import_roster(service.app.context, SYSTEM, "t.csv", roster_csv([(person, "orphan", "2024-01-01", "")]))
    assert delta(before, counts(service)) == {}
    with service.app.engine.connect() as connection:
        figures = {str(fund): int(value) for fund, value in connection.execute(
            text("SELECT fund, paid_fen FROM fund_years WHERE id_number = :p"), {"p": person})}
    assert figures["390100"] == 45000
    monkeypatch.undo()
    # With the audit working again, the same keys go through: nothing was kept under them.
    assert settle(service, caller, code, person, "T-2")["_status"] == 201
    assert reverse(service, caller, created["settlement_id"], "T-R1")["_status"] == 201
