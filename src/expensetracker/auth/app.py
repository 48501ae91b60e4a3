"""The auth service as an ASGI app, and its description for the platform."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import structlog
from fastapi import FastAPI

from expensetracker.auth import models, routes
from expensetracker.auth.keys import KeyEncryption, KeyStore
from expensetracker.auth.passwords import PasswordHasher
from expensetracker.auth.service import AuthContext, purge_ended_sessions
from expensetracker.platform.application import create_app as create_platform_app
from expensetracker.platform.config import Settings, get_settings
from expensetracker.platform.spec import BackgroundJob, ServiceSpec
from expensetracker.platform.state import AppState, app_state

log = structlog.get_logger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state = app_state(app)
    settings = state.settings
    keys = KeyStore(
        sessionmaker=state.db.sessionmaker,
        encryption=KeyEncryption.from_settings(settings),
        token_ttl_seconds=settings.access_token_ttl_seconds,
    )
    state.keep(AuthContext(keys=keys, hasher=PasswordHasher(settings), settings=settings))
    await _load_keys(keys)
    yield


async def _load_keys(keys: KeyStore) -> None:
    # The database may come up after us (or be mid-migration): not ready until the key loads.
    try:
        await keys.ensure_signing_key()
    except Exception as exc:
        log.warning("signing_key_not_loaded", error=type(exc).__name__)


async def readiness(app: FastAPI) -> dict[str, str]:
    keys = app_state(app).get(AuthContext).keys
    if not keys.loaded:
        await _load_keys(keys)
    return {"signing_key": "ok" if keys.loaded else "not loaded"}


async def _maintenance(state: AppState) -> int:
    return await purge_ended_sessions(state.db.sessionmaker, now=datetime.now(UTC))


SPEC = ServiceSpec(
    name="auth",
    router=routes.router,
    metadata=models.Base.metadata,
    migrations=Path(__file__).with_name("migrations"),
    path_prefixes=("/api/v1/auth",),
    lifespan=lifespan,
    readiness=readiness,
    jobs=(BackgroundJob("maintenance", _maintenance, interval="maintenance_interval_seconds"),),
    readers={
        "expensetracker_expenses": ("user_events_v1",),
        "expensetracker_reports": ("user_events_v1",),
    },
    required_settings=("database_url", "key_encryption_key"),
)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_platform_app([SPEC], settings or get_settings())
