"""The expenses service as an ASGI app, and its description for the platform."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from fastapi import FastAPI

from expensetracker.expenses import models, rates, routes, service
from expensetracker.expenses.owners import forget_user
from expensetracker.expenses.recurring import run_maintenance
from expensetracker.platform.application import create_app as create_platform_app
from expensetracker.platform.config import Settings, get_settings
from expensetracker.platform.events import UserEventHandling
from expensetracker.platform.spec import BackgroundJob, ServiceSpec
from expensetracker.platform.state import AppState


async def _maintenance(state: AppState) -> int:
    return await run_maintenance(state.db.sessionmaker, today=date.today())


async def _merge_search_index(state: AppState) -> int:
    async with state.db.driver_pool.connection() as connection:
        return await service.merge_search_pending_list(connection)


async def _refresh_rates(state: AppState) -> int:
    return await rates.refresh_providers(state.db.driver_pool, state.settings)


def _fetches_rates(settings: Settings) -> bool:
    return bool(settings.rates_ecb_url or settings.rates_frankfurter_url)


SPEC = ServiceSpec(
    name="expenses",
    router=routes.router,
    metadata=models.Base.metadata,
    migrations=Path(__file__).with_name("migrations"),
    path_prefixes=("/api/v1/expenses", "/api/v1/categories", "/api/v1/tags"),
    user_events=UserEventHandling(positions=models.event_positions, handle=forget_user),
    jobs=(
        BackgroundJob("maintenance", _maintenance, interval="maintenance_interval_seconds"),
        BackgroundJob("search_index", _merge_search_index, interval="search_index_merge_seconds"),
        BackgroundJob(
            "rates", _refresh_rates, interval="rates_fetch_interval_seconds", enabled=_fetches_rates
        ),
    ),
    readers={"expensetracker_reports": models.READ_CONTRACT},
    required_settings=("database_url",),
    body_limits={"/api/v1/expenses/import": "max_import_body_bytes"},
)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_platform_app([SPEC], settings or get_settings())
