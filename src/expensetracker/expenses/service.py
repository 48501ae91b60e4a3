"""The logic behind the expenses routes. Every query is scoped to the caller's user id."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from prometheus_client import Counter
from pydantic import BaseModel
from sqlalchemy import Select, delete, exists, func, insert, literal, or_, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from expensetracker.expenses.models import (
    Category,
    Expense,
    ExpenseTag,
    ForgottenUser,
    Owner,
    Tag,
    idempotency_keys,
)
from expensetracker.expenses.schemas import (
    CategoryCreate,
    CategoryOut,
    CategoryUpdate,
    ExpenseCreate,
    ExpenseOut,
    ExpenseUpdate,
    TagOut,
)
from expensetracker.platform import idempotency, money
from expensetracker.platform.db import delete_owned
from expensetracker.platform.errors import Conflict, NotFound, ValidationProblem
from expensetracker.platform.events import USER_DELETED, UserEvent
from expensetracker.platform.pagination import Page, keyset_page
from expensetracker.platform.tokens import InvalidToken

EXPENSES_CREATED = Counter("expensetracker_expenses_created_total", "Expenses created.")
EXPENSES_UPDATED = Counter("expensetracker_expenses_updated_total", "Expenses changed.")
EXPENSES_DELETED = Counter("expensetracker_expenses_deleted_total", "Expenses deleted.")

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
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:scope, 0))"),
            {"scope": f"expenses.owner:{event.user_id}"},
        )
        await session.execute(delete(Owner).where(Owner.user_id == event.user_id))
        await session.execute(
            pg_insert(ForgottenUser).values(user_id=event.user_id).on_conflict_do_nothing()
        )


async def ensure_owner(session: AsyncSession, *, user_id: uuid.UUID) -> None:
    """First use by a user: record them and give them the default categories, once. A deleted
    user is refused with 401, as their token would be once it expires."""
    claim = await session.scalar(
        text("SELECT expenses.claim_owner(:user_id)"), {"user_id": user_id}
    )
    if claim == "forgotten":
        raise InvalidToken("This account has been deleted.")
    if claim != "created":
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


async def create_for_owner(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    idempotency_key: str | None,
    route: str,
    body: BaseModel,
    create: Callable[[], Awaitable[BaseModel]],
) -> BaseModel | idempotency.Stored:
    """``create()`` once per Idempotency-Key, in one transaction with the owner row (and default
    categories) the user's first creation needs."""
    async with session.begin():
        await ensure_owner(session, user_id=user_id)
        return await idempotency.create_once(
            session,
            idempotency_keys,
            user_id=user_id,
            key=idempotency_key,
            route=route,
            body=body,
            create=create,
        )


# --- categories --------------------------------------------------------------------------------


def _category_out(category: Category) -> CategoryOut:
    return CategoryOut.model_validate(category, from_attributes=True)


async def list_categories(
    session: AsyncSession, *, user_id: uuid.UUID, limit: int, cursor: str | None
) -> Page[CategoryOut]:
    async with session.begin():
        await ensure_owner(session, user_id=user_id)
        return await keyset_page(
            session,
            select(Category).where(Category.user_id == user_id),
            keys=(Category.name, Category.id),
            types=(str, uuid.UUID),
            limit=limit,
            cursor=cursor,
            item=_category_out,
        )


async def _category(
    session: AsyncSession, *, user_id: uuid.UUID, category_id: uuid.UUID
) -> Category:
    category = await session.get(Category, (user_id, category_id))
    if category is None:
        raise NotFound("No category with this id.")
    return category


async def _check_parent(
    session: AsyncSession, *, user_id: uuid.UUID, parent_id: uuid.UUID, child: Category | None
) -> None:
    """One level of grouping: the parent is a top-level category of the same user, and a
    category with children cannot become a child itself."""
    parent = await session.get(Category, (user_id, parent_id))
    if parent is None or parent.parent_id is not None or (child and parent.id == child.id):
        raise ValidationProblem.of_field(
            "body.parent_id", "Not one of your top-level categories.", "parent"
        )
    if child is not None:
        has_children = await session.scalar(
            select(exists().where(Category.user_id == user_id, Category.parent_id == child.id))
        )
        if has_children:
            raise ValidationProblem.of_field(
                "body.parent_id", "A category with subcategories stays at the top level.", "parent"
            )


