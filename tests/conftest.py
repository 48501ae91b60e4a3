"""Test harness: one PostgreSQL per session (embedded, or EXPENSETRACKER_TEST_DATABASE_URL),
a fresh database per test cloned from a migrated template, and in-process HTTP clients."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.helpers.apps import AppFactory, app_factory
from tests.helpers.database import admin_execute, migrate_all, scratch_database, with_database
from tests.helpers.environment import EXTERNAL_DATABASE_URL, IN_CI, REDIS_URL

# --- policy: a skipped test is a failed test --------------------------------------------------

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _skipped and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _deselected:
        terminalreporter.write_line(line, yellow=True)
    if _skipped:
        terminalreporter.write_line(
            f"FAILED: {len(_skipped)} skipped test(s); a test that cannot run is a broken test",
            red=True,
        )


# --- prerequisites that are not embedded: missing in CI is a failure, elsewhere a deselection --

_unrunnable: dict[str, str] = {}
_deselected: list[str] = []


def missing_prerequisites() -> dict[str, str]:
    """Why the tests of a marker cannot run here, by marker."""
    missing = {}
    # Redis is not embedded: the shared-store tests need one named (.ci/run starts one).
    if not REDIS_URL:
        missing["redis"] = "EXPENSETRACKER_TEST_REDIS_URL names no Redis"
    # debootstrap and buildah's storage need root to build the image: CI runs as root.
    needs = ["root"] if os.geteuid() != 0 else []
    needs += [tool for tool in ("buildah", "debootstrap") if shutil.which(tool) is None]
    if needs:
        missing["image"] = f"building the image needs {' and '.join(needs)}"
    return missing


@pytest.hookimpl(trylast=True)  # after -m and -k: only the tests still selected
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for marker, reason in missing_prerequisites().items():
        lacking = [item for item in items if item.get_closest_marker(marker)]
        if not lacking:
            continue
        if IN_CI:
            _unrunnable.update((item.nodeid, reason) for item in lacking)
            continue
        config.hook.pytest_deselected(items=lacking)
        items[:] = [item for item in items if item not in lacking]
        _deselected.append(
            f"{len(lacking)} {marker} test(s) deselected: {reason} (in CI this fails)"
        )


@pytest.hookimpl(tryfirst=True)  # before any fixture is set up
def pytest_runtest_setup(item: pytest.Item) -> None:
    if reason := _unrunnable.get(item.nodeid):
        pytest.fail(f"CI must run this test, but {reason}", pytrace=False)


# --- databases ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A URL whose role may create databases."""
    if EXTERNAL_DATABASE_URL:
        yield EXTERNAL_DATABASE_URL
        return
    from expensetracker.platform.embedded import EmbeddedPostgres

    with EmbeddedPostgres(tmp_path_factory.mktemp("embedded-postgres")) as server:
        yield server.admin_url


@pytest.fixture(scope="session")
async def migrated_template(postgres_admin_url: str) -> AsyncIterator[str]:
    name = f"et_template_{uuid.uuid4().hex[:10]}"
    await admin_execute(postgres_admin_url, f'CREATE DATABASE "{name}"')
    await asyncio.to_thread(migrate_all, with_database(postgres_admin_url, name))
    yield name
    await admin_execute(postgres_admin_url, f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
async def module_database_url(
    postgres_admin_url: str, migrated_template: str
) -> AsyncIterator[str]:
    """A database shared by one module's tests: for a server they all talk to."""
    async with scratch_database(postgres_admin_url, migrated_template) as url:
        yield url


@pytest.fixture
async def database_url(postgres_admin_url: str, migrated_template: str) -> AsyncIterator[str]:
    """A fresh database of this test alone, every service migrated to head."""
    async with scratch_database(postgres_admin_url, migrated_template) as url:
        yield url


@pytest.fixture
async def empty_database_url(postgres_admin_url: str) -> AsyncIterator[str]:
    """A fresh database of this test alone, with nothing migrated."""
    async with scratch_database(postgres_admin_url, "template0") as url:
        yield url


# --- apps and clients --------------------------------------------------------------------------


@pytest.fixture
def serve_app(database_url: str) -> AppFactory:
    """``async with serve_app(services=..., **settings) as client`` on this test's database."""
    return app_factory(database_url)


@pytest.fixture
async def client(serve_app: AppFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_app() as client:
        yield client
