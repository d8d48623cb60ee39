"""Split a bill by the catalogue: out of catalogue + over the price limit + self-paid first + in scope.

Classes come from the tariff's catalogue, never from the hospital.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from settlement.domain.claim import Claim
from settlement.domain.errors import ClaimRejected, ErrorCode, Problem
from settlement.domain.money import ZERO, money
from settlement.domain.tariff import Catalogue, ItemClass, UnknownItemPolicy

UNLISTED = "unlisted"


@dataclass(frozen=True, slots=True)
class LineResult:
    line_id: str
    code: str
    item_class: str  # A, B, C or "unlisted" (not in the catalogue)
    amount: Decimal
    out_of_catalogue: Decimal
    over_price_limit: Decimal
    pre_self_pay: Decimal
    in_scope: Decimal
    share: Decimal | None = None  # the class B share applied
    price_cap: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Decomposition:
    total: Decimal
    out_of_catalogue: Decimal
    over_price_limit: Decimal
    pre_self_pay: Decimal
    in_scope: Decimal
    lines: tuple[LineResult, ...]

    @property
    def unlisted_codes(self) -> tuple[str, ...]:
        return tuple(line.code for line in self.lines if line.item_class == UNLISTED)


def decompose(claim: Claim, catalogue: Catalogue) -> Decomposition:
    categories = claim.patient.categories
    entries = catalogue.entries
    results: list[LineResult] = []
    unknown: list[Problem] = []
    out_sum = over_sum = pre_sum = scope_sum = ZERO
    for index, line in enumerate(claim.lines):
        entry = entries.get(line.code)
        amount = line.amount
        if entry is None:
            if catalogue.unknown_items is UnknownItemPolicy.REJECT:
                unknown.append(Problem(ErrorCode.CATALOGUE_UNKNOWN_ITEM, f"lines[{index}].code",
                                       f"item {line.code!r} is not in the catalogue"))
            results.append(LineResult(line.id, line.code, UNLISTED, amount, amount, ZERO, ZERO, ZERO))
            out_sum += amount
            continue
        if entry.item_class is ItemClass.C:
            results.append(LineResult(line.id, line.code, "C", amount, amount, ZERO, ZERO, ZERO))
            out_sum += amount
            continue
        over = ZERO
        cap = entry.price_cap
        if cap is not None and line.unit_price > cap:
            over = amount - money(line.quantity * cap)
        covered = amount - over
        share: Decimal | None = None
        pre = ZERO
        if entry.item_class is ItemClass.B:
            share = entry.share_for(categories)
            pre = money(covered * share)
        scope = covered - pre
        results.append(LineResult(line.id, line.code, entry.item_class.value, amount, ZERO, over, pre, scope,
                                  share, cap))
        over_sum += over
        pre_sum += pre
        scope_sum += scope
    if unknown:
        raise ClaimRejected(unknown)
    return Decomposition(claim.total, out_sum, over_sum, pre_sum, scope_sum, tuple(results))
