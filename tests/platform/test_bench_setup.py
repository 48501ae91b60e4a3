"""The benchmarks' shared setup (bench/setup.py)."""

from __future__ import annotations

import uuid

import pytest

from bench.setup import create_if_missing
from tests.helpers.database import admin_execute, connected, with_database


@pytest.mark.database
async def test_a_benchmark_database_is_created_when_missing_and_kept_when_it_exists(
    postgres_admin_url: str,
) -> None:
    """EXPENSETRACKER_BENCH_DATABASE_URL may name a database that does not exist yet; one that
    exists is used as it is."""
    name = f"et_bench_{uuid.uuid4().hex[:12]}"
    url = with_database(postgres_admin_url, name)
    try:
        await create_if_missing(url)
        async with connected(url) as connection:
            await connection.execute("CREATE TABLE kept (id int)")
        await create_if_missing(url)
        async with connected(url) as connection:
            assert await connection.fetchval("SELECT to_regclass('kept') IS NOT NULL")
    finally:
        await admin_execute(postgres_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
