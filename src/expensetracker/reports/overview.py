"""The overview: a month at a glance (its spending per category, the trend of the months up to
it, its budgets) in one request, where a dashboard would make three: each request costs the
service more than the statements it runs (docs/performance.md)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import date
from functools import partial

import asyncpg

from expensetracker.reports import budgets, summaries
from expensetracker.reports.months import month_end, month_label
from expensetracker.reports.schemas import ConvertedOverview, ConvertedSummary, Overview, Summary


async def overview(
    db: asyncpg.Connection,
    *,
    user_id: uuid.UUID,
    month: date,
    months: int,
    max_rate_age: int,
    home: bool,
) -> Overview | ConvertedOverview:
    """``month``'s totals per category, the totals of the ``months`` months up to it, and its
    budgets (thresholds newly reached are recorded, as the budget report records them). With
    ``home``, both summaries are in the home currency (a 422 when there is none yet)."""
    first, last = summaries.first_trend_month(month, months), month_end(month)
    summary: Callable[..., Awaitable[Summary | ConvertedSummary]] = (
        partial(summaries.converted_summary, max_rate_age=max_rate_age)
        if home
        else summaries.summary
    )
    by_category = await summary(db, user_id=user_id, from_=month, to=last, group_by="category")
    by_month = await summary(db, user_id=user_id, from_=first, to=last, group_by="month")
    report = await budgets.budget_report(
        db, user_id=user_id, month=month, max_rate_age=max_rate_age
    )
    shape = ConvertedOverview if home else Overview
    return shape.model_validate(
        {
            "month": month_label(month),
            "by_category": by_category,
            "by_month": by_month,
            "budgets": report.budgets,
        }
    )
