"""HTTP routes of the expenses service (thin: the logic lives in service.py)."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status
from sqlalchemy import Select

from expensetracker.expenses import service
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
from expensetracker.platform.db import DbSession
from expensetracker.platform.errors import ValidationProblem
from expensetracker.platform.idempotency import IdempotencyKey
from expensetracker.platform.pagination import DEFAULT_LIMIT, Cursor, Limit, Page
from expensetracker.platform.tokens import CurrentUser

router = APIRouter(tags=["expenses"])

_NO_CONTENT = {"status_code": status.HTTP_204_NO_CONTENT, "response_class": Response}


def _bound(name: str, value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        return money.parse_bound(value)
    except ValueError as exc:
        raise ValidationProblem.of_field(f"query.{name}", f"{name} {exc}", "amount") from None


def expense_filters(
    user: CurrentUser,
    from_: Annotated[date | None, Query(alias="from", description="First day, inclusive.")] = None,
    to: Annotated[date | None, Query(description="Last day, inclusive.")] = None,
    category_id: Annotated[
        uuid.UUID | None, Query(description="A category, with its subcategories.")
    ] = None,
    tag: Annotated[str | None, Query(min_length=1, max_length=50)] = None,
    q: Annotated[
        str | None, Query(min_length=1, max_length=100, description="Text in description/notes.")
    ] = None,
    min_amount: Annotated[str | None, Query(max_length=30)] = None,
    max_amount: Annotated[str | None, Query(max_length=30)] = None,
    currency: Annotated[str | None, Query(pattern=r"^[A-Z]{3}$")] = None,
) -> Select[Any]:
    return service.filtered_expenses(
        user_id=user.user_id,
        from_=from_,
        to=to,
        category_id=category_id,
        tag=tag,
        q=q,
        min_amount=_bound("min_amount", min_amount),
        max_amount=_bound("max_amount", max_amount),
        currency=currency,
    )


ExpenseFilters = Annotated[Select[Any], Depends(expense_filters)]


@router.post("/api/v1/expenses", status_code=status.HTTP_201_CREATED, response_model=ExpenseOut)
async def create_expense(
    body: ExpenseCreate,
    user: CurrentUser,
    session: DbSession,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    result = await service.create_expense(
        session, user_id=user.user_id, body=body, idempotency_key=idempotency_key
    )
    return idempotency.respond(result)


@router.get("/api/v1/expenses")
async def list_expenses(
    query: ExpenseFilters,
    user: CurrentUser,
    session: DbSession,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[ExpenseOut]:
    """The caller's expenses, newest first, filtered."""
    return await service.list_expenses(
        session, query=query, user_id=user.user_id, limit=limit, cursor=cursor
    )


@router.get("/api/v1/expenses/{expense_id}")
async def get_expense(expense_id: uuid.UUID, user: CurrentUser, session: DbSession) -> ExpenseOut:
    return await service.get_expense(session, user_id=user.user_id, expense_id=expense_id)


@router.patch("/api/v1/expenses/{expense_id}")
async def update_expense(
    expense_id: uuid.UUID, body: ExpenseUpdate, user: CurrentUser, session: DbSession
) -> ExpenseOut:
    return await service.update_expense(
        session, user_id=user.user_id, expense_id=expense_id, body=body
    )


@router.delete("/api/v1/expenses/{expense_id}", **_NO_CONTENT)
async def delete_expense(expense_id: uuid.UUID, user: CurrentUser, session: DbSession) -> None:
    await service.delete_expense(session, user_id=user.user_id, expense_id=expense_id)


@router.get("/api/v1/categories")
async def list_categories(
    user: CurrentUser, session: DbSession, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[CategoryOut]:
    """The caller's categories by name; a new user starts with a default set."""
    return await service.list_categories(session, user_id=user.user_id, limit=limit, cursor=cursor)


@router.post("/api/v1/categories", status_code=status.HTTP_201_CREATED, response_model=CategoryOut)
async def create_category(
    body: CategoryCreate,
    user: CurrentUser,
    session: DbSession,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    result = await service.create_category(
        session, user_id=user.user_id, body=body, idempotency_key=idempotency_key
    )
    return idempotency.respond(result)


@router.patch("/api/v1/categories/{category_id}")
async def update_category(
    category_id: uuid.UUID, body: CategoryUpdate, user: CurrentUser, session: DbSession
) -> CategoryOut:
    return await service.update_category(
        session, user_id=user.user_id, category_id=category_id, body=body
    )


@router.delete("/api/v1/categories/{category_id}", **_NO_CONTENT)
async def delete_category(category_id: uuid.UUID, user: CurrentUser, session: DbSession) -> None:
    """Its expenses become uncategorised; its subcategories move to the top level."""
    await service.delete_category(session, user_id=user.user_id, category_id=category_id)


@router.get("/api/v1/tags")
async def list_tags(
    user: CurrentUser, session: DbSession, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[TagOut]:
    """The caller's tags by name (tags are created by naming them on an expense)."""
    return await service.list_tags(session, user_id=user.user_id, limit=limit, cursor=cursor)
