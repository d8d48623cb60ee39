from __future__ import annotations

from decimal import Decimal

import pytest

from settlement.domain.decompose import UNLISTED, decompose
from settlement.domain.errors import ClaimRejected, ErrorCode
from settlement.domain.tariff import Catalogue, CatalogueEntry, ItemClass, UnknownItemPolicy
from tests.factories import SIMPLE_CATALOGUE, line, make_claim

CAPPED = Catalogue({
    "CAPA": CatalogueEntry("CAPA", "capped A", ItemClass.A, price_cap=Decimal("50.00")),
    "CAPB": CatalogueEntry("CAPB", "capped B", ItemClass.B, Decimal("0.20"),
                           {"dibao_a": Decimal("0.05"), "tekun": Decimal("0.00")}, Decimal("100.00")),
})


def test_classes_split_the_bill() -> None:
    claim = make_claim((line("1", "A1", "2", "50.00"), line("2", "B10", "1", "200.00"),
                        line("3", "C1", "1", "30.00"), line("4", "ZZ9", "1", "7.00")))
    dec = decompose(claim, SIMPLE_CATALOGUE)
    assert (dec.out_of_catalogue, dec.over_price_limit, dec.pre_self_pay, dec.in_scope) == (
        Decimal("37.00"), Decimal("0.00"), Decimal("20.00"), Decimal("280.00"))
    assert dec.total == Decimal("337.00")
    assert dec.unlisted_codes == ("ZZ9",)
    assert [ln.item_class for ln in dec.lines] == ["A", "B", "C", UNLISTED]


def test_price_cap_excess_is_self_paid_and_the_share_applies_to_the_capped_part() -> None:
    claim = make_claim((line("1", "CAPA", "3", "60.00"), line("2", "CAPB", "2", "130.00"),
                        line("3", "CAPA", "1", "40.00")))
    dec = decompose(claim, CAPPED)
    first, second, third = dec.lines
    assert first.over_price_limit == Decimal("30.00") and first.in_scope == Decimal("150.00")
    assert second.over_price_limit == Decimal("60.00")
    assert second.pre_self_pay == Decimal("40.00") and second.in_scope == Decimal("160.00")
    assert third.over_price_limit == Decimal("0.00")


@pytest.mark.parametrize(("categories", "share", "pre"), [
    ((), "0.20", "20.00"),
    (("dibao_a",), "0.05", "5.00"),
    (("dibao_a", "tekun"), "0.00", "0.00"),  # the lowest share of the person's categories
    (("unknown",), "0.20", "20.00"),
])
def test_class_b_share_by_category(categories: tuple[str, ...], share: str, pre: str) -> None:
    dec = decompose(make_claim((line("1", "CAPB", "1", "100.00"),), categories=categories), CAPPED)
    assert dec.lines[0].share == Decimal(share)
    assert dec.pre_self_pay == Decimal(pre)


def test_a_tariff_may_reject_unknown_items() -> None:
    catalogue = Catalogue(SIMPLE_CATALOGUE.entries, UnknownItemPolicy.REJECT)
    with pytest.raises(ClaimRejected) as caught:
        decompose(make_claim((line("1", "A1", "1", "1.00"), line("2", "NOPE", "1", "1.00"))), catalogue)
    assert caught.value.code is ErrorCode.CATALOGUE_UNKNOWN_ITEM
    assert caught.value.problems[0].path == "lines[1].code"
