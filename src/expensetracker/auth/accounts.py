"""Auth's published ``auth.accounts_v1`` contract (docs/contracts/auth-user-events-v1.md): how
operator commands find an account by its email address without reading auth's tables."""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_BY_EMAIL = text("SELECT user_id FROM auth.accounts_v1 WHERE email = lower(:email)")


async def user_id_by_email(session: AsyncSession, email: str) -> uuid.UUID | None:
    """The account's user id, or None; emails are kept in lower case, the lookup follows."""
    user_id: uuid.UUID | None = await session.scalar(_BY_EMAIL, {"email": email})
    await session.rollback()
    return user_id
