"""The offline quote as an operator runs it: the table, the JSON names, and clear failures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from settlement.cli.main import EXIT_REJECTED, EXIT_TARIFF, app
from tests.factories import ROOT, TARIFFS

EXAMPLES = ROOT / "examples" / "claims"
runner = CliRunner()


def quote_json(path: Path) -> dict[str, object]:
    result = runner.invoke(app, ["quote", str(path), "--json", "--tariffs", str(TARIFFS)])
    assert result.exit_code == 0, result.output
    data: dict[str, object] = json.loads(result.stdout)
    return data


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.json")), ids=lambda p: p.stem)
def test_every_shipped_example_quotes_and_balances(example: Path) -> None:
    from decimal import Decimal

    data = quote_json(example)
    assert set(data) >= {"total", "out_of_catalogue", "over_price_limit", "pre_self_pay", "in_scope", "payers",
                         "patient_pays", "tariff"}
    payers = data["payers"]
    assert isinstance(payers, list)
    paid = sum(Decimal(p["paid"]) for p in payers)
    assert paid + Decimal(str(data["patient_pays"])) == Decimal(str(data["total"]))
    for payer in payers:
        assert {"fund", "name", "paid", "trace"} <= set(payer)
        assert payer["paid"].count(".") == 1 and len(payer["paid"].split(".")[1]) == 2


def test_the_demo_bill_in_figures() -> None:
    """The README's run command: a 低保 patient at a county hospital, region 611002 falling back to 611000."""
    data = quote_json(EXAMPLES / "inpatient-dibao-county.json")
    assert data["tariff"] == {"region": "611000", "version": "2024-01-01",
                              "sha256": data["tariff"]["sha256"]}  # type: ignore[index]
    assert (data["total"], data["out_of_catalogue"], data["over_price_limit"], data["pre_self_pay"],
            data["in_scope"]) == ("10942.70", "980.00", "260.00", "964.37", "8738.33")
    paid = {p["layer"]: p["paid"] for p in data["payers"]}  # type: ignore[attr-defined]
    # Basic: (8,738.33 - 400) x 75% = 6,253.7475 -> 6,253.75. Critical illness: 2,484.58 is below the halved
    # threshold 5,000. Assistance (低保, no deductible): 2,484.58 x 70% = 1,739.206 -> 1,739.21.
    assert paid == {"basic_inpatient": "6253.75", "basic_chronic_outpatient": "0.00", "basic_outpatient": "0.00",
                    "critical_illness": "0.00", "medical_assistance": "1739.21", "guarantee": "0.00"}
    assert data["patient_pays"] == "2949.74"
    unlisted = [line for line in data["lines"] if line["class"] == "unlisted"]  # type: ignore[attr-defined]
    assert unlisted and "not in the catalogue" in unlisted[0]["note"]


def test_the_table_names_every_paying_layer_and_the_patient_share() -> None:
    result = runner.invoke(app, ["quote", str(EXAMPLES / "inpatient-dibao-county.json"), "--tariffs",
                                 str(TARIFFS)])
    assert result.exit_code == 0, result.output
    for text in ("城乡居民基本医疗保险（住院）", "医疗救助", "75% of 8,338.33", "Patient pays: 2,949.74",
                 "deductible waived", "not eligible"):
        assert text in result.output, text


def test_a_bad_claim_exits_2_with_stable_codes_and_no_personal_data(tmp_path: Path) -> None:
    claim = json.loads((EXAMPLES / "inpatient-dibao-county.json").read_text(encoding="utf-8"))
    claim["lines"][0]["amount"] = "1.00"
    claim["patient"]["id_number"] = claim["patient"]["id_number"][:17] + "0"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(claim, ensure_ascii=False), encoding="utf-8")
    result = runner.invoke(app, ["quote", str(path), "--tariffs", str(TARIFFS)])
    assert result.exit_code == EXIT_REJECTED
    assert "CLAIM_INVALID_ID_NUMBER" in result.output and "CLAIM_AMOUNT_MISMATCH" in result.output
    assert claim["patient"]["id_number"] not in result.output
    assert claim["patient"]["name"] not in result.output


