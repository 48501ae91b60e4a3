"""Budgets and reports. Spending is read only through the expenses service's published views
(expenses.monthly_spending_v1, spending_v1, categories_v1, expense_tags_v1); this service writes
only its own schema. Sums are always per currency."""

from __future__ import annotations

import calendar
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from prometheus_client import Counter
from sqlalchemy import delete, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from expensetracker.platform import idempotency, money
from expensetracker.platform.errors import NotFound, ValidationProblem
from expensetracker.platform.events import USER_DELETED, UserEvent
from expensetracker.platform.pagination import Page, keyset_page
from expensetracker.reports.models import Budget, BudgetAlert, idempotency_keys
from expensetracker.reports.schemas import (
    AlertOut,
    BudgetIn,
    BudgetOut,
    BudgetReport,
    BudgetStatus,
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
# Reports span at most this long: a decade of months is plenty and bounds the work.
MAX_RANGE_DAYS = 3660


# --- months ------------------------------------------------------------------------------------


def parse_month(value: str) -> date:
    year, month = value.split("-")
    return date(int(year), int(month), 1)


def month_label(value: date) -> str:
    return f"{value.year:04d}-{value.month:02d}"


def add_months(value: date, months: int) -> date:
    year, month = divmod(value.month - 1 + months, 12)
    return date(value.year + year, month + 1, 1)


def month_end(value: date) -> date:
    return value.replace(day=calendar.monthrange(value.year, value.month)[1])


def whole_months(start: date, end: date) -> tuple[date, date] | None:
    """The first and last month lying entirely within [start, end], if any."""
    first = start if start.day == 1 else add_months(start.replace(day=1), 1)
    last = end.replace(day=1) if end == month_end(end) else add_months(end.replace(day=1), -1)
    return (first, last) if first <= last else None


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
        return await idempotency.create_once(
            session,
            idempotency_keys,
            user_id=user_id,
            key=idempotency_key,
            request_hash=idempotency.fingerprint("POST /api/v1/budgets", body),
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
        deleted = await session.scalar(
            delete(Budget)
            .where(Budget.user_id == user_id, Budget.id == budget_id)
            .returning(Budget.id)
        )
        if deleted is None:
            raise NotFound("No budget with this id.")


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
    """What the status needs of a budget, read once (ORM attribute access is not free)."""

    currency: str
    category_id: uuid.UUID | None
    amount_minor: int
    rollover: bool
    starts_on: date


# Spent per (currency, category) in one month; category None is everything in that currency,
# and a parent category includes its subcategories.
MonthSums = dict[tuple[str, uuid.UUID | None], int]


def _month_sums(rows: Iterable[tuple]) -> dict[date, MonthSums]:
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


def _state(budget: Budget, available: int, spent: int) -> tuple[str, float | None, list[int]]:
    """State, percent used, and the thresholds reached."""
    percent = round(spent * 100 / available, 1) if available > 0 else None
    if available > 0:
        reached = [t for t in budget.thresholds if spent * 100 >= t * available]
    else:
        reached = list(budget.thresholds) if spent > 0 else []
    if available - spent < 0:
        return "over", percent, reached
    return ("warning" if reached else "ok"), percent, reached


async def budget_report(session: AsyncSession, *, user_id: uuid.UUID, month: date) -> BudgetReport:
    """Every budget in ``month`` (those started by then); thresholds reached are recorded."""
    async with session.begin():
        budgets = list(
            await session.scalars(
                select(Budget)
                .where(Budget.user_id == user_id, Budget.starts_on <= month)
                .order_by(Budget.name, Budget.id)
            )
        )
        if not budgets:
            return BudgetReport(month=month_label(month), budgets=[])
        first = min((budget.starts_on if budget.rollover else month) for budget in budgets)
        rows = await session.execute(
            text(
                "SELECT month, category_id, category_parent_id, currency, total_minor "
                "FROM expenses.monthly_spending_v1 WHERE user_id = :user_id "
                "AND month BETWEEN :first AND :month AND currency = ANY(:currencies)"
            ),
            {
                "user_id": user_id,
                "first": first,
                "month": month,
                "currencies": sorted({budget.currency for budget in budgets}),
            },
        )
        by_month = _month_sums(rows)
        statuses, crossings = [], []
        for budget in budgets:
            plan = _Plan(
                budget.currency,
                budget.category_id,
                budget.amount_minor,
                budget.rollover,
                budget.starts_on,
            )
            carry, available, spent = _status(plan, month, by_month)
            state, percent, reached = _state(budget, available, spent)
            crossings += [(budget, threshold, spent, available) for threshold in reached]
            fmt = lambda minor, c=budget.currency: money.format_amount(minor, c)  # noqa: E731
            statuses.append(
                BudgetStatus(
                    budget_id=budget.id,
                    name=budget.name,
                    category_id=budget.category_id,
                    currency=budget.currency,
                    limit=fmt(budget.amount_minor),
                    rollover_in=fmt(carry),
                    available=fmt(available),
                    spent=fmt(spent),
                    remaining=fmt(available - spent),
                    percent_used=percent,
                    state=state,
                )
            )
        await _record_alerts(session, user_id=user_id, month=month, crossings=crossings)
    return BudgetReport(month=month_label(month), budgets=statuses)


async def _record_alerts(
    session: AsyncSession, *, user_id: uuid.UUID, month: date, crossings: list[tuple]
) -> None:
    """Records the thresholds reached that are not recorded yet. Those already known are read
    first: concurrent requests would otherwise queue on each other's conflicting inserts."""
    if not crossings:
        return
    rows = await session.execute(
        select(BudgetAlert.budget_id, BudgetAlert.threshold).where(
            BudgetAlert.user_id == user_id, BudgetAlert.month == month
        )
    )
    known = {(budget_id, threshold) for budget_id, threshold in rows}
    new = [c for c in crossings if (c[0].id, c[1]) not in known]
    if not new:
        return
    recorded = await session.scalars(
        pg_insert(BudgetAlert)
        .values(
            [
                {
                    "user_id": user_id,
                    "id": uuid.uuid4(),
                    "budget_id": budget.id,
                    "month": month,
                    "threshold": threshold,
                    "spent_minor": spent,
                    "available_minor": available,
                }
                for budget, threshold, spent, available in new
            ]
        )
        .on_conflict_do_nothing()
        .returning(BudgetAlert.id)
    )
    BUDGETS_EXCEEDED.inc(len(list(recorded)))


async def evaluate_alerts(sessionmaker: async_sessionmaker[AsyncSession], *, today: date) -> None:
    """Background: the current month of every user with a budget, so alerts are recorded even
    when nobody looks."""
    month = today.replace(day=1)
    async with sessionmaker() as session:
        async with session.begin():
            users = list(
                await session.scalars(
                    select(Budget.user_id).where(Budget.starts_on <= month).distinct()
                )
            )
        for user_id in users:
            await budget_report(session, user_id=user_id, month=month)


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

_RAW_KEYS = {
    "category": "s.category_id::text",
    "month": "to_char(s.occurred_on, 'YYYY-MM')",
    "tag": "t.tag",
}
_ROLLUP_KEYS = {"category": "category_id::text", "month": "to_char(month, 'YYYY-MM')"}


def _check_range(from_: date, to: date) -> None:
    if from_ > to:
        raise ValidationProblem.of_field("query.to", "Must not be before `from`.", "range")
    if (to - from_).days > MAX_RANGE_DAYS:
        raise ValidationProblem.of_field("query.to", "The range spans ten years at most.", "range")


async def _raw_totals(
    session: AsyncSession, *, user_id: uuid.UUID, key: str, start: date, end: date
) -> list[tuple]:
    join = (
        "JOIN expenses.expense_tags_v1 t ON t.user_id = s.user_id AND t.expense_id = s.expense_id"
        if key == "tag"
        else ""
    )
    rows = await session.execute(
        text(
            f"SELECT {_RAW_KEYS[key]}, s.currency, sum(s.amount_minor), count(*) "  # noqa: S608
            f"FROM expenses.spending_v1 s {join} WHERE s.user_id = :user_id "
            "AND s.occurred_on BETWEEN :start AND :end GROUP BY 1, 2"
        ),
        {"user_id": user_id, "start": start, "end": end},
    )
    return [tuple(row) for row in rows]


async def _rollup_totals(
    session: AsyncSession, *, user_id: uuid.UUID, key: str, first: date, last: date
) -> list[tuple]:
    rows = await session.execute(
        text(
            f"SELECT {_ROLLUP_KEYS[key]}, currency, sum(total_minor), "  # noqa: S608
            "sum(expense_count) FROM expenses.monthly_spending_v1 WHERE user_id = :user_id "
            "AND month BETWEEN :first AND :last GROUP BY 1, 2"
        ),
        {"user_id": user_id, "first": first, "last": last},
    )
    return [tuple(row) for row in rows]


async def _category_names(session: AsyncSession, *, user_id: uuid.UUID) -> dict[str, str]:
    rows = await session.execute(
        text("SELECT category_id::text, name FROM expenses.categories_v1 WHERE user_id = :u"),
        {"u": user_id},
    )
    return {str(key): name for key, name in rows}


def _nulls_last(item: tuple) -> tuple:
    return (item[0] is None, item[0] or "")


async def summary(
    session: AsyncSession, *, user_id: uuid.UUID, from_: date, to: date, group_by: str
) -> Summary:
    """Totals and counts per group and currency. Whole months come from the monthly totals,
    the days around them from the expenses themselves (tags always from the expenses)."""
    _check_range(from_, to)
    parts: list[tuple] = []
    async with session.begin():
        months = whole_months(from_, to) if group_by != "tag" else None
        if months is None:
            parts += await _raw_totals(session, user_id=user_id, key=group_by, start=from_, end=to)
        else:
            first, last = months
            parts += await _rollup_totals(
                session, user_id=user_id, key=group_by, first=first, last=last
            )
            if from_ < first:
                parts += await _raw_totals(
                    session, user_id=user_id, key=group_by, start=from_, end=first - timedelta(1)
                )
            if month_end(last) < to:
                parts += await _raw_totals(
                    session,
                    user_id=user_id,
                    key=group_by,
                    start=month_end(last) + timedelta(1),
                    end=to,
                )
        names = await _category_names(session, user_id=user_id) if group_by == "category" else {}
    totals: dict[str | None, dict[str, list[int]]] = defaultdict(
        lambda: defaultdict(lambda: [0, 0])
    )
    for key, currency, amount, count in parts:
        entry = totals[key][currency]
        entry[0] += int(amount)
        entry[1] += int(count)
    groups = [
        SummaryGroup(
            key=key,
            name=names.get(key) if group_by == "category" else key,
            totals=[
                CurrencyTotal(currency=c, amount=money.format_amount(a, c), count=n)
                for c, (a, n) in sorted(per_currency.items())
            ],
        )
        for key, per_currency in sorted(
            totals.items(), key=lambda item: (item[0] is None, item[0] or "")
        )
    ]
    return Summary.model_validate({"from": from_, "to": to, "group_by": group_by, "groups": groups})


async def trends(session: AsyncSession, *, user_id: uuid.UUID, month: date, months: int) -> Trends:
    """Monthly totals per category and currency over ``months`` months up to ``month``, and
    the change of the last month from the one before."""
    first = add_months(month, -(months - 1))
    labels = [month_label(add_months(first, n)) for n in range(months)]
    async with session.begin():
        rows = await session.execute(
            text(
                "SELECT category_id, currency, month, sum(total_minor) "
                "FROM expenses.monthly_spending_v1 WHERE user_id = :u "
                "AND month BETWEEN :first AND :last GROUP BY 1, 2, 3"
            ),
            {"u": user_id, "first": first, "last": month},
        )
        series: dict[tuple, dict[str, int]] = defaultdict(dict)
        for category_id, currency, at, total in rows:
            series[(category_id, currency)][month_label(at)] = int(total)
        names = await _category_names(session, user_id=user_id)
    lines = []
    for (category_id, currency), values in series.items():
        totals = [values.get(label, 0) for label in labels]
        last, before = totals[-1], (totals[-2] if months > 1 else 0)
        lines.append(
            TrendLine(
                category_id=category_id,
                name=names.get(str(category_id)) if category_id else None,
                currency=currency,
                totals=[money.format_amount(total, currency) for total in totals],
                change=money.format_amount(last - before, currency),
                change_percent=round((last - before) * 100 / before, 1) if before else None,
            )
        )
    lines.sort(key=lambda line: (line.name is None, line.name or "", line.currency))
    return Trends(months=labels, categories=lines)


async def top_merchants(
    session: AsyncSession, *, user_id: uuid.UUID, from_: date, to: date, limit: int
) -> list[MerchantTotal]:
    """The merchants where most money went, the first ``limit`` of each currency."""
    _check_range(from_, to)
    async with session.begin():
        rows = await session.execute(
            text(
                """
                SELECT merchant, currency, total, n FROM (
                  SELECT merchant, currency, sum(amount_minor) AS total, count(*) AS n,
                         row_number() OVER (PARTITION BY currency
                                            ORDER BY sum(amount_minor) DESC, merchant) AS rank
                  FROM expenses.spending_v1
                  WHERE user_id = :u AND occurred_on BETWEEN :start AND :end
                    AND merchant IS NOT NULL
                  GROUP BY merchant, currency
                ) ranked WHERE rank <= :limit ORDER BY currency, total DESC, merchant
                """
            ),
            {"u": user_id, "start": from_, "end": to, "limit": limit},
        )
        return [
            MerchantTotal(
                merchant=merchant,
                currency=currency,
                amount=money.format_amount(int(total), currency),
                count=n,
            )
            for merchant, currency, total, n in rows
        ]


async def forget_user(session: AsyncSession, event: UserEvent) -> None:
    """``user.deleted``: the user's budgets (their alerts follow) and idempotency records."""
    if event.event_type == USER_DELETED:
        await session.execute(delete(Budget).where(Budget.user_id == event.user_id))
        await session.execute(
            delete(idempotency_keys).where(idempotency_keys.c.user_id == event.user_id)
        )
