"""Benchmark of the backups on 1,000,000 expenses (100 users x 10,000, as bench/reports.py).

    .venv/bin/python bench/backup.py        (or: make bench-backup)

Times the commands as an operator runs them (child processes of `expensetracker backup`):
create, verify (which restores into a scratch database), restore into an empty database, and
restore --force over the live one, the restore procedure of docs/runbooks/restore.md. Uses the
embedded PostgreSQL in a temporary folder, or the server in EXPENSETRACKER_BENCH_DATABASE_URL
(its role needs CREATEDB).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import asyncpg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.reports import PER_USER, USERS, load_data  # noqa: E402
from bench.setup import bench_env, log, migrated_database  # noqa: E402
from expensetracker.backup import store  # noqa: E402
from tests.helpers.processes import cli  # noqa: E402


def timed(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(cli(*args), env=env, capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return time.perf_counter() - started


async def database_size(url: str) -> int:
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetchval("SELECT pg_database_size(current_database())")
    finally:
        await connection.close()


def main() -> int:
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-backup-")))
        url = migrated_database(stack, prefix="bench-backup-")
        log("loading 1,000,000 expenses")
        load_seconds = asyncio.run(load_data(url, [uuid.uuid4() for _ in range(USERS)]))
        log(f"loaded in {load_seconds:.0f} s")
        size = asyncio.run(database_size(url))
        env = bench_env(
            url,
            EXPENSETRACKER_BACKUP_DIR=str(folder / "backups"),
        )
        copy = f"bench_restore_{uuid.uuid4().hex[:8]}"
        rows = []
        for label, args in [
            ("backup create", ["backup", "create"]),
            ("backup verify (restore into a scratch database)", ["backup", "verify"]),
            (
                "backup restore into an empty database",
                ["backup", "restore", "latest", "--target-db", copy],
            ),
            (
                "backup restore --force over the live database",
                ["backup", "restore", "latest", "--force"],
            ),
        ]:
            log(f"measuring: {label}")
            rows.append((label, timed(args, env)))
        [backup] = store.scan(folder / "backups")
        assert backup.manifest is not None
        rows_backed_up = sum(table.rows for table in backup.manifest.tables.values())

        async def drop_copy() -> None:
            connection = await asyncpg.connect(url)
            try:
                await connection.execute(f'DROP DATABASE "{copy}" WITH (FORCE)')
            finally:
                await connection.close()

        asyncio.run(drop_copy())

        print(
            f"\n{USERS * PER_USER:,} expenses ({rows_backed_up:,} rows in "
            f"{len(backup.manifest.tables)} tables), database {size / 1e6:.0f} MB, archive "
            f"{backup.manifest.size_bytes / 1e6:.0f} MB (gzip level "
            f"{backup.manifest.compress_level}), PostgreSQL {backup.manifest.server_version}, "
            f"{os.cpu_count()} cores\n"
        )
        print(f"| {'command':<50} | {'seconds':>7} |")
        print(f"|{'-' * 52}|{'-' * 9}|")
        for label, seconds in rows:
            print(f"| {label:<50} | {seconds:>7.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
