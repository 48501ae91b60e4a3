"""The converted monthly totals the reports service keeps ahead of time (reports/conversion.py):
a converted report reads them for whole months only while they are fresh, so that what it
answers is what it answers without them, whatever changed since they were made: expenses added,
moved, recategorised or deleted, rates added, changed or removed, the home currency changed."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import date, timedelta
from decimal import Decimal

import asyncpg
import httpx
import pytest

from expensetracker.expenses import rates
from expensetracker.platform.state import app_state
from expensetracker.reports import conversion
from expensetracker.reports.months import add_months
from tests.helpers.apps import AppFactory, app_of
from tests.helpers.expenses import categories, create, put_rate, spend
from tests.helpers.reports import budget
from tests.helpers.users import PASSWORD, Account, signed_up

pytestmark = pytest.mark.database

MAX_AGE = 3  # short, so that a weekend without rates leaves some expenses missing
FIRST_DAY = date(2025, 11, 20)
DAYS = 130  # to the end of March 2026


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as made:
        yield made


async def _ecb_rates(pool: asyncpg.Pool, generator: random.Random) -> None:
    """Rates of EUR in USD, GBP and JPY on weekdays, some of them missing."""
    published = [
        rates.Rate(day, "EUR", quote, Decimal(generator.randint(5000, 20000)) * scale)
        for day in (FIRST_DAY + timedelta(days=n) for n in range(DAYS))
        if day.weekday() < 5 and generator.random() < 0.9
        for quote, scale in (("USD", Decimal("0.0001")), ("GBP", Decimal("0.00008")), ("JPY", 1))
    ]
    async with pool.acquire() as connection:
        await rates.store(connection, published, source="ecb")


async def _at_home_in_euros(client: httpx.AsyncClient) -> tuple[Account, str]:
    """A new account whose home currency is EUR, and its user id."""
    account = await signed_up(client)
    user_id = (await client.get("/api/v1/auth/me", headers=account.headers)).json()["id"]
    home = {"currency": "EUR"}
    await client.put("/api/v1/expenses/home-currency", json=home, headers=account.headers)
    return account, user_id


async def _reports(client: httpx.AsyncClient, account: Account) -> dict:
    """Every converted report that may read the kept totals: summaries of whole and partial
    months, by category and by month, trends, and the converted budgets' status."""
    answers = {}
    for name, path, params in (
        ("year by category", "summary", {"from": "2025-11-01", "to": "2026-03-31"}),
        ("partial by category", "summary", {"from": "2025-12-10", "to": "2026-02-20"}),
        ("by month", "summary", {"from": "2025-12-01", "to": "2026-02-28", "group_by": "month"}),
        ("by tag", "summary", {"from": "2025-12-01", "to": "2026-02-28", "group_by": "tag"}),
        ("trends", "trends", {"month": "2026-03", "months": 5}),
        ("budgets", "budgets", {"month": "2026-02"}),
    ):
        params = params if path == "budgets" else {"in": "home", **params}
        response = await client.get(
            f"/api/v1/reports/{path}", params=params, headers=account.headers
        )
        assert response.status_code == 200, (name, response.text)
        answers[name] = response.json()
    return answers