async def _flush_unique_name(session: AsyncSession) -> None:
    try:
        await session.flush()
    except IntegrityError as exc:
        if "uq_categories_user_name" in str(exc.orig):
            raise Conflict("You already have a category with this name.") from None
        raise


async def create_category(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    body: CategoryCreate,
    idempotency_key: str | None,
) -> CategoryOut | idempotency.Stored:
    async def create() -> CategoryOut:
        if body.parent_id is not None:
            await _check_parent(session, user_id=user_id, parent_id=body.parent_id, child=None)
        category = Category(user_id=user_id, name=body.name, parent_id=body.parent_id)
        session.add(category)
        await _flush_unique_name(session)
        await session.refresh(category)
        return _category_out(category)

    return await create_for_owner(
        session,
        user_id=user_id,
        idempotency_key=idempotency_key,
        route="POST /api/v1/categories",
        body=body,
        create=create,
    )


async def update_category(
    session: AsyncSession, *, user_id: uuid.UUID, category_id: uuid.UUID, body: CategoryUpdate
) -> CategoryOut:
    async with session.begin():
        category = await _category(session, user_id=user_id, category_id=category_id)
        if "name" in body.model_fields_set:
            if body.name is None:
                raise ValidationProblem.of_field("body.name", "A name is required.", "missing")
            category.name = body.name
        if "parent_id" in body.model_fields_set:
            if body.parent_id is not None:
                await _check_parent(
                    session, user_id=user_id, parent_id=body.parent_id, child=category
                )
            category.parent_id = body.parent_id
        await _flush_unique_name(session)
        return _category_out(category)


async def delete_category(
    session: AsyncSession, *, user_id: uuid.UUID, category_id: uuid.UUID
) -> None:
    """Its expenses become uncategorised and its subcategories move to the top level."""
    async with session.begin():
        await delete_owned(
            session, Category, user_id=user_id, id=category_id, missing="No category with this id."
        )


# --- tags --------------------------------------------------------------------------------------


async def list_tags(
    session: AsyncSession, *, user_id: uuid.UUID, limit: int, cursor: str | None
) -> Page[TagOut]:
    async with session.begin():
        return await keyset_page(
            session,
            select(Tag).where(Tag.user_id == user_id),
            keys=(Tag.name, Tag.id),
            types=(str, uuid.UUID),
            limit=limit,
            cursor=cursor,
            item=lambda tag: TagOut(id=tag.id, name=tag.name),
        )


async def set_tags(
    session: AsyncSession, *, user_id: uuid.UUID, expense_id: uuid.UUID, names: list[str]
) -> None:
    """Links the expense to the named tags, creating the missing ones. PostgreSQL's lower()
    alone decides which names are the same tag (as the unique index does): matching in Python
    disagreed with it for names such as "İstanbul". The first spelling given names a new tag."""
    await session.execute(
        delete(ExpenseTag).where(ExpenseTag.user_id == user_id, ExpenseTag.expense_id == expense_id)
    )
    if not names:
        return
    values = {"user_id": user_id, "expense_id": expense_id, "names": names}
    await session.execute(_CREATE_TAGS, values)
    await session.execute(_LINK_TAGS, values)


_CREATE_TAGS = text(
    """
    INSERT INTO expenses.tags (user_id, id, name)
    SELECT DISTINCT ON (lower(given.name)) :user_id, gen_random_uuid(), given.name
    FROM unnest(CAST(:names AS text[])) WITH ORDINALITY AS given(name, position)
    ORDER BY lower(given.name), given.position
    ON CONFLICT DO NOTHING
    """
)
_LINK_TAGS = text(
    """
    INSERT INTO expenses.expense_tags (user_id, expense_id, tag_id)
    SELECT :user_id, :expense_id, t.id FROM expenses.tags t
    WHERE t.user_id = :user_id
      AND lower(t.name) IN (SELECT lower(name) FROM unnest(CAST(:names AS text[])) AS name)
    """
)


