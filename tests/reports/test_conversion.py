"""Reports converted to the home currency (in=home) and converted budgets: checked against a
reference conversion in Python over the ECB sample's rates, with rounding half-even per
expense, the charged amount first, the rate age limit, user rates first, and isolation."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal

import httpx
import pytest

from expensetracker.expenses import rates
from expensetracker.platform import money
from expensetracker.platform.state import app_state
from expensetracker.reports import conversion
from expensetracker.reports.budgets import evaluate_alerts
from tests.helpers.apps import AppFactory, app_of
from tests.helpers.database import connected
from tests.helpers.expenses import categories, create, put_rate, spend
from tests.helpers.paths import ECB_SAMPLE
from tests.helpers.reports import budget, status_of
from tests.helpers.users import Account, signed_up

pytestmark = pytest.mark.database

# The sample's rates: 1 EUR in each currency, per day.
ECB = defaultdict(dict)
for _rate in rates.parse_ecb(ECB_SAMPLE.read_bytes()):
    ECB[_rate.day][_rate.quote] = _rate.rate
for _day in ECB:
    ECB[_day]["EUR"] = Decimal(1)


def reference(amount: str, currency: str, day: date, home: str, max_age: int = 7) -> int | None:
    """An expense converted as docs/reports.md says, from the sample alone: minor units of
    ``home``, or None when no rate is recent enough."""
    if currency == home:
        return money.parse_amount(amount, currency)
    days = [d for d in ECB if d <= day and (day - d).days <= max_age]
    if not days:
        return None
    rates_of = ECB[max(days)]
    # Cross rates through EUR, to 28 significant digits, as the service divides.
    factor = Context(prec=28).divide(rates_of[home], rates_of[currency])
    value = Decimal(amount) * factor * 10 ** money.exponent(home)
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


@pytest.fixture
async def ecb_rates(database_url: str) -> None:
    async with connected(database_url) as connection:
        await rates.store(connection, rates.parse_ecb(ECB_SAMPLE.read_bytes()), source="ecb")


def in_euros(amount: str) -> dict[str, str]:
    """An expense's fields saying it was charged ``amount`` EUR."""
    return {"charged_amount": amount, "charged_currency": "EUR"}


async def converted(client: httpx.AsyncClient, account: Account, path: str, **params) -> dict:
    response = await client.get(
        f"/api/v1/reports/{path}", params={"in": "home", **params}, headers=account.headers
    )
    assert response.status_code == 200, response.text
    return response.json()


JANUARY = {"from": "2026-01-01", "to": "2026-01-31"}


@pytest.mark.usefixtures("ecb_rates")
async def test_a_summary_in_the_home_currency_says_how_it_was_made(
    client: httpx.AsyncClient,
) -> None:
    account, other = await signed_up(client), await signed_up(client)
    groceries = (await categories(client, account))["Groceries"]
    await spend(client, account, "10.00", "EUR", "2026-01-09")
    rows = [
        ("10.00", "USD", "2026-01-09"),  # the day's rate
        ("5.00", "USD", "2026-01-11"),  # a Sunday: Friday's
        ("3.00", "GBP", "2026-01-07"),  # Monday's, two days old: the oldest used
    ]
    for amount, currency, day in rows:
        await spend(client, account, amount, currency, day, category_id=groceries)
    await spend(client, account, "7.00", "USD", "2026-01-20")
    await spend(
        client, account, "1000", "JPY", "2026-01-09", **in_euros("6.50"), category_id=groceries
    )
    await spend(client, other, "99.00", "USD", "2026-01-09")

    summary = await converted(client, account, "summary", **JANUARY)
    expected = (
        1000
        + 650
        + sum(
            reference(amount, currency, date.fromisoformat(day), "EUR")
            for amount, currency, day in rows
        )
    )
    assert summary["currency"] == "EUR"
    assert summary["total"] == {
        "currency": "EUR",
        "amount": money.format_amount(expected, "EUR"),
        "count": 5,
        "conversion": {
            "in_currency": 1,
            "charged": 1,
            "rated": 3,
            "oldest_rate_day": "2026-01-05",
            "missing": 1,
        },
        # Eleven days after the last rate: missing, never 1:1.
        "unconverted": [{"currency": "USD", "amount": "7.00", "count": 1}],
    }
    by_key = {group["key"]: group for group in summary["groups"]}
    assert by_key[groceries]["name"] == "Groceries"
    assert by_key[groceries]["total"]["conversion"]["rated"] == 3
    assert by_key[None]["total"]["unconverted"] == summary["total"]["unconverted"]
    # A total is the sum of its rows: the groups add up to it.
    assert sum(Decimal(g["total"]["amount"]) for g in summary["groups"]) == Decimal(
        summary["total"]["amount"]
    )
    by_month = await converted(client, account, "summary", group_by="month", **JANUARY)
    assert [g["key"] for g in by_month["groups"]] == ["2026-01"]
    assert by_month["groups"][0]["total"] == summary["total"]


