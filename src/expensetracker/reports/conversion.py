"""Spending converted to one currency (``in=home``, and converted budgets): each expense is
converted on its own, then the results are summed, so a total is the sum of its rows.

An expense of ``amount`` in currency C on day D, converted to T, is, in this order:

1. C is T: its amount;
2. it carries an amount charged in T: that amount (what the bank took beats any rate);
3. there is a rate from C to T on D, or on the latest earlier day up to ``max_age`` days before:
   amount times rate, in decimal arithmetic, rounded half-even to T's minor unit;
4. otherwise it is missing: counted and listed apart in C, never guessed (and never 1:1).

A day's rate from C to T is taken from the user's own rates first, then the ECB's, then
Frankfurter's; within one source it is direct (C/T), inverse (T/C) or crossed through a common
base (P/C and P/T, as the providers publish everything against EUR). Inverse and crossed rates
are divided to 28 significant digits. All of it happens in one statement per total
(``_CONVERTED``), with the division and the rounding of the reports migration 0005.
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import asyncpg
import structlog

from expensetracker.platform import money
from expensetracker.platform.errors import ValidationProblem
from expensetracker.reports.months import month_end, whole_months
from expensetracker.reports.schemas import Conversion, ConvertedTotal, CurrencyTotal

log = structlog.get_logger(__name__)

# How each expense was converted (the `how` column of _CONVERTED).
IN_TARGET, CHARGED, RATED, MISSING = range(4)


@dataclass
class Converted:
    """Expenses converted to one currency: the total and how it was made."""

    minor: int = 0
    counts: list[int] = field(default_factory=lambda: [0, 0, 0, 0])  # by IN_TARGET...MISSING
    oldest_rate_day: date | None = None
    # The missing ones in their own currency: currency -> [minor units, count].
    missing: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))

    def add(self, how: int, currency: str | None, minor: int, count: int, rate_day: date | None):
        self.counts[how] += count
        if how == MISSING:
            self.missing[currency or ""][0] += minor
            self.missing[currency or ""][1] += count
            return
        self.minor += minor
        if rate_day is not None and (
            self.oldest_rate_day is None or rate_day < self.oldest_rate_day
        ):
            self.oldest_rate_day = rate_day

    def merge(self, other: Converted) -> None:
        self.minor += other.minor
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        if other.oldest_rate_day is not None:
            self.add(RATED, None, 0, 0, other.oldest_rate_day)
        for currency, (minor, count) in other.missing.items():
            self.missing[currency][0] += minor
            self.missing[currency][1] += count

    @property
    def count(self) -> int:
        """Expenses in the total (the missing ones are not)."""
        return self.counts[IN_TARGET] + self.counts[CHARGED] + self.counts[RATED]

    def conversion(self) -> Conversion:
        return Conversion(
            in_currency=self.counts[IN_TARGET],
            charged=self.counts[CHARGED],
            rated=self.counts[RATED],
            oldest_rate_day=self.oldest_rate_day,
            missing=self.counts[MISSING],
        )

    def total(self, currency: str) -> ConvertedTotal:
        return ConvertedTotal(
            currency=currency,
            amount=money.format_amount(self.minor, currency),
            count=self.count,
            conversion=self.conversion(),
            unconverted=self.unconverted(),
        )

    def unconverted(self) -> list[CurrencyTotal]:
        return [
            CurrencyTotal(
                currency=currency, amount=money.format_amount(minor, currency), count=count
            )
            for currency, (minor, count) in sorted(self.missing.items())
        ]


def _no_home_currency() -> ValidationProblem:
    return ValidationProblem.of_field(
        "query.in",
        "You have no home currency yet: set one (PUT /api/v1/expenses/home-currency) "
        "or record an expense.",
        "home_currency",
    )


async def home_currency(db: asyncpg.Connection, *, user_id: uuid.UUID) -> str:
    """The user's home currency; a 422 when they have none yet (no expense, none set)."""
    currency = await db.fetchval(
        "SELECT home_currency FROM expenses.home_currencies_v1 WHERE user_id = $1", user_id
    )
    if currency is None:
        raise _no_home_currency()
    return currency


