"""What every benchmark starts from: a migrated database (the embedded PostgreSQL in a
temporary folder, or the server in EXPENSETRACKER_BENCH_DATABASE_URL) and `serve` processes
on free ports of 127.0.0.1, stopped with the run."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import make_url

from expensetracker.platform.db import create_database_if_missing
from expensetracker.platform.embedded import EmbeddedPostgres
from expensetracker.platform.migrations import upgrade
from expensetracker.targets import SERVICES
from tests.helpers.database import connected, with_database
from tests.helpers.processes import Process, clean_env, cli, free_port

PASSWORD = "benchmark passphrase 2025"


async def register(auth_url: str, email: str) -> tuple[str, str]:
    """A new account at the auth service: its user id and an access token."""
    async with httpx.AsyncClient(base_url=auth_url, timeout=60) as client:
        account = {"email": email, "password": PASSWORD, "display_name": "Bench"}
        await client.post("/api/v1/auth/register", json=account)
        login = {"email": email, "password": PASSWORD}
        token = (await client.post("/api/v1/auth/login", json=login)).json()["access_token"]
        me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        return me.json()["id"], token


async def settle(connection: Any) -> None:
    """The loaded database as after a night of autovacuum: statistics, and the visibility map of
    the loaded tables (else an insert-triggered vacuum of a million rows runs during the first
    measured lines); and the pages they dirtied written out (else a checkpoint writes them
    during the first line, which pays for the load)."""
    await connection.execute("VACUUM (ANALYZE)")
    await connection.execute("CHECKPOINT")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def migrated_database(stack: ExitStack, *, prefix: str) -> str:
    """The database's URL, every service migrated to head."""
    url = os.environ.get("EXPENSETRACKER_BENCH_DATABASE_URL")
    if url is None:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))
        url = stack.enter_context(EmbeddedPostgres(folder / "data")).url
    else:
        asyncio.run(create_if_missing(url))
    log("migrating")
    for spec in SERVICES.values():
        upgrade(spec, url)
    return url


async def create_if_missing(url: str) -> None:
    """The database the URL names, created empty on its server when it does not exist yet."""
    name = make_url(url).database
    async with connected(with_database(url, "postgres")) as connection:
        if await create_database_if_missing(connection, name):
            log(f"created the database {name}")


def bench_env(database_url: str, **settings: str) -> dict[str, str]:
    """The environment of the benchmarked processes: no rate limit, few log lines."""
    return clean_env(
        EXPENSETRACKER_DATABASE_URL=database_url,
        EXPENSETRACKER_RATE_LIMIT="off",
        EXPENSETRACKER_LOG_LEVEL="WARNING",
        **settings,
    )


def serve(stack: ExitStack, target: str, env: dict[str, str]) -> tuple[str, Process]:
    """`serve --target` on a free port, ready: its URL and process, stopped gracefully when the
    stack closes."""
    process = Process(cli("serve", "--target", target, "--port", str(free_port())), env)
    stack.callback(process.stop)
    stack.callback(lambda: (process.signal(signal.SIGTERM), process.wait(30)))
    return process.wait_ready(), process
