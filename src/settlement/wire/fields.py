"""The field types every string and date the service takes is made of: the wire models' fields, and the query and
path parameters of the REST routes.

- `Text(max_length)`: a bounded string holding no control character (the rule of settlement.domain.text), with
  its own message; `multiline=True` for notes and reasons, which keep tab and line breaks.
- `IsoDate`, `IsoDateTime`: ISO 8601 strings only. pydantic's lax mode reads a number (or a string of digits) as
  Unix time, so `"on": 0` was the first of January 1970.

Each is checked by pydantic-core itself (no Python call per field: see DecimalString in settlement.wire.claims).
A test walks the OpenAPI document and every wire model: a string field without one of these (or a pattern of its
own that refuses control characters) fails it.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from settlement.domain.text import FREE_TEXT, ONE_LINE


class Text:
    """A string of `min_length` to `max_length` characters without control characters: its length is checked
    first (with pydantic's own message), then its characters."""

    def __init__(self, max_length: int, *, min_length: int = 0, multiline: bool = False) -> None:
        self.max_length = max_length
        self.min_length = min_length
        self.pattern = FREE_TEXT if multiline else ONE_LINE
        self.message = ("must not hold control characters other than tab and line breaks" if multiline
                        else "must not hold control characters")

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        checks: list[core_schema.CoreSchema] = [
            core_schema.str_schema(min_length=self.min_length or None, max_length=self.max_length),
            core_schema.custom_error_schema(core_schema.str_schema(pattern=self.pattern),
                                            custom_error_type="control_character", custom_error_message=self.message)]
        # What metadata before this one made of the string (FreeText masks ID numbers) comes first; a plain string
        # needs no step of its own.
        earlier = handler(source)
        return core_schema.chain_schema(checks if earlier == core_schema.str_schema() else [earlier, *checks])

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        described: JsonSchemaValue = {"type": "string", "maxLength": self.max_length, "pattern": self.pattern}
        if self.min_length:
            described["minLength"] = self.min_length
        return described


class _Iso:
    """A date or a date-time written as ISO 8601 text (a `date` or `datetime` object too, from Python callers)."""

    def __init__(self, kind: type[date], prefix: str, message: str) -> None:
        self.kind = kind
        self.prefix = prefix
        self.message = message

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        parsed = core_schema.datetime_schema() if self.kind is datetime else core_schema.date_schema()
        as_text = core_schema.chain_schema([core_schema.str_schema(pattern=self.prefix, strict=True), parsed])
        exact = core_schema.datetime_schema(strict=True) if self.kind is datetime \
            else core_schema.date_schema(strict=True)
        return core_schema.custom_error_schema(
            core_schema.json_or_python_schema(json_schema=as_text,
                                              python_schema=core_schema.union_schema([exact, as_text])),
            custom_error_type="iso_date", custom_error_message=self.message)

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {"type": "string", "format": "date-time" if self.kind is datetime else "date"}


# ASCII digits only ("\d" would take other scripts'); a date-time's remainder (seconds, offset) is pydantic's to read.
IsoDate = Annotated[date, _Iso(date, r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
                               "must be a valid date written as a string YYYY-MM-DD, e.g. \"2024-06-15\"")]
IsoDateTime = Annotated[datetime, _Iso(datetime, r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}",
                                       "must be a valid date and time written as an ISO 8601 string, e.g. "
                                       "\"2024-06-15T10:15:00+08:00\"")]
