"""The reports service as an ASGI app, and its description for the platform."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from fastapi import FastAPI

from expensetracker.platform import idempotency
from expensetracker.platform.application import create_app as create_platform_app
from expensetracker.platform.config import Settings, get_settings
from expensetracker.platform.db import own_connection
from expensetracker.platform.events import UserEventHandling
from expensetracker.platform.spec import BackgroundJob, ServiceSpec
from expensetracker.platform.state import AppState
from expensetracker.reports import conversion, models, routes
from expensetracker.reports.budgets import evaluate_alerts
from expensetracker.reports.service import forget_user


async def _maintenance(state: AppState) -> None:
    await evaluate_alerts(
        state.db.driver_pool, today=date.today(), max_rate_age=state.settings.rates_max_age_days
    )
    async with state.db.sessionmaker.begin() as session:
        await idempotency.purge_expired(session, models.idempotency_keys)


async def _refresh_converted(state: AppState) -> None:
    # Not a pooled connection: the refresh reads every user's fingerprints (~130 ms for 100
    # users, docs/performance.md), and requests would queue for the connection meanwhile.
    async with own_connection(
        state.settings, application_name="expensetracker-reports-converted-months"
    ) as db:
        await conversion.refresh_all(db, max_age=state.settings.rates_max_age_days)


SPEC = ServiceSpec(
    name="reports",
    router=routes.router,
    metadata=models.Base.metadata,
    migrations=Path(__file__).with_name("migrations"),
    path_prefixes=("/api/v1/budgets", "/api/v1/reports"),
    user_events=UserEventHandling(positions=models.event_positions, handle=forget_user),
    jobs=(
        BackgroundJob("maintenance", _maintenance, interval="maintenance_interval_seconds"),
        BackgroundJob(
            "converted_months", _refresh_converted, interval="converted_refresh_interval_seconds"
        ),
    ),
    required_settings=("database_url",),
)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_platform_app([SPEC], settings or get_settings())
