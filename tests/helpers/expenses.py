"""Requests to the expenses service that many tests make (creating, listing categories,
importing CSV and bank statements, exporting) and what its tables hold."""

from __future__ import annotations

import uuid
from datetime import date

import httpx

from tests.helpers.database import connected
from tests.helpers.users import Account

VALID = {
    "amount": "12.34",
    "currency": "EUR",
    "occurred_on": "2026-03-15",
    "description": "Lunch with Sam",
}
HEADER = "occurred_on,amount,currency,description,notes,merchant,category,tags,external_id\n"


async def every_item(
    client: httpx.AsyncClient, account: Account, url: str, *, limit: int, **params: object
) -> list[dict]:
    """Every item of a list, page by page through next_cursor."""
    items: list[dict] = []
    query: dict[str, object] = {**params, "limit": limit}
    while True:
        response = await client.get(url, params=query, headers=account.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        items += page["items"]
        if page["next_cursor"] is None:
            return items
        query["cursor"] = page["next_cursor"]


async def create(client: httpx.AsyncClient, account: Account, **fields) -> dict:
    response = await client.post(
        "/api/v1/expenses", json={**VALID, **fields}, headers=account.headers
    )
    assert response.status_code == 201, response.text
    return response.json()


async def categories(client: httpx.AsyncClient, account: Account) -> dict[str, str]:
    listed = await client.get("/api/v1/categories", headers=account.headers)
    return {c["name"]: c["id"] for c in listed.json()["items"]}


def imported(*, rows: int, created: int, unchanged: int) -> dict[str, object]:
    """The answer of an import that kept what it did."""
    return {
        "format": "csv",
        "rows": rows,
        "created": created,
        "unchanged": unchanged,
        "skipped": 0,
        "dry_run": False,
        "preview": None,
    }


async def upload(
    client: httpx.AsyncClient,
    account: Account,
    content: str | bytes,
    *,
    dry_run: bool = False,
    key: str | None = None,
) -> httpx.Response:
    """A CSV import, under the Idempotency-Key ``key`` if given."""
    data = content.encode() if isinstance(content, str) else content
    keyed = {"Idempotency-Key": key} if key else {}
    return await client.post(
        "/api/v1/expenses/import",
        params={"dry_run": "true"} if dry_run else {},
        content=data,
        headers={**account.headers, "content-type": "text/csv", **keyed},
    )


async def upload_statement(
    client: httpx.AsyncClient,
    account: Account,
    content: bytes,
    *,
    content_type: str = "application/octet-stream",
    **params: str,
) -> httpx.Response:
    """A bank statement's import (OFX, QIF, CAMT.053, MT940), its format told by its content."""
    return await client.post(
        "/api/v1/expenses/import",
        params=params,
        content=content,
        headers={**account.headers, "content-type": content_type},
    )


async def export(client: httpx.AsyncClient, account: Account, **params) -> httpx.Response:
    response = await client.get("/api/v1/expenses/export", params=params, headers=account.headers)
    assert response.status_code == 200, response.text
    return response


async def expense_count(database_url: str, user_id: str | None = None) -> int:
    async with connected(database_url) as connection:
        if user_id is None:
            return await connection.fetchval("SELECT count(*) FROM expenses.expenses")
        return await connection.fetchval(
            "SELECT count(*) FROM expenses.expenses WHERE user_id = $1", uuid.UUID(user_id)
        )


# The monthly totals as the expenses say they must be, and as the published view has them.
EXPECTED = """
    SELECT date_trunc('month', occurred_on)::date AS month, category_id, currency,
           sum(amount_minor) AS total, count(*) AS n
    FROM expenses.expenses WHERE user_id = $1 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""
ACTUAL = """
    SELECT month, category_id, currency, total_minor AS total, expense_count AS n
    FROM expenses.monthly_spending_v1 WHERE user_id = $1 ORDER BY 1, 2, 3
"""


async def spend(
    client: httpx.AsyncClient, account: Account, amount: str, currency: str, day: str, **fields
) -> None:
    await create(client, account, amount=amount, currency=currency, occurred_on=day, **fields)


async def put_rate(
    client: httpx.AsyncClient, account: Account, day: date, base: str, quote: str, rate: str
) -> None:
    """The user's own rate of ``base`` in ``quote`` on ``day``."""
    made = await client.put(
        f"/api/v1/expenses/rates/{day}/{base}/{quote}", json={"rate": rate}, headers=account.headers
    )
    assert made.status_code == 200, made.text
