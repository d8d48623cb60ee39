"""Every settlement, correction and reversal balances to the fen, in every reply and in the ledger (issue 15,
item 4: a reversal after an accepted payer correction answered entries plus patient share of -54.80 against a
total of -54.60, left the person's year figures off the ledger, and reading the settlement did not show the
correction).

The rules: a correction moves money between a fund and the patient's share (the bill is unchanged: amount +
patient_pays = 0). A reversal reverses the settlement as it stands, its own entries and every correction posted
so far, one entry per fund, so that its ledger nets to zero; a correction posted after the reversal stands on
its own. Reading a settlement shows its corrections, its reversal's entries, and `net`, what it amounts to now.

Checked for settle, correct and reverse in any order (a table of the issue's case, then Hypothesis over random
sequences) against a model computed from the operations alone, on SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from settlement.db.models import Discrepancy, ReconciliationRun
from settlement.services.finance import resolve
from settlement.services.settlements import SettlementService
from settlement.wire.requests import ReverseRequest, SettleRequest
from tests.reconciliation.helpers import FINANCE, Desk, desk
from tests.service.conftest import Service, claim_body, import_roster_rows, new_id_number

BASIC, CRITICAL, ASSISTANCE = "390100", "390200", "610100"


def money(value: str) -> int:
    return int(Decimal(value) * 100)


@dataclass
class Story:
    """A settlement and what happened to it, as the model expects it: per fund what the ledger should hold, the
    patient's share, and the replies to check."""

    service: Service
    counter: Desk
    settlement_id: str
    total: int
    patient: int
    paid: dict[str, int]
    reversed_: bool = False
    replies: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def correct(self, fund: str, delta: int, *, accept_payer: bool) -> None:
        """A discrepancy on the fund, resolved by accepting the payer's amount or by correcting it."""
        engine = self.paid.get(fund, 0)
        item = open_discrepancy(self.service, self.settlement_id, fund, engine, engine + delta)
        amount = None if accept_payer else f"{Decimal(delta) / 100:.2f}"
        resolved = resolve(self.service.app.context, FINANCE, item, "accept_payer" if accept_payer else "correct",
                           "the payer's figure", amount)
        self.replies.append(("correction", resolved.get("correction") or {}))
        self.paid[fund] = self.paid.get(fund, 0) + delta
        self.patient -= delta

    def reverse(self, *, by_finance: bool) -> None:
        if by_finance:
            item = open_discrepancy(self.service, self.settlement_id, BASIC, self.paid.get(BASIC, 0), None)
            resolve(self.service.app.context, FINANCE, item, "reverse", "the payer never had it")
            reply = self.read()["reversal"]
        else:
            answer = SettlementService(self.service.app.context).reverse(
                self.counter.caller, self.settlement_id,
                ReverseRequest(transaction_id=f"R-{secrets.token_hex(6)}", reason="test"))
            assert answer.status == 201, answer.body
            reply = answer.json()
        self.replies.append(("reversal", reply))
        self.total, self.patient, self.paid, self.reversed_ = 0, 0, {}, True

    def read(self) -> dict[str, Any]:
        return SettlementService(self.service.app.context).get(self.counter.caller, self.settlement_id)


def open_discrepancy(service: Service, settlement_id: str, fund: str, engine: int | None, payer: int | None) -> int:
    """A discrepancy of a run of its own, as the reconciliation would have found it: finance's queue."""
    with service.app.context.uow() as tx:
        run = ReconciliationRun(payer=f"p{secrets.token_hex(5)}", business_date=date(2024, 6, 15), status="done",
                                request_id=secrets.token_hex(8), attempts=1)
        tx.session.add(run)
        tx.session.flush()
        kind = "amount_differs" if engine is not None and payer is not None else "engine_only"
        item = Discrepancy(run_id=run.id, payer=run.payer, business_date=run.business_date, kind=kind, timing=False,
                           settlement_id=settlement_id, entry_kind="settlement", fund=fund, hospital_code="H",
                           engine_fen=engine, payer_fen=payer, created_at=service.clock(), status="open")
        tx.session.add(item)
        tx.session.flush()
        discrepancy_id = int(item.id)
        tx.commit()
    return discrepancy_id