async def _tags_of(
    session: AsyncSession, *, user_id: uuid.UUID, expense_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[str]]:
    rows = await session.execute(
        select(ExpenseTag.expense_id, Tag.name)
        .join(Tag, (Tag.user_id == ExpenseTag.user_id) & (Tag.id == ExpenseTag.tag_id))
        .where(ExpenseTag.user_id == user_id, ExpenseTag.expense_id.in_(expense_ids))
        .order_by(Tag.name)
    )
    tags: dict[uuid.UUID, list[str]] = defaultdict(list)
    for expense_id, name in rows:
        tags[expense_id].append(name)
    return tags


# --- expenses ----------------------------------------------------------------------------------


def _expense_out(expense: Expense, tags: list[str]) -> ExpenseOut:
    return ExpenseOut(
        id=expense.id,
        amount=money.format_amount(expense.amount_minor, expense.currency),
        currency=expense.currency,
        occurred_on=expense.occurred_on,
        description=expense.description,
        notes=expense.notes,
        merchant=expense.merchant,
        category_id=expense.category_id,
        tags=tags,
        created_at=expense.created_at,
        updated_at=expense.updated_at,
    )


async def check_category(
    session: AsyncSession, *, user_id: uuid.UUID, category_id: uuid.UUID | None
) -> None:
    if category_id is not None and await session.get(Category, (user_id, category_id)) is None:
        # The same answer for another user's category as for none at all.
        raise ValidationProblem.of_field(
            "body.category_id", "Not one of your categories.", "category"
        )


async def create_expense(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    body: ExpenseCreate,
    idempotency_key: str | None,
) -> ExpenseOut | idempotency.Stored:
    async def create() -> ExpenseOut:
        await check_category(session, user_id=user_id, category_id=body.category_id)
        expense = Expense(
            user_id=user_id,
            id=uuid.uuid4(),
            **money.stored(body.amount, body.currency),
            occurred_on=body.occurred_on,
            description=body.description,
            notes=body.notes,
            merchant=body.merchant,
            category_id=body.category_id,
        )
        session.add(expense)
        await session.flush()
        await set_tags(session, user_id=user_id, expense_id=expense.id, names=body.tags)
        await session.refresh(expense)
        tags = await _tags_of(session, user_id=user_id, expense_ids=[expense.id])
        return _expense_out(expense, tags[expense.id])

    result = await create_for_owner(
        session,
        user_id=user_id,
        idempotency_key=idempotency_key,
        route="POST /api/v1/expenses",
        body=body,
        create=create,
    )
    if not isinstance(result, idempotency.Stored):
        EXPENSES_CREATED.inc()
    return result


async def _expense(session: AsyncSession, *, user_id: uuid.UUID, expense_id: uuid.UUID) -> Expense:
    expense = await session.get(Expense, (user_id, expense_id))
    if expense is None:
        raise NotFound("No expense with this id.")
    return expense


async def get_expense(
    session: AsyncSession, *, user_id: uuid.UUID, expense_id: uuid.UUID
) -> ExpenseOut:
    async with session.begin():
        expense = await _expense(session, user_id=user_id, expense_id=expense_id)
        tags = await _tags_of(session, user_id=user_id, expense_ids=[expense.id])
        return _expense_out(expense, tags[expense.id])


_REQUIRED = ("currency", "amount", "occurred_on", "description")