async def home_currency_and_category_names(
    db: asyncpg.Connection, *, user_id: uuid.UUID
) -> tuple[str, dict[uuid.UUID | None, str]]:
    """``home_currency``, and the names of the user's categories, in one round trip. Looked up
    by the totals' category ids, None (no category) among them, which has no name."""
    row = await db.fetchrow(
        "SELECT h.home_currency, c.ids, c.names FROM expenses.home_currencies_v1 h, LATERAL ("
        "  SELECT array_agg(category_id) AS ids, array_agg(name) AS names"
        "  FROM expenses.categories_v1 WHERE user_id = $1) c "
        "WHERE h.user_id = $1",
        user_id,
    )
    if row is None:
        raise _no_home_currency()
    return row["home_currency"], dict(zip(row["ids"] or (), row["names"] or (), strict=True))


# What the converted monthly totals of a currency and month were made from: the revisions of
# its monthly totals, every one (migration 0014 of expenses: each write of a row takes a number
# of its own, so the same numbers are the same rows), and the sum and the count of those of the
# rates that may serve the month (each rate day's revision is written into every month it may
# reach), the user's and everyone's. A sum and a count would not do for the totals: their rows
# are deleted when they drop to zero, and a number handed out before a refresh's snapshot may
# be committed after it, so a row removed and rows written since could add up to the sum kept.
# Rate revisions are never removed: theirs only grow, and any change changes the sum or count.
_TOTALS_FINGERPRINTS = """
  SELECT month, currency, array_agg(revision ORDER BY revision) AS totals_revisions
  FROM {totals}
  GROUP BY 1, 2"""
_RATES_FINGERPRINTS = """
  SELECT months.month, coalesce(sum(r.revision), 0) AS rates_sum, count(r.revision) AS rates_count
  FROM ({months}) months
  LEFT JOIN expenses.rate_revisions_v1 r
    ON r.month = months.month AND (r.user_id = {user} OR r.user_id IS NULL)
  GROUP BY 1"""

# What a converted total reads ($1 the user, $2 the target, $3 to $4 the range, $5 the maximum
# age in days, $6 to $7 its whole months): each currency's months of the range that have
# spending (from the monthly totals, with their fingerprints); those of other currencies whose
# converted monthly totals, kept by this service (``refresh``), are fresh: made from the monthly
# totals and rates the expenses service publishes today, as their revisions say; and the
# spans of days left to read expense by expense: every month but the whole ones in the target
# (summed from the monthly totals) or fresh.
_SPANS = f"""
totals AS MATERIALIZED (
  SELECT user_id, month, category_id, currency, total_minor, expense_count, revision
  FROM expenses.monthly_spending_v1
  WHERE user_id = $1 AND month BETWEEN date_trunc('month', $3::date) AND $4
), months AS MATERIALIZED ({
    _TOTALS_FINGERPRINTS.format(totals="totals")
}), months_fresh AS MATERIALIZED (
  SELECT c.month, c.currency
  FROM reports.converted_months c
  JOIN months t USING (month, currency)
  JOIN ({
    _RATES_FINGERPRINTS.format(
        user="$1",
        months="SELECT m::date AS month "
        "FROM generate_series($6::date, $7::date, interval '1 month') m",
    )
}) r USING (month)
  WHERE c.user_id = $1 AND c.target = $2 AND c.max_age = $5 AND c.month BETWEEN $6 AND $7
    AND (c.totals_revisions, c.rates_sum, c.rates_count)
      = (t.totals_revisions, r.rates_sum, r.rates_count)
), spans AS MATERIALIZED (
  SELECT currency::text, greatest(month, $3::date) AS first_day,
         least((month + interval '1 month')::date - 1, $4::date) AS last_day
  FROM months m
  WHERE NOT (month BETWEEN $6 AND $7
             AND (currency = $2 OR EXISTS (SELECT FROM months_fresh f
                                           WHERE f.month = m.month AND f.currency = m.currency)))
)"""  # noqa: S608 (only the fixed fragments above)

