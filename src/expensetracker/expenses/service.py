"""The logic behind the expenses routes."""

from __future__ import annotations

import uuid

from sqlalchemy import insert, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from expensetracker.expenses.models import Category, Owner
from expensetracker.expenses.schemas import CategoryOut
from expensetracker.platform.pagination import Page, decode_cursor, page_of

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


async def ensure_owner(session: AsyncSession, *, user_id: uuid.UUID) -> None:
    """First use by a user: record them and give them the default categories, once."""
    created = await session.scalar(
        pg_insert(Owner)
        .values(user_id=user_id)
        .on_conflict_do_nothing(index_elements=[Owner.user_id])
        .returning(Owner.user_id)
    )
    if created is None:
        return
    rows = []
    for parent, children in DEFAULT_CATEGORIES.items():
        parent_id = uuid.uuid4()
        rows.append({"user_id": user_id, "id": parent_id, "name": parent, "parent_id": None})
        rows += [
            {"user_id": user_id, "id": uuid.uuid4(), "name": child, "parent_id": parent_id}
            for child in children
        ]
    await session.execute(insert(Category), rows)


async def list_categories(
    session: AsyncSession, *, user_id: uuid.UUID, limit: int, cursor: str | None
) -> Page[CategoryOut]:
    after = decode_cursor(cursor, types=(str, uuid.UUID))
    async with session.begin():
        await ensure_owner(session, user_id=user_id)
        query = select(Category).where(Category.user_id == user_id)
        if after is not None:
            query = query.where(tuple_(Category.name, Category.id) > tuple_(after[0], after[1]))
        rows = await session.scalars(query.order_by(Category.name, Category.id).limit(limit + 1))
        items = [CategoryOut.model_validate(row, from_attributes=True) for row in rows]
    return page_of(items, limit=limit, key=lambda item: [item.name, str(item.id)])
