"""Failed-login throttling, in PostgreSQL so that every replica sees the same counts.

Failures are counted per client address, per account and address together, and per account.
The first two are hard limits: past them that address (or that address on that account) is
refused until the oldest failure leaves the window. The per-account limit is much higher and
never refuses an address that has not failed on the account: past it, addresses that did fail
on it wait a delay that doubles with every further failure. An attacker can therefore not lock
the owner out (the owner's address has no failures), while guessing one account's password
stays slow and costs a fresh address per guess once the account limit is reached
(docs/auth.md)."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from expensetracker.auth.models import LoginFailure


def account_subject(email: str) -> str:
    # Attempted addresses are not kept in clear: most of them belong to nobody here.
    return "account:" + hashlib.sha256(email.encode()).hexdigest()


def address_subject(address: str) -> str:
    return "address:" + address


def pair_subject(email: str, address: str) -> str:
    return "pair:" + hashlib.sha256(f"{email}\n{address}".encode()).hexdigest()


@dataclass(frozen=True)
class Limits:
    per_address: int
    per_account_address: int
    per_account: int
    window: timedelta


async def serialise(session: AsyncSession, subject: str) -> None:
    """Attempts on one account run one at a time, so a burst cannot outrun the count."""
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:s))"), {"s": subject})


# The growing delay stops doubling here (2**16 s is beyond any sensible window anyway).
_MAX_DOUBLINGS = 16


async def retry_after(
    session: AsyncSession, *, account: str, address: str, pair: str, limits: Limits
) -> int | None:
    """Seconds until this address may try this account again, or None when it may now."""
    now = datetime.now(UTC)
    rows = await session.execute(
        select(
            LoginFailure.subject,
            func.count(),
            func.min(LoginFailure.failed_at),
            func.max(LoginFailure.failed_at),
        )
        .where(
            LoginFailure.subject.in_([account, address, pair]),
            LoginFailure.failed_at > now - limits.window,
        )
        .group_by(LoginFailure.subject)
    )
    counts = {subject: (count, oldest, newest) for subject, count, oldest, newest in rows}
    waits = [
        counts[subject][1] + limits.window - now
        for subject, limit in ((address, limits.per_address), (pair, limits.per_account_address))
        if subject in counts and counts[subject][0] >= limit
    ]
    if pair in counts and account in counts and counts[account][0] >= limits.per_account:
        beyond = min(counts[account][0] - limits.per_account, _MAX_DOUBLINGS)
        delay = min(limits.window, timedelta(seconds=2**beyond))
        waits.append(counts[account][2] + delay - now)
    longest = max((wait.total_seconds() for wait in waits), default=0.0)
    return max(1, math.ceil(longest)) if longest > 0 else None


async def record_failure(session: AsyncSession, *, subjects: list[str], window: timedelta) -> None:
    await session.execute(insert(LoginFailure), [{"subject": s} for s in subjects])
    await session.execute(
        delete(LoginFailure).where(LoginFailure.failed_at < datetime.now(UTC) - window)
    )


async def forget(session: AsyncSession, *, subject: str) -> None:
    await session.execute(delete(LoginFailure).where(LoginFailure.subject == subject))
