"""Budgets and reports. Spending is read only through the expenses service's published views
(expenses.monthly_spending_v1, spending_v1, categories_v1, expense_tags_v1); this service writes
only its own schema. Sums are always per currency."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any

import asyncpg
from prometheus_client import Counter
from sqlalchemy import delete, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from expensetracker.platform import idempotency, money
from expensetracker.platform.db import DriverPool, delete_owned
from expensetracker.platform.errors import NotFound, ValidationProblem
from expensetracker.platform.events import USER_DELETED, UserEvent
from expensetracker.platform.pagination import Page, keyset_page
from expensetracker.platform.tokens import InvalidToken
from expensetracker.reports import conversion
from expensetracker.reports.conversion import Converted
from expensetracker.reports.models import Budget, BudgetAlert, ForgottenUser, idempotency_keys
from expensetracker.reports.months import (
    add_months,
    month_end,
    month_label,
    parse_month,
    whole_months,
)
from expensetracker.reports.schemas import (
    AlertOut,
    BudgetIn,
    BudgetOut,
    BudgetReport,
    BudgetStatus,
    ConvertedGroup,
    ConvertedMerchant,
    ConvertedSummary,
    ConvertedTrendLine,
    ConvertedTrends,
    CurrencyTotal,
    MerchantTotal,
    Summary,
    SummaryGroup,
    TrendLine,
    Trends,
)

BUDGETS_EXCEEDED = Counter(
    "expensetracker_budgets_exceeded_total",
    "Budgets that reached one of their alert thresholds (once per budget, month and threshold).",
)
# Whatever a report converts to: the user's home currency (in=home), or a converted budget's.
_CATEGORY_NAMES = "SELECT category_id, name FROM expenses.categories_v1 WHERE user_id = $1"
# Reports span at most this long: a decade of months is plenty and bounds the work.
MAX_RANGE_DAYS = 3660


# --- budgets -----------------------------------------------------------------------------------


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
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    body: BudgetIn,
    idempotency_key: str | None,
    today: date,
) -> BudgetOut | idempotency.Stored:
    async def create() -> BudgetOut:
        await _check_category(session, user_id=user_id, category_id=body.category_id)
        budget = Budget(user_id=user_id, id=uuid.uuid4())
        _apply(budget, body, today=today)
        session.add(budget)
        await session.flush()
        await session.refresh(budget)
        return _budget_out(budget)

    async with session.begin():
        await _check_not_forgotten(session, user_id=user_id)
        return await idempotency.create_once(
            session,
            idempotency_keys,
            user_id=user_id,
            key=idempotency_key,
            route="POST /api/v1/budgets",
            body=body,
            create=create,
        )


async def _budget(session: AsyncSession, *, user_id: uuid.UUID, budget_id: uuid.UUID) -> Budget:
    budget = await session.get(Budget, (user_id, budget_id))
    if budget is None:
        raise NotFound("No budget with this id.")
    return budget


async def get_budget(
    session: AsyncSession, *, user_id: uuid.UUID, budget_id: uuid.UUID
) -> BudgetOut:
    async with session.begin():
        return _budget_out(await _budget(session, user_id=user_id, budget_id=budget_id))


async def replace_budget(
    session: AsyncSession, *, user_id: uuid.UUID, budget_id: uuid.UUID, body: BudgetIn, today: date
) -> BudgetOut:
    async with session.begin():
        budget = await _budget(session, user_id=user_id, budget_id=budget_id)
        await _check_category(session, user_id=user_id, category_id=body.category_id)
        _apply(budget, body, today=today)
        budget.updated_at = datetime.now(UTC)
        await session.flush()
        await session.refresh(budget)
        return _budget_out(budget)


async def delete_budget(session: AsyncSession, *, user_id: uuid.UUID, budget_id: uuid.UUID) -> None:
    async with session.begin():
        await delete_owned(
            session, Budget, user_id=user_id, id=budget_id, missing="No budget with this id."
        )


async def list_budgets(
    session: AsyncSession, *, user_id: uuid.UUID, limit: int, cursor: str | None
) -> Page[BudgetOut]:
    async with session.begin():
        return await keyset_page(
            session,
            select(Budget).where(Budget.user_id == user_id),
            keys=(Budget.name, Budget.id),
            types=(str, uuid.UUID),
            limit=limit,
            cursor=cursor,
            item=_budget_out,
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
    percent = round(spent * 100 / available, 1) if available > 0 else None
    if available > 0:
        reached = [t for t in plan.thresholds if spent * 100 >= t * available]
    else:
        reached = list(plan.thresholds) if spent > 0 else []
    if available - spent < 0:
        return "over", percent, reached
    return ("warning" if reached else "ok"), percent, reached


# Reads go straight through asyncpg, one statement each: this is the hottest route of the service
# (docs/performance.md).
_BUDGETS_IN_MONTH = """
SELECT b.id, b.name, b.category_id, b.currency, b.amount_minor, b.rollover, b.starts_on,
       b.thresholds, b.converted,
       ARRAY(SELECT a.threshold FROM reports.budget_alerts a
             WHERE a.user_id = b.user_id AND a.budget_id = b.id AND a.month = $2) AS recorded
