"""Waiting for something to happen by polling it against a deadline, never by a fixed sleep:
as quick as the machine allows, and a clear failure when it does not happen in time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx

from tests.helpers.processes import Process

T = TypeVar("T")


async def eventually(
    what: str,
    check: Callable[[], Awaitable[T]],
    *,
    within: float,
    every: float = 0.05,
    processes: tuple[Process, ...] = (),
) -> T:
    """The first truthy answer of ``check``, asked every ``every`` seconds. Fails saying
    ``what`` did not happen when ``within`` seconds have passed, or at once when one of
    ``processes`` has exited. An HTTP error or a failed assertion in ``check`` counts as not
    yet."""
    deadline = time.monotonic() + within
    last: object = None
    while True:
        for process in processes:
            assert process.popen.poll() is None, f"{what}: a process exited:\n{process.output}"
        try:
            answer = await check()
        except (httpx.HTTPError, AssertionError) as exc:
            last = exc
        else:
            if answer:
                return answer
            last = answer
        if time.monotonic() >= deadline:
            output = "\n".join(process.output[-4000:] for process in processes)
            raise AssertionError(f"{what}: not within {within} s (last: {last!r})\n{output}")
        await asyncio.sleep(every)