# The spans' rates and, per currency and day, the factor from its minor units to the target's
# and the day of the rate it comes from: the rates of the spans' days and of the maximum age
# before them; per currency and day, the rate of the preferred source and within it direct,
# inverse or crossed (through the lowest base); each rate holding from its day to the next one's
# or to the maximum age. Then the spans' expenses converted one by one ($8: the target's
# decimals), summed per key and way of conversion, each span read on its own (OFFSET 0 keeps it
# a subquery of its own) so that the expenses' index by user, currency and day finds its rows
# without reading the user's other rows (as text, the index's type: compared as char(3) the
# currency was only a filter on every row); the rows are materialised so that each product is
# computed once, not once per use in the rounding.
_CONVERTED = """
WITH {spans}, rates AS MATERIALIZED (
  SELECT day, array_position(ARRAY['user', 'ecb', 'frankfurter'], source) AS preference,
         base, quote, rate
  FROM expenses.rates_v1
  WHERE (user_id = $1 OR user_id IS NULL)
    AND day BETWEEN (SELECT min(first_day) FROM spans WHERE currency <> $2) - $5::int
                AND (SELECT max(last_day) FROM spans WHERE currency <> $2)
    AND (quote = $2 OR quote IN (SELECT currency FROM spans WHERE currency <> $2))
), candidates AS (
  SELECT base AS currency, day, preference, 0 AS way, NULL::text AS via, rate AS dividend,
         NULL::numeric AS divisor
  FROM rates WHERE quote = $2
  UNION ALL
  SELECT quote, day, preference, 1, NULL, 1, rate FROM rates WHERE base = $2
  UNION ALL
  SELECT c.quote, c.day, c.preference, 2, c.base, t.rate, c.rate
  FROM rates c JOIN rates t USING (day, preference, base)
  WHERE t.quote = $2 AND c.quote <> $2 AND c.base <> $2
), chosen AS (
  SELECT currency, day,
         CASE WHEN divisor IS NULL THEN dividend ELSE reports.divide_28(dividend, divisor) END
           AS factor
  FROM (SELECT DISTINCT ON (currency, day) * FROM candidates
        ORDER BY currency, day, preference, way, via) first_choices
), holding AS (
  SELECT currency, day, factor,
         least(lead(day) OVER (PARTITION BY currency ORDER BY day) - 1, day + $5::int, $4) AS last
  FROM chosen
), factors AS (
  SELECT currency, day + held AS day, factor, day AS rate_day
  FROM holding, generate_series(greatest($3::date - day, 0), last - day) AS held
), e AS MATERIALIZED (
  SELECT {keys}, s.currency, s.amount_minor,
    CASE WHEN s.currency = $2 THEN 0 WHEN s.charged_currency = $2 THEN 1
         WHEN f.factor IS NOT NULL THEN 2 ELSE 3 END AS how,
    CASE WHEN s.currency = $2 THEN s.amount_minor WHEN s.charged_currency = $2 THEN s.charged_minor
    END AS exact,
    s.amount_minor * f.factor
      * CASE WHEN s.currency_exponent = $8::int THEN 1
             ELSE ('1e' || ($8::int - s.currency_exponent))::numeric END AS raw,
    f.rate_day
  FROM spans
  CROSS JOIN LATERAL (
    SELECT * FROM expenses.spending_v1 s
    WHERE s.user_id = $1 AND s.currency = spans.currency
      AND s.occurred_on BETWEEN spans.first_day AND spans.last_day
    OFFSET 0
  ) s {join}
  LEFT JOIN factors f ON f.currency = s.currency AND f.day = s.occurred_on{where}
)
SELECT {names}, how, CASE WHEN how = 3 THEN currency END,
       sum(CASE how WHEN 3 THEN amount_minor WHEN 2 THEN reports.round_half_even(raw)
           ELSE exact END),
       count(*), min(rate_day) FILTER (WHERE how = 2)  -- the rated ones' only
FROM e GROUP BY {groups}, how, {currency_column}{rollup}
"""
# The whole months in the target from the monthly totals, and the fresh ones in other currencies
# from the converted monthly totals, each with the columns of the monthly totals (the category's
# parent joined only where a key reads it: PostgreSQL drops an unused join to a unique key).
# The kept totals' months are looked up in the fresh ones hashed: `IS TRUE` keeps the `IN` a
# subplan, since as a semi-join the generic plan (which expects one fresh month) compared each
# kept row with every fresh month. Months and currencies stay char(3), the tables' type, so that
# no comparison casts (the spans' currencies are text, for the expenses' index).
_WITH_PARENT = """(
  SELECT r.*, c.parent_id AS category_parent_id FROM ({rows}) r
  LEFT JOIN expenses.categories_v1 c ON c.user_id = r.user_id AND c.category_id = r.category_id
)"""
_ROLLUP = f"""
SELECT {{rollup_keys}}, 0, NULL, sum(total_minor), sum(expense_count), NULL::date
FROM {
    _WITH_PARENT.format(rows="SELECT * FROM totals WHERE currency = $2 AND month BETWEEN $6 AND $7")
} in_target
GROUP BY {{groups}}
UNION ALL
SELECT {{rollup_keys}}, how, CASE WHEN how = 3 THEN currency END, sum(total_minor),
       sum(expense_count), min(oldest_rate_day)
FROM {
    _WITH_PARENT.format(
        rows="SELECT * FROM reports.converted_month_totals "
        "WHERE user_id = $1 AND target = $2 AND max_age = $5 AND month BETWEEN $6 AND $7 "
        "AND ((month, currency) IN (SELECT month, currency FROM months_fresh)) IS TRUE"
    )
} cached
GROUP BY {{groups}}, how, {{currency_column}}"""  # noqa: S608 (only the fixed fragments above)
# A range of whole months whose other currencies are all fresh needs no expense read: this much
# shorter statement (to plan as well as to run) sums it, or answers a row of its own (``how``
# -1) when some span is left to read, and the whole statement is sent instead.
_ROLLED_UP = """
WITH {home}{spans}
{rollup}
UNION ALL
SELECT {nulls}, -1, NULL, 0, 0, NULL FROM (SELECT FROM spans LIMIT 1) left_to_read{at_home}
"""
# Rows of the short statement that are no totals, by their `how`: a span is left to read; and,
# read in the same statement when the target is the user's home currency (``converted_at_home``),
# that currency (in the currency column), and each category's name (its id the first key).
LEFT_TO_READ, HOME_CURRENCY, CATEGORY_NAME = -1, -2, -3
_HOME = """home AS MATERIALIZED (
  SELECT home_currency FROM expenses.home_currencies_v1 WHERE user_id = $1
), """
_HOME_ROWS = f"""
UNION ALL
SELECT {{nulls}}, {HOME_CURRENCY}, home_currency, 0, 0, NULL FROM home"""  # noqa: S608 (constants)
_NAME_ROWS = f"""
UNION ALL
SELECT category_id{{other_nulls}}, {CATEGORY_NAME}, name, 0, 0, NULL
FROM expenses.categories_v1 WHERE user_id = $1"""  # noqa: S608 (constants)
_PARAMETER = re.compile(r"\$(\d+)")