FROM reports.budgets b WHERE b.user_id = $1 AND b.starts_on <= $2 ORDER BY b.name, b.id
"""
_SPENT_PER_MONTH = """
SELECT month, category_id, category_parent_id, currency, total_minor
FROM expenses.monthly_spending_v1
WHERE user_id = $1 AND month BETWEEN $2 AND $3 AND currency = ANY($4::text[])
"""
_RECORD_ALERTS = """
INSERT INTO reports.budget_alerts
    (user_id, month, id, budget_id, threshold, spent_minor, available_minor)
SELECT $1, $2, * FROM unnest($3::uuid[], $4::uuid[], $5::smallint[], $6::bigint[], $7::bigint[])
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
        crossings += [
            (plan.id, threshold, spent, available)
            for threshold in reached
            if threshold not in plan.recorded
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
                **_made(made[(plan.currency, plan.category_id)]) if plan.converted else {},
            )
        )
    if crossings:
        # Concurrent reports may race to record the same crossing: the unique key keeps one.
        # The columns of the crossings, for unnest(): spent and available become tuples.
        budget_ids, thresholds, spent, available = zip(*crossings, strict=True)  # type: ignore[assignment]
        ids = [uuid.uuid4() for _ in crossings]
        recorded = await db.fetch(
            _RECORD_ALERTS, user_id, month, ids, budget_ids, thresholds, spent, available
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
            await budget_report(
                db,
                user_id=user_id,
                month=month,
                max_rate_age=max_rate_age,
            )


async def list_alerts(
    session: AsyncSession, *, user_id: uuid.UUID, limit: int, cursor: str | None
) -> Page[AlertOut]:
    """Newest first."""
    query = (
        select(BudgetAlert, Budget.currency)
        .join(
            Budget, (Budget.user_id == BudgetAlert.user_id) & (Budget.id == BudgetAlert.budget_id)
        )
        .where(BudgetAlert.user_id == user_id)
    )

    def alert_out(alert: BudgetAlert, currency: str) -> AlertOut:
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
            keys=(BudgetAlert.created_at, BudgetAlert.id),
            types=(datetime.fromisoformat, uuid.UUID),
            limit=limit,
            cursor=cursor,
            item=alert_out,
            descending=True,
        )


# --- summaries ---------------------------------------------------------------------------------

# The group key over the monthly totals (None: they cannot serve it), and over the expenses.
_GROUP_KEYS = {
    "category": ("category_id", "s.category_id"),
    "month": ("to_char(month, 'YYYY-MM')", "to_char(s.occurred_on, 'YYYY-MM')"),
    "tag": (None, "t.tag"),
}
_TAG_JOIN = (
    "JOIN expenses.expense_tags_v1 t ON t.user_id = s.user_id AND t.expense_id = s.expense_id"
)


def _check_range(from_: date, to: date) -> None:
    if from_ > to:
        raise ValidationProblem.of_field("query.to", "Must not be before `from`.", "range")
    if (to - from_).days > MAX_RANGE_DAYS:
        raise ValidationProblem.of_field("query.to", "The range spans ten years at most.", "range")


