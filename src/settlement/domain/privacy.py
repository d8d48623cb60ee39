"""Masking of personal data for logs, error messages and every free text that is stored.

`mask_id_numbers` is the one function that finds ID numbers in text a person or a hospital's system typed
(reasons, notes, file names, envelopes): 18-character numbers (GB 11643) and the 15-digit numbers issued before
1999, also glued to letters, written in full-width or other scripts' digits (６１１００２…), or split by spaces,
hyphens, zero-width or other invisible characters. A number counts as an ID number by its shape alone: a region
that does not start with 0 and a birth date whose month and day exist (year 1800-2099 in 18-character numbers);
the check character is not required, so a mistyped number is masked too. What is found is replaced by its ASCII
form masked as `mask_id_number` masks (611002********0038).

Not found: a number inside a longer unbroken run of digits (one digit more on either side, with nothing between:
that is another number), and numbers written in words or Chinese numerals.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable


def mask_id_number(id_number: str) -> str:
    """Keep the region prefix and the last four characters: 110105********002X."""
    if len(id_number) <= 10:
        return "*" * len(id_number)
    return id_number[:6] + "*" * (len(id_number) - 10) + id_number[-4:]


def mask_name(name: str) -> str:
    """Keep the family name only: 张** (names with rare characters are masked the same way)."""
    if not name:
        return name
    return name[0] + "*" * (len(name) - 1)


# What may stand between the digits of one number: whitespace of any script, dashes, and characters that show
# nothing (zero-width spaces and joiners, soft hyphen, direction marks and isolates, word joiner, variation
# selectors, fillers, tags, combining marks). The ASCII ones first, then the others.
_ASCII_SEPARATORS = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f -"
_OTHER_SEPARATORS = ("\x85\xa0\u00ad\u0300-\u036f\u061c\u115f\u1160\u1680\u17b4\u17b5\u180b-\u180f\u2000-\u200f"
                     "\u2010-\u2015\u2028-\u202f\u205f-\u206f\u20d0-\u20ff\u2212\u2e3a\u2e3b\u3000\u3164\ufe00-\ufe0f"
                     "\ufe58\ufe63\ufeff\uff0d\uffa0")
_TAGS = "\U000e0000-\U000e007f"
_SEPARATOR = f"[{re.escape(_ASCII_SEPARATORS)}{_OTHER_SEPARATORS}{_TAGS}]"
_CHECK_X = "[Xx\uff38\uff58]"  # X, x and their full-width forms
# \d is any script's decimal digit (full-width ones included). A run of at least 15 digits with separators
# between them, and an X that may end it; possessive, so that a failed attempt does not backtrack.
_RUN = re.compile(rf"\d(?:{_SEPARATOR}*+\d){{14,}}+(?:{_SEPARATOR}*+{_CHECK_X})?")
_DIGITS = re.compile(r"\d+")


def _ascii_digits(text: str) -> str:
    return text if text.isascii() else "".join(str(unicodedata.decimal(char)) for char in text)


def looks_like_id_number(candidate: str) -> bool:
    """The shape of an 18-character (17 digits, then a digit or X) or 15-digit ID number, in ASCII."""
    if candidate[0] == "0":
        return False
    if len(candidate) == 18:
        year, month, day = candidate[6:10], candidate[10:12], candidate[12:14]
        if not "1800" <= year <= "2099":
            return False
    else:
        month, day = candidate[8:10], candidate[10:12]
    return "01" <= month <= "12" and "01" <= day <= "31"


def _mask_run(run: str) -> str:
    """A run of digits and separators with every ID number in it masked. An ID number is made of whole groups
    of digits (a group: digits with no separator between them), so every sequence of consecutive groups holding
    15 or 18 digits (17 and the final X) is tried; overlapping finds are masked as one."""
    groups = [(match.start(), match.end()) for match in _DIGITS.finditer(run)]
    digits = "".join(_ascii_digits(run[start:end]) for start, end in groups)
    ends_in_x = not run[-1].isdigit()
    before = [0]  # before[k]: how many digits precede group k; before[-1] is all of them
    for start, end in groups:
        before.append(before[-1] + end - start)
    group_ending_at = {count: k for k, count in enumerate(before[1:])}
    spans: list[tuple[int, int, int, int]] = []  # first group, last group, characters' start and end in `run`
    for first, (start, _) in enumerate(groups):
        for length in (15, 18):
            last = group_ending_at.get(before[first] + length)
            if last is not None and looks_like_id_number(digits[before[first]:before[first] + length]):
                spans.append((first, last, start, groups[last][1]))
        if ends_in_x and before[first] + 17 == before[-1] \
                and looks_like_id_number(digits[before[first]:before[-1]] + "X"):
            spans.append((first, len(groups), start, len(run)))  # len(groups): through the X
    if not spans:
        return run
    spans.sort(key=lambda span: span[2])
    merged = [list(spans[0])]
    for span in spans[1:]:
        if span[2] < merged[-1][3]:
            merged[-1][1], merged[-1][3] = max(merged[-1][1], span[1]), max(merged[-1][3], span[3])
        else:
            merged.append(list(span))
    parts: list[str] = []
    kept = 0
    for first, last, start, end in merged:
        found = digits[before[first]:before[min(last, len(groups) - 1) + 1]] + ("X" if last == len(groups) else "")
        parts += [run[kept:start], mask_id_number(found)]
        kept = end
    parts.append(run[kept:])
    return "".join(parts)


def _byte_class(values: set[int]) -> bytes:
    return b"[" + b"".join(re.escape(bytes([value])) for value in sorted(values)) + b"]"


def _utf8_alternatives(encoded: list[bytes]) -> bytes:
    """A pattern on bytes matching exactly the given UTF-8 sequences, as a trie (one branch per leading byte), so
    that a byte no sequence starts with is passed over at once."""
    if all(len(sequence) == 1 for sequence in encoded):
        return _byte_class({sequence[0] for sequence in encoded})
    branches: dict[int, list[bytes]] = {}
    for sequence in encoded:
        branches.setdefault(sequence[0], []).append(sequence[1:])
    return b"(?:" + b"|".join(re.escape(bytes([lead])) + _utf8_alternatives(rest)
                              for lead, rest in sorted(branches.items())) + b")"


@functools.cache
def _unusual() -> re.Pattern[bytes]:
    """Finds, in UTF-8, what the fast path does not know: a separator or digit beyond ASCII, a full-width X. Built
    on first use (any script's digits are found by str.isdecimal: about 50 ms), not at import."""
    others = re.compile(f"[{_OTHER_SEPARATORS}{_TAGS}\uff38\uff58]")
    characters = [chr(code) for code in range(0x80, 0x110000) if not 0xd800 <= code < 0xe000]
    unusual = [char.encode("utf-8") for char in characters if char.isdecimal() or others.match(char)]
    return re.compile(_utf8_alternatives(unusual))


# The fast path, on the text's UTF-8 bytes (where ASCII stays ASCII and nothing else is an ASCII byte): digits and
# separators become "0" (bytes.translate), so that stretches of 15 or more are found by bytes.find, in C; only
# those are looked at in Python. An envelope full of amounts, codes and dates then costs a few passes.
_ASCII_SEPARATOR_BYTES = _ASCII_SEPARATORS.encode("ascii")
_AS_ZERO = bytes.maketrans(b"123456789" + _ASCII_SEPARATOR_BYTES, b"0" * (9 + len(_ASCII_SEPARATOR_BYTES)))
_FIFTEEN = b"0" * 15
_ZEROS = re.compile(b"0++")
_NOT_DIGITS = _ASCII_SEPARATOR_BYTES + b"Xx"
_RUN_BYTES = re.compile(rb"[0-9](?:[%s]*+[0-9])*+(?:[%s]*+[Xx])?" % ((re.escape(_ASCII_SEPARATOR_BYTES),) * 2))


def _mask_ascii_runs(data: bytes) -> bytes:
    """`data` (UTF-8, with no digit or separator beyond ASCII) with its ID numbers masked."""
    spread = data.translate(_AS_ZERO)
    start = spread.find(_FIFTEEN)
    if start == -1:
        return data
    parts: list[bytes] = []
    kept = 0
    while start != -1:
        end = _ZEROS.match(spread, start).end()  # type: ignore[union-attr]  # spread[start] is "0"
        run = _RUN_BYTES.search(data, start, end + 1)  # a stretch holds one run at most (and the X after it)
        if run is not None and len(run.group().translate(None, _NOT_DIGITS)) >= 15:
            text = run.group()
            if text.isdigit():  # one group of digits: an ID number only when it is one as a whole
                is_one = len(text) in (15, 18) and looks_like_id_number(text.decode("ascii"))
                masked = mask_id_number(text.decode("ascii")).encode("ascii") if is_one else text
            else:
                masked = _mask_run(text.decode("ascii")).encode("ascii")
            if masked != text:
                parts += [data[kept:run.start()], masked]
                kept = run.end()
        start = spread.find(_FIFTEEN, end)
    if not parts:
        return data
    parts.append(data[kept:])
    return b"".join(parts)


def mask_id_numbers(text: str) -> str:
    """`text` with every ID number in it masked (see the module's notes for what is found)."""
    if len(text) < 15:
        return text
    data = text.encode("utf-8", "surrogatepass")
    if not text.isascii() and _unusual().search(data) is not None:
        return _RUN.sub(lambda match: _mask_run(match.group()), text)
    masked = _mask_ascii_runs(data)
    return text if masked is data else masked.decode("utf-8", "surrogatepass")


_NUMBER_PART = re.compile(rf"(?:\d|{_SEPARATOR}|{_CHECK_X})*+")


def cut(text: str, limit: int) -> str:
    """The first `limit` characters of `text` (masked already), without the digits and separators that run into
    the cut: a number the cut splits could show digits its mask would have hidden."""
    if len(text) <= limit:
        return text
    # On the reversed text the run is at the start: one match, in C, however long the text.
    return _NUMBER_PART.sub("", text[:limit][::-1], count=1)[::-1]


def mask_free_text(text: str, names: Iterable[str] = ()) -> str:
    """Free text as it may be stored: ID numbers masked, and the names given (the persons it concerns, when
    known) masked wherever they appear."""
    text = mask_id_numbers(text)
    for name in names:
        if len(name) > 1:
            text = text.replace(name, mask_name(name))
    return text
