"""After an end-to-end run over REST and every SOAP dialect, in which people type the patient's ID number (glued to
letters, in full-width digits, split by zero-width characters) into every free-text field, no stored text column
holds an unmasked ID number, and no stored envelope (in or out) the patient's name or number."""

from __future__ import annotations

import json
import re
import secrets

from sqlalchemy import String, Text, select, text

from settlement.db.models import Base
from settlement.domain.privacy import mask_id_numbers
from tests.factories import ROOT
from tests.service.conftest import Service, claim_body, new_id_number, serving, shipped_document
from tests.soap.conftest import SOAP11, soap_hospital_for, wsse_header

NAME = "王喆"
# The columns that hold a person's ID number by design (the roster, the ledger, the year figures, the claim as
# received: recomputation needs them); everything else must be masked.
BY_DESIGN = {("persons", "id_number"), ("settlements", "id_number"), ("ledger_entries", "id_number"),
             ("person_years", "id_number"), ("fund_years", "id_number")}


DIGEST = re.compile(r"[0-9a-f]{32,}")


def typed(person: str) -> list[str]:
    """The patient's number as people type it into a reason or a note."""
    full_width = "".join(chr(0xFF10 + int(c)) if c.isdigit() else c for c in person)
    return [f"{NAME} {person} 录入错误", f"身份证{full_width}重复结算", f"ID{person[:6]}\u200b{person[6:]}x",
            f"补录 {person[:6]}-{person[6:14]}-{person[14:]}"]


def unmasked(service: Service, person: str) -> list[tuple[str, str, str]]:
    """Every stored text value that still holds an ID number (or this person's name outside the claim)."""
    found = []
    with service.app.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            for column in table.columns:
                if not isinstance(column.type, String | Text) or (table.name, column.name) in BY_DESIGN:
                    continue
                for value in connection.execute(select(column)).scalars():
                    if value is None:
                        continue
                    if (table.name, column.name) == ("settlements", "claim"):
                        claim = json.loads(value)
                        claim["patient"].pop("id_number")
                        claim["patient"].pop("name")
                        value = json.dumps(claim, ensure_ascii=False)
                    # Digests (request hashes, tariff hashes inside JSON) are hex: one in a few thousand has a run
                    # of decimal digits shaped like an ID number, which is not personal data.
                    value = DIGEST.sub("<digest>", value)
                    name_allowed = (table.name, column.name) == ("persons", "name")
                    if mask_id_numbers(value) != value or person[6:14] in value or (
                            NAME in value and not name_allowed):
                        found.append((table.name, column.name, value[:200]))
    return found


def example(dialect: str, operation: str, code: str, header: str, values: dict[str, str]) -> bytes:
    """A dialect's example request (adapters/<dialect>/examples) for this hospital, person and header."""
    encoding = "gb18030" if dialect == "legacy-gbk" else "utf-8"
    body = (ROOT / "adapters" / dialect / "examples" / operation / "request.xml").read_bytes().decode(encoding)
    body = body.replace("H61100200011", code)
    body = re.sub(rf"{code}-\d{{14}}-\d{{4}}", lambda _: f"{code}-{secrets.token_hex(6)}", body)
    for old, new in values.items():
        body = body.replace(old, new)
    prefix = re.search(r"<([\w-]+):Envelope", body).group(1)  # type: ignore[union-attr]
    body = body.replace(f"<{prefix}:Envelope", f'<{prefix}:Envelope xmlns:soap="{SOAP11}"', 1)
    body = re.sub(rf"<{prefix}:Header\s*/>", "", body).replace(f"<{prefix}:Body>", f"{header}<{prefix}:Body>", 1)
    return body.encode(encoding)


