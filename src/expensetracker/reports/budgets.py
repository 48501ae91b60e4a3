"""Budgets: their definitions, their status in a month (spent, available, carried over), and
the alerts recorded when a threshold is reached. Spending is read only through the expenses
service's published views; sums are per currency, or converted for a converted budget."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import partial
from typing import Any

import asyncpg
import structlog
from prometheus_client import Counter
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from expensetracker.platform import idempotency, money
from expensetracker.platform.db import DriverPool, delete_owned, get_owned
from expensetracker.platform.errors import ValidationProblem
from expensetracker.platform.pagination import (
    Page,
    PageRequest,
    instant,
    keyset_page,
    page_by_name,
)
from expensetracker.reports import conversion
from expensetracker.reports.conversion import Converted
from expensetracker.reports.models import Budget, BudgetAlert, idempotency_keys
from expensetracker.reports.months import add_months, month_end, month_label, parse_month
from expensetracker.reports.schemas import (
    AlertOut,
    BudgetIn,
    BudgetOut,
    BudgetReport,
    BudgetStatus,
)
from expensetracker.reports.service import check_not_forgotten
from expensetracker.reports.summaries import percent

log = structlog.get_logger(__name__)

# What a bigint column (an alert's spent and available) holds.
_BIGINT = range(-(2**63), 2**63)

BUDGETS_EXCEEDED = Counter(
    "expensetracker_budgets_exceeded_total",
    "Budgets that reached one of their alert thresholds (once per budget, month and threshold).",
)


async def _check_category(
    session: AsyncSession, *, user_id: uuid.UUID, category_id: uuid.UUID | None
) -> None:
    if category_id is None:
        return
    found = await session.scalar(
        text(
            "SELECT 1 FROM expenses.categories_v1 WHERE user_id = :user_id "
            "AND category_id = :category_id"
        ),
        {"user_id": user_id, "category_id": category_id},
    )
    if not found:
        raise ValidationProblem.of_field(
            "body.category_id", "Not one of your categories.", "category"
        )


def _budget_out(budget: Budget) -> BudgetOut:
    return BudgetOut(
        id=budget.id,
        name=budget.name,
        category_id=budget.category_id,
        currency=budget.currency,
        amount=money.format_amount(budget.amount_minor, budget.currency),
        rollover=budget.rollover,
        thresholds=budget.thresholds,
        starts=month_label(budget.starts_on),
        converted=budget.converted,
        created_at=budget.created_at,
        updated_at=budget.updated_at,
    )


def _apply(budget: Budget, body: BudgetIn, *, today: date) -> None:
    budget.name = body.name
    budget.category_id = body.category_id
    budget.currency = body.currency
    budget.amount_minor = money.parse_amount(body.amount, body.currency)
    budget.rollover = body.rollover
    budget.thresholds = body.thresholds
    budget.converted = body.converted
    budget.starts_on = parse_month(body.starts) if body.starts else today.replace(day=1)


async def create_budget(
    session: AsyncSession, *, creation: idempotency.Creation, body: BudgetIn, today: date
) -> BudgetOut | idempotency.Stored:
    async def create() -> BudgetOut:
        await _check_category(session, user_id=creation.user_id, category_id=body.category_id)
        budget = Budget(user_id=creation.user_id, id=uuid.uuid4())
        _apply(budget, body, today=today)
        session.add(budget)
        await session.flush()
        await session.refresh(budget)
        return _budget_out(budget)

    async with session.begin():
        await check_not_forgotten(session, user_id=creation.user_id)
        return await idempotency.create_once(
            session, idempotency_keys, creation=creation, body=body, create=create
        )


_NO_BUDGET = "No budget with this id."
_budget = partial(get_owned, model=Budget, missing=_NO_BUDGET)


async def get_budget(
    session: AsyncSession, *, user_id: uuid.UUID, budget_id: uuid.UUID
) -> BudgetOut:
    async with session.begin():
        return _budget_out(await _budget(session, user_id=user_id, id=budget_id))


async def replace_budget(
    session: AsyncSession, *, user_id: uuid.UUID, budget_id: uuid.UUID, body: BudgetIn, today: date
) -> BudgetOut:
    async with session.begin():
        budget = await _budget(session, user_id=user_id, id=budget_id, for_update=True)
        await _check_category(session, user_id=user_id, category_id=body.category_id)
        _apply(budget, body, today=today)
        budget.updated_at = datetime.now(UTC)
        await session.flush()
        await session.refresh(budget)
        return _budget_out(budget)


async def delete_budget(session: AsyncSession, *, user_id: uuid.UUID, budget_id: uuid.UUID) -> None:
    await delete_owned(session, Budget, user_id=user_id, id=budget_id, missing=_NO_BUDGET)


async def list_budgets(
    session: AsyncSession, *, user_id: uuid.UUID, paging: PageRequest
) -> Page[BudgetOut]:
    return await page_by_name(
        session, Budget, list_name="budgets", user_id=user_id, paging=paging, item=_budget_out
    )


# --- budget status -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """A budget as the status needs it."""

    id: uuid.UUID
    name: str
    category_id: uuid.UUID | None
    currency: str
    amount_minor: int
    rollover: bool
    starts_on: date
    thresholds: list[int]
    converted: bool  # spending in every currency counts, converted to `currency`
    recorded: frozenset[int]  # thresholds already recorded as alerts in the month asked for
    category_deleted: bool  # its category is gone: its expenses are uncategorised now


# Spent per (currency, category) in one month; category None is everything in that currency,
# and a parent category includes its subcategories.
MonthSums = dict[tuple[str, uuid.UUID | None], int]


def _month_sums(rows: Iterable[Iterable[Any]]) -> dict[date, MonthSums]:
    by_month: dict[date, MonthSums] = defaultdict(lambda: defaultdict(int))
    for month, category_id, parent_id, currency, total in rows:
        sums = by_month[month]
        sums[(currency, None)] += total
        if category_id is not None:
            sums[(currency, category_id)] += total
        if parent_id is not None:
            sums[(currency, parent_id)] += total
    return by_month


def _status(plan: _Plan, month: date, by_month: dict[date, MonthSums]) -> tuple[int, int, int]:
    """(rollover in, available, spent) of a budget in ``month``."""
    key = (plan.currency, plan.category_id)
    carry = 0
    # Without rollover a month stands alone; with it, the chain starts at the first month.
    current = plan.starts_on if plan.rollover else month
    while True:
        available = plan.amount_minor + carry
        spent = by_month[current].get(key, 0) if current in by_month else 0
        if current >= month:
            return carry, available, spent
        carry = available - spent if plan.rollover else 0
        current = add_months(current, 1)


def _state(plan: _Plan, available: int, spent: int) -> tuple[str, float | None, list[int]]:
    """State, percent used, and the thresholds reached."""
    percent_used = percent(spent, available) if available > 0 else None
    if available > 0:
        reached = [t for t in plan.thresholds if spent * 100 >= t * available]
    else:
        reached = list(plan.thresholds) if spent > 0 else []
    if available - spent < 0:
        return "over", percent_used, reached
    return ("warning" if reached else "ok"), percent_used, reached


# Reads go straight through asyncpg, one statement each: this is the hottest route of the service
# (docs/performance.md).
_BUDGETS_IN_MONTH = """
SELECT b.id, b.name, b.category_id, b.currency, b.amount_minor, b.rollover, b.starts_on,
       b.thresholds, b.converted,
       ARRAY(SELECT a.threshold FROM reports.budget_alerts a
             WHERE a.user_id = b.user_id AND a.budget_id = b.id AND a.month = $2) AS recorded,
       b.category_id IS NOT NULL AND NOT EXISTS (
         SELECT FROM expenses.categories_v1 c
         WHERE c.user_id = b.user_id AND c.category_id = b.category_id) AS category_deleted