def _summary_query(*, group_by: str, from_: date, to: date) -> tuple[str, list[Any]]:
    """Only fixed SQL fragments and $n placeholders go into the text. One statement (one
    snapshot): whole months from the monthly totals, the days around them
    from the expenses themselves, category names joined in. Only the parts a range needs are in
    the statement, so each shape gets a plan of its own."""
    rollup_key, raw_key = _GROUP_KEYS[group_by]
    args: list[Any] = []

    def arg(value: object) -> str:
        args.append(value)
        return f"${len(args) + 1}"  # $1 is the user

    months = whole_months(from_, to) if rollup_key else None
    parts = []
    raw_ranges = [(from_, to)]
    if months is not None:
        first, last = months
        parts.append(
            f"SELECT {rollup_key} AS key, currency, total_minor AS amount, expense_count AS n "  # noqa: S608
            "FROM expenses.monthly_spending_v1 "
            f"WHERE user_id = $1 AND month BETWEEN {arg(first)} AND {arg(last)}"
        )
        around = [(from_, first - timedelta(1)), (month_end(last) + timedelta(1), to)]
        raw_ranges = [(start, end) for start, end in around if start <= end]
    join = _TAG_JOIN if group_by == "tag" else ""
    for start, end in raw_ranges:
        parts.append(
            f"SELECT {raw_key} AS key, s.currency, s.amount_minor AS amount, 1 AS n "  # noqa: S608
            f"FROM expenses.spending_v1 s {join} "
            f"WHERE s.user_id = $1 AND s.occurred_on BETWEEN {arg(start)} AND {arg(end)}"
        )
    totals = (
        "SELECT key, currency, sum(amount) AS amount, sum(n) AS n "  # noqa: S608
        f"FROM ({' UNION ALL '.join(parts)}) u GROUP BY 1, 2"
    )
    if group_by != "category":
        return f"SELECT key, key, currency, amount, n FROM ({totals}) p", args  # noqa: S608
    # Names joined after the sums, on the uuid: prepared statements soon run a generic plan,
    # which estimates one row per range and would otherwise loop over the categories per row.
    sql = (
        f"SELECT p.key::text, c.name, p.currency, p.amount, p.n FROM ({totals}) p "  # noqa: S608
        "LEFT JOIN expenses.categories_v1 c ON c.user_id = $1 AND c.category_id = p.key"
    )
    return sql, args


def _nulls_last(key: str | None) -> tuple[bool, str]:
    return (key is None, key or "")


async def summary(
    db: asyncpg.Connection, *, user_id: uuid.UUID, from_: date, to: date, group_by: str
) -> Summary:
    """Totals and counts per group and currency."""
    _check_range(from_, to)
    sql, args = _summary_query(group_by=group_by, from_=from_, to=to)
    groups: dict[str | None, tuple[str | None, list[CurrencyTotal]]] = {}
    for key, name, currency, amount, count in await db.fetch(sql, user_id, *args):
        total = CurrencyTotal(
            currency=currency, amount=money.format_amount(int(amount), currency), count=int(count)
        )
        groups.setdefault(key, (name, []))[1].append(total)
    return Summary.model_validate(
        {
            "from": from_,
            "to": to,
            "group_by": group_by,
            "groups": [
                SummaryGroup(key=key, name=name, totals=sorted(totals, key=lambda t: t.currency))
                for key, (name, totals) in sorted(groups.items(), key=lambda g: _nulls_last(g[0]))
            ],
        }
    )