@pytest.mark.usefixtures("ecb_rates")
async def test_rounding_is_half_even_per_expense_and_a_user_rate_comes_first(
    client: httpx.AsyncClient,
) -> None:
    account = await signed_up(client)
    await client.put(
        "/api/v1/expenses/home-currency", json={"currency": "EUR"}, headers=account.headers
    )
    # The user's own rate of the day beats the ECB's: 1 USD = 0.125 EUR.
    made = await client.put(
        "/api/v1/expenses/rates/2026-01-09/USD/EUR", json={"rate": "0.125"}, headers=account.headers
    )
    assert made.status_code == 200
    for amount in ("1.00", "3.00", "1.00"):  # 12.5, 37.5, 12.5 cents
        await spend(client, account, amount, "USD", "2026-01-09")
    summary = await converted(client, account, "summary", **JANUARY)
    # Half-even per expense: 12 + 38 + 12. Rounding the sum (62.5) or halves up (13 + 38 + 13)
    # would not give this.
    assert summary["total"]["amount"] == "0.62"
    assert summary["total"]["conversion"]["oldest_rate_day"] == "2026-01-09"


@pytest.mark.usefixtures("ecb_rates")
async def test_cross_rates_and_currencies_of_other_decimals(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    await spend(client, account, "1.00", "USD", "2026-01-05")
    rows = [("10.00", "GBP"), ("1000", "JPY"), ("12.34", "SEK")]
    for amount, currency in rows:
        await spend(client, account, amount, currency, "2026-01-09")
    summary = await converted(client, account, "summary", **JANUARY)
    expected = 100 + sum(
        reference(amount, currency, date(2026, 1, 9), "USD") for amount, currency in rows
    )
    assert summary["currency"] == "USD"  # the first expense's
    assert summary["total"]["amount"] == money.format_amount(expected, "USD")
    assert summary["total"]["conversion"]["rated"] == 3
    # The home currency set to one of zero decimals: whole yen.
    await client.put(
        "/api/v1/expenses/home-currency", json={"currency": "JPY"}, headers=account.headers
    )
    in_yen = await converted(client, account, "summary", **JANUARY)
    assert in_yen["total"]["amount"] == str(
        1000
        + reference("1.00", "USD", date(2026, 1, 5), "JPY")
        + sum(
            reference(amount, currency, date(2026, 1, 9), "JPY")
            for amount, currency in rows
            if currency != "JPY"
        )
    )


@pytest.mark.usefixtures("ecb_rates")
@pytest.mark.parametrize("max_age", [0, 15])
async def test_the_age_of_a_usable_rate_is_a_setting(serve_app: AppFactory, max_age: int) -> None:
    async with serve_app(rates_max_age_days=max_age) as client:
        account = await signed_up(client)
        await spend(client, account, "1.00", "EUR", "2026-01-09")
        days = ["2026-01-09", "2026-01-11", "2026-01-20"]
        for day in days:
            await spend(client, account, "10.00", "USD", day)
        summary = await converted(client, account, "summary", **JANUARY)
    usable = [
        day for day in days if reference("10.00", "USD", date.fromisoformat(day), "EUR", max_age)
    ]
    assert summary["total"]["conversion"]["rated"] == len(usable)
    assert summary["total"]["conversion"]["missing"] == 3 - len(usable)
    assert len(usable) == (1 if max_age == 0 else 3)


async def test_without_a_home_currency_a_converted_report_is_a_problem(
    client: httpx.AsyncClient,
) -> None:
    account = await signed_up(client)
    for path, params in (
        ("summary", JANUARY),
        ("trends", {"month": "2026-01"}),
        ("merchants", JANUARY),
    ):
        response = await client.get(
            f"/api/v1/reports/{path}", params={"in": "home", **params}, headers=account.headers
        )
        assert response.status_code == 422, path
        assert response.headers["content-type"] == "application/problem+json"
        assert "home currency" in response.json()["errors"][0]["message"]
    other = await client.get(
        "/api/v1/reports/summary", params={"in": "away", **JANUARY}, headers=account.headers
    )
    assert other.status_code == 422


@pytest.mark.usefixtures("ecb_rates")
async def test_trends_and_merchants_in_the_home_currency(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    groceries = (await categories(client, account))["Groceries"]
    await spend(
        client, account, "20.00", "EUR", "2025-12-15", category_id=groceries, merchant="Corner shop"
    )
    await spend(
        client, account, "30.00", "USD", "2026-01-09", category_id=groceries, merchant="Corner shop"
    )
    await spend(client, account, "25.00", "EUR", "2026-01-10", merchant="Bakery")
    await spend(
        client, account, "500", "JPY", "2026-01-25", category_id=groceries, merchant="Kiosk"
    )
    usd = reference("30.00", "USD", date(2026, 1, 9), "EUR")
    trends = await converted(client, account, "trends", month="2026-01", months=2)
    assert trends["months"] == ["2025-12", "2026-01"]
    line = next(line for line in trends["categories"] if line["name"] == "Groceries")
    assert line["totals"] == ["20.00", money.format_amount(usd, "EUR")]
    assert line["change"] == money.format_amount(usd - 2000, "EUR")
    assert line["conversion"] == {
        "in_currency": 1,
        "charged": 0,
        "rated": 1,
        "oldest_rate_day": "2026-01-09",
        "missing": 1,
    }
    assert line["unconverted"] == [{"currency": "JPY", "amount": "500", "count": 1}]

    merchants = await converted(client, account, "merchants", **JANUARY, limit=2)
    assert [(m["merchant"], m["amount"]) for m in merchants] == [
        ("Corner shop", money.format_amount(usd, "EUR")),
        ("Bakery", "25.00"),
    ]
    everything = await converted(client, account, "merchants", **JANUARY)
    assert everything[-1]["merchant"] == "Kiosk"
    assert everything[-1]["amount"] == "0.00"
    assert everything[-1]["unconverted"] == [{"currency": "JPY", "amount": "500", "count": 1}]


@pytest.mark.usefixtures("ecb_rates")
async def test_a_converted_budget_counts_every_currency(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    groceries = (await categories(client, account))["Groceries"]
    food = (await categories(client, account))["Food"]
    await spend(client, account, "40.00", "EUR", "2026-01-08", category_id=groceries)
    await spend(client, account, "50.00", "USD", "2026-01-09", category_id=groceries)
    await spend(
        client, account, "1000", "JPY", "2026-01-09", **in_euros("6.10"), category_id=groceries
    )
    await spend(client, account, "9.00", "CAD", "2026-01-09", category_id=groceries)
    made = await budget(
        client,
        account,
        name="Food",
        amount="90.00",
        currency="EUR",
        category_id=food,
        converted=True,
        starts="2026-01",
    )
    await budget(
        client,
        account,
        name="Food (EUR only)",
        amount="100.00",
        currency="EUR",
        category_id=food,
        starts="2026-01",
    )
    assert made["converted"] is True
    status = await status_of(client, account, "2026-01")
    spent = 4000 + 610 + reference("50.00", "USD", date(2026, 1, 9), "EUR")
    assert status["Food"]["spent"] == money.format_amount(spent, "EUR")
    assert status["Food"]["state"] == "over"
    assert status["Food"]["conversion"] == {
        "in_currency": 1,
        "charged": 1,
        "rated": 1,
        "oldest_rate_day": "2026-01-09",
        "missing": 1,
    }
    assert status["Food"]["unconverted"] == [{"currency": "CAD", "amount": "9.00", "count": 1}]
    # A budget not converted counts its own currency only, as before.
    assert status["Food (EUR only)"]["spent"] == "40.00"
    assert status["Food (EUR only)"]["conversion"] is None


@pytest.mark.usefixtures("ecb_rates")
async def test_totals_equal_the_sum_of_their_rows(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    await spend(client, account, "0.01", "EUR", "2026-01-01")
    generator = random.Random(15)
    expected_by_day: dict[str, int] = defaultdict(int)
    missing = 0
    for _ in range(120):
        currency = generator.choice(["EUR", "USD", "GBP", "JPY", "CHF"])
        exponent = money.exponent(currency)
        amount = money.format_amount(generator.randint(1, 10 ** (exponent + 3)), currency)
        day = date(2026, 1, 1) + timedelta(days=generator.randint(0, 30))
        await create(client, account, amount=amount, currency=currency, occurred_on=str(day))
        value = reference(amount, currency, day, "EUR")
        if value is None:
            missing += 1
        else:
            expected_by_day[str(day)] += value
    summary = await converted(client, account, "summary", **JANUARY)
    assert summary["total"]["amount"] == money.format_amount(
        1 + sum(expected_by_day.values()), "EUR"
    )
    assert summary["total"]["conversion"]["missing"] == missing
    # Whole months come from the monthly totals, the days around them row by row: the same.
    around = await converted(
        client, account, "summary", **{"from": "2025-12-20", "to": "2026-02-03"}
    )
    assert around["total"] == summary["total"]
    partial = await converted(
        client, account, "summary", **{"from": "2026-01-01", "to": "2026-01-30"}
    )
    assert partial["total"]["amount"] == money.format_amount(
        1 + sum(value for day, value in expected_by_day.items() if day != "2026-01-31"), "EUR"
    )
    # Day by day, each day's total is its rows' sum.
    for day, value in expected_by_day.items():
        one_day = await converted(client, account, "summary", **{"from": day, "to": day})
        assert one_day["total"]["amount"] == money.format_amount(
            value + (day == "2026-01-01"), "EUR"
        )


# The arithmetic of reports migration 0005, which the statement uses, against Python's decimal.
_TIES = [
    ("0.5", "0"),
    ("1.5", "2"),
    ("2.5", "2"),
    ("3.5", "4"),
    ("-0.5", "0"),
    ("-2.5", "-2"),
    ("-3.5", "-4"),
    ("2.4999999999999999999999999999", "2"),
    ("2.5000000000000000000000000001", "3"),
    ("7", "7"),
    ("12.51", "13"),
]


async def test_sql_rounding_is_half_even_and_division_keeps_28_digits(database_url: str) -> None:
    async with connected(database_url) as connection:
        for value, rounded in _TIES:
            result = await connection.fetchval(
                "SELECT reports.round_half_even($1::numeric)", Decimal(value)
            )
            assert result == Decimal(rounded), value
        generator = random.Random(28)
        pairs = [
            # Exactly half at the 29th digit: to the even 28th, down then up.
            ("2469135780246913578024691357", "2"),
            ("2469135780246913578024691359", "2"),
            ("1", "3"),
            ("2", "3"),
            ("1", "8"),
            ("10", "1"),
            ("1", "0.1"),
            ("0.999999999999999999999999999999", "1"),
            ("1", "0.999999999999999999999999999999"),
            ("1", "1.0832"),
            ("158.93", "1.0832"),
            ("0.84515", "1.0832"),
        ]
        for _ in range(300):
            dividend = Decimal(generator.randint(1, 10**9)).scaleb(-generator.randint(0, 12))
            divisor = Decimal(generator.randint(1, 10**9)).scaleb(-generator.randint(0, 12))
            pairs.append((str(dividend), str(divisor)))
        for dividend, divisor in pairs:
            result = await connection.fetchval(
                "SELECT reports.divide_28($1::numeric, $2::numeric)",
                Decimal(dividend),
                Decimal(divisor),
            )
            expected = Context(prec=28).divide(Decimal(dividend), Decimal(divisor))
            assert result == expected, (dividend, divisor)
        assert await connection.fetchval(
            "SELECT reports.divide_28(2469135780246913578024691357, 2)"
        ) == Decimal("1234567890123456789012345678")


async def test_a_rate_holds_exactly_the_maximum_age_and_a_later_day_beats_a_preferred_source(
    serve_app: AppFactory, database_url: str
) -> None:
    async with connected(database_url) as connection:
        await rates.store(
            connection, [rates.Rate(date(2026, 3, 12), "EUR", "USD", Decimal("1.25"))], source="ecb"
        )
    async with serve_app(rates_max_age_days=3) as client:
        account = await signed_up(client)
        await spend(client, account, "1.00", "EUR", "2026-03-01")
        # The user's own rate of the 10th, then the ECB's of the 12th: 1 USD = 0.5, then 0.8 EUR.
        await put_rate(client, account, date(2026, 3, 10), "USD", "EUR", "0.5")
        for day in ("2026-03-09", "2026-03-10", "2026-03-11", "2026-03-12", "2026-03-15"):
            await spend(client, account, "10.00", "USD", day)
        await spend(client, account, "10.00", "USD", "2026-03-16")  # four days old: missing
        march = {"from": "2026-03-01", "to": "2026-03-31"}
        summary = await converted(client, account, "summary", **march, group_by="month")
        # 10.00 at 0.5 (10th, 11th), at 0.8 (12th, and the 15th: three days old).
        assert summary["total"]["amount"] == money.format_amount(100 + 2 * 500 + 2 * 800, "EUR")
        assert summary["total"]["conversion"] == {
            "in_currency": 1,
            "charged": 0,
            "rated": 4,
            "oldest_rate_day": "2026-03-10",
            "missing": 2,  # the 9th, before any rate, and the 16th
        }
        assert summary["total"]["unconverted"] == [
            {"currency": "USD", "amount": "20.00", "count": 2}
        ]
        one_day = await converted(
            client, account, "summary", **{"from": "2026-03-15", "to": "2026-03-15"}
        )
        assert one_day["total"]["amount"] == "8.00"
        assert one_day["total"]["conversion"]["oldest_rate_day"] == "2026-03-12"


@pytest.mark.usefixtures("ecb_rates")
async def test_a_charged_amount_beats_any_rate_only_in_the_home_currency(
    client: httpx.AsyncClient,
) -> None:
    account = await signed_up(client)
    await spend(client, account, "1.00", "EUR", "2026-01-09")
    await put_rate(client, account, date(2026, 1, 9), "USD", "EUR", "0.5")
    await spend(client, account, "10.00", "USD", "2026-01-09", **in_euros("9.13"))
    # Charged in pounds while the home currency is the euro: the rate of dollars counts.
    await spend(
        client, account, "10.00", "USD", "2026-01-09", charged_amount="7.00", charged_currency="GBP"
    )
    # A charged amount needs no rate at all: a day with none.
    await spend(client, account, "10.00", "USD", "2026-01-30", **in_euros("9.20"))
    # Nor does it use the rate its day has: that rate is not the oldest one used.
    await put_rate(client, account, date(2026, 1, 5), "USD", "EUR", "0.4")
    await spend(client, account, "10.00", "USD", "2026-01-06", **in_euros("9.30"))
    summary = await converted(client, account, "summary", **JANUARY)
    assert summary["total"]["amount"] == money.format_amount(100 + 913 + 500 + 920 + 930, "EUR")
    made = {"in_currency": 1, "charged": 3, "rated": 1, "oldest_rate_day": "2026-01-09"}
    assert summary["total"]["conversion"] == {**made, "missing": 0}
    trends = await converted(client, account, "trends", month="2026-01", months=2)
    assert [line["conversion"]["oldest_rate_day"] for line in trends["categories"]] == [
        "2026-01-09"
    ]
    # Charged ones alone used no rate at all.
    await spend(client, account, "10.00", "USD", "2026-02-06", **in_euros("9.30"))
    await put_rate(client, account, date(2026, 2, 5), "USD", "EUR", "0.4")
    february = await converted(
        client, account, "summary", **{"from": "2026-02-01", "to": "2026-02-28"}
    )
    assert february["total"]["conversion"]["oldest_rate_day"] is None


# The cross-check: random rates of every source and way, random expenses, random ranges and ages,
# converted by the service's statement and by the rules of docs/reports.md written out in Python.
_POOL = ["EUR", "USD", "GBP", "JPY", "CHF"]
_PREFERRED = ("user", "ecb", "frankfurter")
_EXACT = Context(prec=200)


def _day_rate(of_day: dict[tuple[str, str], Decimal], currency: str, home: str) -> Decimal | None:
    if (currency, home) in of_day:
        return of_day[currency, home]
    if (home, currency) in of_day:
        return Context(prec=28).divide(1, of_day[home, currency])
    bases = sorted(base for base, quote in of_day if quote == currency and (base, home) in of_day)
    if bases:
        return Context(prec=28).divide(of_day[bases[0], home], of_day[bases[0], currency])
    return None


def _reference_rate(
    known: dict[tuple[date, str], dict], currency: str, home: str, day: date, max_age: int
) -> tuple[Decimal, date] | None:
    for age in range(max_age + 1):
        at = day - timedelta(days=age)
        for source in _PREFERRED:
            rate = _day_rate(known.get((at, source), {}), currency, home)
            if rate is not None:
                return rate, at
    return None


def _random_rate(generator: random.Random, base: str, quote: str) -> Decimal:
    size = {"JPY": 150}.get(quote, 1) / {"JPY": 150}.get(base, 1)
    return (Decimal(str(size)) * Decimal(generator.randint(5000, 20000)) / 10000).quantize(
        Decimal("0.000001")
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_the_statement_equals_the_rules_written_out_on_random_data(
    serve_app: AppFactory, database_url: str, seed: int
) -> None:
    generator = random.Random(seed)
    home = generator.choice(["EUR", "USD", "JPY"])
    max_age = generator.choice([0, 2, 7])
    known: dict[tuple[date, str], dict[tuple[str, str], Decimal]] = defaultdict(dict)
    start = date(2025, 12, 20)
    async with connected(database_url) as connection:
        for source in ("ecb", "frankfurter"):
            published = []
            for offset in range(45):
                day = start + timedelta(days=offset)
                if generator.random() < 0.5:
                    continue
                for quote in _POOL[1:]:
                    if generator.random() < 0.8:
                        rate = _random_rate(generator, "EUR", quote)
                        published.append(rates.Rate(day, "EUR", quote, rate))
                        known[day, source]["EUR", quote] = rate
            await rates.store(connection, published, source=source)
    async with serve_app(rates_max_age_days=max_age) as client:
        account = await signed_up(client)
        await client.put(
            "/api/v1/expenses/home-currency", json={"currency": home}, headers=account.headers
        )
        for _ in range(12):  # direct, inverse and crossed through another base
            day = start + timedelta(days=generator.randint(0, 44))
            base, quote = generator.sample(_POOL, 2)
            rate = _random_rate(generator, base, quote)
            await put_rate(client, account, day, base, quote, str(rate))
            known[day, "user"][base, quote] = rate
        expenses = []
        for _ in range(60):
            currency = generator.choice(_POOL)
            minor = generator.randint(1, 10 ** (money.exponent(currency) + 4))
            day = date(2026, 1, 1) + timedelta(days=generator.randint(-5, 35))
            fields = {}
            if generator.random() < 0.2:
                charged_currency = generator.choice(_POOL)
                fields = {
                    "charged_amount": money.format_amount(minor, charged_currency),
                    "charged_currency": charged_currency,
                }
            await spend(
                client, account, money.format_amount(minor, currency), currency, str(day), **fields
            )
            expenses.append((currency, minor, day, fields.get("charged_currency")))

        for first, last in [
            (date(2026, 1, 1), date(2026, 1, 31)),
            (date(2025, 12, 27), date(2026, 2, 4)),
            (date(2026, 1, 3), date(2026, 1, 17)),
        ]:
            total, made, oldest = 0, [0, 0, 0, 0], None
            missing: dict[str, list[int]] = defaultdict(lambda: [0, 0])
            for currency, minor, day, charged_currency in expenses:
                if not first <= day <= last:
                    continue
                if currency == home:
                    total, made[0] = total + minor, made[0] + 1
                elif charged_currency == home:
                    total, made[1] = total + minor, made[1] + 1  # charged: the same minor units
                elif found := _reference_rate(known, currency, home, day, max_age):
                    rate, rate_day = found
                    scale = money.exponent(home) - money.exponent(currency)
                    value = _EXACT.multiply(Decimal(minor), rate).scaleb(scale)
                    total += int(value.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
                    made[2] += 1
                    oldest = rate_day if oldest is None else min(oldest, rate_day)
                else:
                    made[3] += 1
                    missing[currency][0] += minor
                    missing[currency][1] += 1
            summary = await converted(
                client, account, "summary", **{"from": str(first), "to": str(last)}
            )
            assert summary["total"] == {
                "currency": home,
                "amount": money.format_amount(total, home),
                "count": made[0] + made[1] + made[2],
                "conversion": {
                    "in_currency": made[0],
                    "charged": made[1],
                    "rated": made[2],
                    "oldest_rate_day": oldest and str(oldest),
                    "missing": made[3],
                },
                "unconverted": [
                    {"currency": c, "amount": money.format_amount(m, c), "count": n}
                    for c, (m, n) in sorted(missing.items())
                ],
            }, (seed, first, last)


async def test_one_users_totals_beyond_a_bigint_stop_no_one_elses(
    client: httpx.AsyncClient, database_url: str
) -> None:
    # The largest amount the API takes, at the largest rate it takes: a converted total no
    # bigint column holds. It once made that user's budget status a 500, and the background
    # jobs fail on it for every user met after.
    huge, other = await signed_up(client), await signed_up(client)
    today = date.today()
    for account in (huge, other):
        await client.put(
            "/api/v1/expenses/home-currency", json={"currency": "EUR"}, headers=account.headers
        )
    await spend(client, huge, "999999999.999", "KWD", today.isoformat())
    await put_rate(client, huge, today, "KWD", "EUR", "999999999999")
    await spend(client, other, "85.00", "EUR", today.isoformat())
    await spend(client, other, "5.00", "USD", today.isoformat())  # converted: a month kept
    await put_rate(client, other, today, "USD", "EUR", "1")
    for account in (huge, other):
        await budget(client, account, converted=True, starts=today.strftime("%Y-%m"))
    state = app_state(app_of(client))
    max_age = state.settings.rates_max_age_days
    await evaluate_alerts(state.db.driver_pool, today=today, max_rate_age=max_age)
    async with connected(database_url) as connection:
        await conversion.refresh_all(connection, max_age=max_age)
    alerts = await client.get("/api/v1/reports/alerts", headers=other.headers)
    assert [alert["threshold"] for alert in alerts.json()["items"]] == [80]
    others_id = (await client.get("/api/v1/auth/me", headers=other.headers)).json()["id"]
    kept = "SELECT count(*) FROM reports.converted_months WHERE user_id = $1::uuid"
    async with connected(database_url) as connection:
        assert await connection.fetchval(kept, others_id) > 0
    status = await status_of(client, huge, today.strftime("%Y-%m"))
    assert status["Everything"]["state"] == "over"
    summary = await client.get(
        "/api/v1/reports/summary",
        params={"from": today.isoformat(), "to": today.isoformat(), "in": "home"},
        headers=huge.headers,
    )
    assert summary.status_code == 200, summary.text
    exact = (Decimal("999999999.999") * Decimal("999999999999")).quantize(Decimal("0.01"))
    assert summary.json()["total"]["amount"] == str(exact)