def test_malformed_json_and_float_money_are_refused(tmp_path: Path) -> None:
    claim = json.loads((EXAMPLES / "outpatient-resident-township.json").read_text(encoding="utf-8"))
    claim["lines"][0]["amount"] = 10.0
    path = tmp_path / "float.json"
    path.write_text(json.dumps(claim), encoding="utf-8")
    result = runner.invoke(app, ["quote", str(path), "--tariffs", str(TARIFFS)])
    assert result.exit_code == EXIT_REJECTED
    assert "CLAIM_MALFORMED" in result.output and "lines[0].amount" in result.output
    path.write_text("{not json", encoding="utf-8")
    assert runner.invoke(app, ["quote", str(path), "--tariffs", str(TARIFFS)]).exit_code == EXIT_REJECTED


def test_tariff_problems_exit_3(tmp_path: Path) -> None:
    result = runner.invoke(app, ["quote", str(EXAMPLES / "inpatient-dibao-county.json"), "--tariffs",
                                 str(tmp_path)])
    assert result.exit_code == EXIT_TARIFF
    (tmp_path / "650000").mkdir()
    result = runner.invoke(app, ["quote", str(EXAMPLES / "inpatient-dibao-county.json"), "--tariffs",
                                 str(tmp_path)])
    assert result.exit_code == EXIT_TARIFF and "TARIFF_NOT_FOUND" in result.output


def test_year_to_date_in_the_claim_file_is_used() -> None:
    data = quote_json(EXAMPLES / "inpatient-jiandang-city-midyear.json")
    before = data["year_to_date"]["before"]  # type: ignore[index]
    after = data["year_to_date"]["after"]  # type: ignore[index]
    assert before["admissions"] == 2 and after["admissions"] == 3
    basic = next(p for p in data["payers"] if p["layer"] == "basic_inpatient")  # type: ignore[attr-defined]
    assert basic["deductible"] == "300.00"  # third admission: 500 x 60% floor


def test_tariffs_validate() -> None:
    result = runner.invoke(app, ["tariffs", "validate", str(TARIFFS)])
    assert result.exit_code == 0 and "all valid" in result.output
    assert "611021" in result.output and "2024-01-01+611000@2024-01-01" in result.output  # the versions, resolved
    assert runner.invoke(app, ["tariffs", "validate", "/nonexistent"]).exit_code == EXIT_TARIFF
    one = runner.invoke(app, ["tariffs", "validate", str(TARIFFS / "611021" / "2024-01-01.yaml")])
    assert one.exit_code == 0 and "611021/2024-01-01" in one.output


def test_the_installed_command_runs_as_a_user_would() -> None:
    script = Path(sys.executable).parent / "settlement"
    completed = subprocess.run([str(script), "quote", str(EXAMPLES / "inpatient-tekun-township.json"), "--json"],
                               capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["patient_pays"] == "0.00"


def test_the_offline_quote_follows_the_tariffs_date_rule_and_reads_the_new_fields(tmp_path: Path) -> None:
    """611000/2025-01-01 says the admission date decides: a stay admitted in December 2024 is quoted under the 2024
    version (no employee scheme), one admitted in January under 2025's, with the retiree's rate and the year's
    figures of the claim file (its limits and admissions by level read back)."""
    claim = json.loads((EXAMPLES / "inpatient-dibao-county.json").read_text(encoding="utf-8"))
    claim["patient"] |= {"scheme": "employee", "categories": [], "retired": True}
    claim["visit"] |= {"admission_date": "2024-12-28", "discharge_date": "2025-01-03",
                       "settled_at": "2025-01-03T10:00:00+08:00", "referral": False}
    claim["year_to_date"] = {"year": 2025, "admissions": 1, "admissions_by_level": {"city": 1},
                             "limits": {"310100": {"outpatient_pooling": "20.00"}}}
    path = tmp_path / "claim.json"
    path.write_text(json.dumps(claim, ensure_ascii=False), encoding="utf-8")
    old = quote_json(path)
    assert old["tariff"]["version"] == "2024-01-01"  # type: ignore[index]
    assert old["patient_pays"] == old["total"]
    claim["visit"]["admission_date"] = "2025-01-02"
    path.write_text(json.dumps(claim, ensure_ascii=False), encoding="utf-8")
    new = quote_json(path)
    employee = next(p for p in new["payers"] if p["layer"] == "employee_inpatient")  # type: ignore[attr-defined]
    assert new["tariff"]["version"] == "2025-01-01"  # type: ignore[index]
    # County, the first county stay but the second of the year (deductible by year: the listed 300.00); 85% + 5.
    assert employee["deductible"] == "300.00" and "90%" in employee["summary"]
    after = new["year_to_date"]["after"]  # type: ignore[index]
    assert after["limits"] == {"310100": {"outpatient_pooling": "20.00"}}
    assert after["admissions_by_level"] == {"city": 1, "county": 1}
