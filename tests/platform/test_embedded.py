"""`expensetracker up` on the embedded PostgreSQL: start, stop, restart, and recovery from kills."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest

from expensetracker.platform.embedded import EmbeddedPostgres
from tests.helpers.database import connected
from tests.helpers.processes import Process, clean_env, cli, free_port, postgres_processes, spawn
from tests.helpers.users import login, signed_up

pytestmark = pytest.mark.embedded


def up(data_dir: Path, port: int) -> list[str]:
    return cli("up", "--data-dir", str(data_dir), "--port", str(port))


def database_url(data_dir: Path) -> str:
    return f"postgresql://postgres@/expensetracker?host={data_dir / 'pgdata'}"


async def sql(data_dir: Path, query: str) -> object:
    async with connected(database_url(data_dir)) as connection:
        return await connection.fetchval(query)


def assert_ready(url: str) -> None:
    response = httpx.get(f"{url}/readyz", timeout=10)
    assert response.status_code == 200, response.text


def stop(process: Process, signum: signal.Signals) -> None:
    process.signal(signum)
    assert process.wait(timeout=30) == 0, process.output


async def test_up_starts_stops_and_keeps_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    with spawn(up(data_dir, port), clean_env()) as first:
        url = first.wait_ready()
        assert url == f"http://127.0.0.1:{port}"
        assert_ready(url)
        # A quiet first start: where each schema now is, not every revision that ran on the way.
        started = first.output
        assert "Running upgrade" not in started, started
        assert all(f"target={name}" in started for name in ("auth", "expenses", "reports"))
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            # Every service in one process, over real HTTP: auth signs, expenses verifies.
            account = await signed_up(client)
            categories = await client.get("/api/v1/categories", headers=account.headers)
        assert categories.status_code == 200
        await sql(data_dir, "CREATE TABLE public.kept AS SELECT 42 AS answer")
        stop(first, signal.SIGTERM)
    assert postgres_processes(data_dir) == []  # no orphan postgres

    with spawn(up(data_dir, port), clean_env()) as second:
        url = second.wait_ready()
        assert_ready(url)
        assert await sql(data_dir, "SELECT answer FROM public.kept") == 42
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            await login(client, account.email)  # the account survived the restart
        stop(second, signal.SIGINT)  # Ctrl-C
    assert postgres_processes(data_dir) == []


def test_a_ctrl_c_while_up_starts_stops_the_database_and_says_interrupted(tmp_path: Path) -> None:
    """Ctrl-C during the first start's migrations ended `up` with status 0 on the embedded
    database (130 on a server of EXPENSETRACKER_DATABASE_URL, as every command)."""
    data_dir = tmp_path / "data"
    with spawn(up(data_dir, free_port()), clean_env()) as process:
        process.wait_ready(said=re.compile(r"(embedded_postgres_started)"))
        process.signal(signal.SIGINT)  # the services' migrations are running
        assert process.wait() == 130, process.output
    assert process.output.endswith("error: interrupted"), process.output
    assert postgres_processes(data_dir) == []


def test_a_start_that_fails_once_the_server_runs_leaves_no_postgres(tmp_path: Path) -> None:
    """A start stopped after the wheel started the server (Ctrl-C during `pg_ctl start`, a
    database that cannot be created) left that postgres running, unowned: nothing stops a
    server that start() never returned."""
    data_dir = tmp_path / "data"
    with pytest.raises(asyncpg.PostgresSyntaxError):
        EmbeddedPostgres(data_dir, database="").start()  # no name: refused
    assert postgres_processes(data_dir) == []
    # And the folder starts again: the lock was released.
    with EmbeddedPostgres(data_dir) as embedded:
        assert embedded.is_running()
    assert postgres_processes(data_dir) == []


def test_a_pid_file_cut_short_by_a_crash_does_not_stop_a_start(tmp_path: Path) -> None:
    """After a power loss postmaster.pid may be empty or cut short: the start failed with an
    IndexError traceback, and PostgreSQL itself refuses such a file."""
    data_dir = tmp_path / "data"
    with EmbeddedPostgres(data_dir):
        pass
    pidfile = data_dir / "pgdata" / "postmaster.pid"
    for content in ("", "4242\n/some/folder\n"):
        pidfile.write_text(content)
        with EmbeddedPostgres(data_dir) as embedded:
            assert embedded.is_running()
    assert postgres_processes(data_dir) == []


async def test_up_starts_again_after_being_killed(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    with spawn(up(data_dir, port), clean_env()) as killed:
        assert_ready(killed.wait_ready())
        killed.signal(signal.SIGKILL)
        killed.wait()
    # SIGKILL leaves the database running; the next start adopts it.
    assert postgres_processes(data_dir) != []
    with spawn(up(data_dir, port), clean_env()) as adopted:
        assert_ready(adopted.wait_ready())
        # Now the database dies too, without a clean shutdown (power loss).
        for process in postgres_processes(data_dir):
            process.kill()
        adopted.signal(signal.SIGKILL)
        adopted.wait()
    psutil.wait_procs(postgres_processes(data_dir), timeout=10)
    assert (data_dir / "pgdata" / "postmaster.pid").exists()  # stale, left by the crash

    with spawn(up(data_dir, port), clean_env()) as recovered:
        assert_ready(recovered.wait_ready())
        stop(recovered, signal.SIGTERM)
    assert postgres_processes(data_dir) == []


async def test_second_up_on_the_same_data_folder_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with spawn(up(data_dir, free_port()), clean_env()) as first:
        url = first.wait_ready()
        with spawn(up(data_dir, free_port()), clean_env()) as second:
            assert await asyncio.to_thread(second.wait, 60) == 2
            assert "is in use by another expensetracker process" in second.output
        assert_ready(url)  # the first one is untouched
        stop(first, signal.SIGTERM)
    assert postgres_processes(data_dir) == []


def test_a_data_folder_that_cannot_be_made_is_said_in_one_line(tmp_path: Path) -> None:
    """`up` makes the embedded database's data folder: a file with its name, or a file among its
    parents, ended it in a FileExistsError (NotADirectoryError) traceback. `backup create`,
    which makes none, says there is no database there."""
    a_file = tmp_path / "expenses.csv"
    a_file.write_text("mine")
    for data_dir, reason in [
        (a_file, f"error: {a_file} is not a folder"),
        (
            a_file / "data",
            f"error: cannot create the data folder {a_file / 'data'}: Not a directory",
        ),
    ]:
        for args, env, said in [
            (up(data_dir, free_port()), clean_env(), reason),
            (
                cli("backup", "create"),
                clean_env(EXPENSETRACKER_DATA_DIR=str(data_dir)),
                f"error: no embedded database in {data_dir}: run `expensetracker up` there "
                "first, or set EXPENSETRACKER_DATA_DIR or EXPENSETRACKER_DATABASE_URL",
            ),
        ]:
            done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
            assert done.returncode == 2, done.stderr
            assert done.stderr.strip() == said, done.stderr
    assert a_file.read_text() == "mine"


@pytest.mark.database
async def test_up_uses_an_external_database_when_given(database_url: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "unused"
    env = clean_env(EXPENSETRACKER_DATABASE_URL=database_url)
    with spawn(up(data_dir, free_port()), env) as process:
        assert_ready(process.wait_ready())
        stop(process, signal.SIGTERM)
    assert not data_dir.exists()


async def test_up_demo_loads_a_year_once(tmp_path: Path) -> None:
    from expensetracker import demo

    data_dir = tmp_path / "data"
    counts = []
    password = demo.PASSWORD
    for changed in (False, True):  # loading it again creates nothing twice
        with spawn(
            cli("up", "--demo", "--data-dir", str(data_dir), "--port", str(free_port())),
            clean_env(),
        ) as process:
            url = process.wait_ready()
            # Once changed, the published password is not shown as the account's.
            shown = f"Demo account: {demo.EMAIL} / {demo.PASSWORD}" in process.output
            assert shown is not changed, process.output
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                account = await login(client, demo.EMAIL, password)
                exported = await client.get(
                    "/api/v1/expenses/export", params={"format": "json"}, headers=account.headers
                )
                budgets = await client.get("/api/v1/reports/budgets", headers=account.headers)
                if not changed:
                    password = "a passphrase of the demo's own"
                    done = await client.post(
                        "/api/v1/auth/password",
                        json={"current_password": demo.PASSWORD, "new_password": password},
                        headers=account.headers,
                    )
                    assert done.status_code == 204, done.text
            stop(process, signal.SIGTERM)
        expenses = exported.json()
        counts.append(len(expenses))
        assert {expense["currency"] for expense in expenses} == {"EUR", "JPY"}
        assert len(budgets.json()["budgets"]) == 3
    assert counts[0] == counts[1] > 300
    assert "its password is no longer the published one" in process.output


def test_up_refuses_the_demo_account_in_production(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    done = subprocess.run(
        cli("up", "--demo", "--data-dir", str(data_dir), "--port", str(free_port())),
        env=clean_env(EXPENSETRACKER_ENV="production"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "published password: not in production" in done.stderr
    assert not data_dir.exists()  # refused before the database was made
