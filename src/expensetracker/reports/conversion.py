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
are divided to 28 significant digits.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Context, Decimal

import asyncpg

from expensetracker.platform import money
from expensetracker.platform.errors import ValidationProblem
from expensetracker.reports.months import whole_months
from expensetracker.reports.schemas import Conversion, ConvertedTotal, CurrencyTotal

# The user's own rates first, then the providers'.
_PREFERENCE = {"user": 0, "ecb": 1, "frankfurter": 2}
_DIVISION = Context(prec=28)

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


def _day_rate(rates: dict[tuple[str, str], Decimal], currency: str, target: str) -> Decimal | None:
    """1 ``currency`` in ``target`` from one source's rates of one day, if they tell."""
    if (currency, target) in rates:
        return rates[currency, target]
    if (target, currency) in rates:
        return _DIVISION.divide(1, rates[target, currency])
    for (base, quote), rate in rates.items():
        if quote == currency and (base, target) in rates:
            return _DIVISION.divide(rates[base, target], rate)
    return None


@dataclass(frozen=True)
class Factors:
    """Per currency and day of a range, the factor from its minor units to the target's, and
    the day of the rate it comes from: the arrays of a statement's ``unnest``."""

    currencies: list[str]
    days: list[date]
    factors: list[Decimal]
    rate_days: list[date]


_RATES = """
SELECT day, source, base, quote, rate FROM expenses.rates_v1
WHERE (user_id = $1 OR user_id IS NULL) AND quote = ANY($2::text[]) AND day BETWEEN $3 AND $4
"""


async def factors(
    db: asyncpg.Connection,
    *,
    user_id: uuid.UUID,
    target: str,
    currencies: Sequence[str],
    first: date,
    last: date,
    max_age: int,
) -> Factors:
    """The factors of ``currencies`` to ``target`` for every day from ``first`` to ``last`` that
    has a rate within ``max_age`` days before it."""
    by_day: dict[date, dict[int, dict[tuple[str, str], Decimal]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    earliest = first - timedelta(days=max_age)
    for day, source, base, quote, rate in await db.fetch(
        _RATES, user_id, [*currencies, target], earliest, last
    ):
        by_day[day][_PREFERENCE[source]][base, quote] = rate
    result = Factors([], [], [], [])
    for currency in currencies:
        scale = money.exponent(target) - money.exponent(currency)
        found: list[tuple[date, Decimal]] = []  # (day, factor), by day
        for day in sorted(by_day):
            for _, rates in sorted(by_day[day].items()):
                rate = _day_rate(rates, currency, target)
                if rate is not None:
                    found.append((day, rate.scaleb(scale)))
                    break
        latest = -1
        for offset in range((last - first).days + 1):
            day = first + timedelta(days=offset)
            while latest + 1 < len(found) and found[latest + 1][0] <= day:
                latest += 1
            if latest >= 0 and (day - found[latest][0]).days <= max_age:
                result.currencies.append(currency)
                result.days.append(day)
                result.factors.append(found[latest][1])
                result.rate_days.append(found[latest][0])
    return result


_CURRENCIES = """
SELECT DISTINCT currency FROM expenses.monthly_spending_v1
WHERE user_id = $1 AND month BETWEEN date_trunc('month', $2::date) AND $3 AND currency <> $4
"""

# Rounded half-even: PostgreSQL's round() takes halves away from zero (amounts are positive).
_HALF_EVEN = (
    "CASE WHEN {v} - floor({v}) = 0.5 THEN floor({v}) + mod(floor({v}), 2) ELSE round({v}) END"
)
# The expense rows converted one by one, summed per key and way of conversion. Expenses in the
# target currency need no conversion: those of whole months ($9 to $10) may come from the
# monthly totals instead ({rollup}), and only the rest is read row by row.
_CONVERTED = """
WITH f AS (
  SELECT * FROM unnest($2::text[], $3::date[], $4::numeric[], $5::date[])
    AS f(currency, day, factor, rate_day)
), e AS (
  SELECT {keys}, s.currency, s.amount_minor,
    CASE WHEN s.currency = $6 THEN 0 WHEN s.charged_currency = $6 THEN 1
         WHEN f.factor IS NOT NULL THEN 2 ELSE 3 END AS how,
    CASE WHEN s.currency = $6 THEN s.amount_minor WHEN s.charged_currency = $6 THEN s.charged_minor
    END AS exact,
    s.amount_minor * f.factor AS raw, f.rate_day
  FROM expenses.spending_v1 s {join}
  LEFT JOIN f ON f.currency = s.currency AND f.day = s.occurred_on
  WHERE s.user_id = $1 AND s.occurred_on BETWEEN $7 AND $8{where}
    AND (s.currency = ANY($11::text[]) OR s.currency = $6
         AND (s.occurred_on < $9 OR s.occurred_on >= ($10::date + interval '1 month')::date))
)
SELECT {names}, how, CASE WHEN how = 3 THEN currency END,
       sum(CASE how WHEN 3 THEN amount_minor WHEN 2 THEN {half_even} ELSE exact END),
       count(*), min(rate_day)
FROM e GROUP BY {groups}, how, {currency_column}{rollup}
"""
_ROLLUP = """
UNION ALL
SELECT {rollup_keys}, 0, NULL, sum(total_minor), sum(expense_count), NULL::date
FROM expenses.monthly_spending_v1
WHERE user_id = $1 AND currency = $6 AND month BETWEEN $9 AND $10
GROUP BY {groups}"""


async def converted(
    db: asyncpg.Connection,
    *,
    user_id: uuid.UUID,
    target: str,
    keys: Sequence[str],
    rollup_keys: Sequence[str] | None = None,
    join: str = "",
    where: str = "",
    from_: date,
    to: date,
    max_age: int,
) -> dict[tuple, Converted]:
    """The expenses from ``from_`` to ``to`` (``spending_v1 s``, with ``join``, and the further
    conditions ``where``), converted to ``target`` and summed per value of the SQL expressions
    ``keys``. With ``rollup_keys``, the same keys over ``monthly_spending_v1``, the expenses in
    ``target`` of whole months are summed from the monthly totals. Only fixed SQL fragments go
    into the text."""
    currencies = [row[0] for row in await db.fetch(_CURRENCIES, user_id, from_, to, target)]
    table = await factors(
        db,
        user_id=user_id,
        target=target,
        currencies=currencies,
        first=from_,
        last=to,
        max_age=max_age,
    )
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
        half_even=_HALF_EVEN.format(v="raw"),
        rollup=_ROLLUP.format(rollup_keys=", ".join(rollup_keys or ()), groups=groups)
        if months
        else "",
    )
    totals: dict[tuple, Converted] = defaultdict(Converted)
    for row in await db.fetch(
        sql,
        user_id,
        table.currencies,
        table.days,
        table.factors,
        table.rate_days,
        target,
        from_,
        to,
        first_month,
        last_month,
        currencies,
    ):
        *key, how, currency, minor, count, rate_day = row
        totals[tuple(key)].add(how, currency, int(minor), count, rate_day)
    return totals
