"""The format's policy rules (issue 16): each mistake is reported with file, path and reason; the versions shipped
before them keep their content hash and meaning; the version in force on the settlement date says which date
decides the version that settles a claim."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from settlement.tariffstore import load_store
from tests.factories import TARIFFS
from tests.tariffstore.test_store import MINIMAL, problems_of, write

# The resolved hashes of the versions shipped before the format could name these rules: a new key absent from a
# document adds nothing to its canonical JSON, so a settlement recorded under them recomputes under the same hash.
SHIPPED_2024 = {
    ("610900", "2024-01-01"): "b6e4f0906b7c444e119717d73899803511aa226e7fbb9b9f86c6cdd7d97efde0",
    ("611000", "2024-01-01"): "3615416d63a766c621da056e13dfa54306cf86c84eaa5991cc037ffae3b9b7d4",
    ("611021", "2024-01-01+611000@2024-01-01"): "1da84fa55171dcafa8965cb91c302e0579ce85f731bba5c166b4dc8cfc635273",
}


def test_the_versions_shipped_before_keep_their_hashes() -> None:
    store = load_store(TARIFFS)
    found = {}
    for version, parent in store.all_resolutions():
        ref = store.resolved_pair(version, parent).tariff.ref
        found[(ref.region, ref.version)] = ref.sha256
    assert {key: found.get(key) for key in SHIPPED_2024} == SHIPPED_2024


LAYER = '''    rate: {rate: "0.80"}
'''


@pytest.mark.parametrize(("layer", "where", "reason"), [
    ('    rate: {rate: "0.80", bounds: on_amount}\n', "layers[0].rate", "a single rate has none"),
    ('    rate: {bands: [{rate: "0.80"}], bounds: from_zero}\n', "layers[0].rate.bounds", "on_amount"),
    ('    rate: {rate: "0.80"}\n    deductible: {per: visit, amount: "400.00", repeat_admission: '
     '{step: "0.20", floor: "0.60", step_amount: "100.00"}}\n', "repeat_admission", "one way"),
    ('    rate: {rate: "0.80"}\n    deductible: {per: visit, amount: "400.00", repeat_admission: {step: "0.20"}}\n',
     "repeat_admission", "step and floor go together"),
    ('    rate: {rate: "0.80"}\n    deductible: {per: visit, amount: "400.00", repeat_admission: '
     '{floor_amount: "100.00"}}\n', "repeat_admission", "give the step_amount"),
    ('    rate: {rate: "0.80"}\n    deductible: {per: visit, amount: "400.00", repeat_admission: '
     '{amounts: {county: []}}}\n', "repeat_admission", "2nd, 3rd"),
    ('    rate: {rate: "0.80"}\n    deductible: {per: visit, amount: "400.00", repeat_admission: '
     '{counted: month}}\n', "repeat_admission.counted", "year"),
    ('    rate: {rate: "0.80"}\n    category_rules: [{rate: "0.90"}]\n', "category_rules[0]",
     "at least one of categories"),
    ('    rate: {rate: "0.80"}\n    category_rules: [{referral: true, deductible: waive, deductible_scale: "2"}]\n',
     "category_rules[0]", "no scale or amount"),
    ('    rate: {rate: "0.80"}\n    category_rules: [{referral: true, deductible_scale: "11"}]\n',
     "category_rules[0].deductible_scale", "a scale is a factor"),
    ('    rate: {rate: "0.80"}\n    category_rules: [{referral: "yes please"}]\n',
     "category_rules[0].referral", "boolean"),
    ('    rate: {rate: "0.80"}\n    limit: {name: outpatient}\n', "layers[0].limit", "per_year, by_disease"),
    ('    rate: {rate: "0.80"}\n    limit: {name: outpatient, per_year: "100.00", source: NOPE}\n',
     "layers[0].limit.source", "unknown source"),
    ('    rate: {rate: "0.80"}\n    above_cap_of: [basic]\n', "layers[0].above_cap_of",
     "not a layer before this one"),
    ('    rate: {rate: "0.80"}\n    above_cap_of: []\n', "layers[0].above_cap_of", "at least 1"),
])
def test_policy_rule_mistakes_are_reported(tmp_path: Path, layer: str, where: str, reason: str) -> None:
    write(tmp_path, "610000", "2024-01-01.yaml", MINIMAL.replace(LAYER, layer))
    problems = problems_of(tmp_path)
    assert any("2024-01-01.yaml" in p and where in p and reason in p for p in problems), problems


def test_a_date_setting_names_a_date(tmp_path: Path) -> None:
    write(tmp_path, "610000", "2024-01-01.yaml", MINIMAL + "dates: {tariff: admitted}\n")
    problems = problems_of(tmp_path)
    assert any("dates.tariff" in p and "admission" in p for p in problems), problems


def two_versions(tmp_path: Path, setting: str) -> None:
    write(tmp_path, "610000", "2024-01-01.yaml", MINIMAL)
    write(tmp_path, "610000", "2025-01-01.yaml", MINIMAL.replace('version: "2024-01-01"', 'version: "2025-01-01"')
          .replace('from: "2024-01-01"', 'from: "2025-01-01"').replace('"0.80"', '"0.85"') + setting)


@pytest.mark.parametrize(("setting", "version"), [
    ("", "2025-01-01"),  # absent: the settlement date decides
    ("dates: {tariff: settlement}\n", "2025-01-01"),
    ("dates: {tariff: discharge}\n", "2025-01-01"),
    ("dates: {tariff: admission}\n", "2024-01-01"),  # the new version's own transition rule keeps the old one
])
def test_the_version_in_force_on_the_settlement_date_says_which_date_decides(tmp_path: Path, setting: str,
                                                                             version: str) -> None:
    two_versions(tmp_path, setting)
    store = load_store(tmp_path)
    resolved = store.resolve_for("610000", date(2024, 12, 28), date(2025, 1, 3), date(2025, 1, 4))
    assert resolved.tariff.ref.version == version
    # A stay admitted and settled under one version is settled by it whatever the setting says.
    assert store.resolve_for("610000", date(2025, 1, 2), date(2025, 1, 3), date(2025, 1, 4)).tariff.ref.version == \
        "2025-01-01"


def test_the_old_versions_setting_is_not_read(tmp_path: Path) -> None:
    """Only the version in force on the settlement date is asked: an older version's setting (here: the
    discharge date) never sends a claim settled after its successor started back to it."""
    write(tmp_path, "610000", "2024-01-01.yaml", MINIMAL + "dates: {tariff: admission}\n")
    write(tmp_path, "610000", "2025-01-01.yaml", MINIMAL.replace('version: "2024-01-01"', 'version: "2025-01-01"')
          .replace('from: "2024-01-01"', 'from: "2025-01-01"'))
    store = load_store(tmp_path)
    resolved = store.resolve_for("610000", date(2024, 12, 28), date(2025, 1, 3), date(2025, 1, 4))
    assert resolved.tariff.ref.version == "2025-01-01"
    assert resolved.tariff.categories_date == "settlement"


def test_the_2025_version_covers_employees_and_cites_every_figure() -> None:
    store = load_store(TARIFFS)
    resolved = store.resolve("611000", date(2025, 6, 1))
    document = resolved.document
    assert resolved.tariff.ref.version == "2025-01-01"
    layers = {layer.id: layer for layer in document.layers}
    assert {layer.fund for layer in document.layers} >= {"390100", "390200", "310100", "330100", "610100", "640100"}
    assert layers["employee_large_amount"].above_cap_of == ["employee_inpatient"]
    outpatient = layers["basic_outpatient"]
    assert outpatient.caps.per_visit is None and outpatient.limit is not None  # 100 a year, not a visit
    for layer in document.layers:
        blocks = [block for block in (layer.deductible, layer.rate, layer.guarantee, layer.limit) if block]
        assert all(block.source for block in blocks), f"{layer.id} has an uncited rule block"
        assert all(rule.source for rule in layer.category_rules), f"{layer.id} has an uncited rule"
    cited = {layer.deductible.source for layer in document.layers if layer.deductible} | {
        layer.rate.source for layer in document.layers if layer.rate}
    assert document.sources["SL-EMPLOYEE"].status == "illustrative" and "SL-EMPLOYEE" in cited
    assert (resolved.tariff.tariff_date, resolved.tariff.categories_date) == ("admission", "admission")
    # The county inherits it from 2025 on, with its own assistance rate.
    county = store.resolve("611021", date(2025, 6, 1))
    assert county.tariff.ref.version == "2024-01-01+611000@2025-01-01"
    assert any(layer.id == "employee_inpatient" for layer in county.tariff.layers)
