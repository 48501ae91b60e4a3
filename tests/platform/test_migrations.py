"""Per-service Alembic histories: empty to head, idempotent, concurrent-safe, self-contained."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from expensetracker.platform.migrations import head_revision, upgrade
from expensetracker.targets import SERVICES
from tests.helpers.database import connected, migrate_all

pytestmark = pytest.mark.database


async def schema_state(url: str) -> dict[str, object]:
    async with connected(url) as connection:
        versions = {
            name: await connection.fetchval(f"SELECT version_num FROM {name}.alembic_version")
            for name in SERVICES
        }
        comments = {
            row["nspname"]: row["comment"]
            for row in await connection.fetch(
                "SELECT nspname, obj_description(oid, 'pg_namespace') AS comment "
                "FROM pg_namespace WHERE nspname = ANY($1::text[])",
                list(SERVICES),
            )
        }
        public_tables = await connection.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        )
    return {"versions": versions, "comments": comments, "public_tables": public_tables}


async def test_empty_database_to_head_twice(empty_database_url: str) -> None:
    await asyncio.to_thread(migrate_all, empty_database_url)
    first = await schema_state(empty_database_url)
    await asyncio.to_thread(migrate_all, empty_database_url)
    second = await schema_state(empty_database_url)

    assert first == second
    assert first["versions"] == {name: head_revision(spec) for name, spec in SERVICES.items()}
    # Each version table lives in its own service's schema; nothing lands in public.
    assert first["public_tables"] == 0
    for name in SERVICES:
        assert first["comments"][name].startswith(f"Owned by the {name} service")


async def test_services_migrate_independently(empty_database_url: str) -> None:
    await asyncio.to_thread(upgrade, SERVICES["expenses"], empty_database_url)
    async with connected(empty_database_url) as connection:
        schemas = {
            row["nspname"]
            for row in await connection.fetch(
                "SELECT nspname FROM pg_namespace WHERE nspname = ANY($1::text[])", list(SERVICES)
            )
        }
    assert schemas == {"expenses"}


def migrate_command(url: str, target: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "expensetracker", "migrate", "--target", target],
        env={"EXPENSETRACKER_DATABASE_URL": url, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_concurrent_migration_jobs_wait_for_each_other(empty_database_url: str) -> None:
    # Two migration Jobs at once: the advisory lock serialises them and both succeed.
    jobs = [migrate_command(empty_database_url, "all") for _ in range(2)]
    results = [await asyncio.to_thread(job.communicate, timeout=120) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], results
    state = await schema_state(empty_database_url)
    assert state["versions"] == {name: head_revision(spec) for name, spec in SERVICES.items()}


async def test_migrate_command_applies_the_targets(empty_database_url: str) -> None:
    job = migrate_command(empty_database_url, "auth,reports")
    _, stderr = await asyncio.to_thread(job.communicate, timeout=120)
    assert job.returncode == 0, stderr
    async with connected(empty_database_url) as connection:
        present = {
            name: await connection.fetchval(
                "SELECT to_regclass($1) IS NOT NULL", f"{name}.alembic_version"
            )
            for name in SERVICES
        }
    assert present == {"auth": True, "expenses": False, "reports": True}


def test_migrate_command_refuses_unknown_target() -> None:
    job = migrate_command("postgresql://nobody@127.0.0.1:9/none", "billing")
    _, stderr = job.communicate(timeout=60)
    assert job.returncode == 2
    assert "unknown target billing" in stderr