FROM reports.budgets b WHERE b.user_id = $1 AND b.starts_on <= $2 ORDER BY b.name, b.id
"""
_SPENT_PER_MONTH = """
SELECT month, category_id, category_parent_id, currency, total_minor
FROM expenses.monthly_spending_v1
WHERE user_id = $1 AND month BETWEEN $2 AND $3 AND currency = ANY($4::text[])
"""
# Only for the budgets that still exist, locked as the foreign key's check locks them: one
# deleted since they were read (or being deleted: its deletion is waited for) is left out.
_RECORD_ALERTS = """
INSERT INTO reports.budget_alerts
    (user_id, month, id, budget_id, threshold, spent_minor, available_minor, currency)
SELECT $1, $2, a.* FROM unnest(
    $3::uuid[], $4::uuid[], $5::smallint[], $6::bigint[], $7::bigint[], $8::text[]
) AS a(id, budget_id, threshold, spent_minor, available_minor, currency)
WHERE a.budget_id IN (SELECT b.id FROM reports.budgets b
                      WHERE b.user_id = $1 AND b.id = ANY($4::uuid[]) FOR KEY SHARE)
ON CONFLICT DO NOTHING RETURNING id
"""


def _first_month(plans: list[_Plan], month: date) -> date:
    """The first month whose spending the budgets' status needs."""
    return min((plan.starts_on if plan.rollover else month) for plan in plans)


async def _converted_months(
    db: asyncpg.Connection,
    *,
    user_id: uuid.UUID,
    plans: list[_Plan],
    month: date,
    max_age: int,
) -> tuple[dict[date, MonthSums], dict[tuple[str, uuid.UUID | None], Converted]]:
    """Converted budgets' spending: the sums per month as _month_sums gives them (each in the
    currency of the budgets converting to it), and how ``month``'s were made."""
    by_month: dict[date, MonthSums] = defaultdict(lambda: defaultdict(int))
    made: dict[tuple[str, uuid.UUID | None], Converted] = defaultdict(Converted)
    for target in sorted({plan.currency for plan in plans}):
        first = _first_month([plan for plan in plans if plan.currency == target], month)
        totals = await conversion.converted(
            db,
            user_id=user_id,
            target=target,
            keys=(
                "date_trunc('month', s.occurred_on)::date",
                "s.category_id",
                "s.category_parent_id",
            ),
            rollup_keys=("month", "category_id", "category_parent_id"),
            from_=first,
            to=month_end(month),
            max_age=max_age,
        )
        for (at, category_id, parent_id), total in totals.items():
            # Everything (None), the category, and its parent: as _month_sums counts.
            for category in (None, *(c for c in (category_id, parent_id) if c is not None)):
                by_month[at][(target, category)] += total.minor
                if at == month:
                    made[(target, category)].merge(total)
    return by_month, made


