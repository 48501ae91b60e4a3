"""Requests to the reports service that many tests make."""

from __future__ import annotations

import httpx

from tests.helpers.users import Account


async def budget(client: httpx.AsyncClient, account: Account, **fields) -> dict:
    body = {"name": "Everything", "amount": "100.00", "currency": "EUR", "starts": "2026-01"}
    response = await client.post(
        "/api/v1/budgets", json={**body, **fields}, headers=account.headers
    )
    assert response.status_code == 201, response.text
    return response.json()


async def status_of(client: httpx.AsyncClient, account: Account, month: str) -> dict:
    response = await client.get(
        "/api/v1/reports/budgets", params={"month": month}, headers=account.headers
    )
    assert response.status_code == 200, response.text
    return {item["name"]: item for item in response.json()["budgets"]}
