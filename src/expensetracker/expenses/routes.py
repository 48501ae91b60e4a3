"""HTTP routes of the expenses service (thin: the logic lives in service.py)."""

from fastapi import APIRouter

from expensetracker.expenses import service
from expensetracker.expenses.schemas import CategoryOut
from expensetracker.platform.db import DbSession
from expensetracker.platform.pagination import DEFAULT_LIMIT, Cursor, Limit, Page
from expensetracker.platform.tokens import CurrentUser

router = APIRouter(tags=["expenses"])


@router.get("/api/v1/categories")
async def list_categories(
    user: CurrentUser, session: DbSession, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[CategoryOut]:
    """The caller's categories by name; a new user starts with a default set."""
    return await service.list_categories(session, user_id=user.user_id, limit=limit, cursor=cursor)
