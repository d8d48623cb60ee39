"""The shipped tariffs load; every kind of mistake in a tariff file is reported as file, path and reason."""

from __future__ import annotations

import shutil
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from settlement.domain.errors import ErrorCode, TariffError
from settlement.tariffstore import load_store
from settlement.tariffstore.store import read_catalogue_csv
from tests.factories import TARIFFS

MINIMAL = """\
region: "610000"
name: test
version: "2024-01-01"
effective: {from: "2024-01-01"}
categories: {dibao: {name: 低保}}
catalogue:
  items:
    - {code: A1, name: item, class: A}
layers:
  - id: basic
    fund: "390100"
    name: basic
    rate: {rate: "0.80"}
"""


def write(root: Path, region: str, name: str, text: str) -> Path:
    folder = root / region
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(root: Path) -> list[str]:
    with pytest.raises(TariffError) as caught:
        load_store(root)
    return [str(problem) for problem in caught.value.problems]


def test_the_shipped_tariffs_are_valid_and_complete() -> None:
    store = load_store(TARIFFS)
    assert store.regions() == ["610900", "611000", "611021"]
    shangluo = store.tariff("611000", date(2024, 6, 1))
    assert len(shangluo.catalogue.entries) >= 200
    classes = {entry.item_class for entry in shangluo.catalogue.entries.values()}
    assert classes == {"A", "B", "C"}
    assert any(entry.price_cap for entry in shangluo.catalogue.entries.values())
    assert any(entry.share_by_category for entry in shangluo.catalogue.entries.values())
    assert [layer.fund for layer in shangluo.layers] == ["390100", "390100", "390100", "390200", "610100", "640100"]
    names = set(shangluo.category_names)
    assert {"tekun_centralized", "tekun_dispersed", "dibao_rural_a", "dibao_rural_b", "dibao_rural_c",
            "dibao_urban", "jiandang", "low_income"} <= names


def test_unverified_and_illustrative_values_say_so() -> None:
    store = load_store(TARIFFS)
    document = store.resolve("611000", date(2024, 6, 1)).document
    statuses = {source.status for source in document.sources.values()}
    assert statuses == {"unverified", "illustrative"}
    for layer in document.layers:
        cited = [block.source for block in (layer.deductible, layer.rate, layer.guarantee) if block is not None]
        assert all(cited), f"{layer.id} has an uncited rule block"


def test_a_county_inherits_its_city_and_overrides_what_differs() -> None:
    store = load_store(TARIFFS)
    city = store.tariff("611000", date(2024, 6, 1))
    county = store.tariff("611021", date(2024, 6, 1))
    assert county.ref.version == "2024-01-01+611000@2024-01-01"
    assert county.ref.sha256 != city.ref.sha256
    city_assist = next(layer for layer in city.layers if layer.id == "medical_assistance")
    county_assist = next(layer for layer in county.layers if layer.id == "medical_assistance")
    assert city_assist.rates and county_assist.rates
    assert (city_assist.rates.rate, county_assist.rates.rate) == (Decimal("0.60"), Decimal("0.65"))
    assert county_assist.category_rules == city_assist.category_rules  # everything else inherited
    assert county.catalogue == city.catalogue


def test_regions_fall_back_to_their_city_then_province() -> None:
    store = load_store(TARIFFS)
    assert store.tariff("611002", date(2024, 6, 1)).ref.region == "611000"  # 商州区 has no folder of its own
    assert store.tariff("611021", date(2024, 6, 1)).ref.region == "611021"
    with pytest.raises(TariffError) as caught:
        store.tariff("110105", date(2024, 6, 1))
    assert caught.value.code is ErrorCode.TARIFF_NOT_FOUND
    with pytest.raises(TariffError) as caught:
        store.tariff("611000", date(2023, 12, 31))  # before the first version
    assert caught.value.code is ErrorCode.TARIFF_NOT_FOUND


def test_the_hash_ignores_formatting_and_sees_content(tmp_path: Path) -> None:
    write(tmp_path / "a", "610000", "v.yaml", MINIMAL)
    write(tmp_path / "b", "610000", "v.yaml", "# a comment\n" + MINIMAL.replace('"0.80"', "'0.80'"))
    write(tmp_path / "c", "610000", "v.yaml", MINIMAL.replace('"0.80"', '"0.81"'))
    hashes = [load_store(tmp_path / d).tariff("610000", date(2024, 1, 1)).ref.sha256 for d in "abc"]
    assert hashes[0] == hashes[1] != hashes[2]


