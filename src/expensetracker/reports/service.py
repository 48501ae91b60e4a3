"""The reports service's side of an account's life: a deleted user's data forgotten, and
nothing created for them again. The reports themselves: budgets.py (budgets, their status and
alerts) and summaries.py (summaries, trends, merchants); months.py counts months, conversion.py
converts to one currency. This service writes only its own schema."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncSession

from expensetracker.platform.errors import InvalidToken
from expensetracker.platform.events import USER_DELETED, UserEvent, forget
from expensetracker.reports.models import Budget, forgotten_users, idempotency_keys


async def check_not_forgotten(session: AsyncSession, *, user_id: uuid.UUID) -> None:
    """A deleted user's still-valid token creates nothing (401), in the caller's transaction."""
    allowed = await session.scalar(
        text("SELECT reports.user_may_write(:user_id)"), {"user_id": user_id}
    )
    if not allowed:
        raise InvalidToken("This account has been deleted.")


async def forget_user(session: AsyncSession, event: UserEvent) -> None:
    """``user.deleted``: the user's budgets (their alerts follow) and idempotency records, and a
    tombstone so that nothing is created for them again (after creations in flight: the
    exclusive lock waits for user_may_write's shared one)."""
    if event.event_type == USER_DELETED:
        await forget(session, forgotten_users, user_id=event.user_id)
        await session.execute(delete(Budget).where(Budget.user_id == event.user_id))
        await session.execute(
            text("DELETE FROM reports.converted_months WHERE user_id = :user_id"),
            {"user_id": event.user_id},
        )
        await session.execute(
            delete(idempotency_keys).where(idempotency_keys.c.user_id == event.user_id)
        )
