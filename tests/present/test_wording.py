"""A layer's trace in plain words: every rule the engine can write has words, and the words carry the figures."""

from __future__ import annotations

import re

import pytest

from settlement.present.wording import payer_words, step_words
from tests.factories import ROOT

DOMAIN_RULES = sorted(set(re.findall(r'TraceStep\(\s*"([a-z_.]+)"',
                                     "".join(p.read_text("utf-8") for p in (ROOT / "src" / "settlement" / "domain")
                                             .glob("*.py")))))


@pytest.mark.parametrize("rule", DOMAIN_RULES)
def test_every_rule_the_engine_writes_has_words(rule: str) -> None:
    words = step_words(rule, {}, "0.00")
    assert words is None or (words != rule and not re.search(r"[a-z]{3,}", words)), words


def test_the_control_an_unknown_rule_is_named_by_its_code() -> None:
    assert step_words("rate.something_new", {}, "1.00") == "rate.something_new"


@pytest.mark.parametrize(("rule", "inputs", "output", "expected"), [
    ("deductible.per_visit", {"earlier_admissions": 1, "repeat_factor": "0.80"}, "320.00",
     "起付线 320.00 元（本年第2次住院，按 80% 计）"),
    ("deductible.per_visit", {"earlier_admissions": 0, "repeat_factor": "1"}, "400.00", "起付线 400.00 元"),
    ("deductible.per_year", {"annual": "5000.00", "used_before": "1200.00"}, "511.00",
     "年度起付线 5,000.00 元，此前已计 1,200.00 元，本次计入 511.00 元"),
    ("rate.flat", {"amount": "8338.33", "rate": "0.75"}, "6253.75", "8,338.33 元 × 75%"),
    ("rate.bands", {"amount": "39200.00", "rate_add": "0", "bands": ["0-20000.00@0.70", "20000.00-@0.75"],
                    "bounds": "above_deductible"}, "28400.00",
     "39,200.00 元分段报销：20,000.00元以内70%，20,000.00元以上部分75%（分段按扣除起付线后的费用计算）"),
    ("rate.annual_cumulative", {"cumulative_before": "0.00", "cumulative_after": "40000.00", "threshold": "10000.00",
                                "rate_add": "0.05", "bands": ["0-30000.00@0.60", "30000.00-100000.00@0.70"]},
     "19500.00", "年度累计 0.00 → 40,000.00 元，超过 10,000.00 元的部分分段支付："
                 "30,000.00元以内65%，30,000.00至100,000.00元部分75%"),
    ("cap.per_year", {"cap": "130000.00", "paid_before": "129000.00"}, "1000.00",
     "达到年度最高支付限额 130,000.00 元（本年此前已支付 129,000.00 元）"),
    ("guarantee.patient_share_at_most", {"base": "in_scope", "share": "0.10", "bound": "1850.00"}, "977.50",
     "兜底保障：个人负担不超过政策范围内费用的 10%（1,850.00 元）"),
])
def test_the_words_carry_the_figures(rule: str, inputs: dict[str, object], output: str, expected: str) -> None:
    assert step_words(rule, inputs, output) == expected


def test_a_payer_reads_as_one_sentence_and_an_ineligible_one_says_so() -> None:
    payer = {"eligible": True, "trace": [
        {"rule": "base", "inputs": {"in_scope": "844.00"}, "output": "844.00"},
        {"rule": "deductible.waived", "inputs": {}, "output": "0.00"},
        {"rule": "rate.flat", "inputs": {"amount": "511.00", "rate": "0.70"}, "output": "357.70"}]}
    assert payer_words(payer) == "免起付线；511.00 元 × 70%"
    assert payer_words({"eligible": False, "trace": []}) == "不符合本项支付条件"