async def _made_again(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as connection:
        return await conversion.refresh_all(connection, max_age=MAX_AGE)


async def _kept(pool: asyncpg.Pool, user_id: str, target: str | None = None) -> int:
    return await pool.fetchval(
        "SELECT count(*) FROM reports.converted_months WHERE user_id = $1::uuid "
        "AND target = coalesce($2, target)",
        user_id,
        target,
    )


async def _check(client: httpx.AsyncClient, account: Account, pool: asyncpg.Pool) -> None:
    """What the reports answer now (with kept totals, some of them stale) equals what they
    answer with none kept, and with all of them made again."""
    now = await _reports(client, account)
    await pool.execute("DELETE FROM reports.converted_months")
    assert await _reports(client, account) == now
    assert await _made_again(pool) > 0
    assert await _reports(client, account) == now


async def test_reports_read_kept_totals_only_while_they_are_fresh(
    serve_app: AppFactory, pool: asyncpg.Pool
) -> None:
    generator = random.Random(15)
    await _ecb_rates(pool, generator)
    async with serve_app(
        rates_max_age_days=MAX_AGE, converted_refresh_interval_seconds=3600
    ) as client:
        account, user_id = await _at_home_in_euros(client)
        named = await categories(client, account)
        choices = [None, named["Groceries"], named["Food"], named["Transport"]]
        made = []
        for _ in range(80):
            currency = generator.choice(["EUR", "EUR", "USD", "GBP", "JPY"])
            amount = (
                str(generator.randint(1, 90000))
                if currency == "JPY"
                else f"{generator.randint(1, 900)}.{generator.randint(0, 99):02d}"
            )
            day = FIRST_DAY + timedelta(days=generator.randint(10, DAYS - 1))
            fields = {"category_id": generator.choice(choices)}
            if generator.random() < 0.3:
                fields["tags"] = [generator.choice(["trip", "work"])]
            if currency != "EUR" and generator.random() < 0.15:
                fields |= {"charged_amount": "12.34", "charged_currency": "EUR"}
            made.append(
                await create(
                    client,
                    account,
                    amount=amount,
                    currency=currency,
                    occurred_on=str(day),
                    **fields,
                )
            )
        await budget(client, account, name="All", amount="500.00", converted=True)
        await budget(
            client, account, name="Food", category_id=named["Food"], amount="90", converted=True
        )
        in_usd = await budget(client, account, name="In USD", currency="USD", converted=True)

        cold = await _reports(client, account)
        assert await _made_again(pool) > 0
        assert await _kept(pool, user_id) > 0
        assert await _reports(client, account) == cold
        # Nothing changed: nothing to make again.
        assert await _made_again(pool) == 0

        # They are read: a kept total altered by hand shows (then is made again).
        altered = await pool.fetchrow(
            "UPDATE reports.converted_month_totals SET total_minor = total_minor + 1 "
            "WHERE ctid = (SELECT ctid FROM reports.converted_month_totals WHERE user_id = $1 "
            "AND target = 'EUR' AND month = '2026-02-01' AND how = 2 LIMIT 1) "
            "RETURNING currency",
            user_id,
        )
        assert altered is not None
        year = (await _reports(client, account))["year by category"]["total"]["amount"]
        assert Decimal(year) == Decimal(cold["year by category"]["total"]["amount"]) + Decimal(
            "0.01"
        )
        await pool.execute("DELETE FROM reports.converted_months WHERE user_id = $1::uuid", user_id)
        await _made_again(pool)
        assert await _reports(client, account) == cold

        # Expenses added, moved, recategorised, deleted.
        await spend(client, account, "33.33", "USD", "2026-01-14", category_id=named["Food"])
        await _check(client, account, pool)
        foreign = [e for e in made if e["currency"] != "EUR"]
        await client.patch(
            f"/api/v1/expenses/{foreign[0]['id']}",
            json={"occurred_on": "2026-02-02", "category_id": named["Transport"]},
            headers=account.headers,
        )
        await _check(client, account, pool)
        for expense in foreign[1:4]:
            deleted = await client.delete(
                f"/api/v1/expenses/{expense['id']}", headers=account.headers
            )
            assert deleted.status_code == 204
        await _check(client, account, pool)

        # Rates: the user's own added, everyone's changed, added and removed.
        await put_rate(client, account, date(2026, 1, 14), "USD", "EUR", "0.5")
        await _check(client, account, pool)
        async with pool.acquire() as connection:
            await rates.store(
                connection,
                [rates.Rate(date(2026, 2, 3), "EUR", "GBP", Decimal("0.5"))],
                source="ecb",
            )
            await _check(client, account, pool)
            await rates.store(
                connection,
                [rates.Rate(date(2026, 2, 7), "EUR", "JPY", Decimal("100"))],
                source="frankfurter",
            )
            await _check(client, account, pool)
            await connection.execute(
                "DELETE FROM expenses.rates WHERE day = '2026-03-02' AND quote = 'USD'"
            )
            await _check(client, account, pool)

        # Another home currency: totals in it, and the euros' dropped.
        await client.put(
            "/api/v1/expenses/home-currency", json={"currency": "GBP"}, headers=account.headers
        )
        await _check(client, account, pool)
        assert await _kept(pool, user_id, "GBP") > 0
        # The euros' stay for the converted budgets in euros; the dollars' go with theirs.
        assert await _kept(pool, user_id, "EUR") > 0
        removed = await client.delete(f"/api/v1/budgets/{in_usd['id']}", headers=account.headers)
        assert removed.status_code == 204
        await _made_again(pool)
        assert await _kept(pool, user_id, "USD") == 0

        # A deleted user's totals go with them.
        deleted = await client.request(
            "DELETE", "/api/v1/auth/me", json={"password": PASSWORD}, headers=account.headers
        )
        assert deleted.status_code == 204
        assert await _kept(pool, user_id) > 0
        await app_state(app_of(client)).user_events["reports"].run_once()
        assert await _kept(pool, user_id) == 0


async def test_a_month_changed_back_to_the_sum_of_its_revisions_is_not_fresh(
    serve_app: AppFactory, pool: asyncpg.Pool
) -> None:
    """A revision handed out before the refresh's snapshot may be committed after it. Here a
    change of A and a new D are under way while B is added and the month is kept; once they
    are committed and B is deleted (its row goes), the month's revisions add up to the sum
    and the count kept, with A, B and D all changed. Kept by those, the month was read as
    fresh: 10 + 30 USD at 0.5 where the expenses say 20 + 40 USD, and for good."""
    async with serve_app(
        rates_max_age_days=MAX_AGE, converted_refresh_interval_seconds=3600
    ) as client:
        account, user_id = await _at_home_in_euros(client)
        await put_rate(client, account, date(2025, 6, 3), "USD", "EUR", "0.5")
        named = await categories(client, account)
        a, b, d = named["Groceries"], named["Transport"], named["Rent"]
        first = await create(
            client, account, amount="10.00", currency="USD", occurred_on="2025-06-03", category_id=a
        )
        revision = (
            "SELECT revision FROM expenses.monthly_totals "
            "WHERE user_id = $1::uuid AND category_id = $2::uuid"
        )
        async with pool.acquire() as under_way, under_way.transaction():
            a_before = await pool.fetchval(revision, user_id, a)
            await under_way.execute(
                "UPDATE expenses.expenses SET amount_minor = 2000 WHERE id = $1::uuid",
                first["id"],
            )
            await under_way.execute(
                "INSERT INTO expenses.expenses (user_id, id, amount_minor, currency, "
                "currency_exponent, occurred_on, description, category_id) VALUES "
                "($1::uuid, gen_random_uuid(), 4000, 'USD', 2, '2025-06-04', 'D', $2::uuid)",
                user_id,
                d,
            )
            a_after = await under_way.fetchval(revision, user_id, a)
            # B's revision is then the one that makes the sums meet.
            b_revision = a_after - a_before + await under_way.fetchval(revision, user_id, d)
            await pool.execute("SELECT setval('expenses.revisions', $1)", b_revision - 1)
            added = await create(
                client,
                account,
                amount="30.00",
                currency="USD",
                occurred_on="2025-06-05",
                category_id=b,
            )
            assert await pool.fetchval(revision, user_id, b) == b_revision
            assert await _made_again(pool) == 1
        deleted = await client.delete(f"/api/v1/expenses/{added['id']}", headers=account.headers)
        assert deleted.status_code == 204
        summary = await client.get(
            "/api/v1/reports/summary",
            params={"from": "2025-06-01", "to": "2025-06-30", "in": "home"},
            headers=account.headers,
        )
        assert summary.json()["total"]["amount"] == "30.00"
        assert await _made_again(pool) == 1  # the job sees it too


async def test_a_rate_revision_changes_with_the_rates_of_its_months_only(
    pool: asyncpg.Pool,
) -> None:
    """Rates written again with the same values leave the revisions; a changed, added or removed
    rate gives a larger one to each month its day may serve (up to 366 days on), and no other."""
    first, second = date(2030, 1, 15), date(2032, 1, 15)
    rates_of = [rates.Rate(day, "EUR", "USD", Decimal("1.1")) for day in (first, second)]
    revisions = "SELECT month, revision FROM expenses.rate_revisions_v1 WHERE month >= '2030-01-01'"
    # The months each day may serve: its own to that of the day 366 days on.
    served = {
        day: {add_months(day.replace(day=1), n) for n in range(13)} for day in (first, second)
    }
    assert all((day + timedelta(days=366)).replace(day=1) in served[day] for day in served)
    async with pool.acquire() as connection:
        await rates.store(connection, rates_of, source="ecb")
        before = dict(await connection.fetch(revisions))
        assert set(before) == served[first] | served[second]
        await rates.store(connection, rates_of, source="ecb")
        assert dict(await connection.fetch(revisions)) == before
        await rates.store(
            connection, [rates.Rate(second, "EUR", "USD", Decimal("1.2"))], source="ecb"
        )
        after = dict(await connection.fetch(revisions))
        assert all(after[month] == before[month] for month in served[first])
        assert all(after[month] > max(before.values()) for month in served[second])
        await connection.execute("DELETE FROM expenses.rates WHERE day = $1", first)
        removed = dict(await connection.fetch(revisions))
        assert all(removed[month] > max(after.values()) for month in served[first])
        assert all(removed[month] == after[month] for month in served[second])


async def test_a_rate_revision_never_goes_down_when_writers_meet(pool: asyncpg.Pool) -> None:
    """A rate's writer that waits on another transaction's lock on a month's revision writes a
    number drawn after that transaction's, not the one it drew before it waited: the month's
    revision only grows, whatever order the two commit in (expenses migration 0017)."""
    day, month = date(2030, 3, 10), date(2030, 3, 1)
    revision = "SELECT revision FROM expenses.rate_revisions WHERE month = $1 AND user_id IS NULL"
    async with pool.acquire() as holder, pool.acquire() as writer:
        await rates.store(holder, [rates.Rate(day, "EUR", "USD", Decimal("1.1"))], source="ecb")
        transaction = holder.transaction()
        await transaction.start()
        await holder.fetchval(revision + " FOR UPDATE", month)
        # The writer's trigger draws its number, then waits for the holder's lock on the month.
        changed = rates.Rate(day, "EUR", "USD", Decimal("1.2"))
        writing = asyncio.create_task(rates.store(writer, [changed], source="ecb"))
        # pg_locks, not pg_stat_activity: that one is read once per transaction.
        waiting = "SELECT EXISTS (SELECT FROM pg_locks WHERE pid = $1 AND NOT granted)"
        for _ in range(600):  # up to 30 s, for a loaded machine
            if await holder.fetchval(waiting, writer.get_server_pid()):
                break
            await asyncio.sleep(0.05)
        assert await holder.fetchval(waiting, writer.get_server_pid())
        held = await holder.fetchval(
            "UPDATE expenses.rate_revisions SET revision = nextval('expenses.revisions') "
            "WHERE month = $1 AND user_id IS NULL RETURNING revision",
            month,
        )
        await transaction.commit()
        await writing
        assert await holder.fetchval(revision, month) > held


async def _job_waiting_on_lock(pool: asyncpg.Pool) -> bool:
    return bool(
        await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND application_name = 'expensetracker-reports-converted-months'"
        )
    )