async def update_expense(
    session: AsyncSession, *, user_id: uuid.UUID, expense_id: uuid.UUID, body: ExpenseUpdate
) -> ExpenseOut:
    changes = {field: getattr(body, field) for field in body.model_fields_set}
    for field in _REQUIRED:
        if field in changes and changes[field] is None:
            raise ValidationProblem.of_field(f"body.{field}", "This field cannot be null.", "null")
    async with session.begin():
        expense = await _expense(session, user_id=user_id, expense_id=expense_id)
        if "currency" in changes or "amount" in changes:
            currency = changes.get("currency", expense.currency)
            amount = changes.get("amount") or money.format_amount(
                expense.amount_minor, expense.currency
            )
            try:
                columns = money.stored(amount, currency)
            except ValueError as exc:
                raise ValidationProblem.of_field("body.amount", str(exc), "amount") from None
            for name, value in columns.items():
                setattr(expense, name, value)
        if "category_id" in changes:
            await check_category(session, user_id=user_id, category_id=changes["category_id"])
        for field in ("occurred_on", "description", "notes", "merchant", "category_id"):
            if field in changes:
                setattr(expense, field, changes[field])
        if "tags" in changes:
            await set_tags(session, user_id=user_id, expense_id=expense.id, names=changes["tags"])
        expense.updated_at = datetime.now(UTC)
        await session.flush()
        await session.refresh(expense)
        tags = await _tags_of(session, user_id=user_id, expense_ids=[expense.id])
        result = _expense_out(expense, tags[expense.id])
    EXPENSES_UPDATED.inc()
    return result


async def delete_expense(
    session: AsyncSession, *, user_id: uuid.UUID, expense_id: uuid.UUID
) -> None:
    async with session.begin():
        await delete_owned(
            session, Expense, user_id=user_id, id=expense_id, missing="No expense with this id."
        )
    EXPENSES_DELETED.inc()


def filtered_expenses(
    *,
    user_id: uuid.UUID,
    from_: date | None = None,
    to: date | None = None,
    category_id: uuid.UUID | None = None,
    tag: str | None = None,
    q: str | None = None,
    min_amount: Decimal | None = None,
    max_amount: Decimal | None = None,
    currency: str | None = None,
) -> Select[Any]:
    """The caller's expenses matching every given filter (shared by listing and export)."""
    query = select(Expense).where(Expense.user_id == user_id)
    if from_ is not None:
        query = query.where(Expense.occurred_on >= from_)
    if to is not None:
        query = query.where(Expense.occurred_on <= to)
    if category_id is not None:  # a category includes its subcategories
        family = select(Category.id).where(
            Category.user_id == user_id,
            or_(Category.id == category_id, Category.parent_id == category_id),
        )
        query = query.where(Expense.category_id.in_(family))
    if tag is not None:
        query = query.where(
            exists().where(
                ExpenseTag.user_id == user_id,
                ExpenseTag.expense_id == Expense.id,
                Tag.user_id == user_id,
                Tag.id == ExpenseTag.tag_id,
                func.lower(Tag.name) == func.lower(tag),
            )
        )
    if q is not None:  # served by the trigram index on search_text, lower-cased by PostgreSQL
        pattern = "%" + q.replace("/", "//").replace("%", "/%").replace("_", "/_") + "%"
        query = query.where(Expense.search_text.like(func.lower(pattern), escape="/"))
    scaled = literal(1) * func.power(10, Expense.currency_exponent)
    if min_amount is not None:
        query = query.where(Expense.amount_minor >= literal(min_amount) * scaled)
    if max_amount is not None:
        query = query.where(Expense.amount_minor <= literal(max_amount) * scaled)
    if currency is not None:
        query = query.where(Expense.currency == currency)
    return query


async def list_expenses(
    session: AsyncSession,
    *,
    query: Select[Any],
    user_id: uuid.UUID,
    limit: int,
    cursor: str | None,
) -> Page[ExpenseOut]:
    """Newest first: by (occurred_on, id) descending."""
    async with session.begin():
        page = await keyset_page(
            session,
            query,
            keys=(Expense.occurred_on, Expense.id),
            types=(date.fromisoformat, uuid.UUID),
            limit=limit,
            cursor=cursor,
            item=lambda expense: _expense_out(expense, []),
            descending=True,
        )
        tags = await _tags_of(session, user_id=user_id, expense_ids=[e.id for e in page.items])
    page.items = [item.model_copy(update={"tags": tags[item.id]}) for item in page.items]
    return page
