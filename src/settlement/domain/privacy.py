"""Masking of personal data for logs and error messages."""

from __future__ import annotations


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
