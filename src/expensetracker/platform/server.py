"""uvicorn with the shutdown Kubernetes needs: on SIGTERM, first report not-ready while still
serving (so endpoints drop the pod), then stop accepting, finish in-flight requests, close pools
and exit 0; and each response sent in one write."""

from __future__ import annotations

import asyncio
import gc
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, cast

import structlog
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from expensetracker.platform.config import Settings
from expensetracker.platform.health import Readiness

log = structlog.get_logger(__name__)


class GracefulServer(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        *,
        readiness: Readiness,
        drain_seconds: float,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self.readiness = readiness
        self.drain_seconds = drain_seconds
        self.on_ready = on_ready
        self._stop_at: float | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # Everything alive now (modules, the app, pools) lives as long as the process: frozen out
        # of the collector, full collections stop scanning it. Without this they paused the event
        # loop for 100-500 ms under load, the p99 of every route (docs/performance.md).
        gc.freeze()
        if self.started and self.on_ready is not None:
            self.on_ready()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.readiness.shutting_down = True
        if self._stop_at is None and self.drain_seconds > 0:
            log.info(
                "shutdown_draining", signal=signal.Signals(sig).name, seconds=self.drain_seconds
            )
            self._stop_at = time.monotonic() + self.drain_seconds
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._stop_at is not None and time.monotonic() >= self._stop_at:
            self.should_exit = True
        return await super().on_tick(counter)


class _CoalescingTransport:
    """A transport whose writes made in one turn of the event loop leave in one write, at the end
    of that turn (at once from FLUSH_BYTES on, and before closing). uvicorn writes a response's
    status line and headers, then its body: two sends, two TCP segments, and a reader woken
    twice. Sent together they cost the serving process 4-6% less CPU a request
    (docs/performance.md); aiohttp coalesces its own responses the same way."""

    FLUSH_BYTES = 64 * 1024

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    def write(self, data: bytes) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= self.FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            pending, self._pending, self._pending_bytes = self._pending, [], 0
            if not self._transport.is_closing():
                self._transport.write(b"".join(pending))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # the rest is the transport's own
        return getattr(self._transport, name)


class _OneWritePerResponse(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # The parent narrows asyncio's argument type the same way; the wrapper is duck-typed.
        super().connection_made(cast(asyncio.Transport, _CoalescingTransport(transport)))


@contextmanager
def _signals_absorbed() -> Iterator[None]:
    """uvicorn re-raises the signal that stopped it once it is done; absorbing it lets a
    graceful shutdown end with exit status 0 (and lets `up` stop its database afterwards)."""
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(
    app: FastAPI,
    *,
    settings: Settings,
    host: str,
    port: int,
    readiness: Readiness,
    on_ready: Callable[[], None] | None = None,
) -> bool:
    """Serve until SIGTERM/SIGINT; True when the server started and stopped cleanly."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        server_header=False,
        # Forwarded headers only from configured proxies; uvicorn's own default would trust
        # 127.0.0.1 (or its FORWARDED_ALLOW_IPS variable) without being asked.
        proxy_headers=bool(settings.forwarded_allow_ips.strip()),
        forwarded_allow_ips=settings.forwarded_allow_ips.strip(),
        timeout_graceful_shutdown=int(settings.shutdown_timeout_seconds),
        lifespan="on",
        http=_OneWritePerResponse,
    )
    server = GracefulServer(
        config,
        readiness=readiness,
        drain_seconds=settings.effective_shutdown_drain_seconds,
        on_ready=on_ready,
    )
    with _signals_absorbed():
        try:
            server.run()
        except SystemExit:
            # uvicorn's own exit (status 3) when it cannot listen or the app's startup fails:
            # the command says so instead, with the status docs/operations.md gives.
            return False
    return server.started
