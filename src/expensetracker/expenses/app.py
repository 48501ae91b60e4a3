"""The expenses service as an ASGI app, and its description for the platform."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import date
from pathlib import Path

from fastapi import FastAPI

from expensetracker.expenses import models, rates, routes
from expensetracker.expenses.recurring import run_maintenance
from expensetracker.expenses.service import forget_user
from expensetracker.platform.application import create_app as create_platform_app
from expensetracker.platform.background import periodically, service_jobs
from expensetracker.platform.config import Settings, get_settings
from expensetracker.platform.events import UserEventConsumer
from expensetracker.platform.service import ServiceSpec


def user_event_consumer(app: FastAPI) -> UserEventConsumer:
    return UserEventConsumer(
        name="expenses",
        sessionmaker=app.state.sessionmaker,
        positions=models.event_positions,
        handle=forget_user,
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    consumer = app.state.expenses_user_events = user_event_consumer(app)

    async def maintenance() -> int:
        return await run_maintenance(app.state.sessionmaker, today=date.today())

    async def refresh_rates() -> int:
        return await rates.refresh_providers(app.state.driver_pool, settings)

    settings = app.state.settings
    async with AsyncExitStack() as jobs:
        await jobs.enter_async_context(
            service_jobs(settings, user_events=consumer.catch_up, maintenance=maintenance)
        )
        if settings.rates_ecb_url or settings.rates_frankfurter_url:
            await jobs.enter_async_context(
                periodically("rates", refresh_rates, interval=settings.rates_fetch_interval_seconds)
            )
        yield


service = ServiceSpec(
    name="expenses",
    router=routes.router,
    metadata=models.metadata,
    migrations=Path(__file__).with_name("migrations"),
    path_prefixes=("/api/v1/expenses", "/api/v1/categories", "/api/v1/tags"),
    lifespan=lifespan,
    readers={"expensetracker_reports": models.READ_CONTRACT},
    required_settings=("database_url",),
    body_limits={"/api/v1/expenses/import": "max_import_body_bytes"},
)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_platform_app([service], settings or get_settings())
