"""HTTP routes of the reports service (thin: the logic lives in budgets.py and summaries.py)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import date
from functools import partial
from typing import Annotated, Literal, ParamSpec, TypeVar, cast

from fastapi import APIRouter, Depends, Query, Response

from expensetracker.platform import idempotency
from expensetracker.platform.deps import (
    SINGLE_QUERY_VALUES,
    Creating,
    CurrentUser,
    DbConnection,
    DbReadConnection,
    DbSession,
    Paging,
    State,
)
from expensetracker.platform.errors import problems
from expensetracker.platform.idempotency import CREATES
from expensetracker.platform.pagination import Page
from expensetracker.platform.schemas import NO_CONTENT, Day, Month
from expensetracker.reports import budgets, overview, summaries
from expensetracker.reports.months import parse_month
from expensetracker.reports.schemas import (
    AlertOut,
    BudgetIn,
    BudgetOut,
    BudgetReport,
    ConvertedMerchant,
    ConvertedOverview,
    ConvertedSummary,
    ConvertedTrends,
    MerchantTotal,
    Overview,
    Summary,
    Trends,
)

router = APIRouter(tags=["reports"], dependencies=SINGLE_QUERY_VALUES)

MonthQuery = Annotated[Month | None, Query(description="YYYY-MM; default: this month")]
From = Annotated[Day, Query(alias="from", description="First day, inclusive.")]
To = Annotated[Day, Query(description="Last day, inclusive.")]
In = Annotated[
    Literal["home"] | None,
    Query(alias="in", description="home: converted to the home currency (docs/reports.md)."),
]


async def _max_rate_age(state: State) -> int:
    return state.settings.rates_max_age_days


# How old a rate may be for a day without one (EXPENSETRACKER_RATES_MAX_AGE_DAYS).
MaxRateAge = Annotated[int, Depends(_max_rate_age)]


def _month(value: str | None) -> date:
    return parse_month(value) if value else date.today().replace(day=1)


Params = ParamSpec("Params")
Each = TypeVar("Each")
Home = TypeVar("Home")


def _in_currency(
    in_: str | None,
    max_rate_age: int,
    each: Callable[Params, Awaitable[Each]],
    home: Callable[..., Awaitable[Home]],
) -> Callable[Params, Awaitable[Each | Home]]:
    """The report ``each`` (every currency apart) or, with ``in=home``, ``home``: the same report
    converted to the home currency, with ``max_rate_age`` as well."""
    if in_ == "home":
        return cast(Callable[Params, Awaitable[Home]], partial(home, max_rate_age=max_rate_age))
    return each


@router.post("/api/v1/budgets", response_model=BudgetOut, **CREATES)
async def create_budget(body: BudgetIn, creation: Creating, session: DbSession) -> Response:
    """A monthly budget in one currency, for one category (its subcategories included) or for
    all spending in that currency. Accepts ``Idempotency-Key``."""
    result = await budgets.create_budget(session, creation=creation, body=body, today=date.today())
    return idempotency.respond(result)


@router.get("/api/v1/budgets")
async def list_budgets(user: CurrentUser, session: DbSession, paging: Paging) -> Page[BudgetOut]:
    """The caller's budgets by name; their progress is ``GET /api/v1/reports/budgets``."""
    return await budgets.list_budgets(session, user_id=user.user_id, paging=paging)


@router.get("/api/v1/budgets/{budget_id}", responses=problems(404))
async def get_budget(budget_id: uuid.UUID, user: CurrentUser, session: DbSession) -> BudgetOut:
    """One of the caller's budgets; another user's id answers 404."""
    return await budgets.get_budget(session, user_id=user.user_id, budget_id=budget_id)


@router.put("/api/v1/budgets/{budget_id}", responses=problems(404))
async def replace_budget(
    budget_id: uuid.UUID, body: BudgetIn, user: CurrentUser, session: DbSession
) -> BudgetOut:
    """Replaces the whole budget: a field left out takes its default, as in a create."""
    return await budgets.replace_budget(
        session, user_id=user.user_id, budget_id=budget_id, body=body, today=date.today()
    )