def _in_home_currency(sql: str) -> str:
    """``sql`` with the target (parameter $2) read from ``home`` in the statement itself; the
    parameters after it move down by one."""

    def replaced(match: re.Match[str]) -> str:
        number = int(match.group(1))
        if number == 2:
            return "(SELECT home_currency FROM home)"
        return f"${number - 1}" if number > 2 else match.group(0)

    return _PARAMETER.sub(replaced, sql)


def converted_query(
    *,
    target: str,
    keys: Sequence[str],
    rollup_keys: Sequence[str] | None = None,
    join: str = "",
    where: str = "",
    from_: date,
    to: date,
    max_age: int,
    refreshing: bool = False,
    rolled_up: bool = False,
    at_home: bool = False,
    category_names: bool = False,
) -> tuple[str, list]:
    """The statement of ``converted`` and its parameters after the user's id. ``refreshing``:
    for ``refresh``, only the rows of whole months in other currencies whose converted totals
    are not fresh, nothing from totals. ``rolled_up``: the short statement of ``_ROLLED_UP``;
    ``at_home``, its target the user's home currency, read in it (and answered as a row, with
    each category's name as one more with ``category_names``): ``target`` is then ignored."""
    width = len(keys)
    groups = ", ".join(str(n + 1) for n in range(width))
    months = whole_months(from_, to) if rollup_keys is not None or refreshing else None
    # Without whole months to read from the totals, an empty span: every row is read.
    first_month, last_month = months or (to + timedelta(days=1), to.replace(day=1))
    rollup = (
        _ROLLUP.format(rollup_keys=", ".join(rollup_keys), groups=groups, currency_column=width + 2)
        if months and rollup_keys is not None
        else ""
    )
    nulls = ", ".join(["NULL"] * width)
    if rolled_up:
        home_rows = _HOME_ROWS.format(nulls=nulls) if at_home else ""
        if category_names:
            home_rows += _NAME_ROWS.format(other_nulls=", NULL" * (width - 1))
        home = _HOME if at_home else ""
        sql = _ROLLED_UP.format(
            home=home, spans=_SPANS, rollup=rollup, nulls=nulls, at_home=home_rows
        )
        if at_home:
            return _in_home_currency(sql), [from_, to, max_age, first_month, last_month]
    else:
        sql = _CONVERTED.format(
            spans=_SPANS,
            keys=", ".join(f"{key} AS k{n}" for n, key in enumerate(keys)),
            names=", ".join(f"k{n}" for n in range(width)),
            groups=groups,
            currency_column=width + 2,
            join=join,
            where=f" WHERE {where}" if where else "",
            rollup=f"\nUNION ALL{rollup}" if rollup else "",
        )
    args = [target, from_, to, max_age, first_month, last_month]
    return sql, args if rolled_up else [*args, money.exponent(target)]


