"""The tariff versions in force, as the database says, cached per process by the schedule's generation.

Every settlement reads the generation in its own transaction (on PostgreSQL under a shared advisory lock that an
activation takes exclusively; on SQLite every write transaction holds the database). A worker whose cache is of
an older generation reloads the active versions in that same transaction, so a settlement uses the versions in
force either all before or all after an activation, never a mix, and records the version it used.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence

from settlement.db.models import TariffVersion
from settlement.db.repositories import Repository, VersionRow
from settlement.tariffstore.store import ResolvedTariff, TariffStore, VersionFile


def version_of(row: TariffVersion | VersionRow) -> VersionFile:
    return VersionFile(f"tariff version {row.id} ({row.region}/{row.version})", row.region, row.version,
                       row.inherits, row.effective_from, row.effective_to, json.loads(row.content), row.id)


class TariffSchedule:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (generation, store) as one value: a thread never pairs one generation with another's store.
        self._current: tuple[int, TariffStore] = (-1, TariffStore("the database (no active tariff versions)"))
        # Resolutions by (version, parent): versions never change, so they outlive a generation.
        self.shared_cache: dict[tuple[str, str | None], ResolvedTariff] = {}

    def current(self, repo: Repository, *, for_settlement: bool = False) -> TariffStore:
        """The active versions as of this transaction. `for_settlement` also takes the shared schedule lock, held
        until the transaction ends, so that no activation commits between this read and the settlement's."""
        return self.at(repo.tariff_generation(shared_lock=for_settlement), repo.active_version_rows)

    def loaded(self, generation: int) -> bool:
        """Whether this process holds the versions of `generation` already."""
        return self._current[0] == generation

    def at(self, generation: int, active_versions: Callable[[], Sequence[VersionRow]]) -> TariffStore:
        """The versions of `generation`, read by the caller's transaction; `active_versions` reads them (in that
        same transaction) only when this process has not loaded that generation yet."""
        cached_generation, store = self._current
        if generation == cached_generation:
            return store
        store = self.store_of(active_versions(), "the database")
        with self._lock:
            if generation > self._current[0]:
                self._current = (generation, store)
        return store

    def store_of(self, rows: Sequence[TariffVersion | VersionRow], origin: str,
                 extra: Sequence[VersionFile] = ()) -> TariffStore:
        return TariffStore.of(origin, [version_of(row) for row in rows] + list(extra), self.shared_cache)
