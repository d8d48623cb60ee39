"""What a claim is settled on besides its bill: the tariff version and the roster's word on the person, each taken
on the date the tariff says decides (issue 16: policy texts differ, and a 低保 status that ends during a stay is
in force on the admission date but not on the settlement date).

The version in force on the settlement date says, in `dates.tariff`, which date's version settles the claim (a new
version's transition rule decides whether a stay it finds half done keeps the old version); the version that
settles the claim says, in `dates.categories`, on which date the roster's categories count. The roster is read
for the whole span of the claim's dates first (in the settlement's one read), and the categories of that date
are taken from it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from settlement.db.repositories import RosterView
from settlement.domain.claim import SHANGHAI, Claim, day_of
from settlement.domain.errors import TariffError
from settlement.tariffstore.store import ResolvedTariff, TariffStore
from settlement.wire.claims import ServiceClaimIn


def settled_on(claim_in: ServiceClaimIn) -> date:
    """The settlement's date in Asia/Shanghai (a claim without an offset is refused later: its discharge date)."""
    visit = claim_in.visit
    return visit.settled_at.astimezone(SHANGHAI).date() if visit.settled_at.tzinfo else visit.discharge_date


def roster_window(claim_in: ServiceClaimIn) -> tuple[date, date]:
    """The days the roster is read for: every date of the claim a tariff may decide by."""
    visit = claim_in.visit
    days = (visit.admission_date, visit.discharge_date, settled_on(claim_in))
    return min(days), max(days)


def claim_and_tariff(claim_in: ServiceClaimIn, roster: RosterView, tariffs: TariffStore,
                     check: Callable[[Claim], None]) -> tuple[Claim, ResolvedTariff]:
    """The domain claim with the roster's categories and retirement, and the tariff that settles it. `check`
    refuses a claim the service does not settle (one contradicting the roster, one dated ahead); its refusals,
    like the claim's own problems, come before a tariff's absence, as they did when the tariff was found last."""
    visit = claim_in.visit
    settled = settled_on(claim_in)
    try:
        resolved = tariffs.resolve_for(claim_in.patient.region, visit.admission_date, visit.discharge_date, settled)
    except TariffError:
        check(claim_in.build(claim_in.patient, ()))
        raise
    day = day_of(resolved.tariff.categories_date, visit.admission_date, visit.discharge_date, settled)
    claim = claim_in.build(claim_in.patient, roster.categories_on(day), roster.retired)
    check(claim)
    return claim, resolved