async def converted(
    db: asyncpg.Connection, *, user_id: uuid.UUID, **query: Any
) -> dict[tuple, Converted]:
    """The expenses from ``from_`` to ``to`` (``spending_v1 s``, with ``join``, and the further
    conditions ``where``), converted to ``target`` and summed per value of the SQL expressions
    ``keys``, in one statement (``query``: the arguments of ``converted_query``; a range of whole
    months tries the short one first). With
    ``rollup_keys``, the same keys over ``monthly_spending_v1``, the expenses of whole months
    are summed from the monthly totals (in ``target``) and from the fresh converted monthly
    totals (in other currencies). Only fixed SQL fragments go into the text."""
    rows = None
    if _whole_months_rolled_up(query):
        sql, args = converted_query(**query, rolled_up=True)
        rows = await db.fetch(sql, user_id, *args)
        if any(row[-5] == LEFT_TO_READ for row in rows):
            rows = None
    if rows is None:
        sql, args = converted_query(**query)
        rows = await db.fetch(sql, user_id, *args)
    return _summed(rows)


def _whole_months_rolled_up(query: dict[str, Any]) -> bool:
    """Whether the short statement may serve ``query``: whole months, with rollup keys."""
    return query.get("rollup_keys") is not None and whole_months(query["from_"], query["to"]) == (
        query["from_"],
        query["to"].replace(day=1),
    )


