"""The finance endpoints over a live server with a finance key: run a reconciliation of a payer whose statement
is a file in the inbox, list and resolve its discrepancies, download the run's workbook and the month's clearing
statement; a hospital's key is refused every one of them (403)."""

from __future__ import annotations

import csv
import io
from datetime import date
from decimal import Decimal

import pytest
import yaml
from openpyxl import load_workbook

from settlement.insurers import statements
from tests.reconciliation.helpers import (
    as_items,
    change,
    check_found,
    day_lines,
    drop,
    item_of,
    new_payer,
    phantom,
    seed_day,
)
from tests.service.conftest import LiveServer, Service

D = date(2024, 6, 14)


def test_the_finance_endpoints(files_service: Service, files_live: LiveServer) -> None:
    service = files_service
    desks, seeded = seed_day(service, D, 8, hospitals=2, patients=4)
    payer = new_payer()
    settings = service.app.settings
    settings.payers_file.write_text(yaml.safe_dump({"payers": [payer.model_dump(exclude_none=True)]},
                                                   allow_unicode=True), encoding="utf-8")
    engine = day_lines(service, payer, D)
    line = {row.settlement_id: row for row in engine}
    gone, shifted = seeded[1].settlement_id, seeded[4].settlement_id
    extra = phantom(D, desks[0].code, "12.34")
    statement = [*change(drop(engine, [gone]), {shifted: Decimal("0.50")}), extra]
    inbox = statements.inbox_file(settings.inbox_dir, payer, D)
    assert inbox == service.tmp / "inbox" / payer.code / f"{D}.csv"
    inbox.parent.mkdir(parents=True)
    inbox.write_bytes(statements.write_csv(statement))
    finance = service.staff("finance")
    _, hospital_key = service.hospital()
    expected = sorted([item_of("engine_only", False, line[gone], line[gone].amount_fen, None),
                       item_of("amount_differs", False, line[shifted], line[shifted].amount_fen,
                               line[shifted].amount_fen + 50),
                       item_of("payer_only", False, extra, None, 1234)])

    with files_live.client(finance) as client:
        run = client.post("/v1/finance/reconciliations", json={"payer": payer.code, "business_date": str(D)})
        assert run.status_code == 200, run.text
        body = run.json()
        assert (body["status"], body["discrepancies"], body["payer_count"]) == (
            "done", {"engine_only": 1, "amount_differs": 1, "payer_only": 1}, len(statement))
        again = client.post("/v1/finance/reconciliations", json={"payer": payer.code, "business_date": str(D)})
        assert again.json()["run_id"] == body["run_id"]
        shown = client.get(f"/v1/finance/reconciliations/{payer.code}/{D}")
        assert shown.status_code == 200 and shown.json()["run_id"] == body["run_id"]
        unknown = client.post("/v1/finance/reconciliations", json={"payer": "nobody", "business_date": str(D)})
        assert unknown.status_code == 404 and unknown.json()["code"] == "NOT_FOUND"

        listed = client.get("/v1/finance/discrepancies", params={"payer": payer.code})
        assert listed.status_code == 200, listed.text
        items = listed.json()["items"]
        check_found(as_items(items), expected)
        kinds = client.get("/v1/finance/discrepancies", params={"payer": payer.code, "kind": "payer_only"})
        assert [item["settlement_id"] for item in kinds.json()["items"]] == [extra.settlement_id]
        by_hospital = client.get("/v1/finance/discrepancies",
                                 params={"payer": payer.code, "hospital": line[gone].hospital_code})
        assert gone in {item["settlement_id"] for item in by_hospital.json()["items"]}
        assert all(item["hospital_code"] == line[gone].hospital_code for item in by_hospital.json()["items"])

        target = next(item for item in items if item["kind"] == "payer_only")
        resolved = client.post(f"/v1/finance/discrepancies/{target['id']}/resolution",
                               json={"action": "write_off", "note": "重复行，付款方撤回"})
        assert resolved.status_code == 200, resolved.text
        assert (resolved.json()["status"], resolved.json()["action"]) == ("resolved", "write_off")
        twice = client.post(f"/v1/finance/discrepancies/{target['id']}/resolution",
                            json={"action": "write_off", "note": "again"})
        assert twice.status_code == 409 and twice.json()["code"] == "DISCREPANCY_CLOSED"
        shifted_id = next(item["id"] for item in items if item["kind"] == "amount_differs")
        corrected = client.post(f"/v1/finance/discrepancies/{shifted_id}/resolution",
                                json={"action": "correct", "note": "per the payer", "amount": "0.50"})
        assert corrected.status_code == 200 and corrected.json()["action"] == "correct"
        bad = client.post(f"/v1/finance/discrepancies/{shifted_id + 10**9}/resolution",
                          json={"action": "write_off", "note": "x"})
        assert bad.status_code == 404

        workbook = client.get(f"/v1/finance/reconciliations/{payer.code}/{D}/report.xlsx")
        assert workbook.status_code == 200
        assert workbook.headers["content-type"].startswith(
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
        assert f'filename="{payer.code}-{D}.xlsx"' in workbook.headers["content-disposition"]
        book = load_workbook(io.BytesIO(workbook.content), read_only=True)
        assert book.sheetnames == ["totals", "discrepancies"]
        sheet = list(book["discrepancies"].iter_rows(values_only=True))
        assert {row[4]: (row[1], row[2], row[11], row[12]) for row in sheet[1:]} == {
            gone: ("engine_only", 2, "open", None), shifted: ("amount_differs", 3, "resolved", "correct"),
            extra.settlement_id: ("payer_only", 1, "resolved", "write_off")}
        report_csv = client.get(f"/v1/finance/reconciliations/{payer.code}/{D}/report.csv")
        assert report_csv.status_code == 200 and report_csv.headers["content-type"].startswith("text/csv")
        assert client.get(f"/v1/finance/reconciliations/{payer.code}/{D}/report.pdf").status_code == 404

        clearing = client.post("/v1/finance/clearing/2024-06")
        assert clearing.status_code == 200, clearing.text
        ours = {line_["hospital_code"]: line_ for line_ in clearing.json()["lines"]
                if line_["hospital_code"] in {d.code for d in desks} and line_["fund"] == "390100"}
        assert set(ours) == {d.code for d in desks}
        assert Decimal(ours[line[shifted].hospital_code]["corrected"]) == Decimal("0.50")
        download = client.get("/v1/finance/clearing/2024-06/statement.csv")
        assert download.status_code == 200 and download.headers["content-type"].startswith("text/csv")
        rows = list(csv.reader(io.StringIO(download.content.decode("utf-8-sig"))))
        assert rows[0] == ["fund", "hospital", "hospital name", "settlements", "settled", "reversed", "corrected",
                           "owed"]
        assert {row[1]: row[7] for row in rows[1:] if row[1] in ours and row[0] == "390100"} == \
            {code: item["owed"] for code, item in ours.items()}
        assert client.get("/v1/finance/clearing/2024-13/statement.csv").status_code in (404, 422)
        assert client.get("/v1/finance/clearing/2024-06/statement.xlsx").status_code == 200

    with files_live.client(hospital_key) as client:
        refused = [
            client.get("/v1/finance/discrepancies", params={"payer": payer.code}),
            client.post(f"/v1/finance/discrepancies/{items[0]['id']}/resolution",
                        json={"action": "write_off", "note": "a hospital may not"}),
            client.post("/v1/finance/reconciliations", json={"payer": payer.code, "business_date": str(D)}),
            client.get(f"/v1/finance/reconciliations/{payer.code}/{D}"),
            client.get(f"/v1/finance/reconciliations/{payer.code}/{D}/report.xlsx"),
            client.post("/v1/finance/clearing/2024-06"),
            client.get("/v1/finance/clearing/2024-06/statement.csv"),
        ]
        assert [(answer.status_code, answer.json()["code"]) for answer in refused] == [(403, "FORBIDDEN")] * 7
    with files_live.client() as client:
        assert client.get("/v1/finance/discrepancies").status_code == 401
    with files_live.client(finance) as client:
        still = client.get("/v1/finance/discrepancies", params={"payer": payer.code, "status": "open"})
        assert [item["settlement_id"] for item in still.json()["items"]] == [gone]


def test_a_missing_statement_file_fails_the_run_and_a_rerun_after_it_arrives_succeeds(
        files_service: Service, files_live: LiveServer) -> None:
    service = files_service
    seed_day(service, D, 3, hospitals=1, patients=3)
    payer = new_payer()
    settings = service.app.settings
    settings.payers_file.write_text(yaml.safe_dump({"payers": [payer.model_dump(exclude_none=True)]},
                                                   allow_unicode=True), encoding="utf-8")
    finance = service.staff("finance")
    with files_live.client(finance) as client:
        failed = client.post("/v1/finance/reconciliations", json={"payer": payer.code, "business_date": str(D)})
        assert failed.status_code == 200, failed.text
        assert failed.json()["status"] == "failed" and "no statement file" in failed.json()["error"]
        inbox = statements.inbox_file(settings.inbox_dir, payer, D)
        inbox.parent.mkdir(parents=True)
        inbox.write_bytes(statements.write_csv(day_lines(service, payer, D)))
        done = client.post("/v1/finance/reconciliations", json={"payer": payer.code, "business_date": str(D)})
        assert done.json()["status"] == "done" and done.json()["error"] is None
        assert done.json()["run_id"] == failed.json()["run_id"] and done.json()["discrepancies"] == {}


@pytest.mark.parametrize("month", [
    "2024-00", "2024-13",
    "9999-12",
    "0001-01",
])
def test_a_month_out_of_range_is_refused_as_malformed(files_service: Service, files_live: LiveServer,
                                                      month: str) -> None:
    with files_live.client(files_service.staff("finance")) as client:
        answer = client.post(f"/v1/finance/clearing/{month}")
    assert (answer.status_code, answer.json()["code"]) == (422, "REQUEST_MALFORMED")