async def converted_summary(
    db: asyncpg.Connection,
    *,
    user_id: uuid.UUID,
    from_: date,
    to: date,
    group_by: str,
    max_rate_age: int,
) -> ConvertedSummary:
    """Totals per group in the home currency, each saying how it was converted."""
    _check_range(from_, to)
    target = await conversion.home_currency(db, user_id=user_id)
    range_ = {"target": target, "from_": from_, "to": to, "max_age": max_rate_age}
    tagged = group_by == "tag"
    rollup_key, raw_key = _GROUP_KEYS[group_by]
    groups = await conversion.converted(
        db,
        user_id=user_id,
        keys=(raw_key,),
        rollup_keys=(rollup_key,) if rollup_key else None,
        join=_TAG_JOIN if tagged else "",
        **range_,
    )
    # An expense with several tags is in several groups, but once in the overall total.
    every = (
        await conversion.converted(
            db, user_id=user_id, keys=("s.user_id",), rollup_keys=("user_id",), **range_
        )
        if tagged
        else groups
    )
    overall = Converted()
    for total in every.values():
        overall.merge(total)
    # Each row of two columns unpacks as an (id, name) pair.
    names: dict[uuid.UUID, str] = (
        dict(await db.fetch(_CATEGORY_NAMES, user_id))  # type: ignore[arg-type]
        if group_by == "category"
        else {}
    )
    keys = sorted((key for (key,) in groups), key=lambda key: _nulls_last(key and str(key)))
    return ConvertedSummary.model_validate(
        {
            "from": from_,
            "to": to,
            "group_by": group_by,
            "currency": target,
            "total": overall.total(target),
            "groups": [
                ConvertedGroup(
                    key=None if key is None else str(key),
                    name=names.get(key) if group_by == "category" else key,
                    total=groups[(key,)].total(target),
                )
                for key in keys
            ],
        }
    )


_MONTHLY_PER_CATEGORY = """
SELECT t.category_id, c.name, t.currency, t.month, t.total FROM (
  SELECT category_id, currency, month, sum(total_minor) AS total
  FROM expenses.monthly_spending_v1
  WHERE user_id = $1 AND month BETWEEN $2 AND $3 GROUP BY 1, 2, 3
) t LEFT JOIN expenses.categories_v1 c ON c.user_id = $1 AND c.category_id = t.category_id
"""


async def trends(db: asyncpg.Connection, *, user_id: uuid.UUID, month: date, months: int) -> Trends:
    """Monthly totals per category and currency over ``months`` months up to ``month``, and
    the change of the last month from the one before."""
    first = add_months(month, -(months - 1))
    labels = [month_label(add_months(first, n)) for n in range(months)]
    series: dict[tuple[Any, ...], dict[str, int]] = defaultdict(dict)
    for category_id, name, currency, at, total in await db.fetch(
        _MONTHLY_PER_CATEGORY, user_id, first, month
    ):
        series[(category_id, name, currency)][month_label(at)] = int(total)
    lines = []
    for (category_id, name, currency), values in series.items():
        totals = [values.get(label, 0) for label in labels]
        change, percent = _change(totals)
        lines.append(
            TrendLine(
                category_id=category_id,
                name=name,
                currency=currency,
                totals=[money.format_amount(total, currency) for total in totals],
                change=money.format_amount(change, currency),
                change_percent=percent,
            )
        )
    lines.sort(key=lambda line: (*_nulls_last(line.name), line.currency))
    return Trends(months=labels, categories=lines)


def _change(totals: list[int]) -> tuple[int, float | None]:
    """The last month minus the one before, and that in percent of the one before."""
    last, before = totals[-1], totals[-2]
    return last - before, (round((last - before) * 100 / before, 1) if before else None)


