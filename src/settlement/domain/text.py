"""What a string given by a person or a file may hold: the one rule, used by the wire models (settlement.wire.fields)
and by the services that take text without them (the command line, uploaded files).

Refused everywhere: the C0 control characters (NUL first: PostgreSQL cannot store it in a text column), DEL, the C1
controls (what bytes misread as ISO-8859-1 turn into) and U+FFFE/U+FFFF (not characters: XML 1.0 cannot carry
them, so a SOAP reply could not repeat such a name). Free text written by people (notes, reasons) keeps tab, line
feed and carriage return; names, codes and identifiers hold one line.
"""

from __future__ import annotations

import re

# The same class in every regular-expression dialect the patterns meet: Python's, pydantic-core's (Rust) and the
# OpenAPI document's (ECMA-262, for clients and Schemathesis).
_REFUSED = r"\x00-\x1f\x7f-\x9f\ufffe\uffff"
_REFUSED_IN_FREE_TEXT = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffe\uffff"
ONE_LINE = rf"^[^{_REFUSED}]*$"
FREE_TEXT = rf"^[^{_REFUSED_IN_FREE_TEXT}]*$"
_FIRST_REFUSED = re.compile(f"[{_REFUSED}]")
_FIRST_REFUSED_IN_FREE_TEXT = re.compile(f"[{_REFUSED_IN_FREE_TEXT}]")

# Bounds of the free text people and files give, in characters (the columns that keep them are at least as wide).
NAME_MAX = 128  # a hospital's name
KEY_HOLDER_MAX = 64  # a staff member's name, who holds a key (audit rows name it in a 64-character column)
PERSON_NAME_MAX = 64  # a person's name (the roster, a claim)
CODE_MAX = 32  # a hospital code, a payer
REASON_MAX = 256  # why a settlement is reversed or cancelled
NOTE_MAX = 2000  # a tariff author's note, why a version is withdrawn, a discrepancy's resolution
FILENAME_MAX = 256  # an uploaded file's name
PATH_MAX = 4096


def text_problem(value: str, max_length: int, *, multiline: bool = False) -> str | None:
    """Why `value` cannot be taken (too long, or holding a refused character, named by its code point), or None."""
    if len(value) > max_length:
        return f"is longer than {max_length} characters"
    refused = (_FIRST_REFUSED_IN_FREE_TEXT if multiline else _FIRST_REFUSED).search(value)
    if refused is not None:
        return f"holds a control character (U+{ord(refused.group(0)):04X})"
    return None
