"""Consuming the auth service's account events (docs/contracts/auth-user-events-v1.md).

Each consuming service keeps its position in its own ``event_positions`` table and advances it
in the same transaction as the changes an event causes: a service that was down catches up when
it returns, and applies no event twice. One replica consumes at a time (an advisory lock); the
service runs :meth:`UserEventConsumer.catch_up` in the background (platform/background.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    Uuid,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from expensetracker.platform.db import lock_until_commit

log = structlog.get_logger(__name__)

USER_EVENTS_VIEW = "auth.user_events_v1"
USER_DELETED = "user.deleted"
BATCH = 500


def event_positions_table(metadata: MetaData) -> Table:
    return Table(
        "event_positions",
        metadata,
        Column("consumer", String(100), primary_key=True),
        Column("last_event_id", BigInteger, nullable=False),
    )


def forgotten_users_table(metadata: MetaData) -> Table:
    """Tombstones: the users whose ``user.deleted`` was applied. The service's own check before
    it creates a user's rows (its ``claim_owner`` or ``user_may_write`` function) refuses them,
    under the same lock as :func:`forget`."""
    return Table(
        "forgotten_users",
        metadata,
        Column("user_id", Uuid, primary_key=True),
        Column("forgotten_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


async def forget(session: AsyncSession, tombstones: Table, *, user_id: uuid.UUID) -> None:
    """Records the user's tombstone in ``tombstones`` (forgotten_users_table), in the caller's
    transaction, after the creations in flight for them: this takes exclusively the lock that
    the service's check holds shared while a creation runs."""
    await lock_until_commit(session, f"{tombstones.schema}.owner:{user_id}")
    await session.execute(pg_insert(tombstones).values(user_id=user_id).on_conflict_do_nothing())


@dataclass(frozen=True)
class UserEvent:
    id: int
    event_type: str
    user_id: uuid.UUID
    payload: dict[str, Any]


Handler = Callable[[AsyncSession, UserEvent], Awaitable[None]]


@dataclass(frozen=True)
class UserEventHandling:
    """A service's part in consuming the events: where it keeps its position, what it does."""

    positions: Table
    handle: Handler


@dataclass(frozen=True, kw_only=True)
class UserEventConsumer:
    name: str
    sessionmaker: async_sessionmaker[AsyncSession]
    positions: Table
    handle: Handler

    async def run_once(self) -> int:
        """Applies the events not handled yet; the number applied (0 when another replica holds
        the turn)."""
        async with self.sessionmaker.begin() as session:
            turn = await session.scalar(
                text("SELECT pg_try_advisory_xact_lock(hashtext(:name))"),
                {"name": f"events:{self.name}"},
            )
            if not turn:
                return 0
            last = await session.scalar(
                select(self.positions.c.last_event_id).where(self.positions.c.consumer == self.name)
            )
            rows = await session.execute(
                text(
                    f"SELECT id, event_type, user_id, payload FROM {USER_EVENTS_VIEW} "  # noqa: S608
                    "WHERE id > :last ORDER BY id LIMIT :batch"
                ),
                {"last": last or 0, "batch": BATCH},
            )
            events = [UserEvent(*row) for row in rows]
            for event in events:
                await self.handle(session, event)
            if events:
                await session.execute(
                    pg_insert(self.positions)
                    .values(consumer=self.name, last_event_id=events[-1].id)
                    .on_conflict_do_update(
                        index_elements=[self.positions.c.consumer],
                        set_={"last_event_id": events[-1].id},
                    )
                )
        for event in events:
            log.info("user_event_applied", event_type=event.event_type, user_id=str(event.user_id))
        return len(events)

    async def catch_up(self) -> int:
        """Applies batches until none is left; the number of events applied."""
        total = 0
        while (applied := await self.run_once()) > 0:
            total += applied
            if applied < BATCH:
                break
        return total
