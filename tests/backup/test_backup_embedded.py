"""Backups of the embedded default: with no database named, `backup` works on the database of
the data folder, whether `up` is running it or not."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest

from tests.helpers.processes import clean_env, cli, free_port, spawn
from tests.helpers.users import PASSWORD, login, signed_up

pytestmark = [pytest.mark.embedded, pytest.mark.timeout(180)]


def run(*args: str, env: dict[str, str]) -> str:
    with spawn(cli(*args), env) as process:
        assert process.wait(timeout=90) == 0, process.output
    return process.output


async def test_backup_and_restore_of_the_embedded_database(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = clean_env(EXPENSETRACKER_DATA_DIR=str(data_dir))
    up = cli("up", "--data-dir", str(data_dir), "--port", str(free_port()))

    with spawn(up, env) as server:
        url = await asyncio.to_thread(server.wait_ready)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            account = await signed_up(client)
            # While `up` runs, the backup uses its server.
            await asyncio.to_thread(run, "backup", "create", env=env)
            await asyncio.to_thread(run, "backup", "verify", env=env)
            deleted = await client.request(
                "DELETE", "/api/v1/auth/me", json={"password": PASSWORD}, headers=account.headers
            )
            assert deleted.status_code == 204, deleted.text
        server.signal(signal.SIGTERM)
        assert await asyncio.to_thread(server.wait, 30) == 0, server.output

    assert (data_dir / "backups").is_dir()
    # `up` stopped: the restore starts the embedded server for the while.
    output = await asyncio.to_thread(run, "backup", "restore", "latest", "--force", env=env)
    assert "restored expensetracker-" in output

    with spawn(up, env) as server:
        url = await asyncio.to_thread(server.wait_ready)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            await login(client, account.email)  # the deleted account is back
        server.signal(signal.SIGTERM)
        assert await asyncio.to_thread(server.wait, 30) == 0, server.output
