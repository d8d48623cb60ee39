"""Runs every case in tests/golden/cases; a new case is a new file."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from settlement.tariffstore import TariffStore, load_store
from tests.golden.runner import Case, load_cases, mismatches, other_reading, run_case

CASES = load_cases()
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store() -> TariffStore:
    return load_store(ROOT / "tariffs")


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 24
    titles = [case.title for case in CASES]
    for example in ("E1", "E2", "E3", "E4"):
        assert any(title.startswith(example) for title in titles), example


@pytest.mark.parametrize("case", CASES, ids=[case.path.stem for case in CASES])
def test_golden_case(case: Case, store: TariffStore) -> None:
    problems = mismatches(run_case(case, store), case.spec["expect"])
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("case", [c for c in CASES if "other_reading" in c.spec], ids=lambda c: c.path.stem)
def test_the_other_reading_gets_the_case_wrong(case: Case, store: TariffStore) -> None:
    """A case of a rule with two readings is one the other reading gets wrong: read the other way, it fails."""
    assert mismatches(run_case(other_reading(case), store), case.spec["expect"]) != [], case.spec["other_reading"]


@pytest.mark.parametrize("case", [c for c in CASES if "error" not in c.spec["expect"]][:6],
                         ids=lambda c: c.path.stem)
def test_a_wrong_expectation_is_caught(case: Case, store: TariffStore) -> None:
    """The comparison is not vacuous: one fen off in the patient's share or any payer is reported."""
    outcome = run_case(case, store)
    expect = dict(case.spec["expect"])
    expect["patient_pays"] = str(Decimal(expect["patient_pays"]) + Decimal("0.01"))
    assert any("patient_pays" in line for line in mismatches(outcome, expect))
    layer = next(iter(expect["payers"]))
    expect = dict(case.spec["expect"])
    expect["payers"] = {**expect["payers"], layer: str(Decimal(expect["payers"][layer]) - Decimal("0.01"))}
    assert any(f"payers.{layer}" in line for line in mismatches(outcome, expect))
