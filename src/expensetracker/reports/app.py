"""The reports service as an ASGI app, and its description for the platform."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date
from pathlib import Path

from fastapi import FastAPI

from expensetracker.platform import idempotency
from expensetracker.platform.application import create_app as create_platform_app
from expensetracker.platform.background import service_jobs
from expensetracker.platform.config import Settings, get_settings
from expensetracker.platform.events import UserEventConsumer
from expensetracker.platform.service import ServiceSpec
from expensetracker.reports import models, routes
from expensetracker.reports.service import evaluate_alerts, forget_user


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    sessionmaker = app.state.sessionmaker
    consumer = app.state.reports_user_events = UserEventConsumer(
        name="reports",
        sessionmaker=sessionmaker,
        positions=models.event_positions,
        handle=forget_user,
    )

    async def maintenance() -> None:
        await evaluate_alerts(app, today=date.today())
        async with sessionmaker.begin() as session:
            await idempotency.purge_expired(session, models.idempotency_keys)

    async with service_jobs(
        app.state.settings, user_events=consumer.catch_up, maintenance=maintenance
    ):
        yield


service = ServiceSpec(
    name="reports",
    router=routes.router,
    metadata=models.metadata,
    migrations=Path(__file__).with_name("migrations"),
    path_prefixes=("/api/v1/budgets", "/api/v1/reports"),
    lifespan=lifespan,
    required_settings=("database_url",),
)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_platform_app([service], settings or get_settings())
