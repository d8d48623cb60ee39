"""What the use cases need, built once by the composition root (settlement.bootstrap)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from settlement.services.uow import UnitOfWorkFactory
from settlement.tariffstore import TariffStore


@dataclass
class Context:
    uow: UnitOfWorkFactory
    tariffs: TariffStore
    secret: bytes
    clock: Callable[[], datetime]
    quote_ttl_seconds: int = 15 * 60
    tariff_ids: dict[str, int] = field(default_factory=dict)  # sha256 -> tariff_versions.id, filled lazily
