"""The explanation of a settlement: every number with the rule, inputs and source that produced it."""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple


class TraceStep(NamedTuple):  # a NamedTuple: a settlement builds dozens, and they must be cheap
    rule: str  # a stable dotted name, e.g. "deductible.per_visit"
    inputs: tuple[tuple[str, object], ...]  # stringified only when shown: tracing stays off the hot path
    output: Decimal | None = None
    source: str | None = None  # the tariff's citation for the value used, if any

    def explain(self) -> str:
        args = ", ".join(f"{name}={value}" for name, value in self.inputs)
        result = "" if self.output is None else f" -> {self.output}"
        cited = f" [{self.source}]" if self.source else ""
        return f"{self.rule}({args}){result}{cited}"

    def as_dict(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "inputs": {name: _wire(value) for name, value in self.inputs},
            "output": None if self.output is None else str(self.output),
            "source": self.source,
        }


def _wire(value: object) -> object:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, (list, tuple, frozenset, set)):
        return sorted(str(item) for item in value) if isinstance(value, (frozenset, set)) else [
            str(item) for item in value]
    return str(value)
