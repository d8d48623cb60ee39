"""The ASGI entry point for uvicorn workers: each worker builds its own application from the environment."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from settlement.api.app import create_app
from settlement.bootstrap import build
from settlement.config import Settings


def create() -> FastAPI:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # Migrations and seeding ran once in the parent process (`settlement serve`), not in every worker.
    return create_app(build(Settings(), migrate=False))
