"""The canonical claim as JSON: money and quantities as decimal strings, dates as ISO 8601."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from settlement.domain.accumulators import Accumulators
from settlement.domain.claim import Claim, Hospital, Line, Patient, Visit
from settlement.domain.errors import ClaimRejected, ErrorCode, Problem
from settlement.domain.privacy import mask_id_numbers
from settlement.domain.text import CODE_MAX, NAME_MAX, PERSON_NAME_MAX
from settlement.wire.fields import IsoDate, IsoDateTime, Text


class DecimalString:
    """A decimal string such as "12.50", checked by pydantic-core's own pattern matching: a JSON number is refused
    (money never travels as a float), and so are any digits but ASCII ones. The wire models keep the text; `build`
    makes the Decimals. A validator in Python called for every field (three per bill line) made a 24-line body's
    validation take twice as long."""

    def __init__(self, pattern: str, what: str) -> None:
        self.pattern = pattern
        self.message = f'{what} must be a decimal string such as "12.50"'

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.custom_error_schema(core_schema.str_schema(pattern=self.pattern, strict=True),
                                               custom_error_type="decimal_string", custom_error_message=self.message)

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {"type": "string", "pattern": self.pattern}


Amount = Annotated[str, DecimalString(r"^-?[0-9]{1,12}(\.[0-9]{1,2})?$", "an amount (at most 2 decimals)")]
Quantity = Annotated[str, DecimalString(r"^-?[0-9]{1,9}(\.[0-9]{1,4})?$", "a quantity (at most 4 decimals)")]
UnitPrice = Annotated[str, DecimalString(r"^-?[0-9]{1,12}(\.[0-9]{1,4})?$", "a unit price (at most 4 decimals)")]
ShortText = Annotated[str, Text(128, min_length=1)]
Fund = Annotated[str, Text(CODE_MAX, min_length=1)]


def _decimals(amounts: dict[str, str]) -> dict[str, Decimal]:
    return {fund: Decimal(amount) for fund, amount in amounts.items()}


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HospitalIn(Wire):
    code: ShortText
    level: Annotated[str, Text(16), Field(description="township | county | city | provincial")]
    name: Annotated[str, Text(NAME_MAX)] | None = None


class VisitIn(Wire):
    id: ShortText = Field(description="the hospital's visit (admission) number")
    type: Annotated[str, Text(32), Field(description="inpatient | outpatient | chronic_outpatient")]
    admission_date: IsoDate
    discharge_date: IsoDate
    settled_at: Annotated[IsoDateTime, Field(
        description="settlement time with its offset, e.g. 2024-03-12T10:15:00+08:00")]
    referral: bool = Field(False, description="referred out of the region (转外就医)")
    disease: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] | None = Field(
        None, description="the disease group a tariff keeps limits by (门诊慢特病病种), as the tariff names it")

    @model_serializer(mode="wrap")
    def _without_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A claim that uses neither dumps as before they existed: its request hash and stored form do not move."""
        data: dict[str, Any] = handler(self)
        if not self.referral:
            data.pop("referral", None)
        if self.disease is None:
            data.pop("disease", None)
        return data


class PatientBaseIn(Wire):
    id_number: Annotated[str, Text(32, min_length=1)]
    name: Annotated[str, Text(PERSON_NAME_MAX)] = ""
    scheme: Annotated[str, Text(16), Field(description="resident | employee")]
    region: Annotated[str, Field(pattern=r"^[0-9]{6}$")]


class PatientIn(PatientBaseIn):
    categories: list[Annotated[str, Text(64)]] = Field(default_factory=list, max_length=16)
    retired: bool = False


class LineIn(Wire):
    id: ShortText
    code: ShortText
    name: Annotated[str, Text(256)] = ""
    quantity: Quantity
    unit_price: UnitPrice
    amount: Amount


