"""The command line and the database URL operators write, as real processes on the test
PostgreSQL."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess

import asyncpg
import httpx
import pytest
from sqlalchemy import make_url

from expensetracker.cli.common import DATABASE_UNAVAILABLE, USAGE_ERROR, database_failure
from expensetracker.platform.db import database_location
from expensetracker.platform.migrations import head_revision
from expensetracker.targets import SERVICES
from tests.helpers.database import connected, with_database
from tests.helpers.paths import ECB_SAMPLE, STATEMENTS
from tests.helpers.polling import eventually
from tests.helpers.processes import REPO, Process, clean_env, cli, free_port, spawn

pytestmark = pytest.mark.database

PASSWORD = "s3cret-pw"
# Every command that works on the configured database, with what it needs to get that far.
DATABASE_COMMANDS = [
    ("migrate",),
    ("up", "--port", str(free_port())),
    ("auth", "rotate-keys"),
    (
        "expenses",
        "import",
        str(STATEMENTS.relative_to(REPO) / "checking.ofx"),
        "--user",
        "a@example.org",
    ),
    ("expenses", "run-jobs"),
    ("expenses", "home-currency", "EUR", "--user", "a@example.org"),
    ("expenses", "rules", "apply", "--email", "a@example.org"),
    ("rates", "load", str(ECB_SAMPLE.relative_to(REPO))),
]


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


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one line a command that failed printed on stderr, which shows no password."""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    return lines[0]


@pytest.mark.parametrize("command", DATABASE_COMMANDS, ids=" ".join)
def test_a_database_that_refuses_connections_is_one_line(command: tuple[str, ...]) -> None:
    """A database that is down stopped every command with a traceback of 90-200 lines (and
    `rates load` blamed its file): one line names the database, host and port, and the exit
    status says that it may work later."""
    port = free_port()  # nothing listens there
    url = f"postgresql://expenses:{PASSWORD}@127.0.0.1:{port}/expensetracker"
    done = _run(*command, database_url=url)
    assert _one_error_line(done) == (
        f"error: cannot connect to the database expensetracker at 127.0.0.1:{port}"
        " (connection refused)"
    )
    assert done.returncode == DATABASE_UNAVAILABLE


def test_a_url_the_server_refuses_is_one_line(postgres_admin_url: str) -> None:
    """A database that does not exist, or a role that does not, is the URL's fault: the server's
    reason, and the exit status of a configuration error."""
    missing_database = with_database(postgres_admin_url, "et_no_such_database")
    missing_role = make_url(postgres_admin_url).set(username="et_nobody", password=PASSWORD)
    for url, reason in [
        (missing_database, 'database "et_no_such_database" does not exist'),
        (missing_role.render_as_string(hide_password=False), 'role "et_nobody" does not exist'),
    ]:
        done = _run("expenses", "run-jobs", database_url=url)
        line = _one_error_line(done)
        assert line.startswith("error: cannot connect to the database "), line
        assert line.endswith(f"({reason})"), line
        assert done.returncode == USAGE_ERROR


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "database_url: Value error, empty: unset it, or give a PostgreSQL URL"),
        ("notaurl", "database_url: Value error, not a URL such as postgresql://"),
    ],
)
def test_a_database_url_that_is_no_url_is_one_line(url: str, reason: str) -> None:
    done = _run("migrate", database_url=url)
    assert reason in _one_error_line(done)
    assert done.returncode == USAGE_ERROR


