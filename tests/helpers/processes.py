"""Real processes for the tests that need them: the command line and the server, over real HTTP
on 127.0.0.1, each bounded in time."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil

from tests.helpers.paths import REPO

READY = re.compile(r"(?:is ready: |^ready )(http://\S+)")
# What `serve` says when it listens but /readyz fails (no database yet).
LISTENING_UNREADY = re.compile(r"is listening on (http://[^\s,]+), not ready yet")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any EXPENSETRACKER_* or OTEL_* setting of the caller's, plus
    ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXPENSETRACKER_", "OTEL_"))}
    return {**env, **extra}


class Process:
    """A child process whose merged output is collected line by line in the background."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(
            args,
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self, timeout: float = 60, *, said: re.Pattern[str] = READY) -> str:
        """The address once the process says it is ready (or, given ``said``, something else
        that names it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self.popen.poll() is not None:
                    message = f"exited with {self.popen.returncode}:\n{self.output}"
                    raise AssertionError(message) from None
                continue
            if match := said.search(line):
                return match.group(1)
        raise AssertionError(f"not ready after {timeout} s:\n{self.output}")

    def signal(self, signum: signal.Signals) -> None:
        self.popen.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        return self.popen.wait(timeout=timeout)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)


@contextmanager
def spawn(args: list[str], env: dict[str, str]) -> Iterator[Process]:
    process = Process(args, env)
    try:
        yield process
    finally:
        process.stop()


def cpu_seconds(command: list[str], env: dict[str, str] | None = None) -> float:
    """The CPU time ``command`` takes (with the processes it waited for), run to its end in
    ``env`` (clean_env() by default): how far interrupt_after may go."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, cwd=REPO, env=env or clean_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


async def interrupt_after(process: Process, *, cpu_seconds: float) -> None:
    """SIGINT once the process has used ``cpu_seconds``: a measure of how far it got that a
    busy machine does not stretch, as it does the time on the clock. Nothing if it ends first."""
    while process.popen.poll() is None:
        with suppress(psutil.NoSuchProcess):
            used = psutil.Process(process.popen.pid).cpu_times()
            if used.user + used.system >= cpu_seconds:
                process.signal(signal.SIGINT)
                return
        await asyncio.sleep(0.005)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "expensetracker", *args]


def postgres_processes(data_dir: Path) -> list[psutil.Process]:
    """PostgreSQL processes serving a data folder (the postmaster names it on its command line)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.info["name"] == "postgres" and str(data_dir) in cmdline:
            found.append(proc)
    return found


def json_log_lines(process: Process) -> list[dict]:
    return [json.loads(line) for line in process.lines if line.startswith("{")]


def request_lines(process: Process, route: str) -> list[dict]:
    return [
        line
        for line in json_log_lines(process)
        if line.get("event") == "request" and line.get("route") == route
    ]


def serve_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a server on ``database_url`` logging JSON, without rate limits."""
    return clean_env(
        EXPENSETRACKER_DATABASE_URL=database_url,
        EXPENSETRACKER_RATE_LIMIT="off",
        EXPENSETRACKER_LOG_FORMAT="json",
        EXPENSETRACKER_LOG_LEVEL="INFO",
        **extra,
    )


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """A real HTTP server on 127.0.0.1 answering with ``handler``, in a thread; its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
