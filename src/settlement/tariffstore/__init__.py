"""Tariffs as data: reading tariffs/, validating against the schema, hashing, resolving the version in force."""

from settlement.tariffstore.store import TariffStore, load_store

__all__ = ["TariffStore", "load_store"]
