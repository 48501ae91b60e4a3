"""Turns before a pooled connection (platform/db.py: taking_turn): first come, first served,
and never a wait past the pool timeout."""

from __future__ import annotations

import asyncio
import time

import pytest

from expensetracker.platform.db import PoolTurnTimeout, taking_turn


async def test_a_waiter_gives_up_at_its_timeout_and_takes_no_turn() -> None:
    turns = asyncio.Semaphore(1)
    async with taking_turn(turns, wait_seconds=5):
        started = time.monotonic()
        with pytest.raises(PoolTurnTimeout):
            async with taking_turn(turns, wait_seconds=0.05):
                pytest.fail("the only turn is taken")
        assert time.monotonic() - started < 2, "it waited past its own timeout"
    # The waiter that gave up holds nothing: the one turn is free, and taken again at once.
    assert not turns.locked()
    async with taking_turn(turns, wait_seconds=0.05):
        assert turns.locked()
    assert not turns.locked()


async def test_waiters_take_their_turns_in_the_order_they_came() -> None:
    turns = asyncio.Semaphore(1)
    order: list[int] = []

    async def take(n: int) -> None:
        async with taking_turn(turns, wait_seconds=5):
            order.append(n)
            await asyncio.sleep(0)

    async with taking_turn(turns, wait_seconds=5):
        waiters = [asyncio.create_task(take(n)) for n in range(5)]
        await asyncio.sleep(0.01)
        assert order == []
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2, 3, 4]
