"""The owner row of a user in the expenses service: made on first use (with the default
categories), the transaction every creation runs in, and forgotten when the account is deleted.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from pydantic import BaseModel
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from expensetracker.expenses.models import Owner, forgotten_users, idempotency_keys
from expensetracker.platform import idempotency
from expensetracker.platform.db import Db, fetch, fetchval
from expensetracker.platform.errors import InvalidToken
from expensetracker.platform.events import USER_DELETED, UserEvent, forget

# Every new user starts with these (top level -> children); they are theirs to rename or delete.
DEFAULT_CATEGORIES: dict[str, tuple[str, ...]] = {
    "Food": ("Groceries", "Restaurants"),
    "Housing": ("Rent", "Utilities"),
    "Transport": ("Public transport", "Fuel"),
    "Health": (),
    "Shopping": (),
    "Entertainment": (),
    "Travel": (),
    "Education": (),
    "Gifts": (),
    "Other": (),
}


async def forget_user(session: AsyncSession, event: UserEvent) -> None:
    """``user.deleted``: everything of that user goes (the owner row cascades to the rest), and a
    tombstone keeps their still-valid access tokens from creating anything again. The exclusive
    lock waits for creations in flight (claim_owner holds it shared)."""
    if event.event_type == USER_DELETED:
        await forget(session, forgotten_users, user_id=event.user_id)
        await session.execute(delete(Owner).where(Owner.user_id == event.user_id))


async def ensure_owner(db: Db, *, user_id: uuid.UUID) -> None:
    """First use by a user: record them and give them the default categories, once. A deleted
    user is refused with 401, as their token would be once it expires. Inside the caller's
    transaction (``db`` a session or a connection)."""
    claim = await fetchval(db, "SELECT expenses.claim_owner($1)", user_id)
    if claim == "forgotten":
        raise InvalidToken("This account has been deleted.")
    if claim != "created":
        return
    ids, names, parents = [], [], []
    for parent, children in DEFAULT_CATEGORIES.items():
        parent_id = uuid.uuid4()
        for name, parent_of in ((parent, None), *((child, parent_id) for child in children)):
            ids.append(parent_id if parent_of is None else uuid.uuid4())
            names.append(name)
            parents.append(parent_of)
    await fetch(
        db,
        "INSERT INTO expenses.categories (user_id, id, name, parent_id) "
        "SELECT $1, * FROM unnest($2::uuid[], $3::text[], $4::uuid[])",
        user_id,
        ids,
        names,
        parents,
    )


async def create_for_owner(
    session: AsyncSession,
    *,
    creation: idempotency.Creation,
    body: BaseModel,
    create: Callable[[], Awaitable[idempotency.Created]],
) -> idempotency.Created | idempotency.Stored:
    """``create()`` once per Idempotency-Key, in one transaction with the owner row (and default
    categories) the user's first creation needs."""
    async with session.begin():
        await ensure_owner(session, user_id=creation.user_id)
        return await idempotency.create_once(
            session, idempotency_keys, creation=creation, body=body, create=create
        )
