"""File payers through the engine's own fetch (no network): an XML statement and a CSV statement dropped in the
inbox are read and reconciled; an unreadable statement fails the run with its reason, and the run succeeds in
the same record once the payer sends a good file."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from settlement.insurers import statements
from settlement.insurers.config import PayerConfig, StatementSource
from settlement.services.reconciliation import Reconciler
from tests.reconciliation.helpers import (
    as_items,
    change,
    check_found,
    day_lines,
    drop,
    item_of,
    listed,
    new_payer,
    phantom,
    seed_day,
)
from tests.service.conftest import Service

D = date(2024, 6, 14)


def test_an_xml_statement_in_the_inbox(service: Service) -> None:
    _, seeded = seed_day(service, D, 6, hospitals=2, patients=3)
    payer = PayerConfig(code=new_payer().code, name="医疗救助（测试）", funds=["390100", "310100"],
                        statement=StatementSource(source="file", format="xml"))
    engine = day_lines(service, payer, D)
    line = {row.settlement_id: row for row in engine}
    gone, shifted = seeded[0].settlement_id, seeded[5].settlement_id
    extra = phantom(D, seeded[1].hospital_code, "0.01")
    inbox = service.tmp / "inbox"
    path = statements.inbox_file(inbox, payer, D)
    path.parent.mkdir(parents=True)
    path.write_bytes(statements.write_xml(payer.code, D, [*change(drop(engine, [gone]),
                                                                  {shifted: Decimal("-99.99")}), extra]))
    assert path.suffix == ".xml"
    result = Reconciler(service.app.context, {payer.code: payer}, inbox).run(payer.code, D)
    assert result.status == "done", result.error
    check_found(as_items(listed(service, payer.code)), sorted([
        item_of("engine_only", False, line[gone], line[gone].amount_fen, None),
        item_of("amount_differs", False, line[shifted], line[shifted].amount_fen, line[shifted].amount_fen - 9999),
        item_of("payer_only", False, extra, None, 1)]))


def test_an_unreadable_csv_fails_the_run_until_a_good_one_arrives(service: Service) -> None:
    seed_day(service, D, 2, hospitals=1, patients=2)
    payer = new_payer()
    inbox = service.tmp / "inbox"
    runs = Reconciler(service.app.context, {payer.code: payer}, inbox)
    missing = runs.run(payer.code, D)
    assert missing.status == "failed" and missing.error is not None and "no statement file" in missing.error
    path = statements.inbox_file(inbox, payer, D)
    path.parent.mkdir(parents=True)
    good = statements.write_csv(day_lines(service, payer, D)).decode()
    header, first, *rest = good.splitlines()
    fields = first.split(",")
    fields[4] += "5"  # three decimals
    path.write_text("\n".join([header, ",".join(fields), *rest]) + "\n", encoding="utf-8")
    bad = runs.run(payer.code, D)
    assert bad.status == "failed" and bad.error is not None and "line 2" in bad.error and "two decimals" in bad.error
    path.write_text(good, encoding="utf-8")
    done = runs.run(payer.code, D)
    assert (done.status, done.error, done.discrepancies, done.run_id) == ("done", None, {}, missing.run_id)
