"""Idempotency-Key on creating POSTs: replays, mismatches, concurrency, scope, expiry."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from tests.helpers.database import connected
from tests.helpers.expenses import VALID, expense_count
from tests.helpers.users import signed_up

pytestmark = pytest.mark.database


async def test_same_key_and_body_replays_without_creating(
    client: httpx.AsyncClient, database_url: str
) -> None:
    account = await signed_up(client)
    headers = {**account.headers, "Idempotency-Key": "order-42"}
    first = await client.post("/api/v1/expenses", json=VALID, headers=headers)
    # Same body, other key order: the same request.
    again = await client.post(
        "/api/v1/expenses", json=dict(reversed(VALID.items())), headers=headers
    )
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await expense_count(database_url) == 1


async def test_same_key_with_another_body_is_a_422(
    client: httpx.AsyncClient, database_url: str
) -> None:
    account = await signed_up(client)
    headers = {**account.headers, "Idempotency-Key": "k-1"}
    await client.post("/api/v1/expenses", json=VALID, headers=headers)
    other = await client.post(
        "/api/v1/expenses", json={**VALID, "amount": "99.99"}, headers=headers
    )
    assert other.status_code == 422
    assert other.json()["errors"][0]["type"] == "idempotency_key_reused"
    assert await expense_count(database_url) == 1


async def test_concurrent_retries_create_once(client: httpx.AsyncClient, database_url: str) -> None:
    account = await signed_up(client)
    headers = {**account.headers, "Idempotency-Key": "double-click"}
    answers = await asyncio.gather(
        *[client.post("/api/v1/expenses", json=VALID, headers=headers) for _ in range(6)]
    )
    statuses = [answer.status_code for answer in answers]
    fresh = [a for a in answers if a.status_code == 201 and "idempotent-replayed" not in a.headers]
    assert set(statuses) <= {201, 409}
    assert len(fresh) == 1
    for answer in answers:
        if answer.status_code == 201:
            assert answer.json() == fresh[0].json()
        else:
            assert answer.headers["content-type"] == "application/problem+json"
    assert await expense_count(database_url) == 1


async def test_keys_are_scoped_to_the_user(client: httpx.AsyncClient, database_url: str) -> None:
    ann, bob = await signed_up(client), await signed_up(client)
    for account in (ann, bob):
        response = await client.post(
            "/api/v1/expenses", json=VALID, headers={**account.headers, "Idempotency-Key": "same"}
        )
        assert response.status_code == 201
        assert "idempotent-replayed" not in response.headers
    assert await expense_count(database_url) == 2


async def test_a_failed_request_does_not_use_up_its_key(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    headers = {**account.headers, "Idempotency-Key": "retry-me"}
    foreign = {**VALID, "category_id": str(uuid.uuid4())}
    assert (await client.post("/api/v1/expenses", json=foreign, headers=headers)).status_code == 422
    assert (await client.post("/api/v1/expenses", json=VALID, headers=headers)).status_code == 201


async def test_keys_expire_after_24_hours(client: httpx.AsyncClient, database_url: str) -> None:
    account = await signed_up(client)
    headers = {**account.headers, "Idempotency-Key": "yesterday"}
    await client.post("/api/v1/expenses", json=VALID, headers=headers)
    async with connected(database_url) as connection:
        await connection.execute(
            "UPDATE expenses.idempotency_keys SET created_at = now() - interval '25 hours'"
        )
    later = await client.post("/api/v1/expenses", json=VALID, headers=headers)
    assert later.status_code == 201
    assert "idempotent-replayed" not in later.headers
    assert await expense_count(database_url) == 2


@pytest.mark.parametrize("key", ["", "x" * 256, "with space", "tab\there"])
async def test_malformed_keys_are_refused(client: httpx.AsyncClient, key: str) -> None:
    account = await signed_up(client)
    response = await client.post(
        "/api/v1/expenses", json=VALID, headers={**account.headers, "Idempotency-Key": key}
    )
    assert response.status_code == 422


async def test_two_keys_in_one_request_are_refused(
    client: httpx.AsyncClient, database_url: str
) -> None:
    """Which of two keys would the request be retried under? Neither: a 422, nothing created."""
    account = await signed_up(client)
    headers = [
        *account.headers.items(),
        ("Idempotency-Key", "first"),
        ("Idempotency-Key", "second"),
    ]
    response = await client.post("/api/v1/expenses", json=VALID, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["errors"] == [
        {"field": "header.Idempotency-Key", "message": "must be given once", "type": "repeated"}
    ]
    assert await expense_count(database_url) == 0


async def test_categories_take_idempotency_keys_too(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    headers = {**account.headers, "Idempotency-Key": "cat-1"}
    first = await client.post("/api/v1/categories", json={"name": "Pets"}, headers=headers)
    again = await client.post("/api/v1/categories", json={"name": "Pets"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
