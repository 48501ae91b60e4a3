"""Jobs a service process runs in the background while it serves (event consumers, recurring
work, declared on its ServiceSpec), each on a fixed interval, stopped with the app."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)


@contextlib.asynccontextmanager
async def periodically(
    name: str, job: Callable[[], Awaitable[object]], *, interval: float
) -> AsyncIterator[None]:
    """Runs ``job`` now and then every ``interval`` seconds; a failure is logged and retried at
    the next turn (the database may be down, or not migrated yet)."""

    async def loop() -> None:
        while True:
            try:
                await job()
            except Exception as exc:
                log.warning("background_job_failed", job=name, error=type(exc).__name__)
            await asyncio.sleep(interval)

    task = asyncio.create_task(loop(), name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
