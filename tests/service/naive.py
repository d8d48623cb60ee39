"""Deliberately naive variants, kept so that the checks are shown to fail without the real ones.

A naive year lock, for the concurrency checks:

`NAIVE_LOCK_YEAR` stands in for PostgresStatements.lock_year (the PostgreSQL settlement transaction's first
statement) but takes no lock: it creates the person's year row if needed and reads it as a display would (read,
compute, write). test_cap_race_read_before_write patches it in and asserts that the cap check then breaks, with
the real lock as its control.

`settlement_dated_from_counting_reversals` is the tariff activation's old date rule (below).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import or_, select

from settlement.api.app import Auth
from settlement.db.models import Settlement
from settlement.services.settlements import SettlementService

# ON CONFLICT DO NOTHING takes no lock on an existing row; the schedule's lock is not taken either. A row another
# transaction is creating is not in this statement's snapshot: it reads as 0 admissions, stale as a naive read is.
NAIVE_LOCK_YEAR = """
WITH created AS (
    INSERT INTO person_years (id_number, year, admissions) VALUES (%(id_number)s, %(year)s, 0)
    ON CONFLICT (id_number, year) DO NOTHING
    RETURNING admissions, admissions_township, admissions_county, admissions_city, admissions_provincial)
SELECT COALESCE(created.admissions, known.admissions, 0),
       COALESCE(created.admissions_township, known.admissions_township, 0),
       COALESCE(created.admissions_county, known.admissions_county, 0),
       COALESCE(created.admissions_city, known.admissions_city, 0),
       COALESCE(created.admissions_provincial, known.admissions_provincial, 0)
FROM (SELECT 1) AS one LEFT JOIN created ON true
LEFT JOIN person_years AS known ON known.id_number = %(id_number)s AND known.year = %(year)s
"""


def settlement_dated_from_counting_reversals(repo: Any, version_ids: Sequence[int], since: datetime) -> str | None:
    """Repository.settlement_dated_from as it was before issue 15 (item 3): reversed settlements hold their date
    too, so one settlement dated far ahead, even reversed, keeps every later version of its region from taking
    effect. test_future_dates.py patches it in to show the freeze its real counterpart no longer has."""
    found: str | None = repo.session.scalar(
        select(Settlement.public_id).where(Settlement.settled_at >= since, or_(
            Settlement.tariff_version_id.in_(version_ids),
            Settlement.tariff_parent_version_id.in_(version_ids))).limit(1))
    return found


class NaiveEligibilityRequest(BaseModel):
    """The eligibility request as it was: any string (NUL included), and pydantic's lax date, which reads a number
    as Unix time (`"on": 0` was 1970-01-01)."""

    model_config = ConfigDict(extra="forbid")
    id_number: Annotated[str, Field(min_length=1, max_length=32)]
    on: date | None = None


def add_naive_eligibility(app: FastAPI) -> None:
    """POST /naive/eligibility: the eligibility route taking NaiveEligibilityRequest (add before the OpenAPI
    document is first read)."""
    service = SettlementService(app.state.context)

    @app.post("/naive/eligibility")
    def naive_eligibility(request: NaiveEligibilityRequest, who: Auth) -> dict[str, Any]:
        return service.eligibility(who, request.id_number, request.on or date(2024, 6, 15))


class NaiveAddress:
    """The WSDL's address as it was: whatever Host header the request carries (put in place of the app's
    `state.soap_address`)."""

    def base(self, host_header: str | None, scheme: str) -> str:
        return f"{scheme}://{host_header}"
