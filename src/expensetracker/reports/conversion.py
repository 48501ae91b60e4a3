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

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import asyncpg

from expensetracker.platform import money
from expensetracker.platform.errors import ValidationProblem
from expensetracker.reports.months import whole_months
from expensetracker.reports.schemas import Conversion, ConvertedTotal, CurrencyTotal

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


async def home_currency(db: asyncpg.Connection, *, user_id: uuid.UUID) -> str:
    """The user's home currency; a 422 when they have none yet (no expense, none set)."""
    currency = await db.fetchval(
        "SELECT home_currency FROM expenses.home_currencies_v1 WHERE user_id = $1", user_id
    )
    if currency is None:
        raise ValidationProblem.of_field(
            "query.in",
            "You have no home currency yet: set one (PUT /api/v1/expenses/home-currency) "
            "or record an expense.",
            "home_currency",
        )
    return currency


# The rates a conversion may use, and per currency and day of the range the factor from its
# minor units to the target's and the day of the rate it comes from ($1 the user, $2 the target,
# $3 to $4 the range, $5 the maximum age in days): the currencies of the range, from the monthly
# totals; their rates of the range and of the maximum age before it; per currency and day, the
# rate of the preferred source and within it direct, inverse or crossed (through the lowest
# base); each rate holding from its day to the next one's or to the maximum age. Then the
# expense rows converted one by one ($6: the target's decimals), summed per key and way of
# conversion. Expenses in the target currency need no conversion: those of whole months ($7 to
# $8) may come from the monthly totals instead ({rollup}), and only the rest is read row by row,
# each currency to read on its own (OFFSET 0 keeps it a subquery of its own), so that the
# expenses' index by user, currency and day finds them without reading the user's other rows
# (as text, the index's type: compared as char(3) the currency was only a filter on every row);
# the rows are materialised so that each product is computed once, not once per use in the
# rounding.
_CONVERTED = """
WITH foreign_currencies AS MATERIALIZED (
  SELECT DISTINCT currency FROM expenses.monthly_spending_v1
  WHERE user_id = $1 AND month BETWEEN date_trunc('month', $3::date) AND $4 AND currency <> $2
), rates AS MATERIALIZED (
  SELECT day, array_position(ARRAY['user', 'ecb', 'frankfurter'], source) AS preference,
         base, quote, rate
  FROM expenses.rates_v1
  WHERE (user_id = $1 OR user_id IS NULL) AND day BETWEEN $3::date - $5::int AND $4
    AND (quote = $2 OR quote IN (SELECT currency FROM foreign_currencies))
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
      * CASE WHEN s.currency_exponent = $6::int THEN 1
             ELSE ('1e' || ($6::int - s.currency_exponent))::numeric END AS raw,
    f.rate_day
  FROM (SELECT currency::text FROM foreign_currencies
        UNION ALL
        SELECT $2::text WHERE $3 < $7 OR $4 >= ($8::date + interval '1 month')::date) read
  CROSS JOIN LATERAL (
    SELECT * FROM expenses.spending_v1 s
    WHERE s.user_id = $1 AND s.currency = read.currency AND s.occurred_on BETWEEN $3 AND $4
    OFFSET 0
  ) s {join}
  LEFT JOIN factors f ON f.currency = s.currency AND f.day = s.occurred_on
  WHERE (s.currency <> $2
         OR s.occurred_on < $7 OR s.occurred_on >= ($8::date + interval '1 month')::date){where}
)
SELECT {names}, how, CASE WHEN how = 3 THEN currency END,
       sum(CASE how WHEN 3 THEN amount_minor WHEN 2 THEN reports.round_half_even(raw)
           ELSE exact END),
       count(*), min(rate_day)
FROM e GROUP BY {groups}, how, {currency_column}{rollup}
"""
_ROLLUP = """
UNION ALL
SELECT {rollup_keys}, 0, NULL, sum(total_minor), sum(expense_count), NULL::date
FROM expenses.monthly_spending_v1
WHERE user_id = $1 AND currency = $2 AND month BETWEEN $7 AND $8
GROUP BY {groups}"""


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
) -> tuple[str, list]:
    """The statement of ``converted`` and its parameters after the user's id."""
    width = len(keys)
    groups = ", ".join(str(n + 1) for n in range(width))
    months = whole_months(from_, to) if rollup_keys is not None else None
    # Without whole months to read from the totals, an empty span: every row is read.
    first_month, last_month = months or (to + timedelta(days=1), to.replace(day=1))
    sql = _CONVERTED.format(
        keys=", ".join(f"{key} AS k{n}" for n, key in enumerate(keys)),
        names=", ".join(f"k{n}" for n in range(width)),
        groups=groups,
        currency_column=width + 2,
        join=join,
        where=f" AND {where}" if where else "",
        rollup=_ROLLUP.format(rollup_keys=", ".join(rollup_keys or ()), groups=groups)
        if months
        else "",
    )
    return sql, [target, from_, to, max_age, money.exponent(target), first_month, last_month]


async def converted(
    db: asyncpg.Connection, *, user_id: uuid.UUID, **query: Any
) -> dict[tuple, Converted]:
    """The expenses from ``from_`` to ``to`` (``spending_v1 s``, with ``join``, and the further
    conditions ``where``), converted to ``target`` and summed per value of the SQL expressions
    ``keys``, in one statement (``query``: the arguments of ``converted_query``). With
    ``rollup_keys``, the same keys over ``monthly_spending_v1``, the expenses in ``target`` of
    whole months are summed from the monthly totals. Only fixed SQL fragments go into the
    text."""
    sql, args = converted_query(**query)
    totals: dict[tuple, Converted] = defaultdict(Converted)
    for row in await db.fetch(sql, user_id, *args):
        *key, how, currency, minor, count, rate_day = row
        totals[tuple(key)].add(how, currency, int(minor), count, rate_day)
    return totals
