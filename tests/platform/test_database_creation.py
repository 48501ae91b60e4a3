"""The one way a database is created when missing: `up`'s embedded server, a restore into a new
database, and the benchmarks all call platform.db.create_database_if_missing."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from expensetracker.platform.db import create_database_if_missing, identifier
from tests.helpers.database import admin_execute, connected, with_database

pytestmark = pytest.mark.database


async def test_a_missing_database_is_created_once_even_when_asked_at_the_same_time(
    postgres_admin_url: str,
) -> None:
    # A quote in the name: the statement takes no parameters, so the name is quoted.
    name = f'et_create_"{uuid.uuid4().hex[:10]}'
    try:
        async with connected(postgres_admin_url) as first, connected(postgres_admin_url) as second:
            created = await asyncio.gather(
                create_database_if_missing(first, name), create_database_if_missing(second, name)
            )
            assert sorted(created) == [False, True]
            async with connected(with_database(postgres_admin_url, name)) as connection:
                await connection.execute("CREATE TABLE kept (id int)")
            assert await create_database_if_missing(first, name) is False
        async with connected(with_database(postgres_admin_url, name)) as connection:
            assert await connection.fetchval("SELECT to_regclass('kept') IS NOT NULL")
    finally:
        await admin_execute(
            postgres_admin_url, f"DROP DATABASE IF EXISTS {identifier(name)} WITH (FORCE)"
        )
