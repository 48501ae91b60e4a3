"""The services behind a real PgBouncer in transaction mode (Debian's 1.18, which, unlike the
Pooler's, has no protocol-level prepared statements): with the statement cache off and no
startup statement_timeout, as the cloudnative-pg component sets them, the API tests of every
service pass through it; with the defaults, PgBouncer 1.18 breaks them, which is why the
settings exist."""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Iterator

import pytest
from sqlalchemy import make_url
from sqlalchemy.exc import DBAPIError

from expensetracker.platform.config import Settings
from expensetracker.platform.db import create_driver_pool, create_engine
from tests.helpers.apps import AppFactory, app_factory
from tests.helpers.database import admin_execute
from tests.helpers.kubernetes import named, overlay
from tests.helpers.pgbouncer import pgbouncer, version

pytestmark = pytest.mark.database
# The cloudnative-pg component's settings (its config patch), the ones under test here.
POOLED = {"db_statement_cache_size": 0, "db_statement_timeout_ms": 0}


@pytest.fixture
def pgbouncer_url(postgres_admin_url: str) -> Iterator[str]:
    # Fewer server connections than the 15 + 15 client connections of an app's two pools:
    # clients share them, a transaction at a time. Here every service is one role, so one pool
    # of PgBouncer's serves them all; in the cluster each service's role has a pool of its own.
    # One PgBouncer per test: one shared by the module's tests stopped handing out its idle
    # server connections after about twenty of them (each test's database dropped under it).
    with pgbouncer(postgres_admin_url, pool_size=10) as url:
        yield url


def through(pgbouncer_url: str, database_url: str) -> str:
    """``database_url``'s database, reached through PgBouncer."""
    url = make_url(pgbouncer_url).set(database=make_url(database_url).database)
    return url.render_as_string(hide_password=False)


@pytest.fixture
def serve_app(database_url: str, pgbouncer_url: str) -> AppFactory:
    """The suite's apps (conftest.serve_app) on this test's database through PgBouncer."""
    factory = app_factory(through(pgbouncer_url, database_url))
    return lambda *args, **overrides: factory(*args, **(POOLED | overrides))


# The API tests of every service that keeps data, collected here once more: they run against
# the apps of the serve_app above (and the client fixture made from it).
API_TEST_MODULES = (
    "tests.auth.test_auth_accounts",
    "tests.auth.test_auth_tokens",
    "tests.expenses.test_categories",
    "tests.expenses.test_expenses",
    "tests.platform.test_idempotency",
    "tests.expenses.test_import_export",
    "tests.expenses.test_recurring",
    "tests.reports.test_reports",
)
for _module in (importlib.import_module(name) for name in API_TEST_MODULES):
    for _name, _test in vars(_module).items():
        if _name.startswith("test_") and inspect.isfunction(_test):
            _fixtures = set(inspect.signature(_test).parameters)
            if _fixtures and _fixtures <= {"client", "serve_app"}:
                globals()[f"{_name}__{_module.__name__.rpartition('_')[2]}"] = _test


def test_it_is_the_pgbouncer_without_prepared_statements() -> None:
    major, minor = (int(part) for part in version().split(".")[:2])
    assert (major, minor) < (1, 21)


@pytest.mark.parametrize("cache_size", [100, 0])
async def test_pools_through_pgbouncer_with_and_without_the_cache(
    postgres_admin_url: str, database_url: str, cache_size: int
) -> None:
    """The services' own pools, many statements at once on two server connections."""
    with pgbouncer(postgres_admin_url, pool_size=2) as two_connections:
        await _sixty_statements(through(two_connections, database_url), cache_size)


async def _sixty_statements(url: str, cache_size: int) -> None:
    settings = Settings(
        database_url=url,
        db_statement_cache_size=cache_size,
        db_statement_timeout_ms=0,
    )
    pool = await create_driver_pool(settings, application_name="pgbouncer-test")
    try:
        results = await asyncio.gather(
            *(pool.fetchval(f"SELECT {n % 5}::int + $1", n) for n in range(60)),
            return_exceptions=True,
        )
    finally:
        await pool.close()
    failures = [r for r in results if isinstance(r, Exception)]
    if cache_size:
        assert failures, "named statements should not survive PgBouncer 1.18's transaction mode"
    else:
        assert results == [n % 5 + n for n in range(60)]


async def test_startup_statement_timeout_is_refused_so_the_database_sets_it(
    database_url: str, pgbouncer_url: str
) -> None:
    url = through(pgbouncer_url, database_url)
    sent = Settings(database_url=url, db_statement_cache_size=0)
    engine = create_engine(sent, application_name="pgbouncer-test")
    try:
        with pytest.raises(DBAPIError, match="unsupported startup parameter: statement_timeout"):
            async with engine.connect():
                pass
    finally:
        await engine.dispose()
    # What the cluster runs once it has made the database (its postInitApplicationSQL).
    cluster = named(overlay("production"), "Cluster", "postgres")
    bootstrap = cluster["spec"]["bootstrap"]["initdb"]
    await admin_execute(database_url, *bootstrap["postInitApplicationSQL"])
    engine = create_engine(Settings(database_url=url, **POOLED), application_name="pgbouncer-test")
    try:
        async with engine.connect() as connection:
            shown = await connection.exec_driver_sql("SHOW statement_timeout")
            assert shown.scalar() == "30s"
    finally:
        await engine.dispose()
