"""Recurring expenses: occurrence dates, materialised when due, never twice."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date, timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from expensetracker.expenses.recurring import (
    MAX_OCCURRENCES_PER_REQUEST,
    MAX_RULES_PER_USER,
    materialise_due,
    occurrence,
    run_maintenance,
)
from expensetracker.platform.db import async_url
from tests.helpers.database import connected, until_waiting_on_locks
from tests.helpers.processes import clean_env, cli, spawn
from tests.helpers.users import Account, signed_up


@pytest.mark.parametrize(
    ("starts_on", "frequency", "expected"),
    [
        (date(2026, 1, 31), "monthly", [date(2026, 1, 31), date(2026, 2, 28), date(2026, 3, 31)]),
        (date(2027, 12, 31), "monthly", [date(2027, 12, 31), date(2028, 1, 31), date(2028, 2, 29)]),
        (date(2024, 2, 29), "yearly", [date(2024, 2, 29), date(2025, 2, 28), date(2026, 2, 28)]),
        (date(2026, 12, 28), "weekly", [date(2026, 12, 28), date(2027, 1, 4), date(2027, 1, 11)]),
    ],
)
def test_occurrences_keep_their_day(starts_on: date, frequency: str, expected: list[date]) -> None:
    assert [occurrence(starts_on, frequency, n) for n in range(3)] == expected


async def rule(client: httpx.AsyncClient, account: Account, **fields) -> httpx.Response:
    body = {"amount": "9.99", "currency": "EUR", "description": "Streaming", "frequency": "weekly"}
    return await client.post(
        "/api/v1/expenses/recurring", json={**body, **fields}, headers=account.headers
    )


async def occurrences(database_url: str, user_id: str) -> list[date]:
    async with connected(database_url) as connection:
        rows = await connection.fetch(
            "SELECT occurred_on FROM expenses.expenses WHERE user_id = $1::uuid "
            "AND external_id LIKE 'recurring:%' ORDER BY occurred_on",
            user_id,
        )
    return [row[0] for row in rows]


@pytest.mark.database
async def test_due_occurrences_are_created_once(
    client: httpx.AsyncClient, database_url: str
) -> None:
    account = await signed_up(client)
    user_id = (await client.get("/api/v1/auth/me", headers=account.headers)).json()["id"]
    today = date.today()
    starts_on = today - timedelta(weeks=3)
    tags = ["tv", "news", "TV"]  # two spellings of one tag: one tag, spelt first as given
    response = await rule(client, account, starts_on=starts_on.isoformat(), tags=tags)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["tags"] == ["tv", "news"]
    assert created["next_due_on"] == (starts_on + timedelta(weeks=4)).isoformat()
    expected = [starts_on + timedelta(weeks=n) for n in range(4)]
    assert await occurrences(database_url, user_id) == expected

    engine = create_async_engine(async_url(database_url))
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    try:
        # Twice, and concurrently: nothing is created twice.
        await asyncio.gather(
            run_maintenance(sessionmaker, today=today), run_maintenance(sessionmaker, today=today)
        )
        assert await occurrences(database_url, user_id) == expected
        # A crash after creating but before advancing the rule: still nothing twice.
        async with connected(database_url) as connection:
            await connection.execute(
                "UPDATE expenses.recurring_rules SET done = 0, next_due_on = starts_on"
            )
        async with sessionmaker() as session:
            assert await materialise_due(session, today=today) == 0
        assert await occurrences(database_url, user_id) == expected
        # Two weeks later, two more.
        async with sessionmaker() as session:
            assert await materialise_due(session, today=today + timedelta(weeks=2)) == 2
    finally:
        await engine.dispose()
    assert len(await occurrences(database_url, user_id)) == 6
    listed = (
        await client.get("/api/v1/expenses", params={"tag": "tv"}, headers=account.headers)
    ).json()["items"]
    assert len(listed) == 6 and listed[0]["amount"] == "9.99"


@pytest.mark.database
async def test_rules_end_and_can_be_deleted(client: httpx.AsyncClient, database_url: str) -> None:
    account, other = await signed_up(client), await signed_up(client)
    user_id = (await client.get("/api/v1/auth/me", headers=account.headers)).json()["id"]
    today = date.today()
    response = await rule(
        client,
        account,
        frequency="monthly",
        starts_on=(today - timedelta(days=366)).isoformat(),
        ends_on=(today - timedelta(days=166)).isoformat(),
    )
    assert response.status_code == 201
    body = response.json()
    assert body["next_due_on"] is None
    assert len(await occurrences(database_url, user_id)) in (6, 7, 8)
    path = f"/api/v1/expenses/recurring/{body['id']}"
    assert (await client.delete(path, headers=other.headers)).status_code == 404
    listed = (await client.get("/api/v1/expenses/recurring", headers=account.headers)).json()
    assert [item["id"] for item in listed["items"]] == [body["id"]]
    assert (await client.delete(path, headers=account.headers)).status_code == 204
    assert (await client.delete(path, headers=account.headers)).status_code == 404
    assert len(await occurrences(database_url, user_id)) in (6, 7, 8)  # created ones stay


@pytest.mark.database
@pytest.mark.parametrize(
    "change",
    [
        {"frequency": "daily"},
        {"ends_on": "2020-01-01", "starts_on": "2021-01-01"},
        {"starts_on": "1970-01-01"},  # would create 400 expenses and more at every run
        {"starts_on": (date.today() - timedelta(days=367)).isoformat()},
        {"amount": "1.001"},
        {"category_id": str(uuid.uuid4())},
    ],
)
async def test_invalid_rules_are_422(client: httpx.AsyncClient, change: dict) -> None:
    account = await signed_up(client)
    start = (date.today() - timedelta(days=30)).isoformat()
    response = await rule(client, account, **{"starts_on": start, **change})
    assert response.status_code == 422, response.text


@pytest.mark.database
async def test_run_jobs_command(client: httpx.AsyncClient, database_url: str) -> None:
    account = await signed_up(client)
    await rule(client, account, starts_on=date.today().isoformat())
    with spawn(
        cli("expenses", "run-jobs"), clean_env(EXPENSETRACKER_DATABASE_URL=database_url)
    ) as job:
        assert await asyncio.to_thread(job.wait, 60) == 0, job.output
    assert "recurring expenses created: 0" in job.output  # already created with the rule


@pytest.mark.database
async def test_one_request_and_one_run_create_a_bounded_number_of_expenses(
    client: httpx.AsyncClient, database_url: str
) -> None:
    account = await signed_up(client)
    user_id = (await client.get("/api/v1/auth/me", headers=account.headers)).json()["id"]
    today = date.today()
    # The earliest start allowed, weekly: 53 occurrences at once, within the request's bound.
    response = await rule(client, account, starts_on=(today - timedelta(days=366)).isoformat())
    assert response.status_code == 201, response.text
    assert 52 <= len(await occurrences(database_url, user_id)) <= MAX_OCCURRENCES_PER_REQUEST
    # Ten rules whose occurrences were never created (an outage): one run creates at most its
    # limit, and the runs after it go on where it stopped, without creating anything twice.
    for _ in range(9):
        assert (await rule(client, account, starts_on=today.isoformat())).status_code == 201
    async with connected(database_url) as connection:
        await connection.execute(
            "DELETE FROM expenses.expenses WHERE user_id = $1::uuid", uuid.UUID(user_id)
        )
        await connection.execute(
            "UPDATE expenses.recurring_rules SET starts_on = $1, done = 0, next_due_on = $1",
            today - timedelta(weeks=52),
        )
    engine = create_async_engine(async_url(database_url))
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    runs = []
    try:
        while True:
            async with sessionmaker() as session:
                created = await materialise_due(session, today=today, limit=200)
            if not created:
                break
            runs.append(created)
    finally:
        await engine.dispose()
    assert runs == [200, 200, 130]  # 10 rules x 53 weeks, 200 at most per run
    assert len(await occurrences(database_url, user_id)) == 530


@pytest.mark.database
async def test_rules_per_user_are_capped(client: httpx.AsyncClient) -> None:
    account, other = await signed_up(client), await signed_up(client)
    today = date.today().isoformat()
    for _ in range(MAX_RULES_PER_USER):
        assert (await rule(client, account, starts_on=today)).status_code == 201
    refused = await rule(client, account, starts_on=today)
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert (await rule(client, other, starts_on=today)).status_code == 201


@pytest.mark.database
async def test_a_category_deleted_while_its_occurrence_is_created(
    client: httpx.AsyncClient, database_url: str
) -> None:
    """The job locks a due rule, then writes an expense in its category; the deletion of that
    category locks the category, then clears the rule's. In that order both would wait for the
    other, and PostgreSQL would end one of them, a 500 or a failed run: the job holds the
    category first, so the deletion waits for it and then clears the new expense's as well."""
    account = await signed_up(client)
    user_id = uuid.UUID((await client.get("/api/v1/auth/me", headers=account.headers)).json()["id"])
    category = await client.post(
        "/api/v1/categories", json={"name": "Subscriptions"}, headers=account.headers
    )
    today = date.today()
    created = await rule(
        client, account, starts_on=today.isoformat(), category_id=category.json()["id"]
    )
    assert created.status_code == 201, created.text
    rule_id = uuid.UUID(created.json()["id"])
    engine = create_async_engine(async_url(database_url))
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    try:
        async with connected(database_url) as holder:
            # Today's occurrence is due again, and an uncommitted row holds its external id:
            # the job, with the rule locked, waits for it.
            await holder.execute("DELETE FROM expenses.expenses WHERE user_id = $1", user_id)
            await holder.execute(
                "UPDATE expenses.recurring_rules SET done = 0, next_due_on = starts_on "
                "WHERE id = $1",
                rule_id,
            )
            transaction = holder.transaction()
            await transaction.start()
            await holder.execute(
                "INSERT INTO expenses.expenses (user_id, id, amount_minor, currency, "
                "currency_exponent, occurred_on, description, external_id) "
                "VALUES ($1, $2, 999, 'EUR', 2, $3, 'Streaming', $4)",
                user_id,
                uuid.uuid4(),
                today,
                f"recurring:{rule_id}:{today.isoformat()}",
            )

            async def run_job() -> int:
                async with sessionmaker() as session:
                    return await materialise_due(session, today=today)

            job = asyncio.create_task(run_job())
            await until_waiting_on_locks(database_url, 1)
            deletion = asyncio.create_task(
                client.delete(
                    f"/api/v1/categories/{category.json()['id']}", headers=account.headers
                )
            )
            await until_waiting_on_locks(database_url, 2)
            await transaction.rollback()
            deleted, made = await asyncio.gather(deletion, job)
    finally:
        await engine.dispose()
    assert deleted.status_code == 204, deleted.text
    assert made == 1
    async with connected(database_url) as connection:
        categories = await connection.fetch(
            "SELECT category_id FROM expenses.expenses WHERE user_id = $1 "
            "UNION ALL SELECT category_id FROM expenses.recurring_rules WHERE id = $2",
            user_id,
            rule_id,
        )
    assert [row[0] for row in categories] == [None, None]