def settled(service: Service, counter: Desk, amount: str, *, dibao: bool) -> Story:
    person = new_id_number()
    if dibao:  # medical assistance pays too: three funds move
        import_roster_rows(service, [(person, "dibao_rural_a", "2023-01-01", "")])
    body = claim_body(counter.code, "county", person, amount=amount)
    reply = SettlementService(service.app.context).settle(counter.caller, SettleRequest.model_validate(
        {"transaction_id": f"T-{secrets.token_hex(6)}", "claim": body}))
    assert reply.status == 201, reply.body
    data = reply.json()
    paid: dict[str, int] = {}
    for payer in data["payers"]:
        paid[payer["fund"]] = paid.get(payer["fund"], 0) + money(payer["paid"])
    story = Story(service, counter, data["settlement_id"], money(data["total"]), money(data["patient_pays"]),
                  {fund: fen for fund, fen in paid.items() if fen})
    story.replies.append(("settlement", data))
    return story


def unbalanced(story: Story) -> list[str]:
    """Every way the story's replies, its reading and its ledger fail to balance or to match the model."""
    found = []
    for kind, reply in story.replies:
        if not reply:
            found.append(f"no {kind} in the reply")
            continue
        if kind == "settlement":
            payers = sum(money(p["paid"]) for p in reply["payers"])
        elif kind == "correction":
            payers = money(reply["amount"])
        else:
            payers = sum(money(entry["paid"]) for entry in reply["entries"])
        if payers + money(reply["patient_pays"]) != money(reply["total"]):
            found.append(f"{kind} reply: {payers / 100} + {reply['patient_pays']} != {reply['total']}")
    read = story.read()
    for correction in read.get("corrections", []):
        if money(correction["amount"]) + money(correction["patient_pays"]) != money(correction["total"]) or \
                money(correction["total"]) != 0:
            found.append(f"correction {correction['correction_id']} as read does not balance")
    if story.reversed_:
        reversal = read["reversal"]
        if sum(money(e["paid"]) for e in reversal.get("entries", [])) + money(reversal.get("patient_pays", "0")) \
                != money(reversal.get("total", "1")):
            found.append("the reversal as read does not balance")
    net = read.get("net", {"total": "-0.01", "paid": {}, "patient_pays": "-0.01"})  # (absent: never the model's)
    net_paid = {fund: money(amount) for fund, amount in net["paid"].items() if money(amount)}
    if (money(net["total"]), net_paid, money(net["patient_pays"])) != \
            (story.total, {f: p for f, p in story.paid.items() if p}, story.patient):
        found.append(f"net {net} is not the model's {story.total}, {story.paid}, {story.patient}")
    if len(read.get("corrections", [])) != sum(kind == "correction" for kind, _ in story.replies):
        found.append("reading the settlement does not show every correction")
    with story.service.app.engine.connect() as connection:
        internal, person, year = connection.execute(text(
            "SELECT id, id_number, insurance_year FROM settlements WHERE public_id = :s"),
            {"s": story.settlement_id}).one()
        ledger = {str(fund): int(paid) for fund, paid in connection.execute(text(
            "SELECT fund, SUM(paid_fen) FROM ledger_entries WHERE settlement_id = :i GROUP BY fund"),
            {"i": internal}) if int(paid)}
        if ledger != {f: p for f, p in story.paid.items() if p}:
            found.append(f"ledger {ledger} is not the model's {story.paid}")
        per_fund = connection.execute(text(
            "SELECT fund, COUNT(*) FROM ledger_entries WHERE settlement_id = :i AND reversal_id IS NOT NULL "
            "GROUP BY fund HAVING COUNT(*) > 1"), {"i": internal}).all()
        if per_fund:
            found.append(f"a reversal with more than one entry per fund: {per_fund}")
        # The person's year figures are the sum of the ledger, in every column (each story is its own person).
        figures = {str(f): (int(p), int(d), int(c)) for f, p, d, c in connection.execute(text(
            "SELECT fund, paid_fen, deductible_fen, cumulative_fen FROM fund_years WHERE id_number = :p AND "
            "year = :y"), {"p": person, "y": year}) if (p, d, c) != (0, 0, 0)}
        sums = {str(f): (int(p), int(d), int(c)) for f, p, d, c in connection.execute(text(
            "SELECT fund, SUM(paid_fen), SUM(deductible_fen), SUM(cumulative_fen) FROM ledger_entries "
            "WHERE id_number = :p AND insurance_year = :y GROUP BY fund"), {"p": person, "y": year})
            if (p, d, c) != (0, 0, 0)}
        if figures != sums:
            found.append(f"year figures {figures} are not the ledger's {sums}")
    return found


