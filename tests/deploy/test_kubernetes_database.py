"""The database as Kubernetes prepares it: the PostgreSQL init script of deploy/ (run with psql,
as the image's entrypoint runs it) gives each service a role owning only its schema; every
service then migrates with its own role, and each role reaches only what it should."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy import make_url

from expensetracker.platform.migrations import upgrade
from tests.helpers.database import connected
from tests.helpers.roles import (
    BACKUP,
    BACKUP_PASSWORD,
    MONITOR,
    MONITOR_PASSWORD,
    ROLES,
    SERVICES,
    prepare_roles_for_a_non_superuser,
    role_url,
    run_init_script,
)

pytestmark = pytest.mark.database


async def denied(url: str, statement: str) -> bool:
    async with connected(url) as connection:
        try:
            await connection.execute(statement)
        except asyncpg.InsufficientPrivilegeError:
            return True
    return False


async def test_each_service_migrates_and_works_with_its_own_role(
    empty_database_url: str,
) -> None:
    assert sorted(SERVICES) == ["auth", "expenses", "reports"]
    await prepare_roles_for_a_non_superuser(empty_database_url)
    run_init_script(empty_database_url)
    run_init_script(empty_database_url)  # idempotent: rotating a password runs it again
    for name, spec in SERVICES.items():
        await asyncio.to_thread(upgrade, spec, role_url(empty_database_url, name))
    # Each service owns its schema's tables.
    async with connected(empty_database_url) as connection:
        owners = dict(
            await connection.fetch(
                "SELECT DISTINCT schemaname, tableowner FROM pg_tables "
                "WHERE schemaname = ANY($1::text[])",
                list(SERVICES),
            )
        )
    assert owners == {name: ROLES[name] for name in SERVICES}

    expenses, reports, auth = (
        role_url(empty_database_url, n) for n in ("expenses", "reports", "auth")
    )
    # The published read contracts, and nothing else.
    async with connected(reports) as reader:
        assert await reader.fetchval("SELECT count(*) FROM expenses.monthly_spending_v1") == 0
        assert await reader.fetchval("SELECT count(*) FROM auth.user_events_v1") == 0
    for url, statement in [
        (reports, "SELECT count(*) FROM expenses.expenses"),
        (reports, "DELETE FROM expenses.categories_v1"),
        (reports, "SELECT count(*) FROM auth.users"),
        (expenses, "SELECT count(*) FROM auth.users"),
        (expenses, "SELECT count(*) FROM reports.budgets"),
        (auth, "SELECT count(*) FROM expenses.spending_v1"),
        (expenses, "CREATE SCHEMA intruder"),
        (auth, "CREATE TABLE public.intruder (id int)"),
    ]:
        assert await denied(url, statement), statement
    # The metrics exporter's role reads statistics, not data.
    monitor = make_url(empty_database_url).set(username=MONITOR, password=MONITOR_PASSWORD)
    monitor_url = monitor.render_as_string(hide_password=False)
    async with connected(monitor_url) as watcher:
        assert await watcher.fetchval("SELECT count(*) >= 1 FROM pg_stat_activity")
    assert await denied(monitor_url, "SELECT count(*) FROM expenses.expenses")
    # The backup role reads every schema's data and writes none.
    backup = make_url(empty_database_url).set(username=BACKUP, password=BACKUP_PASSWORD)
    backup_url = backup.render_as_string(hide_password=False)
    async with connected(backup_url) as reader:
        for table in ("auth.users", "expenses.expenses", "reports.budgets"):
            assert await reader.fetchval(f"SELECT count(*) FROM {table}") == 0
    assert await denied(backup_url, "DELETE FROM expenses.expenses")
    # Migrating again, as every pod start does, changes nothing and needs no more rights.
    for name, spec in SERVICES.items():
        await asyncio.to_thread(upgrade, spec, role_url(empty_database_url, name))
