"""The ASGI entry point for uvicorn workers: each worker builds its own application from the environment."""

from __future__ import annotations

import gc
import logging

from fastapi import FastAPI

from settlement.api.app import create_app
from settlement.bootstrap import build
from settlement.config import Settings


def freeze_startup_heap() -> None:
    """What a worker builds at start-up (tariff versions, schemas, mappings, the app) lives as long as the worker:
    it is moved out of the garbage collector's reach, so that a full collection walks only what requests left
    behind. Without it, full collections held a worker for 20 to 340 ms about once a second under load, the
    service's worst latencies (docs/performance.md)."""
    gc.collect()
    gc.freeze()


def create() -> FastAPI:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # Migrations and seeding ran once in the parent process (`settlement serve`), not in every worker.
    app = create_app(build(Settings(), migrate=False))
    freeze_startup_heap()
    return app