def test_versions_switch_on_their_dates(tmp_path: Path) -> None:
    write(tmp_path, "610000", "2024.yaml", MINIMAL.replace('effective: {from: "2024-01-01"}',
                                                          'effective: {from: "2024-01-01", to: "2024-06-30"}'))
    write(tmp_path, "610000", "2024b.yaml", MINIMAL.replace('version: "2024-01-01"', 'version: "2024-07-01"')
          .replace('from: "2024-01-01"', 'from: "2024-07-01"').replace('"0.80"', '"0.85"'))
    store = load_store(tmp_path)
    assert store.tariff("610000", date(2024, 6, 30)).ref.version == "2024-01-01"
    assert store.tariff("610000", date(2024, 7, 1)).ref.version == "2024-07-01"


@pytest.mark.parametrize(("change", "where", "reason"), [
    (('rate: {rate: "0.80"}', "rate: {rate: 0.80}"), "layers[0].rate.rate", "quoted strings"),
    (('rate: {rate: "0.80"}', 'rate: {rate: "80"}'), "layers[0].rate.rate", "between 0 and 1"),
    # Decimal() would take each of these; "$" lets a trailing newline through and "\\d" any script's digits.
    (('rate: {rate: "0.80"}', 'rate: {rate: "0.80\\n"}'), "layers[0].rate.rate", "not a non-negative decimal"),
    (('rate: {rate: "0.80"}', 'rate: {rate: "٠.٨٠"}'), "layers[0].rate.rate", "not a non-negative decimal"),
    (('rate: {rate: "0.80"}', 'rate: {rate: " 0.80"}'), "layers[0].rate.rate", "not a non-negative decimal"),
    (('fund: "390100"', 'fund: "39"'), "layers[0].fund", "pattern"),
    # pydantic-core's "\\d" is Unicode's: the fund in Arabic-Indic digits was a second fund of its own.
    (('fund: "390100"', 'fund: "٣٩٠١٠٠"'), "layers[0].fund", "pattern"),
    (('region: "610000"', 'region: "٦١٠٠٠٠"'), "region", "pattern"),
    (('rate: {rate: "0.80"}', 'rate: {rate: "0.80", bands: [{rate: "0.5"}]}'), "layers[0].rate", "not both"),
    (('    rate: {rate: "0.80"}', '    rate: {rate: "0.80"}\n    deductible: {per: visit, by_level: {city: "1"}}'),
     "layers[0].deductible", "missing"),
    (("class: A}", "class: B}"), "catalogue.items[0]", "needs a self-paid-first share"),
    (('    name: basic\n', '    name: basic\n    eligible: {categories: [nobody]}\n'),
     "layers[0].eligible.categories", "unknown category"),
    (('    rate: {rate: "0.80"}', '    rate: {rate: "0.80", source: NOPE}'), "layers[0].rate.source",
     "unknown source"),
    (("    name: basic\n", "    name: basic\n    colour: red\n"), "layers[0].colour", "Extra inputs"),
    (('effective: {from: "2024-01-01"}', 'effective: {from: "2024-01-01", to: "2023-01-01"}'), "effective",
     "before"),
])
def test_mistakes_are_reported_with_file_path_and_reason(tmp_path: Path, change: tuple[str, str], where: str,
                                                         reason: str) -> None:
    assert change[0] in MINIMAL
    write(tmp_path, "610000", "2024-01-01.yaml", MINIMAL.replace(*change))
    problems = problems_of(tmp_path)
    assert any("2024-01-01.yaml" in p and where in p and reason in p for p in problems), problems


def test_overlapping_versions_are_refused(tmp_path: Path) -> None:
    # a ends on its own date, 2024-06-30; b starts before that.
    write(tmp_path, "610000", "a.yaml", MINIMAL.replace('effective: {from: "2024-01-01"}',
                                                       'effective: {from: "2024-01-01", to: "2024-06-30"}'))
    write(tmp_path, "610000", "b.yaml", MINIMAL.replace('version: "2024-01-01"', 'version: "2024-03-01"')
          .replace('from: "2024-01-01"', 'from: "2024-03-01"'))
    problems = problems_of(tmp_path)
    assert any("TARIFF_OVERLAP" in p and "b.yaml" in p for p in problems), problems