async def converted_trends(
    db: asyncpg.Connection, *, user_id: uuid.UUID, month: date, months: int, max_rate_age: int
) -> ConvertedTrends:
    """The trends in the home currency: per category, its months converted, and how."""
    target = await conversion.home_currency(db, user_id=user_id)
    first = add_months(month, -(months - 1))
    labels = [month_label(add_months(first, n)) for n in range(months)]
    per_month = await conversion.converted(
        db,
        user_id=user_id,
        target=target,
        keys=("s.category_id", "date_trunc('month', s.occurred_on)::date"),
        rollup_keys=("category_id", "month"),
        from_=first,
        to=month_end(month),
        max_age=max_rate_age,
    )
    lines: dict[uuid.UUID | None, tuple[dict[str, int], Converted]] = defaultdict(
        lambda: ({}, Converted())
    )
    for (category_id, at), total in per_month.items():
        values, made = lines[category_id]
        values[month_label(at)] = total.minor
        made.merge(total)
    # Each row of two columns unpacks as an (id, name) pair.
    names: dict[uuid.UUID | None, str] = dict(await db.fetch(_CATEGORY_NAMES, user_id))  # type: ignore[arg-type]
    result = []
    for category_id, (values, made) in lines.items():
        totals = [values.get(label, 0) for label in labels]
        change, percent = _change(totals)
        result.append(
            ConvertedTrendLine(
                category_id=category_id,
                name=names.get(category_id),
                currency=target,
                totals=[money.format_amount(total, target) for total in totals],
                change=money.format_amount(change, target),
                change_percent=percent,
                conversion=made.conversion(),
                unconverted=made.unconverted(),
            )
        )
    result.sort(key=lambda line: _nulls_last(line.name))
    return ConvertedTrends(months=labels, currency=target, categories=result)


_TOP_MERCHANTS = """
SELECT merchant, currency, total, n FROM (
  SELECT merchant, currency, sum(amount_minor) AS total, count(*) AS n,
         row_number() OVER (PARTITION BY currency
                            ORDER BY sum(amount_minor) DESC, merchant) AS rank
  FROM expenses.spending_v1
  WHERE user_id = $1 AND occurred_on BETWEEN $2 AND $3 AND merchant IS NOT NULL
  GROUP BY merchant, currency
) ranked WHERE rank <= $4 ORDER BY currency, total DESC, merchant
"""


async def top_merchants(
    db: asyncpg.Connection, *, user_id: uuid.UUID, from_: date, to: date, limit: int
) -> list[MerchantTotal]:
    """The merchants where most money went, the first ``limit`` of each currency."""
    _check_range(from_, to)
    return [
        MerchantTotal(
            merchant=merchant,
            currency=currency,
            amount=money.format_amount(int(total), currency),
            count=n,
        )
        for merchant, currency, total, n in await db.fetch(
            _TOP_MERCHANTS, user_id, from_, to, limit
        )
    ]


async def converted_merchants(
    db: asyncpg.Connection,
    *,
    user_id: uuid.UUID,
    from_: date,
    to: date,
    limit: int,
    max_rate_age: int,
) -> list[ConvertedMerchant]:
    """The merchants where most money went, in the home currency: the first ``limit``."""
    _check_range(from_, to)
    target = await conversion.home_currency(db, user_id=user_id)
    per_merchant = await conversion.converted(
        db,
        user_id=user_id,
        target=target,
        keys=("s.merchant",),
        where="s.merchant IS NOT NULL",
        from_=from_,
        to=to,
        max_age=max_rate_age,
    )
    ranked = sorted(per_merchant.items(), key=lambda item: (-item[1].minor, item[0][0]))
    return [
        ConvertedMerchant(merchant=merchant, **total.total(target).model_dump())
        for (merchant,), total in ranked[:limit]
    ]


async def _check_not_forgotten(session: AsyncSession, *, user_id: uuid.UUID) -> None:
    """A deleted user's still-valid token creates nothing (401), in the caller's transaction."""
    allowed = await session.scalar(
        text("SELECT reports.user_may_write(:user_id)"), {"user_id": user_id}
    )
    if not allowed:
        raise InvalidToken("This account has been deleted.")


async def forget_user(session: AsyncSession, event: UserEvent) -> None:
    """``user.deleted``: the user's budgets (their alerts follow) and idempotency records, and a
    tombstone so that nothing is created for them again (after creations in flight: the
    exclusive lock waits for user_may_write's shared one)."""
    if event.event_type == USER_DELETED:
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:scope, 0))"),
            {"scope": f"reports.owner:{event.user_id}"},
        )
        await session.execute(
            pg_insert(ForgottenUser).values(user_id=event.user_id).on_conflict_do_nothing()
        )
        await session.execute(delete(Budget).where(Budget.user_id == event.user_id))
        await session.execute(
            delete(idempotency_keys).where(idempotency_keys.c.user_id == event.user_id)
        )