def _summed(rows: Iterable[asyncpg.Record]) -> dict[tuple, Converted]:
    totals: dict[tuple, Converted] = defaultdict(Converted)
    for row in rows:
        *key, how, currency, minor, count, rate_day = row
        totals[tuple(key)].add(how, currency, int(minor), count, rate_day)
    return totals


@dataclass(frozen=True)
class AtHome:
    """Totals converted to the user's home currency, and what the report needs with them."""

    currency: str
    totals: dict[tuple, Converted]
    # Each category's name, by id (None, no category, has none); empty unless asked for.
    category_names: dict[uuid.UUID | None, str]


async def converted_at_home(
    db: asyncpg.Connection, *, user_id: uuid.UUID, category_names: bool = False, **query: Any
) -> AtHome:
    """``converted`` to the user's home currency (a 422 when they have none), with the names of
    their categories when asked (the first of ``keys`` must then be the category's id). On the
    short path it is one statement: the currency and the names come back as rows of their own,
    the round trip that cost a converted summary a fifth of its time (docs/performance.md).
    """
    if _whole_months_rolled_up(query):
        sql, args = converted_query(
            **query, target="", rolled_up=True, at_home=True, category_names=category_names
        )
        rows = await db.fetch(sql, user_id, *args)
        currency = next((row[-4] for row in rows if row[-5] == HOME_CURRENCY), None)
        if currency is None:
            raise _no_home_currency()
        names = {row[0]: row[-4] for row in rows if row[-5] == CATEGORY_NAME}
        if not any(row[-5] == LEFT_TO_READ for row in rows):
            return AtHome(currency, _summed([row for row in rows if row[-5] >= 0]), names)
    elif category_names:
        currency, names = await home_currency_and_category_names(db, user_id=user_id)
    else:
        currency, names = await home_currency(db, user_id=user_id), {}
    sql, args = converted_query(**{**query, "target": currency})
    return AtHome(currency, _summed(await db.fetch(sql, user_id, *args)), names)


# The converted monthly totals of a user and target that are not fresh ($1 the user, $2 the
# target, $3 the maximum age): each currency and month whose monthly totals or rates changed
# since, or that has none left (null fingerprints), or that was never converted.
_STALE = f"""
WITH totals AS ({
    _TOTALS_FINGERPRINTS.format(
        totals="expenses.monthly_spending_v1 WHERE user_id = $1 AND currency <> $2"
    )
}),
cached AS (
  SELECT month, currency, totals_revisions, rates_sum, rates_count
  FROM reports.converted_months WHERE user_id = $1 AND target = $2 AND max_age = $3
),
rates AS ({_RATES_FINGERPRINTS.format(user="$1", months="SELECT DISTINCT month FROM totals")})
SELECT month, currency, t.totals_revisions, r.rates_sum, r.rates_count
FROM totals t FULL JOIN cached c USING (month, currency) LEFT JOIN rates r USING (month)
WHERE (t.totals_revisions, r.rates_sum, r.rates_count)
      IS DISTINCT FROM (c.totals_revisions, c.rates_sum, c.rates_count)
ORDER BY month, currency
"""  # noqa: S608 (only the fixed fragments above)
# Whom to keep converted totals for: each user's home currency, and the currencies of their
# converted budgets.
_TARGETS = """
targets AS (
  SELECT user_id, home_currency::text AS target FROM expenses.home_currencies_v1
  UNION
  SELECT user_id, currency FROM reports.budgets WHERE converted
)"""
# Those who have spending in another currency or totals kept.
_TARGETS_TO_REFRESH = f"""
WITH {_TARGETS}
SELECT user_id, target FROM targets t
WHERE EXISTS (SELECT FROM expenses.monthly_spending_v1 m
              WHERE m.user_id = t.user_id AND m.currency <> t.target)
   OR EXISTS (SELECT FROM reports.converted_months c
              WHERE c.user_id = t.user_id AND c.target = t.target)
ORDER BY user_id, target
"""  # noqa: S608 (only the fixed fragments above)
_FORGET_OTHER_TARGETS = f"""
WITH {_TARGETS}
DELETE FROM reports.converted_months
WHERE max_age <> $1 OR (user_id, target) NOT IN (SELECT user_id, target FROM targets)
"""  # noqa: S608 (only the fixed fragments above)
_MONTH = """
INSERT INTO reports.converted_months
  (user_id, target, max_age, month, currency, totals_revisions, rates_sum, rates_count)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""
_MONTH_TOTALS = """
INSERT INTO reports.converted_month_totals (user_id, target, max_age, month, currency,
  category_id, how, total_minor, expense_count, oldest_rate_day)
