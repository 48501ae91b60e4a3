"""Accounts for tests, made through the public API."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import httpx

PASSWORD = "correct horse battery staple"
# Where auth publishes the keys that verify its tokens.
JWKS_ROUTE = "/api/v1/auth/.well-known/jwks.json"


@dataclass
class Account:
    email: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def new_email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.org"


async def register(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> None:
    response = await client.post(
        "/api/v1/auth/register",
        json={"email": email, "password": password, "display_name": "Test User"},
    )
    assert response.status_code == 202, response.text


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> Account:
    response = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    body = response.json()
    return Account(email, password, body["access_token"], body["refresh_token"])


async def signed_up(client: httpx.AsyncClient, password: str = PASSWORD) -> Account:
    email = new_email()
    await register(client, email, password)
    return await login(client, email, password)
