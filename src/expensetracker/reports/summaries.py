"""Spending summaries, monthly trends and top merchants, per currency or converted to the home
currency. Spending is read only through the expenses service's published views
(monthly_spending_v1, spending_v1, categories_v1, expense_tags_v1)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import date, timedelta
from fractions import Fraction
from typing import Any

import asyncpg

from expensetracker.platform import money
from expensetracker.platform.errors import ValidationProblem, reversed_range
from expensetracker.platform.schemas import EARLIEST_DAY
from expensetracker.reports import conversion
from expensetracker.reports.conversion import Converted
from expensetracker.reports.months import add_months, month_end, month_label, whole_months
from expensetracker.reports.schemas import (
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

# Reports span at most this many days, both ends counted: a decade of months is plenty and
# bounds the work.
MAX_RANGE_DAYS = 3660


# The group key over the monthly totals (None: they cannot serve it), and over the expenses.
_GROUP_KEYS = {
    "category": ("category_id", "s.category_id"),
    "month": ("to_char(month, 'YYYY-MM')", "to_char(s.occurred_on, 'YYYY-MM')"),
    "tag": (None, "t.tag"),
}
# Untagged expenses too: their group is the one without a key.
_TAG_JOIN = (
    "LEFT JOIN expenses.expense_tags_v1 t ON t.user_id = s.user_id AND t.expense_id = s.expense_id"
)


def _check_range(from_: date, to: date) -> None:
    if errors := reversed_range(from_=from_, to=to):
        raise ValidationProblem(errors)
    if (to - from_).days + 1 > MAX_RANGE_DAYS:  # the dates are inclusive
        raise ValidationProblem.of_field(
            "query.to",
            f"The range spans {MAX_RANGE_DAYS:,} days (about ten years) at most.",
            "range",
        )


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


def _by_name(name: str | None) -> tuple[bool, str, str]:
    """Categories by name as a reader sorts them (case aside), the uncategorised last."""
    return (name is None, (name or "").casefold(), name or "")


def _group_order(group_by: str, key: str | None, name: str | None) -> tuple[bool, str, str]:
    """Months and tags in the order of their keys; categories by name, as the trends list them
    (their keys are ids, in no order a reader sees); the group without a key last."""
    if group_by == "category":
        return (key is None, *_by_name(name)[1:])
    return (key is None, "", key or "")


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
                for key, (name, totals) in sorted(
                    groups.items(), key=lambda group: _group_order(group_by, group[0], group[1][0])
                )
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
    range_ = {"from_": from_, "to": to, "max_age": max_rate_age}
    tagged = group_by == "tag"
    rollup_key, raw_key = _GROUP_KEYS[group_by]
    at_home = await conversion.converted_at_home(
        db,
        user_id=user_id,
        category_names=group_by == "category",
        keys=(raw_key,),
        rollup_keys=(rollup_key,) if rollup_key else None,
        join=_TAG_JOIN if tagged else "",
        **range_,
    )
    target, names, groups = at_home.currency, at_home.category_names, at_home.totals
    # An expense with several tags is in several groups, but once in the overall total.
    every = (
        await conversion.converted(
            db,
            user_id=user_id,
            target=target,
            keys=("s.user_id",),
            rollup_keys=("user_id",),
            **range_,
        )
        if tagged
        else groups
    )
    overall = Converted()
    for total in every.values():
        overall.merge(total)
    keys = sorted(
        (key for (key,) in groups),
        key=lambda key: _group_order(group_by, key and str(key), names.get(key)),
    )
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


def first_trend_month(month: date, months: int) -> date:
    """The first of ``months`` months up to ``month``: not before the earliest month a request
    may name."""
    first = add_months(month, -(months - 1))
    if first < EARLIEST_DAY:
        raise ValidationProblem.of_field(
            "query.months", f"must not reach back before {month_label(EARLIEST_DAY)}", "value_error"
        )
    return first


def _trend_months(month: date, months: int) -> tuple[date, list[str]]:
    """The first of ``months`` months up to ``month``, and their labels."""
    first = first_trend_month(month, months)
    return first, [month_label(add_months(first, n)) for n in range(months)]


async def trends(db: asyncpg.Connection, *, user_id: uuid.UUID, month: date, months: int) -> Trends:
    """Monthly totals per category and currency over ``months`` months up to ``month``, and
    the change of the last month from the one before."""
    first, labels = _trend_months(month, months)
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
    lines.sort(key=lambda line: (*_by_name(line.name), line.currency))
    return Trends(months=labels, categories=lines)


def percent(part: int, whole: int) -> float:
    """``part`` in percent of ``whole``, to one decimal, rounded half-even from the exact
    quotient: a float's division first made 23 of 2,000 (1.15 %) 1.1499…, so 1.1."""
    return float(round(Fraction(part * 100, whole), 1))


def _change(totals: list[int]) -> tuple[int, float | None]:
    """The last month minus the one before, and that in percent of the one before."""
    last, before = totals[-1], totals[-2]
    return last - before, (percent(last - before, before) if before else None)


async def converted_trends(
    db: asyncpg.Connection, *, user_id: uuid.UUID, month: date, months: int, max_rate_age: int
) -> ConvertedTrends:
    """The trends in the home currency: per category, its months converted, and how."""
    first, labels = _trend_months(month, months)
    at_home = await conversion.converted_at_home(
        db,
        user_id=user_id,
        category_names=True,
        keys=("s.category_id", "date_trunc('month', s.occurred_on)::date"),
        rollup_keys=("category_id", "month"),
        from_=first,
        to=month_end(month),
        max_age=max_rate_age,
    )
    target, names, per_month = at_home.currency, at_home.category_names, at_home.totals
    lines: dict[uuid.UUID | None, tuple[dict[str, int], Converted]] = defaultdict(
        lambda: ({}, Converted())
    )
    for (category_id, at), total in per_month.items():
        values, made = lines[category_id]
        values[month_label(at)] = total.minor
        made.merge(total)
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
    result.sort(key=lambda line: _by_name(line.name))
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
    at_home = await conversion.converted_at_home(
        db,
        user_id=user_id,
        keys=("s.merchant",),
        where="s.merchant IS NOT NULL",
        from_=from_,
        to=to,
        max_age=max_rate_age,
    )
    target, per_merchant = at_home.currency, at_home.totals
    ranked = sorted(per_merchant.items(), key=lambda item: (-item[1].minor, item[0][0]))
    return [
        ConvertedMerchant(merchant=merchant, **total.total(target).model_dump())
        for (merchant,), total in ranked[:limit]
    ]
