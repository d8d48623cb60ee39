"""Free text the services take without a wire model (the command line, uploaded files' names): bounded and free of
control characters by the same rule as the wire models (settlement.domain.text), refused with REQUEST_MALFORMED."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any

from settlement.domain.text import text_problem
from settlement.services.errors import ServiceCode, ServiceError


def checked(value: str, what: str, max_length: int, *, multiline: bool = False) -> str:
    """`value` itself, or a ServiceError naming `what` and the limit or the character (never the value)."""
    problem = text_problem(value, max_length, multiline=multiline)
    if problem is not None:
        raise ServiceError(ServiceCode.REQUEST_MALFORMED, f"{what} {problem}")
    return value


class CsvUnreadable(Exception):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: cannot be read as CSV ({reason})")
        self.line = line


def csv_rows(reader: csv.DictReader[str], unreadable: list[CsvUnreadable] | None = None) -> Iterator[dict[str, Any]]:
    """A CSV file's rows. One Python's csv module cannot read (a field over its 128 KiB limit) ends them with a
    CsvUnreadable, raised or, when a list is given, put there: never the csv.Error that escaped as a server error."""
    try:
        yield from reader
    except csv.Error as error:
        line = reader.line_num + 1  # the line it could not finish (line_num counts those read)
        if unreadable is None:
            raise CsvUnreadable(line, str(error)) from None
        unreadable.append(CsvUnreadable(line, str(error)))
