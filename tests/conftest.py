"""Test harness: one PostgreSQL per session (embedded, or EXPENSETRACKER_TEST_DATABASE_URL),
a fresh database per test cloned from a migrated template, and in-process HTTP clients."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import make_url

from expensetracker.platform.application import create_app
from expensetracker.platform.config import Settings
from expensetracker.platform.migrations import upgrade
from expensetracker.platform.spec import ServiceSpec
from expensetracker.targets import SERVICES

EXTERNAL_DATABASE_URL = os.environ.get("EXPENSETRACKER_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("EXPENSETRACKER_TEST_REDIS_URL")

# --- policy: a skipped test is a failed test --------------------------------------------------

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _skipped and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _skipped:
        terminalreporter.write_line(
            f"FAILED: {len(_skipped)} skipped test(s); a test that cannot run is a broken test",
            red=True,
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Redis is not embedded: the shared-store tests run where a Redis is named (CI names one).
    # debootstrap and buildah's storage need root to build the image: CI runs as root.
    unavailable = {"redis"} if not REDIS_URL else set()
    if os.geteuid() != 0:
        unavailable.add("image")
    deselected = [item for item in items if unavailable & {m.name for m in item.iter_markers()}]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item not in deselected]


# --- databases ---------------------------------------------------------------------------------


def with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


async def admin_execute(admin_url: str, *statements: str) -> None:
    connection = await asyncpg.connect(admin_url)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def postgres_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A URL whose role may create databases."""
    if EXTERNAL_DATABASE_URL:
        yield EXTERNAL_DATABASE_URL
        return
    from expensetracker.platform.embedded import EmbeddedPostgres

    with EmbeddedPostgres(tmp_path_factory.mktemp("embedded-postgres")) as server:
        yield server.admin_url


def migrate_all(url: str) -> None:
    for spec in SERVICES.values():
        upgrade(spec, url)


@pytest.fixture(scope="session")
async def migrated_template(postgres_admin_url: str) -> AsyncIterator[str]:
    name = f"et_template_{uuid.uuid4().hex[:10]}"
    await admin_execute(postgres_admin_url, f'CREATE DATABASE "{name}"')
    await asyncio.to_thread(migrate_all, with_database(postgres_admin_url, name))
    yield name
    await admin_execute(postgres_admin_url, f'DROP DATABASE "{name}" WITH (FORCE)')


@asynccontextmanager
async def _scratch_database(admin_url: str, template: str) -> AsyncIterator[str]:
    name = f"et_test_{uuid.uuid4().hex[:12]}"
    await admin_execute(admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield with_database(admin_url, name)
    finally:
        await admin_execute(admin_url, f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
async def module_database_url(
    postgres_admin_url: str, migrated_template: str
) -> AsyncIterator[str]:
    """A database shared by one module's tests: for a server they all talk to."""
    async with _scratch_database(postgres_admin_url, migrated_template) as url:
        yield url


@pytest.fixture
async def database_url(postgres_admin_url: str, migrated_template: str) -> AsyncIterator[str]:
    """A fresh database of this test alone, every service migrated to head."""
    async with _scratch_database(postgres_admin_url, migrated_template) as url:
        yield url


@pytest.fixture
async def empty_database_url(postgres_admin_url: str) -> AsyncIterator[str]:
    """A fresh database of this test alone, with nothing migrated."""
    async with _scratch_database(postgres_admin_url, "template0") as url:
        yield url


# --- apps and clients --------------------------------------------------------------------------


@asynccontextmanager
async def running(
    app: FastAPI, base_url: str = "http://testserver", client_address: str = "203.0.113.7"
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan, and a client speaking real HTTP semantics to it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(client_address, 50000))
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client


AppFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


def app_factory(database_url: str) -> AppFactory:
    """``async with factory(services=..., **settings) as client`` on ``database_url``."""

    def factory(
        services: list[ServiceSpec] | None = None,
        base_url: str = "http://testserver",
        client_address: str = "203.0.113.7",
        **overrides: object,
    ) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        # Services without auth in-process need its URL; nothing listens on the discard port.
        values = {
            "database_url": database_url,
            "rate_limit": "off",
            "auth_url": "http://127.0.0.1:9",
            **overrides,
        }
        settings = Settings(**values)  # type: ignore[arg-type]
        app = create_app(services or list(SERVICES.values()), settings)
        return running(app, base_url, client_address)

    return factory


@pytest.fixture
def serve_app(database_url: str) -> AppFactory:
    """``async with serve_app(services=..., **settings) as client`` on this test's database."""
    return app_factory(database_url)


@pytest.fixture
async def client(serve_app: AppFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_app() as client:
        yield client