async def test_requests_are_served_while_the_refresh_runs(
    serve_app: AppFactory, pool: asyncpg.Pool
) -> None:
    """The refresh job runs on a connection of its own: with one pooled connection, and the job
    held up inside its run (a lock on the kept totals that its writes wait for), reports are
    answered as usual, not after the pool's timeout (503)."""
    async with pool.acquire() as holder, holder.transaction():
        # Readers pass a SHARE lock; the job's DELETE waits for it.
        await holder.execute("LOCK TABLE reports.converted_months IN SHARE MODE")
        async with serve_app(
            db_pool_size=1, db_max_overflow=0, db_pool_timeout_seconds=3
        ) as client:
            for _ in range(100):
                if await _job_waiting_on_lock(pool):
                    break
                await asyncio.sleep(0.05)
            assert await _job_waiting_on_lock(pool)
            account = await signed_up(client)
            await spend(client, account, "12.50", "EUR", "2026-04-02")
            for params in ({}, {"in": "home"}):
                response = await client.get(
                    "/api/v1/reports/summary",
                    params={"from": "2026-04-01", "to": "2026-04-30", **params},
                    headers=account.headers,
                )
                assert response.status_code == 200, response.text
                assert "12.50" in response.text
            assert await _job_waiting_on_lock(pool)