def test_the_issues_case_a_reversal_after_an_accepted_correction(service: Service) -> None:
    """The reported case: the payer booked 0.20 more for basic insurance, finance accepted the payer's figure,
    then the hospital reversed the settlement."""
    story = settled(service, desk(service), "1000.00", dibao=True)
    assert unbalanced(story) == []
    story.correct(BASIC, 20, accept_payer=True)
    correction = story.replies[-1][1]
    assert (correction["amount"], correction["patient_pays"], correction["total"]) == ("0.20", "-0.20", "0.00")
    read = story.read()
    assert [(c["correction_id"], c["fund"], c["amount"]) for c in read["corrections"]] == \
        [(correction["correction_id"], BASIC, "0.20")]
    assert read["net"]["paid"][BASIC] == "450.20" and read["net"]["patient_pays"] == "164.80"
    story.reverse(by_finance=False)
    reversal = story.replies[-1][1]
    assert reversal["total"] == "-1000.00" and reversal["patient_pays"] == "-164.80"
    assert {e["fund"]: e["paid"] for e in reversal["entries"]}[BASIC] == "-450.20"
    assert reversal["corrections"] == [correction["correction_id"]]
    assert unbalanced(story) == []
    assert story.read()["net"] == {"total": "0.00", "paid": {BASIC: "0.00", CRITICAL: "0.00", ASSISTANCE: "0.00"},
                                   "patient_pays": "0.00"}


def test_the_balance_check_sees_a_fen_missing(service: Service) -> None:
    """Control: the model is not taken from the engine; a story told one fen wrong is caught."""
    story = settled(service, desk(service), "1000.00", dibao=False)
    story.correct(BASIC, -7, accept_payer=False)
    story.patient += 1
    assert any(problem.startswith("net") for problem in unbalanced(story))
    story.replies[-1][1]["patient_pays"] = "0.06"
    assert any(problem.startswith("correction reply") for problem in unbalanced(story))


Operation = tuple[str, str, int, bool]  # ("correct", fund, delta in fen, via accept_payer) or ("reverse", "", 0, by)
CORRECTIONS = st.tuples(st.just("correct"), st.sampled_from([BASIC, CRITICAL, ASSISTANCE]),
                        st.integers(-9_999, 9_999).filter(bool), st.booleans())


@st.composite
def operations(draw: st.DrawFn) -> list[Operation]:
    """Corrections before and after at most one reversal, in any mix."""
    before = draw(st.lists(CORRECTIONS, max_size=3))
    if not draw(st.booleans()):
        return before
    after = draw(st.lists(CORRECTIONS, max_size=2))
    return [*before, ("reverse", "", 0, draw(st.booleans())), *after]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=operations(), amount=st.sampled_from(["0.01", "399.99", "1000.00", "23456.78"]), dibao=st.booleans())
def test_any_order_of_settle_correct_and_reverse_balances(service: Service, steps: list[Operation], amount: str,
                                                           dibao: bool) -> None:
    story = settled(service, desk(service), amount, dibao=dibao)
    for kind, fund, delta, flag in steps:
        if kind == "correct":
            story.correct(fund, delta, accept_payer=flag)
        else:
            story.reverse(by_finance=flag)
        assert unbalanced(story) == [], steps