class YearToDateIn(Wire):
    year: int
    admissions: int = 0
    deductible_used: dict[Fund, Amount] = Field(default_factory=dict)
    cumulative: dict[Fund, Amount] = Field(default_factory=dict)
    paid: dict[Fund, Amount] = Field(default_factory=dict)
    admissions_by_level: dict[Annotated[str, Text(16)], int] = Field(default_factory=dict)
    limits: dict[Fund, dict[Annotated[str, Text(130)], Amount]] = Field(
        default_factory=dict, description="fund -> limit -> paid")

    def to_domain(self) -> Accumulators:
        return Accumulators(self.year, self.admissions, _decimals(self.deductible_used), _decimals(self.cumulative),
                            _decimals(self.paid), dict(self.admissions_by_level), {
                                (fund, key): Decimal(amount) for fund, keyed in self.limits.items()
                                for key, amount in keyed.items()})


class ClaimBaseIn(Wire):
    hospital: HospitalIn
    visit: VisitIn
    lines: list[LineIn] = Field(max_length=5000)
    total: Amount | None = None

    @model_validator(mode="after")
    def _free_text_masked(self) -> Self:
        """The claim's free text (names, the visit number) is stored with its ID numbers masked, as every wire
        FreeText is (settlement.wire.freetext); the patient's own number stays in its field. One check for the
        claim instead of a validator per field: a line's name too short to hold a number is passed over."""
        update: dict[str, Any] = {}
        parts: tuple[tuple[str, Wire | None, str], ...] = (
            ("hospital", self.hospital, "name"), ("visit", self.visit, "id"),
            ("patient", getattr(self, "patient", None), "name"))
        for field_name, part, attribute in parts:
            text = getattr(part, attribute, None)
            if part is not None and text is not None and mask_id_numbers(text) != text:
                update[field_name] = part.model_copy(update={attribute: mask_id_numbers(text)})
        if any(len(line.name) >= 15 and mask_id_numbers(line.name) != line.name for line in self.lines):
            update["lines"] = [line.model_copy(update={"name": mask_id_numbers(line.name)}) for line in self.lines]
        return self.model_copy(update=update) if update else self

    def build(self, patient: PatientBaseIn, categories: tuple[str, ...], retired: bool = False) -> Claim:
        """The domain claim; raises ClaimRejected (every problem) when it is not a valid bill."""
        visit = self.visit
        return Claim(
            hospital=Hospital(self.hospital.code, self.hospital.level),
            visit=Visit(visit.id, visit.type, visit.admission_date, visit.discharge_date, visit.settled_at,
                        visit.referral, visit.disease),
            patient=Patient(patient.id_number, patient.name, patient.scheme, patient.region, categories, retired),
            lines=tuple(Line(line.id, line.code, line.name, Decimal(line.quantity), Decimal(line.unit_price),
                             Decimal(line.amount)) for line in self.lines),
            declared_total=None if self.total is None else Decimal(self.total),
        )


class ClaimIn(ClaimBaseIn):
    """A claim file for the offline quote: categories and year-to-date figures come with the claim."""

    patient: PatientIn
    year_to_date: YearToDateIn | None = None

    def to_domain(self) -> Claim:
        return self.build(self.patient, tuple(self.patient.categories), self.patient.retired)

    def accumulators(self) -> Accumulators:
        if self.year_to_date is None:
            return Accumulators(self.visit.discharge_date.year)
        return self.year_to_date.to_domain()


class ServiceClaimIn(ClaimBaseIn):
    """A claim sent to the service: categories come from the roster and year-to-date figures from the ledger,
    never from the hospital."""

    patient: PatientBaseIn


def malformed(error: ValidationError) -> ClaimRejected:
    """A claim that is not even well-shaped JSON: every field problem, without echoing the values."""
    problems = []
    for item in error.errors(include_input=False):
        path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in item["loc"]).lstrip(".")
        problems.append(Problem(ErrorCode.CLAIM_MALFORMED, path, item["msg"].removeprefix("Value error, ")))
    return ClaimRejected(problems)


def parse_claim(data: object) -> ClaimIn:
    try:
        return ClaimIn.model_validate(data)
    except ValidationError as error:
        raise malformed(error) from None


def parse_claim_json(text: str | bytes) -> ClaimIn:
    try:
        return ClaimIn.model_validate_json(text)
    except ValidationError as error:
        raise malformed(error) from None
