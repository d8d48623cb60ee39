"""Payers as configured (payers.yaml): which funds each pays and how its daily statement arrives."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StatementSource(_Strict):
    source: Literal["soap", "file"]
    wsdl: str | None = Field(default=None, description="the payer's statement service (source: soap)")
    timeout_seconds: float = Field(default=10.0, gt=0)
    retries: int = Field(default=3, ge=1, le=10, description="attempts, each with the same request id")
    format: Literal["csv", "xml"] = Field(default="csv", description="the inbox file's format (source: file)")

    @model_validator(mode="after")
    def _soap_needs_wsdl(self) -> StatementSource:
        if self.source == "soap" and not self.wsdl:
            raise ValueError("a SOAP statement source needs its wsdl")
        return self


class PayerConfig(_Strict):
    code: str = Field(pattern=r"^[a-z][a-z0-9_-]{1,31}$")
    name: str
    funds: list[str] = Field(min_length=1)
    statement: StatementSource


class PayersFile(_Strict):
    payers: list[PayerConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> PayersFile:
        codes = [payer.code for payer in self.payers]
        if len(set(codes)) != len(codes):
            raise ValueError("payer codes must be unique")
        funds = [fund for payer in self.payers for fund in payer.funds]
        if len(set(funds)) != len(funds):
            raise ValueError("a fund is paid by one payer only")
        return self


class PayersError(Exception):
    pass


def load_payers(path: Path) -> dict[str, PayerConfig]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        parsed = PayersFile.model_validate(raw)
    except (OSError, yaml.YAMLError) as error:
        raise PayersError(f"{path}: {error}") from None
    except ValidationError as error:
        reasons = "; ".join(f"{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in error.errors())
        raise PayersError(f"{path}: {reasons}") from None
    return {payer.code: payer for payer in parsed.payers}
