"""A deleted account takes all its data with it, in every service, and nothing of anyone else's;
and the read contract is all another service's role may see."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta

import asyncpg
import httpx
import pytest

from expensetracker.platform.migrations import upgrade
from expensetracker.platform.state import app_state
from expensetracker.targets import SERVICES
from tests.helpers.apps import app_of
from tests.helpers.database import connected
from tests.helpers.expenses import create
from tests.helpers.users import PASSWORD, Account, signed_up

pytestmark = pytest.mark.database

# Every table of the expenses schema that holds a user's rows; populate() fills each.
USER_TABLES = (
    "owners",
    "categories",
    "tags",
    "expenses",
    "expense_tags",
    "monthly_totals",
    "idempotency_keys",
    "recurring_rules",
    "categorisation_rules",
    "rates",
    "rate_revisions",
)


async def rows_of(database_url: str, user_id: str) -> dict[str, int]:
    async with connected(database_url) as connection:
        return {
            table: await connection.fetchval(
                f"SELECT count(*) FROM expenses.{table} WHERE user_id = $1::uuid", user_id
            )
            for table in USER_TABLES
        }


async def populate(client: httpx.AsyncClient, account: Account) -> str:
    await create(client, account, tags=["a", "b"])
    await client.post(
        "/api/v1/expenses/recurring",
        json={
            "amount": "5",
            "currency": "EUR",
            "description": "gym",
            "frequency": "monthly",
            "starts_on": (date.today() - timedelta(days=30)).isoformat(),
        },
        headers=account.headers,
    )
    await client.post(
        "/api/v1/expenses",
        json={"amount": "1", "currency": "JPY", "occurred_on": "2026-01-01", "description": "x"},
        headers={**account.headers, "Idempotency-Key": "k"},
    )
    for method, path, body in (
        ("POST", "/api/v1/expenses/rules", {"pattern": "coffee", "tags": ["c"]}),
        ("PUT", "/api/v1/expenses/rates/2026-01-01/JPY/EUR", {"rate": "0.0061"}),
        ("PUT", "/api/v1/expenses/home-currency", {"currency": "EUR"}),
    ):
        response = await client.request(method, path, json=body, headers=account.headers)
        assert response.status_code < 300, response.text
    return (await client.get("/api/v1/auth/me", headers=account.headers)).json()["id"]


async def test_deleting_an_account_deletes_its_expenses_data_only(
    client: httpx.AsyncClient, database_url: str
) -> None:
    gone, kept = await signed_up(client), await signed_up(client)
    gone_id, kept_id = await populate(client, gone), await populate(client, kept)
    kept_before = await rows_of(database_url, kept_id)
    assert all(kept_before.values())

    response = await client.request(
        "DELETE", "/api/v1/auth/me", json={"password": PASSWORD}, headers=gone.headers
    )
    assert response.status_code == 204
    await app_state(app_of(client)).user_events["expenses"].run_once()

    assert await rows_of(database_url, gone_id) == dict.fromkeys(USER_TABLES, 0)
    assert await rows_of(database_url, kept_id) == kept_before
    # The position moved on: running again applies nothing more.
    assert await app_state(app_of(client)).user_events["expenses"].run_once() == 0


async def test_a_consumer_that_was_down_catches_up(
    client: httpx.AsyncClient, database_url: str
) -> None:
    accounts = [await signed_up(client) for _ in range(3)]
    ids = [await populate(client, account) for account in accounts]
    for account in accounts:
        await client.request(
            "DELETE", "/api/v1/auth/me", json={"password": PASSWORD}, headers=account.headers
        )
    await app_state(app_of(client)).user_events["expenses"].run_once()
    for user_id in ids:
        assert sum((await rows_of(database_url, user_id)).values()) == 0


async def test_reports_role_reads_the_contract_and_nothing_else(
    client: httpx.AsyncClient, database_url: str
) -> None:
    account = await signed_up(client)
    await populate(client, account)
    async with connected(database_url) as connection:
        await connection.execute(
            """
            DO $$ BEGIN
              IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'expensetracker_reports') THEN
                CREATE ROLE expensetracker_reports NOLOGIN;
              END IF;
            END $$;
            GRANT expensetracker_reports TO CURRENT_USER;
            """
        )
        # `migrate` grants the contract to the roles that exist, every time it runs.
        for name in ("auth", "expenses"):
            await asyncio.to_thread(upgrade, SERVICES[name], database_url)
        await connection.execute("SET ROLE expensetracker_reports")
        spending = await connection.fetchval("SELECT count(*) FROM expenses.spending_v1")
        tags = await connection.fetchval("SELECT count(*) FROM expenses.expense_tags_v1")
        events = await connection.fetchval("SELECT count(*) FROM auth.user_events_v1")
        denied = []
        for statement in (
            "SELECT count(*) FROM expenses.expenses",
            "SELECT count(*) FROM auth.users",
            "DELETE FROM expenses.categories_v1",  # updatable view, but SELECT only
        ):
            try:
                await connection.execute(statement)
            except asyncpg.InsufficientPrivilegeError:
                denied.append(statement)
    assert spending >= 2 and tags == 2 and events == 0
    assert len(denied) == 3


async def test_a_deleted_account_creates_nothing_with_its_still_valid_token(
    client: httpx.AsyncClient, database_url: str
) -> None:
    account = await signed_up(client)
    user_id = await populate(client, account)
    await client.post(
        "/api/v1/budgets",
        json={"name": "food", "amount": "100", "currency": "EUR"},
        headers=account.headers,
    )
    response = await client.request(
        "DELETE", "/api/v1/auth/me", json={"password": PASSWORD}, headers=account.headers
    )
    assert response.status_code == 204
    await app_state(app_of(client)).user_events["expenses"].run_once()
    await app_state(app_of(client)).user_events["reports"].run_once()

    # The access token is still within its lifetime: every way to create an owner row, or
    # anything of the user, answers 401.
    expense = {"amount": "1", "currency": "EUR", "occurred_on": "2026-01-01", "description": "x"}
    rule = {"amount": "1", "currency": "EUR", "description": "x", "frequency": "weekly"}
    attempts = [
        ("GET", "/api/v1/categories", {}),
        ("POST", "/api/v1/categories", {"json": {"name": "again"}}),
        ("POST", "/api/v1/expenses", {"json": expense}),
        (
            "POST",
            "/api/v1/expenses/recurring",
            {"json": {**rule, "starts_on": (date.today() - timedelta(days=30)).isoformat()}},
        ),
        (
            "POST",
            "/api/v1/expenses/import",
            {
                "content": b"occurred_on,amount,currency,description\n2026-01-01,1,EUR,x\n",
                "headers": {"Content-Type": "text/csv"},
            },
        ),
        ("POST", "/api/v1/budgets", {"json": {"name": "b", "amount": "1", "currency": "EUR"}}),
        ("POST", "/api/v1/expenses/rules", {"json": {"pattern": "again"}}),
        ("PUT", "/api/v1/expenses/rates/2026-01-02/JPY/EUR", {"json": {"rate": "0.0062"}}),
        ("PUT", "/api/v1/expenses/home-currency", {"json": {"currency": "JPY"}}),
    ]
    for method, path, extra in attempts:
        headers = {**account.headers, **extra.pop("headers", {})}
        response = await client.request(method, path, headers=headers, **extra)
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json"

    assert await rows_of(database_url, user_id) == dict.fromkeys(USER_TABLES, 0)
    async with connected(database_url) as connection:
        budgets = await connection.fetchval(
            "SELECT count(*) FROM reports.budgets WHERE user_id = $1::uuid", user_id
        )
    assert budgets == 0
    # Applying the events again (another replica, a restart) changes nothing.
    await app_state(app_of(client)).user_events["expenses"].catch_up()
    assert await rows_of(database_url, user_id) == dict.fromkeys(USER_TABLES, 0)
