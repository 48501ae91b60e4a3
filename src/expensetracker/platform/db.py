"""Async database access: one engine per process, one PostgreSQL schema per service."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import asyncpg
from fastapi import Depends, Request
from sqlalchemy import URL, delete, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from expensetracker.platform.config import Settings
from expensetracker.platform.errors import NotFound


def async_url(url: str | URL) -> URL:
    """The same URL with the asyncpg driver, whatever driver it named."""
    return make_url(url).set(drivername="postgresql+asyncpg")


def create_engine(settings: Settings, *, application_name: str) -> AsyncEngine:
    if settings.database_url is None:
        raise RuntimeError("EXPENSETRACKER_DATABASE_URL is not set")
    return create_async_engine(
        async_url(settings.database_url.get_secret_value()),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        # No ping before each checkout (a round trip per request): connections are recycled
        # instead, and a connection found dead invalidates the pool at its first error.
        pool_recycle=1800,
        # Statement errors would carry their parameters (e-mail addresses, password hashes)
        # into log lines and traces.
        hide_parameters=True,
        connect_args={
            "server_settings": {
                "application_name": application_name,
                "statement_timeout": str(settings.db_statement_timeout_ms),
            }
        },
    )


def pool_turns(settings: Settings) -> asyncio.Semaphore:
    """Requests take a turn before they take a pooled connection, first come, first served.
    SQLAlchemy's pool gives a returned connection to whoever asks next: under load a request
    woken to take it often found it gone and queued again at the back, so a few requests waited
    hundreds of milliseconds while most waited none (docs/performance.md)."""
    return asyncio.Semaphore(settings.db_pool_size + settings.db_max_overflow)


async def delete_owned(
    session: AsyncSession, model: type, *, user_id: uuid.UUID, id: uuid.UUID, missing: str
) -> None:
    """Deletes the caller's row ``id`` of ``model`` (keyed by ``user_id`` and ``id``); another
    user's id answers 404 with ``missing``, like an id that does not exist."""
    deleted = await session.scalar(
        delete(model).where(model.user_id == user_id, model.id == id).returning(model.id)
    )
    if deleted is None:
        raise NotFound(missing)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with request.app.state.pool_turns, sessionmaker() as session:
        yield session


DbSession = Annotated[AsyncSession, Depends(get_session)]


@asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the engine's pool used through asyncpg itself, each statement in its own
    transaction: for hot read paths of one statement, where the ORM session and the BEGIN and
    COMMIT round trips cost more than the query."""
    async with engine.connect() as connection:
        pooled = await connection.get_raw_connection()
        yield pooled.driver_connection


async def get_connection(request: Request) -> AsyncIterator[asyncpg.Connection]:
    async with (
        request.app.state.pool_turns,
        driver_connection(request.app.state.engine) as connection,
    ):
        yield connection


DbConnection = Annotated[asyncpg.Connection, Depends(get_connection)]
