"""A real PgBouncer (Debian's, `apt-get install pgbouncer`: 1.18) in transaction mode in front of
the test PostgreSQL, as CloudNativePG's Pooler puts one in front of the cluster: every database
name passes through to the server, on 127.0.0.1 and a free port of its own."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import make_url

from tests.helpers.processes import free_port

PGBOUNCER = Path("/usr/sbin/pgbouncer")


def version() -> str:
    result = subprocess.run([str(PGBOUNCER), "--version"], capture_output=True, text=True)
    return result.stdout.split()[1]


def _run_as(server_socket_dir: str | None) -> str | None:
    """PgBouncer refuses to run as root: as root it runs as the owner of the server's socket
    folder (the embedded server's user), or as nobody for a server reached over TCP."""
    if os.geteuid() != 0:
        return None
    return Path(server_socket_dir).owner() if server_socket_dir else "nobody"


@contextlib.contextmanager
def pgbouncer(server_url: str, *, pool_size: int = 4) -> Iterator[str]:
    """PgBouncer in front of the server of ``server_url``; yields ``server_url`` through it.

    Fewer server connections (``pool_size``) than the clients open: clients share them, one
    transaction at a time, as behind the Pooler."""
    url = make_url(server_url)
    socket_dir = url.query.get("host")
    server_host = socket_dir or url.host or "127.0.0.1"
    server_port = url.query.get("port") or url.port or 5432
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="et-pgbouncer-", dir="/tmp"))
    # Clients are trusted here (the users listed): the server checks the passwords it is given.
    (folder / "users.txt").write_text(f'"{url.username}" ""\n')
    password = f" password={url.password}" if url.password else ""
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={server_host} port={server_port} user={url.username}{password}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {folder / 'users.txt'}\n"
        "pool_mode = transaction\n"
        f"default_pool_size = {pool_size}\n"
        "max_client_conn = 200\n"
        f"logfile = {folder / 'pgbouncer.log'}\n"
        f"pidfile = {folder / 'pgbouncer.pid'}\n"
    )
    command = [str(PGBOUNCER), str(folder / "pgbouncer.ini")]
    user = _run_as(socket_dir)
    if user is not None:
        shutil.chown(folder, user)
        command = ["runuser", "-u", user, "--", *command]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_listening(port, process, folder / "pgbouncer.log")
        through = url.set(host="127.0.0.1", port=port, query={})
        yield through.render_as_string(hide_password=False)
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def _wait_listening(port: int, process: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode() if process.stdout else ""
            logged = log.read_text() if log.exists() else ""
            raise AssertionError(f"pgbouncer exited with {process.returncode}:\n{output}{logged}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise AssertionError(f"pgbouncer not listening on {port} after {timeout} s")
