"""Numbers typed by people (a region, a version id) are ASCII digits: str.isdigit also takes other scripts' digits
and superscripts, which int() refuses or turns into a second spelling of the same code."""

from __future__ import annotations

import secrets

import pytest

from settlement.bootstrap import SYSTEM
from settlement.services import tariffs
from settlement.services.admin import add_hospital
from settlement.services.errors import ServiceCode, ServiceError
from settlement.services.roster import import_roster
from tests.service.conftest import Service, new_id_number

FOREIGN = ["٦١١٠٠٢", "６１１００２", "61100²"]  # Arabic-Indic, full-width, a superscript: each isdigit() to Python


def test_the_naive_check_takes_them() -> None:
    # The planted fault: what the checks below were.
    assert all(len(region) == 6 and region.isdigit() for region in FOREIGN)


@pytest.mark.parametrize("region", FOREIGN)
def test_a_roster_region_in_other_digits_is_a_rejected_row(service: Service, region: str) -> None:
    good, bad = new_id_number(), new_id_number()
    text = ("id_number,name,scheme,region,category,valid_from,valid_to\n"
            f"{good},张三,resident,611002,dibao,2024-01-01,\n{bad},李四,resident,{region},dibao,2024-01-01,\n")
    report = import_roster(service.app.context, SYSTEM, "digits.csv", text.encode("utf-8")).as_dict()
    assert (report["accepted"], report["rejected"]) == (1, 1)
    assert report["errors"][0]["line"] == 3 and "6-digit" in report["errors"][0]["reason"]


@pytest.mark.parametrize("region", FOREIGN)
def test_a_hospital_region_in_other_digits_is_refused(service: Service, region: str) -> None:
    with pytest.raises(ServiceError) as refused:
        add_hospital(service.app.context, f"HD{secrets.token_hex(4).upper()}", "数字医院", "county", region, "test")
    assert refused.value.code == ServiceCode.REQUEST_MALFORMED


@pytest.mark.parametrize("reference", ["²", "٣", "３", "99999999999", "2147483648"])
def test_a_version_reference_that_is_no_id_is_not_found(service: Service, reference: str) -> None:
    with service.app.context.uow() as tx:
        with pytest.raises(ServiceError) as refused:
            tariffs.find_version(tx.repo, reference)
        assert refused.value.code == ServiceCode.NOT_FOUND
        known = tariffs.find_version(tx.repo, "611000/2024-01-01")
        assert tariffs.find_version(tx.repo, str(known.id)).id == known.id  # the control: an id is found