@pytest.mark.parametrize(
    ("command", "missing"),
    [
        (("auth", "rotate-keys"), "auth.signing_keys"),
        (("expenses", "run-jobs"), "expenses.categories"),
        (("rates", "load", str(ECB_SAMPLE.relative_to(REPO))), "expenses.rates"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) else value,
)
def test_an_unmigrated_database_says_to_migrate(
    command: tuple[str, ...], missing: str, empty_database_url: str
) -> None:
    done = _run(*command, database_url=empty_database_url)
    line = _one_error_line(done)
    assert f'is not migrated (relation "{missing}" does not exist)' in line
    assert line.endswith("run `expensetracker migrate`"), line
    assert done.returncode == USAGE_ERROR


async def test_migrate_refuses_a_database_a_newer_version_migrated(
    empty_database_url: str,
) -> None:
    """A rollback: the database is at a migration this version does not know. Alembic upgraded
    the services before that one, then failed with a traceback; now one line names it, before
    any service is touched."""
    async with connected(empty_database_url) as connection:
        await connection.execute(
            "CREATE SCHEMA expenses;"
            "CREATE TABLE expenses.alembic_version (version_num varchar(32) PRIMARY KEY);"
            "INSERT INTO expenses.alembic_version VALUES ('9999')"
        )
    done = await asyncio.to_thread(_run, "migrate", database_url=empty_database_url)
    assert _one_error_line(done).startswith(
        f"error: the database{database_location(empty_database_url)} is migrated beyond this "
        "version: "
        f"expenses at 9999 (this version's newest is {head_revision(SERVICES['expenses'])}); "
    ), done.stderr
    assert done.returncode == USAGE_ERROR
    async with connected(empty_database_url) as connection:
        assert await connection.fetchval("SELECT to_regnamespace('auth')") is None


async def test_only_the_databases_failures_are_told_as_such() -> None:
    """Connecting's errors are the socket's own (OSError): one raised elsewhere, by a file, is a
    failure of something else, which keeps its traceback."""
    try:
        await asyncpg.connect(f"postgresql://expenses@127.0.0.1:{free_port()}/expensetracker")
    except OSError as exc:
        assert database_failure(exc) is not None
    try:
        (REPO / "no-such-file").read_bytes()
    except OSError as exc:
        assert database_failure(exc) is None


async def _listening_unready(process: Process, address: str) -> None:
    """The banner of a server that listens but is not ready, and /readyz agrees."""

    async def said() -> bool:
        return any("is listening on" in line for line in process.lines)

    await eventually("the banner", said, within=60, processes=(process,))
    assert f"is listening on {address}, not ready yet (" in process.output
    async with httpx.AsyncClient(base_url=address, timeout=10) as client:
        assert (await client.get("/readyz")).status_code == 503
    assert "is ready" not in process.output


async def test_serve_says_ready_only_once_the_database_is() -> None:
    """`serve` on a database that is down printed "is ready" while /readyz answered 503."""
    port = free_port()
    down = f"postgresql://expenses:{PASSWORD}@127.0.0.1:{free_port()}/expensetracker"
    env = clean_env(EXPENSETRACKER_DATABASE_URL=down, EXPENSETRACKER_LOG_LEVEL="WARNING")
    with spawn(cli("serve", "--target", "all", "--port", str(port)), env) as process:
        await _listening_unready(process, f"http://127.0.0.1:{port}")
        process.signal(signal.SIGTERM)
        assert process.wait() == 0, process.output
    assert "is ready" not in process.output
    assert PASSWORD not in process.output


async def test_serve_says_ready_once_the_database_is_migrated(empty_database_url: str) -> None:
    port = free_port()
    env = clean_env(
        EXPENSETRACKER_DATABASE_URL=empty_database_url, EXPENSETRACKER_LOG_LEVEL="WARNING"
    )
    with spawn(cli("serve", "--target", "all", "--port", str(port)), env) as process:
        address = f"http://127.0.0.1:{port}"
        await _listening_unready(process, address)
        migrated = await asyncio.to_thread(_run, "migrate", database_url=empty_database_url)
        assert migrated.returncode == 0, migrated.stderr
        assert await asyncio.to_thread(process.wait_ready) == address
        async with httpx.AsyncClient(base_url=address, timeout=10) as client:
            assert (await client.get("/readyz")).status_code == 200


def test_a_port_in_use_is_one_line_and_exit_status_1() -> None:
    """uvicorn ends with status 3 of its own when it cannot listen: `serve` (and `up`) ended so,
    without their `error:` line, outside the exit statuses of docs/operations.md."""
    down = f"postgresql://expenses:{PASSWORD}@127.0.0.1:{free_port()}/expensetracker"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _run("serve", "--target", "all", "--port", str(port), database_url=down)
    said = done.stdout + done.stderr
    assert done.returncode == 1, said
    assert "address already in use" in said
    assert done.stderr.strip().endswith("error: the server did not start (see the log above)")