SELECT $1, $2, $3, $4, * FROM unnest($5::text[], $6::uuid[], $7::smallint[], $8::bigint[],
                                     $9::int[], $10::date[])
"""
# One process refreshes at a time (session-wide: its transactions are per user).
_REFRESH_LOCK = "hashtextextended('reports.converted_months', 0)"


async def refresh(db: asyncpg.Connection, *, user_id: uuid.UUID, target: str, max_age: int) -> int:
    """Makes again the converted monthly totals of ``user_id`` in ``target`` that are not fresh,
    from one snapshot, so that each is what a report reading its rows would sum then; returns
    how many currency-months it made or dropped."""
    async with db.transaction(isolation="repeatable_read"):
        stale = await db.fetch(_STALE, user_id, target, max_age)
        if not stale:
            return 0
        await db.execute(
            "DELETE FROM reports.converted_months WHERE user_id = $1 AND target = $2 "
            "AND max_age = $3 "
            "AND (month, currency) IN (SELECT * FROM unnest($4::date[], $5::text[]))",
            user_id,
            target,
            max_age,
            [row["month"] for row in stale],
            [row["currency"] for row in stale],
        )
        present = [row for row in stale if row["totals_revisions"] is not None]
        for month in sorted({row["month"] for row in present}):
            sql, args = converted_query(
                target=target,
                keys=("s.currency::text", "s.category_id"),
                from_=month,
                to=month_end(month),
                max_age=max_age,
                refreshing=True,
            )
            converted_rows = await db.fetch(sql, user_id, *args)
            for row in present:
                if row["month"] == month:
                    await db.execute(_MONTH, user_id, target, max_age, *row)
            # Per currency, category and way of conversion (the key's currency, then the rest).
            columns = [[row[n] for row in converted_rows] for n in (0, 1, 2, 4, 5, 6)]
            await db.execute(_MONTH_TOTALS, user_id, target, max_age, month, *columns)
        return len(stale)


async def refresh_all(db: asyncpg.Connection, *, max_age: int) -> int:
    """Keeps the converted monthly totals fresh for every user and target that needs them
    (``refresh``), and drops those no target or maximum age asks for any more; a no-op while
    another process does it. Returns how many currency-months it made or dropped."""
    if not await db.fetchval(f"SELECT pg_try_advisory_lock({_REFRESH_LOCK})"):
        return 0
    try:
        await db.execute(_FORGET_OTHER_TARGETS, max_age)
        made = 0
        for user_id, target in await db.fetch(_TARGETS_TO_REFRESH):
            # One user's failure (a total beyond a bigint) is logged and leaves the others' made;
            # that user's reports read the expenses instead, as for any month not kept.
            try:
                made += await refresh(db, user_id=user_id, target=target, max_age=max_age)
            except Exception:
                log.exception("converted_months_failed", user_id=str(user_id), target=target)
        return made
    finally:
        await db.execute(f"SELECT pg_advisory_unlock({_REFRESH_LOCK})")
