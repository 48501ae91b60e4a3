"""Jobs a service process runs in the background while it serves (event consumers, recurring
work, declared on its ServiceSpec), each on a fixed interval, stopped with the app."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog

from expensetracker.platform.metrics import BACKGROUND_JOB_FAILURES_IN_A_ROW, BACKGROUND_JOB_RUNS

log = structlog.get_logger(__name__)


@contextlib.asynccontextmanager
async def periodically(
    name: str, job: Callable[[], Awaitable[object]], *, service: str, interval: float
) -> AsyncIterator[None]:
    """Runs ``service``'s job ``name`` now and then every ``interval`` seconds; a failure is
    logged, counted and retried at the next turn (the database may be down, or not migrated
    yet). A job that keeps failing shows in ``expensetracker_background_job_failures_in_a_row``,
    which the ServiceBackgroundJobFailing alert watches."""
    failures_in_a_row = BACKGROUND_JOB_FAILURES_IN_A_ROW.labels(service, name)
    failures_in_a_row.set(0)

    async def loop() -> None:
        failures = 0
        while True:
            try:
                await job()
            except Exception as exc:
                failures += 1
                BACKGROUND_JOB_RUNS.labels(service, name, "failed").inc()
                # The traceback once, when the failures begin; then a line per turn.
                log.warning(
                    "background_job_failed",
                    service=service,
                    job=name,
                    error=type(exc).__name__,
                    failures_in_a_row=failures,
                    exc_info=exc if failures == 1 else None,
                )
            else:
                failures = 0
                BACKGROUND_JOB_RUNS.labels(service, name, "succeeded").inc()
            failures_in_a_row.set(failures)
            await asyncio.sleep(interval)

    task = asyncio.create_task(loop(), name=f"{service}.{name}")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
