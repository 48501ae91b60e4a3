"""The database as Kubernetes prepares it: the PostgreSQL init script of deploy/ (run with psql,
as the image's entrypoint runs it) gives each service a role owning only its schema; every
service then migrates with its own role, and each role reaches only what it should."""

from __future__ import annotations

import asyncio
import os
import subprocess

import asyncpg
import pytest
from sqlalchemy import make_url

from expensetracker.platform.embedded import pg_bin
from expensetracker.platform.migrations import upgrade
from expensetracker.targets import SERVICES as TARGETS
from tests.kubernetes import KUBERNETES, kustomize, named, of_kind, pod_spec

pytestmark = pytest.mark.database
BASE = tuple(kustomize(KUBERNETES / "base"))
# The services the manifests migrate (a `migrate` initContainer): those with a database. The web
# app has none, so no role either.
SERVICES = {
    name: TARGETS[name]
    for deployment in of_kind(BASE, "Deployment")
    for init in pod_spec(deployment).get("initContainers", [])
    if init["args"][:2] == ["migrate", "--target"]
    and (name := init["args"][2]) == deployment["metadata"]["name"]
}
ROLES = {name: f"expensetracker_{name}" for name in SERVICES}
PASSWORDS = {name: f"test-{name}-password" for name in SERVICES}
MONITOR = "expensetracker_monitor"
MONITOR_PASSWORD = "test-monitor-password"
BACKUP = "expensetracker_backup"
BACKUP_PASSWORD = "test-backup-password"


def init_script() -> str:
    init = named(BASE, "ConfigMap", "postgres-init")
    [script] = init["data"].values()
    return script


def run_init_script(admin_url: str) -> None:
    url = make_url(admin_url)
    env = {
        **os.environ,
        "PATH": f"{pg_bin('psql').parent}:{os.environ['PATH']}",
        # The embedded server is reached over its Unix socket (a `host` query parameter).
        "PGHOST": str(url.query.get("host") or url.host),
        "PGPORT": str(url.query.get("port") or url.port or 5432),
        "PGPASSWORD": url.password or "",
        "POSTGRES_USER": url.username,
        "POSTGRES_DB": url.database,
        **{f"{name.upper()}_DB_PASSWORD": PASSWORDS[name] for name in SERVICES},
        "MONITOR_DB_PASSWORD": MONITOR_PASSWORD,
        "BACKUP_DB_PASSWORD": BACKUP_PASSWORD,
    }
    result = subprocess.run(
        ["sh", "-c", init_script()], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


async def prepare_roles_for_a_non_superuser(admin_url: str) -> None:
    """In PostgreSQL 15 only members of a role may give it a schema; the image runs the script
    as the superuser, CI's server run as a role with CREATEROLE: make it a member first."""
    connection = await asyncpg.connect(admin_url)
    try:
        if await connection.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
            return
        for role in (*ROLES.values(), MONITOR, BACKUP):
            exists = await connection.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
            if not exists:
                await connection.execute(f'CREATE ROLE "{role}"')
            await connection.execute(f'GRANT "{role}" TO CURRENT_USER')
    finally:
        await connection.close()


def role_url(admin_url: str, name: str) -> str:
    url = make_url(admin_url).set(username=ROLES[name], password=PASSWORDS[name])
    return url.render_as_string(hide_password=False)


async def denied(url: str, statement: str) -> bool:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(statement)
    except asyncpg.InsufficientPrivilegeError:
        return True
    finally:
        await connection.close()
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
    connection = await asyncpg.connect(empty_database_url)
    try:
        owners = dict(
            await connection.fetch(
                "SELECT DISTINCT schemaname, tableowner FROM pg_tables "
                "WHERE schemaname = ANY($1::text[])",
                list(SERVICES),
            )
        )
    finally:
        await connection.close()
    assert owners == {name: ROLES[name] for name in SERVICES}

    expenses, reports, auth = (
        role_url(empty_database_url, n) for n in ("expenses", "reports", "auth")
    )
    # The published read contracts, and nothing else.
    reader = await asyncpg.connect(reports)
    try:
        assert await reader.fetchval("SELECT count(*) FROM expenses.monthly_spending_v1") == 0
        assert await reader.fetchval("SELECT count(*) FROM auth.user_events_v1") == 0
    finally:
        await reader.close()
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
    watcher = await asyncpg.connect(monitor_url)
    try:
        assert await watcher.fetchval("SELECT count(*) >= 1 FROM pg_stat_activity")
    finally:
        await watcher.close()
    assert await denied(monitor_url, "SELECT count(*) FROM expenses.expenses")
    # The backup role reads every schema's data and writes none.
    backup = make_url(empty_database_url).set(username=BACKUP, password=BACKUP_PASSWORD)
    backup_url = backup.render_as_string(hide_password=False)
    reader = await asyncpg.connect(backup_url)
    try:
        for table in ("auth.users", "expenses.expenses", "reports.budgets"):
            assert await reader.fetchval(f"SELECT count(*) FROM {table}") == 0
    finally:
        await reader.close()
    assert await denied(backup_url, "DELETE FROM expenses.expenses")
    # Migrating again, as every pod start does, changes nothing and needs no more rights.
    for name, spec in SERVICES.items():
        await asyncio.to_thread(upgrade, spec, role_url(empty_database_url, name))