@router.delete("/api/v1/budgets/{budget_id}", **NO_CONTENT, responses=problems(404))
async def delete_budget(budget_id: uuid.UUID, user: CurrentUser, session: DbSession) -> None:
    """Deletes the budget and its alerts."""
    await budgets.delete_budget(session, user_id=user.user_id, budget_id=budget_id)


@router.get("/api/v1/reports/budgets")
async def budget_report(
    user: CurrentUser, db: DbConnection, max_rate_age: MaxRateAge, month: MonthQuery = None
) -> BudgetReport:
    """Per budget in the month: limit, rollover in, spent, remaining, percent used, state; a
    converted budget also says how its spending was converted."""
    # On the primary, not the read URL: it records the thresholds it finds newly reached.
    return await budgets.budget_report(
        db, user_id=user.user_id, month=_month(month), max_rate_age=max_rate_age
    )


@router.get("/api/v1/reports/overview")
async def month_overview(
    user: CurrentUser,
    db: DbConnection,
    max_rate_age: MaxRateAge,
    month: MonthQuery = None,
    months: Annotated[int, Query(ge=2, le=24, description="Months of the trend.")] = 12,
    in_: In = None,
) -> Overview | ConvertedOverview:
    """The month at a glance in one call: its summary by category, the summary by month of the
    ``months`` months up to it, and its budgets, as the three reports would answer them."""
    # On the primary, as the budget report: it records the thresholds it finds newly reached.
    return await overview.overview(
        db,
        user_id=user.user_id,
        month=_month(month),
        months=months,
        max_rate_age=max_rate_age,
        home=in_ == "home",
    )


@router.get("/api/v1/reports/summary")
async def summary(
    user: CurrentUser,
    db: DbReadConnection,
    max_rate_age: MaxRateAge,
    from_: From,
    to: To,
    group_by: Literal["category", "month", "tag"] = "category",
    in_: In = None,
) -> Summary | ConvertedSummary:
    """Totals and counts per group and per currency (never added across currencies); with
    ``in=home``, per group in the home currency, saying how each total was converted."""
    report = _in_currency(in_, max_rate_age, summaries.summary, summaries.converted_summary)
    return await report(db, user_id=user.user_id, from_=from_, to=to, group_by=group_by)


@router.get("/api/v1/reports/trends")
async def trends(
    user: CurrentUser,
    db: DbReadConnection,
    max_rate_age: MaxRateAge,
    month: MonthQuery = None,
    months: Annotated[int, Query(ge=2, le=24)] = 6,
    in_: In = None,
) -> Trends | ConvertedTrends:
    """Month over month per category and currency (with ``in=home``: per category in the home
    currency), up to ``month``."""
    report = _in_currency(in_, max_rate_age, summaries.trends, summaries.converted_trends)
    return await report(db, user_id=user.user_id, month=_month(month), months=months)


@router.get("/api/v1/reports/merchants")
async def top_merchants(
    user: CurrentUser,
    db: DbReadConnection,
    max_rate_age: MaxRateAge,
    from_: From,
    to: To,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    in_: In = None,
) -> list[MerchantTotal] | list[ConvertedMerchant]:
    """The first ``limit`` merchants of each currency (with ``in=home``: of all, converted)."""
    report = _in_currency(in_, max_rate_age, summaries.top_merchants, summaries.converted_merchants)
    return await report(db, user_id=user.user_id, from_=from_, to=to, limit=limit)


@router.get("/api/v1/reports/alerts")
async def alerts(user: CurrentUser, session: DbSession, paging: Paging) -> Page[AlertOut]:
    """Budgets that reached a threshold, once per budget, month and threshold; newest first."""
    return await budgets.list_alerts(session, user_id=user.user_id, paging=paging)
