"""Async database access: one engine per process, one PostgreSQL schema per service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from expensetracker.platform.config import Settings


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
        connect_args={
            "server_settings": {
                "application_name": application_name,
                "statement_timeout": str(settings.db_statement_timeout_ms),
            }
        },
    )


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker() as session:
        yield session


DbSession = Annotated[AsyncSession, Depends(get_session)]
