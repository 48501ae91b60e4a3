"""The command line and the database URL operators write, as real processes on the test
PostgreSQL."""

from __future__ import annotations

import subprocess

import httpx
import pytest
from sqlalchemy import make_url

from tests.helpers.processes import REPO, clean_env, cli, free_port, spawn

pytestmark = pytest.mark.database


def _run(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(EXPENSETRACKER_DATABASE_URL=database_url, EXPENSETRACKER_LOG_LEVEL="WARNING")
    return subprocess.run(
        cli(*args), cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def _with_query(url: str, **query: str) -> str:
    return make_url(url).update_query_dict(query).render_as_string(hide_password=False)


@pytest.mark.parametrize("sslmode", ["disable", "prefer"])
async def test_migrate_and_serve_take_libpqs_sslmode(sslmode: str, empty_database_url: str) -> None:
    """`sslmode`, libpq's spelling (pg_dump's), reaches SQLAlchemy's asyncpg dialect as its
    `ssl`: it passed it to asyncpg.connect() as is, and migrate crashed on it."""
    url = _with_query(empty_database_url, sslmode=sslmode)
    migrated = _run("migrate", database_url=url)
    assert migrated.returncode == 0, migrated.stderr
    env = clean_env(EXPENSETRACKER_DATABASE_URL=url)
    with spawn(cli("serve", "--target", "all", "--port", str(free_port())), env) as process:
        address = process.wait_ready()
        async with httpx.AsyncClient(base_url=address, timeout=10) as client:
            ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text


def test_asyncpgs_ssl_is_refused_for_libpqs_sslmode() -> None:
    """`ssl=` worked for the ORM only: asyncpg's DSN sends it to the server as a setting, which
    refuses it, and pg_dump knows no `ssl`. Refused at once, saying what to write instead."""
    url = "postgresql://expenses:s3cret@127.0.0.1:5999/expensetracker"
    for query, reason in [
        ({"ssl": "disable"}, "write sslmode=, not ssl="),
        ({"sslmode": "on"}, "sslmode must be one of disable, allow, prefer"),
    ]:
        refused = _run("migrate", database_url=_with_query(url, **query))
        assert refused.returncode == 2, refused.stderr
        assert reason in refused.stderr
        assert "s3cret" not in refused.stderr
        assert "Traceback" not in refused.stderr
