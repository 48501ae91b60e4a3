"""Categories of the expenses service: a default set per user, keyset pages, isolation."""

from __future__ import annotations

import asyncio
import base64

import httpx
import pytest

from expensetracker.expenses.owners import DEFAULT_CATEGORIES
from tests.helpers.users import signed_up

pytestmark = pytest.mark.database

DEFAULT_COUNT = len(DEFAULT_CATEGORIES) + sum(map(len, DEFAULT_CATEGORIES.values()))


async def all_pages(client: httpx.AsyncClient, headers: dict, limit: int) -> list[list[dict]]:
    pages, cursor = [], None
    while True:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/api/v1/categories", params=params, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


async def test_new_user_gets_the_default_categories_once(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    first = (await client.get("/api/v1/categories", headers=account.headers)).json()
    second = (await client.get("/api/v1/categories", headers=account.headers)).json()
    assert first == second
    assert first["next_cursor"] is None
    by_name = {item["name"]: item for item in first["items"]}
    assert len(by_name) == DEFAULT_COUNT
    assert by_name["Groceries"]["parent_id"] == by_name["Food"]["id"]
    assert by_name["Food"]["parent_id"] is None
    assert [item["name"] for item in first["items"]] == sorted(by_name)


async def test_concurrent_first_requests_create_the_defaults_once(
    client: httpx.AsyncClient,
) -> None:
    account = await signed_up(client)
    answers = await asyncio.gather(
        *[client.get("/api/v1/categories", headers=account.headers) for _ in range(4)]
    )
    assert {response.status_code for response in answers} == {200}
    assert {len(response.json()["items"]) for response in answers} == {DEFAULT_COUNT}


async def test_pages_cover_every_category_once_in_order(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    pages = await all_pages(client, account.headers, limit=4)
    names = [item["name"] for page in pages for item in page]
    assert len(pages) == -(-DEFAULT_COUNT // 4)
    assert all(len(page) == 4 for page in pages[:-1])
    assert names == sorted(names) and len(set(names)) == DEFAULT_COUNT


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 501},
        {"limit": "ten"},
        {"cursor": "not base64 at all!"},
        {"cursor": base64.urlsafe_b64encode(b'{"a": 1}').decode()},
        {"cursor": base64.urlsafe_b64encode(b"[1, 2]").decode()},
        {"cursor": base64.urlsafe_b64encode(b'["Food", "not-a-uuid"]').decode()},
        {"cursor": "x" * 600},
    ],
)
async def test_bad_limits_and_forged_cursors_are_422(
    client: httpx.AsyncClient, params: dict
) -> None:
    account = await signed_up(client)
    response = await client.get("/api/v1/categories", params=params, headers=account.headers)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_users_see_only_their_own_categories(client: httpx.AsyncClient) -> None:
    ann, bob = await signed_up(client), await signed_up(client)
    ann_ids = {
        c["id"]
        for c in (await client.get("/api/v1/categories", headers=ann.headers)).json()["items"]
    }
    bob_ids = {
        c["id"]
        for c in (await client.get("/api/v1/categories", headers=bob.headers)).json()["items"]
    }
    assert len(ann_ids) == len(bob_ids) == DEFAULT_COUNT
    assert not ann_ids & bob_ids