async def budget_report(
    db: asyncpg.Connection, *, user_id: uuid.UUID, month: date, max_rate_age: int
) -> BudgetReport:
    """Every budget in ``month`` (those started by then); thresholds newly reached are recorded.
    A converted budget counts the spending of every currency converted to its own."""
    plans = [
        _Plan(**{**row, "recorded": frozenset(row["recorded"])})
        for row in await db.fetch(_BUDGETS_IN_MONTH, user_id, month)
    ]
    if not plans:
        return BudgetReport(month=month_label(month), budgets=[])
    kept = [plan for plan in plans if not plan.converted]
    by_month: dict[date, MonthSums] = {}
    if kept:
        currencies = sorted({plan.currency for plan in kept})
        first = _first_month(kept, month)
        by_month = _month_sums(await db.fetch(_SPENT_PER_MONTH, user_id, first, month, currencies))
    converting = [plan for plan in plans if plan.converted]
    converted_by_month, made = await _converted_months(
        db, user_id=user_id, plans=converting, month=month, max_age=max_rate_age
    )
    statuses, crossings = [], []
    for plan in plans:
        months = converted_by_month if plan.converted else by_month
        carry, available, spent = _status(plan, month, months)
        state, percent, reached = _state(plan, available, spent)
        # A converted total beyond a bigint (huge amounts at a huge rate) is shown, not recorded.
        crossings += [
            (plan.id, threshold, spent, available, plan.currency)
            for threshold in reached
            if threshold not in plan.recorded and spent in _BIGINT and available in _BIGINT
        ]
        fmt = partial(money.format_amount, currency=plan.currency)
        statuses.append(
            BudgetStatus(
                budget_id=plan.id,
                name=plan.name,
                category_id=plan.category_id,
                currency=plan.currency,
                limit=fmt(plan.amount_minor),
                rollover_in=fmt(carry),
                available=fmt(available),
                spent=fmt(spent),
                remaining=fmt(available - spent),
                percent_used=percent,
                thresholds=list(plan.thresholds),
                state=state,
                category_deleted=plan.category_deleted,
                **_made(made[(plan.currency, plan.category_id)]) if plan.converted else {},
            )
        )
    if crossings:
        # Concurrent reports may race to record the same crossing: the unique key keeps one.
        # The columns of the crossings, for unnest(): spent and available become tuples.
        budget_ids, thresholds, spent, available, currencies = zip(*crossings, strict=True)  # type: ignore[assignment]
        ids = [uuid.uuid4() for _ in crossings]
        recorded = await db.fetch(
            _RECORD_ALERTS,
            user_id,
            month,
            ids,
            budget_ids,
            thresholds,
            spent,
            available,
            currencies,
        )
        BUDGETS_EXCEEDED.inc(len(recorded))
    return BudgetReport(month=month_label(month), budgets=statuses)


def _made(total: Converted) -> dict[str, Any]:
    return {"conversion": total.conversion(), "unconverted": total.unconverted()}


async def evaluate_alerts(driver_pool: DriverPool, *, today: date, max_rate_age: int) -> None:
    """Background: the current month of every user with a budget, so alerts are recorded even
    when nobody looks."""
    month = today.replace(day=1)
    async with driver_pool.connection() as db:
        users = await db.fetch(
            "SELECT DISTINCT user_id FROM reports.budgets WHERE starts_on <= $1", month
        )
        for (user_id,) in users:
            # One user's failure is logged and leaves the others' alerts to be recorded.
            try:
                await budget_report(db, user_id=user_id, month=month, max_rate_age=max_rate_age)
            except Exception:
                log.exception("budget_alerts_failed", user_id=str(user_id))


async def list_alerts(
    session: AsyncSession, *, user_id: uuid.UUID, paging: PageRequest
) -> Page[AlertOut]:
    """Newest first."""
    query = select(BudgetAlert).where(BudgetAlert.user_id == user_id)

    def alert_out(alert: BudgetAlert) -> AlertOut:
        currency = alert.currency  # as recorded: the budget's may have changed since
        return AlertOut(
            id=alert.id,
            budget_id=alert.budget_id,
            month=month_label(alert.month),
            threshold=alert.threshold,
            spent=money.format_amount(alert.spent_minor, currency),
            available=money.format_amount(alert.available_minor, currency),
            currency=currency,
            created_at=alert.created_at,
        )

    async with session.begin():
        return await keyset_page(
            session,
            query,
            list_name="alerts",
            keys=(BudgetAlert.created_at, BudgetAlert.id),
            types=(instant, uuid.UUID),
            paging=paging,
            item=alert_out,
            descending=True,
        )
