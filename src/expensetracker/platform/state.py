"""The one typed object a running app keeps (``app.state.platform``; routes take it as
``deps.State``): what the platform set up for its services, and each service's own state, kept
by its type."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from starlette.applications import Starlette

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    from expensetracker.platform.config import Settings
    from expensetracker.platform.db import DriverPool
    from expensetracker.platform.events import UserEventConsumer
    from expensetracker.platform.health import Readiness
    from expensetracker.platform.spec import ServiceSpec
    from expensetracker.platform.tokens import TokenVerifier

T = TypeVar("T")


@dataclass(frozen=True)
class Database:
    """The pools of a process whose services keep data (platform/db.py)."""

    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    # Turns taken before the ORM's pool, first come, first served (db.pool_turns).
    pool_turns: asyncio.Semaphore
    driver_pool: DriverPool
    # For reads that may lag the primary: a replica's with EXPENSETRACKER_DATABASE_READ_URL,
    # else driver_pool itself.
    read_driver_pool: DriverPool


@dataclass
class AppState:
    settings: Settings
    services: tuple[ServiceSpec, ...]
    # For the services' own HTTP clients: their calls are spans of the request that made them.
    tracer_provider: TracerProvider
    readiness: Readiness
    # Each data-keeping service's Alembic head, which /readyz expects the database to be at.
    migration_heads: dict[str, str | None]
    # Set while the app runs (its lifespan).
    database: Database | None = None
    token_verifier: TokenVerifier | None = None
    # Consumers of auth's account events, by service name.
    user_events: dict[str, UserEventConsumer] = field(default_factory=dict)
    _of_services: dict[type, object] = field(default_factory=dict)

    @property
    def db(self) -> Database:
        if self.database is None:
            raise RuntimeError("no service of this process keeps data, or it is not started")
        return self.database

    @property
    def verifier(self) -> TokenVerifier:
        if self.token_verifier is None:
            raise RuntimeError("the app is not started")
        return self.token_verifier

    def keep(self, value: object) -> None:
        """A service's own state (one object per type), found again with :meth:`get`."""
        self._of_services[type(value)] = value

    def get(self, kind: type[T]) -> T:
        value = self._of_services[kind]
        assert isinstance(value, kind)
        return value


def app_state(app: Starlette) -> AppState:
    """The state of an app made by platform.application.create_app."""
    state: AppState = app.state.platform
    return state
