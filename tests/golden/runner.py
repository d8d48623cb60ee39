"""Golden cases: YAML files a finance officer can read (a tariff, a bill, the shares expected).

A case names the shipped tariff (`tariff: {shipped: "611000"}`) or writes one inline, using the same format as
tariffs/ (see tariffs/README.md) with friendly defaults: region, version and dates are filled in, the usual
categories are declared, and a small catalogue is always there:

    A1, A2     class A                        B10, B15, B20   class B, 10% / 15% / 20% self-paid first
    C1         class C (fully self-paid)      CAP50           class A, price cap 50.00 a unit
    BSOC       class B 20%, 5% for dibao and 0% for tekun

Lines are written `{code: B15, amount: "100.00"}` (one unit) or with `quantity` and `unit_price`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from settlement.domain.accumulators import Accumulators
from settlement.domain.claim import Claim, Hospital, Line, Patient, Visit
from settlement.domain.errors import SettlementError
from settlement.domain.idcard import check_character
from settlement.domain.money import money
from settlement.domain.settle import Settlement, settle
from settlement.domain.tariff import Tariff
from settlement.tariffstore import TariffStore
from settlement.tariffstore.build import build_tariff, canonical_json, reference_problems, sha256_of
from settlement.tariffstore.schema import TariffDocument

CASES = Path(__file__).parent / "cases"
PERSON_ID = "61100219700101002" + check_character("61100219700101002")

DEFAULT_CATEGORIES = {
    code: {"name": code}
    for code in ("tekun", "dibao", "jiandang", "low_income", "orphan", "severe_disability")
}
DEFAULT_ITEMS: list[dict[str, Any]] = [
    {"code": "A1", "name": "class A item", "class": "A"},
    {"code": "A2", "name": "class A item", "class": "A"},
    {"code": "B10", "name": "class B item 10%", "class": "B", "share": "0.10"},
    {"code": "B15", "name": "class B item 15%", "class": "B", "share": "0.15"},
    {"code": "B20", "name": "class B item 20%", "class": "B", "share": "0.20"},
    {"code": "C1", "name": "class C item", "class": "C"},
    {"code": "CAP50", "name": "class A item capped at 50.00", "class": "A", "price_cap": "50.00"},
    {"code": "BSOC", "name": "class B item with category shares", "class": "B", "share": "0.20",
     "share_by_category": {"dibao": "0.05", "tekun": "0.00"}},
]


@dataclass(frozen=True)
class Case:
    path: Path
    title: str
    spec: dict[str, Any]


def load_cases() -> list[Case]:
    cases = []
    for path in sorted(CASES.glob("*.yaml")):
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        cases.append(Case(path, spec["title"], spec))
    return cases


def inline_tariff(spec: dict[str, Any]) -> Tariff:
    document: dict[str, Any] = {
        "region": "610000",
        "name": "golden case tariff",
        "version": "golden",
        "effective": {"from": "2000-01-01"},
        "categories": DEFAULT_CATEGORIES,
        **spec,
    }
    catalogue: dict[str, Any] = dict(spec.get("catalogue", {}))
    own = {item["code"] for item in catalogue.get("items", [])}  # the case's own items win
    catalogue["items"] = [item for item in DEFAULT_ITEMS if item["code"] not in own] + catalogue.get("items", [])
    document["catalogue"] = catalogue
    model = TariffDocument.model_validate(document)
    problems = reference_problems(model)
    assert not problems, problems
    canonical = canonical_json(model)
    return build_tariff(model, "golden", sha256_of(canonical))


def build_claim(spec: dict[str, Any]) -> Claim:
    settled_at = datetime.fromisoformat(spec.get("settled_at", "2024-06-15T10:00:00+08:00"))
    discharge = date.fromisoformat(spec["discharge_date"]) if "discharge_date" in spec else settled_at.date()
    admission = date.fromisoformat(spec["admission_date"]) if "admission_date" in spec else discharge
    lines = []
    for index, line in enumerate(spec["lines"]):
        quantity = Decimal(line.get("quantity", "1"))
        unit_price = Decimal(line["unit_price"]) if "unit_price" in line else Decimal(line["amount"])
        amount = Decimal(line["amount"]) if "amount" in line else money(quantity * unit_price)
        lines.append(Line(str(line.get("id", index + 1)), line["code"], line.get("name", line["code"]), quantity,
                          unit_price, amount))
    return Claim(
        hospital=Hospital("H0001", spec.get("hospital_level", "county")),
        visit=Visit("V0001", spec.get("visit_type", "inpatient"), admission, discharge, settled_at,
                    spec.get("referral", False), spec.get("disease")),
        patient=Patient(spec.get("id_number", PERSON_ID), "测试", spec.get("scheme", "resident"),
                        spec.get("region", "611000"), tuple(spec.get("categories", ())), spec.get("retired", False)),
        lines=tuple(lines),
        declared_total=Decimal(spec["total"]) if "total" in spec else None,
    )


def accumulators_for(claim: Claim, spec: dict[str, Any] | None) -> Accumulators:
    spec = spec or {}

    def table(name: str) -> dict[str, Decimal]:
        return {str(fund): Decimal(amount) for fund, amount in (spec.get(name) or {}).items()}

    return Accumulators(spec.get("year", claim.insurance_year), spec.get("admissions", 0),
                        table("deductible_used"), table("cumulative"), table("paid"),
                        dict(spec.get("admissions_by_level") or {}), limits_of(spec.get("limits")))


def limits_of(spec: dict[str, dict[str, str]] | None) -> dict[tuple[str, str], Decimal]:
    """`{fund: {limit: amount}}` as the accumulators key them."""
    return {(str(fund), key): Decimal(amount) for fund, keyed in (spec or {}).items() for key, amount in keyed.items()}


def run_case(case: Case, store: TariffStore) -> Settlement | SettlementError:
    try:
        claim = build_claim(case.spec["claim"])  # an invalid claim is refused when it is made
        tariff_spec = case.spec["tariff"]
        visit = claim.visit
        tariff = (store.resolve_for(tariff_spec["shipped"], visit.admission_date, visit.discharge_date,
                                    claim.tariff_date).tariff if "shipped" in tariff_spec
                  else inline_tariff(tariff_spec["inline"]))
        return settle(claim, tariff, accumulators_for(claim, case.spec.get("year_to_date")))
    except SettlementError as error:
        return error


def other_reading(case: Case) -> Case:
    """The case as the rule's other reading would settle it: `other_reading.set` gives values at dotted paths of
    the case (`tariff.inline.layers.0.rate.bounds`), `other_reading.unset` removes keys."""
    spec = copy.deepcopy(case.spec)
    change = spec["other_reading"]
    for path, value in (change.get("set") or {}).items():
        *parents, last = path.split(".")
        _walk(spec, parents)[_key(last)] = value
    for path in change.get("unset") or ():
        *parents, last = path.split(".")
        del _walk(spec, parents)[_key(last)]
    return Case(case.path, case.title, spec)


def _key(part: str) -> Any:
    return int(part) if part.isdigit() else part


def _walk(node: Any, parts: list[str]) -> Any:
    for part in parts:
        node = node[_key(part)]
    return node


def mismatches(outcome: Settlement | SettlementError, expect: dict[str, Any]) -> list[str]:
    """Every difference between the outcome and the expectation; the case passes when this is empty."""
    found: list[str] = []
    if "error" in expect:
        if not isinstance(outcome, SettlementError):
            return [f"expected error {expect['error']}, got a settlement"]
        if outcome.code != expect["error"]:
            found.append(f"error: expected {expect['error']}, got {outcome.code} ({outcome})")
        return found
    if isinstance(outcome, SettlementError):
        return [f"unexpected error {outcome}"]
    dec = outcome.decomposition
    for name in ("total", "out_of_catalogue", "over_price_limit", "pre_self_pay", "in_scope"):
        if name in expect and getattr(dec, name) != Decimal(expect[name]):
            found.append(f"{name}: expected {expect[name]}, got {getattr(dec, name)}")
    payers = {payer.layer_id: payer.paid for payer in outcome.payers}
    expected_payers = {str(k): Decimal(v) for k, v in expect["payers"].items()}
    if set(expected_payers) != set(payers):
        found.append(f"payers: expected layers {sorted(expected_payers)}, the tariff has {sorted(payers)}")
    for layer, amount in expected_payers.items():
        if layer in payers and payers[layer] != amount:
            found.append(f"payers.{layer}: expected {amount}, got {payers[layer]}")
    if outcome.patient_pays != Decimal(expect["patient_pays"]):
        found.append(f"patient_pays: expected {expect['patient_pays']}, got {outcome.patient_pays}")
    after = expect.get("year_to_date_after") or {}
    acc = outcome.accumulators_after
    if "admissions" in after and acc.admissions != after["admissions"]:
        found.append(f"year_to_date_after.admissions: expected {after['admissions']}, got {acc.admissions}")
    for name in ("deductible_used", "cumulative", "paid"):
        for fund, amount in (after.get(name) or {}).items():
            actual = getattr(acc, name).get(str(fund), Decimal(0))
            if actual != Decimal(amount):
                found.append(f"year_to_date_after.{name}.{fund}: expected {amount}, got {actual}")
    for level, count in (after.get("admissions_by_level") or {}).items():
        if acc.admissions_by_level.get(level, 0) != count:
            found.append(f"year_to_date_after.admissions_by_level.{level}: expected {count}, got "
                         f"{acc.admissions_by_level.get(level, 0)}")
    for key, amount in limits_of(after.get("limits")).items():
        actual = acc.limits.get(key, Decimal(0))
        if actual != amount:
            found.append(f"year_to_date_after.limits.{key[0]}.{key[1]}: expected {amount}, got {actual}")
    return found
