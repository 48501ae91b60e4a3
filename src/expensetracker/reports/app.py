"""The reports service as an ASGI app, and its description for the platform."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from expensetracker.platform.application import create_app as create_platform_app
from expensetracker.platform.config import Settings, get_settings
from expensetracker.platform.service import ServiceSpec
from expensetracker.reports import models, routes

service = ServiceSpec(
    name="reports",
    router=routes.router,
    metadata=models.metadata,
    migrations=Path(__file__).with_name("migrations"),
    path_prefixes=("/api/v1/budgets", "/api/v1/reports"),
)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_platform_app([service], settings or get_settings())
