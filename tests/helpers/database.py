"""The test databases: connecting, running statements as the admin, and scratch databases
cloned from a template."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy import make_url

from expensetracker.platform.migrations import upgrade
from expensetracker.targets import SERVICES


def with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


@asynccontextmanager
async def connected(url: str) -> AsyncIterator[asyncpg.Connection]:
    """One asyncpg connection to ``url``, closed on leaving."""
    connection = await asyncpg.connect(url)
    try:
        yield connection
    finally:
        await connection.close()


async def until_waiting_on_locks(url: str, count: int) -> None:
    """Returns once ``count`` sessions of the database wait on a lock (polled, 5 s at most)."""
    async with connected(url) as connection:
        for _ in range(200):
            waiting = await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if waiting >= count:
                return
            await asyncio.sleep(0.025)
    raise AssertionError(f"fewer than {count} sessions came to wait on a lock")


async def admin_execute(admin_url: str, *statements: str) -> None:
    async with connected(admin_url) as connection:
        for statement in statements:
            await connection.execute(statement)


def migrate_all(url: str) -> None:
    for spec in SERVICES.values():
        upgrade(spec, url)


@asynccontextmanager
async def scratch_database(admin_url: str, template: str) -> AsyncIterator[str]:
    """A new database cloned from ``template``, dropped on leaving."""
    name = f"et_test_{uuid.uuid4().hex[:12]}"
    await admin_execute(admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield with_database(admin_url, name)
    finally:
        await admin_execute(admin_url, f'DROP DATABASE "{name}" WITH (FORCE)')
