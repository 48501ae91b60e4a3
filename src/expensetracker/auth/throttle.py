"""Failed-login throttling per account and per client address, in PostgreSQL so that every
replica sees the same counts. A subject with ``limit`` failures inside the window is refused
until the oldest of them leaves the window."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from expensetracker.auth.models import LoginFailure


def account_subject(email: str) -> str:
    # Attempted addresses are not kept in clear: most of them belong to nobody here.
    return "account:" + hashlib.sha256(email.encode()).hexdigest()


def address_subject(address: str) -> str:
    return "address:" + address


async def serialise(session: AsyncSession, subject: str) -> None:
    """Attempts on one account run one at a time, so a burst cannot outrun the count."""
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:s))"), {"s": subject})


async def retry_after(
    session: AsyncSession, *, limits: dict[str, int], window: timedelta
) -> int | None:
    """Seconds until an attempt is allowed again, or None when it is allowed now."""
    now = datetime.now(UTC)
    rows = await session.execute(
        select(LoginFailure.subject, func.count(), func.min(LoginFailure.failed_at))
        .where(LoginFailure.subject.in_(limits), LoginFailure.failed_at > now - window)
        .group_by(LoginFailure.subject)
    )
    waits = [
        (oldest + window - now).total_seconds()
        for subject, count, oldest in rows
        if count >= limits[subject]
    ]
    return max(1, math.ceil(max(waits))) if waits else None


async def record_failure(session: AsyncSession, *, subjects: list[str], window: timedelta) -> None:
    await session.execute(insert(LoginFailure), [{"subject": s} for s in subjects])
    await session.execute(
        delete(LoginFailure).where(LoginFailure.failed_at < datetime.now(UTC) - window)
    )


async def forget(session: AsyncSession, *, subject: str) -> None:
    await session.execute(delete(LoginFailure).where(LoginFailure.subject == subject))