def test_no_stored_text_holds_an_unmasked_id_number_after_rest_and_soap(own_service: Service) -> None:
    service = own_service
    hospital = soap_hospital_for(service)
    person = new_id_number()
    reasons = typed(person)
    admin, finance = service.staff("admin"), service.staff("finance")
    with serving(service.app) as live, live.client(hospital.api_key) as rest:
        # REST: a settlement reversed, one cancelled, a cancellation of a call never made.
        for key, reason in (("R1", reasons[0]), ("R2", reasons[1])):
            settled = rest.post("/v1/settlements", json={"transaction_id": key, "claim": claim_body(
                hospital.code, hospital.level, person)})
            assert settled.status_code == 201, settled.text
            if key == "R1":
                sid = settled.json()["settlement_id"]
                reversed_ = rest.post(f"/v1/settlements/{sid}/reversal",
                                      json={"transaction_id": "R1-back", "reason": reason})
                assert reversed_.status_code == 201, reversed_.text
            else:
                cancelled = rest.post("/v1/cancellations", json={"transaction_id": "R2-cancel",
                                                                  "original_transaction_id": key, "reason": reason})
                assert cancelled.status_code == 201, cancelled.text
        kept = rest.post("/v1/settlements", json={"transaction_id": "R4", "claim": claim_body(
            hospital.code, hospital.level, person)})
        assert kept.status_code == 201, kept.text  # not reversed: finance corrects it below
        never = rest.post("/v1/cancellations", json={"transaction_id": "R3-cancel", "original_transaction_id": "R3",
                                                     "reason": reasons[2].replace(NAME, "")})
        assert never.status_code == 201, never.text
        # SOAP: every dialect settles, is asked, and reverses with a reason holding the number.
        for dialect, get in (("standard", "get-settlement"), ("legacy-gbk", "get-settlement"), ("rural-ncms", "get")):
            def call(operation: str, values: dict[str, str], dialect: str = dialect) -> str:
                header = wsse_header(hospital.code, hospital.password, service.clock())
                reply = rest.post(f"/soap/{dialect}", content=example(dialect, operation, hospital.code, header,
                                                                       {"611002196804120038": person, **values}),
                                  headers={"Content-Type": "text/xml; charset=" + (
                                      "GBK" if dialect == "legacy-gbk" else "UTF-8")})
                assert reply.status_code == 200, reply.text[:500]
                return reply.text

            call("eligibility", {})
            call("quote", {})
            settled_reply = call("settle", {})
            sid = re.search(r"ST\d{8}[0-9A-F]{12}", settled_reply).group(0)  # type: ignore[union-attr]
            call(get, {"ST20261129A630D1A309BA": sid})
            call("reverse", {"ST20261129A630D1A309BA": sid, "录入错误": reasons[3]})
    with serving(service.app) as live:
        with live.client(admin) as staff:  # tariffs: a file name, a note and a withdrawal holding the number
            document = shipped_document()
            document["version"], document["effective"] = "2027-privacy", {"from": "2027-01-01"}
            drafted = staff.post("/v1/admin/tariffs", params={"note": reasons[1].replace(NAME, "")},
                                 files={"file": (f"{person}.json", json.dumps(document).encode(), "application/json")})
            assert drafted.status_code in (200, 201), drafted.text
            version = drafted.json()["version"]["id"]
            withdrawn = staff.post(f"/v1/admin/tariffs/{version}/withdrawal",
                                   json={"reason": reasons[2].replace(NAME, "")})
            assert withdrawn.status_code == 200, withdrawn.text
            roster = f"id_number,name,scheme,region,category,valid_from,valid_to\n" \
                     f"{new_id_number()},测试,resident,611002,{person},2024-01-01,\n"
            imported = staff.post("/v1/admin/roster", files={"file": (f"名单{person}.csv", roster.encode(),
                                                                        "text/csv")})
            assert imported.status_code in (200, 201), imported.text
        # Finance: a discrepancy resolved with a correction whose note holds the number.
        discrepancy = _discrepancy(service, hospital.code)
        with live.client(finance) as staff:
            resolved = staff.post(f"/v1/finance/discrepancies/{discrepancy}/resolution",
                                  json={"action": "correct", "amount": "-1.00", "note": reasons[3].replace(NAME, "")})
            assert resolved.status_code == 200, resolved.text
    assert unmasked(service, person) == []
    # The planted fault: the same scan finds a reason stored as typed.
    with service.app.engine.begin() as connection:
        connection.execute(text("INSERT INTO audit_log (at, actor, action, entity, entity_id, details) "
                                "VALUES (CURRENT_TIMESTAMP, 'test', 'planted', 'x', 'x', :details)"),
                           {"details": json.dumps({"reason": reasons[1]}, ensure_ascii=False)})
    assert [(table, column) for table, column, _ in unmasked(service, person)] == [("audit_log", "details")]


def _discrepancy(service: Service, hospital_code: str) -> int:
    """An open discrepancy of the latest settlement (as a reconciliation run would leave it)."""
    with service.app.engine.begin() as connection:
        settlement = connection.execute(text(
            "SELECT public_id FROM settlements s WHERE NOT EXISTS (SELECT 1 FROM reversals r "
            "WHERE r.settlement_id = s.id) ORDER BY id DESC")).scalars().first()
        run = connection.execute(text(
            "INSERT INTO reconciliation_runs (payer, business_date, status, request_id, attempts, engine_count, "
            "engine_total_fen, payer_count, payer_total_fen, discrepancies, totals) VALUES ('basic', '2024-06-15', "
            "'done', 'r', 1, 0, 0, 0, 0, 1, '[]') RETURNING id")).scalar_one()
        return int(connection.execute(text(
            "INSERT INTO discrepancies (run_id, payer, business_date, kind, timing, settlement_id, entry_kind, fund, "
            "hospital_code, engine_fen, payer_fen, created_at, status) VALUES (:run, 'basic', '2024-06-15', "
            "'amount_differs', false, :settlement, 'settlement', '390100', :hospital, 100, 99, CURRENT_TIMESTAMP, "
            "'open') RETURNING id"), {"run": run, "settlement": settlement, "hospital": hospital_code}).scalar_one())