def test_two_versions_starting_the_same_day_overlap(tmp_path: Path) -> None:
    write(tmp_path, "610000", "a.yaml", MINIMAL)
    write(tmp_path, "610000", "b.yaml", MINIMAL.replace('version: "2024-01-01"', 'version: "2024-01-01b"'))
    problems = problems_of(tmp_path)
    assert any("TARIFF_OVERLAP" in p for p in problems), problems


def test_an_open_ended_version_ends_when_the_next_one_starts(tmp_path: Path) -> None:
    write(tmp_path, "610000", "a.yaml", MINIMAL)
    write(tmp_path, "610000", "b.yaml", MINIMAL.replace('version: "2024-01-01"', 'version: "2024-03-01"')
          .replace('from: "2024-01-01"', 'from: "2024-03-01"').replace('"0.80"', '"0.85"'))
    store = load_store(tmp_path)
    assert store.tariff("610000", date(2024, 2, 29)).ref.version == "2024-01-01"
    assert store.tariff("610000", date(2024, 3, 1)).ref.version == "2024-03-01"
    assert store.until(store.versions("610000")[0]) == date(2024, 2, 29)
    assert store.until(store.versions("610000")[1]) is None


def test_broken_files_are_reported(tmp_path: Path) -> None:
    write(tmp_path, "610000", "a.yaml", "region: [unclosed")
    write(tmp_path, "610100", "b.yaml", "- a list")
    write(tmp_path, "610200", "c.yaml", MINIMAL)  # region differs from its folder
    write(tmp_path, "610300", "d.yaml", MINIMAL.replace('region: "610000"', 'region: "610300"')
          .replace("region:", 'inherits: "619900"\nregion:'))
    problems = problems_of(tmp_path)
    assert any("a.yaml" in p and "cannot read YAML" in p for p in problems)
    assert any("b.yaml" in p and "mapping" in p for p in problems)
    assert any("c.yaml" in p and "differs from its folder" in p for p in problems)
    assert any("d.yaml" in p and "no tariff folder for 619900" in p for p in problems), problems


def test_missing_directory() -> None:
    with pytest.raises(TariffError) as caught:
        load_store(Path("/nonexistent/tariffs"))
    assert caught.value.code is ErrorCode.TARIFF_NOT_FOUND


def test_catalogue_csv_errors_name_the_line(tmp_path: Path) -> None:
    header = "code,name,kind,class,share,share_by_category,price_cap,unit,note\n"
    path = tmp_path / "cat.csv"
    path.write_text(header + "A1,item,drug,A,,,,盒,\nB1,item,drug,B,0.10,dibao:0.05,,盒,\nC1,short\n",
                    encoding="utf-8")
    items, problems = read_catalogue_csv(path)
    assert [item["code"] for item in items] == ["A1"]
    assert ["line 3.share_by_category" in str(p) for p in problems] == [True, False]
    assert "line 4" in str(problems[1]) and "columns" in str(problems[1])
    path.write_text("wrong,header\n", encoding="utf-8")
    assert "header" in str(read_catalogue_csv(path)[1][0])
    assert "cannot read" in str(read_catalogue_csv(tmp_path / "missing.csv")[1][0])


def test_a_bad_row_in_the_shipped_catalogue_is_caught(tmp_path: Path) -> None:
    shutil.copytree(TARIFFS, tmp_path / "t")
    catalogue = tmp_path / "t" / "611000" / "catalogue-2024-01-01.csv"
    lines = catalogue.read_text(encoding="utf-8").splitlines()
    first = lines[1].split(",")
    first[3] = "C"
    first[6] = "12.00"  # class C with a price cap
    catalogue.write_text("\n".join([lines[0], ",".join(first), *lines[2:]]) + "\n", encoding="utf-8")
    problems = problems_of(tmp_path / "t")
    assert any("catalogue.items[0]" in p and "class C" in p for p in problems), problems
