"""Helpers for the web app's tests: a person's browser, as far as plain HTTP goes (cookies, forms
with their CSRF token), without JavaScript."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import httpx

from tests.helpers.users import PASSWORD

SESSION_KEY = "a-test-session-key-that-is-long-enough-to-use"
# The pages of a signed-in person.
PAGES = (
    "/",
    "/expenses",
    "/expenses/new",
    "/budgets",
    "/reports",
    "/categories",
    "/recurring",
    "/rules",
    "/rates",
    "/import",
    "/account",
)
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_IDEMPOTENCY = re.compile(r'name="idempotency_key" value="([^"]+)"')


def csrf_token(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


def idempotency_key(html: str) -> str:
    match = _IDEMPOTENCY.search(html)
    assert match, "the form has no Idempotency-Key"
    return match.group(1)


@dataclass
class Person:
    client: httpx.AsyncClient
    email: str
    password: str = PASSWORD

    async def submit(
        self, page: str, action: str, data: dict[str, str], **headers: str
    ) -> httpx.Response:
        """Opens ``page`` (for its CSRF token) and posts ``data`` to ``action``, as a form."""
        token = csrf_token((await self.client.get(page)).text)
        return await self.client.post(
            action,
            data={"csrf_token": token, **data},
            headers={"Sec-Fetch-Site": "same-origin", **headers},
        )

    async def add_expense(self, **fields: str) -> httpx.Response:
        form = (await self.client.get("/expenses/new")).text
        data = {
            "csrf_token": csrf_token(form),
            "idempotency_key": idempotency_key(form),
            "description": "Coffee",
            "amount": "3.20",
            "currency": "EUR",
            "occurred_on": "2026-11-02",
            **fields,
        }
        return await self.client.post("/expenses/new", data=data)


async def signed_up_person(client: httpx.AsyncClient) -> Person:
    """Signs up through the pages, which also signs in."""
    person = Person(client, f"web-{uuid.uuid4().hex[:12]}@example.org")
    response = await person.submit(
        "/signup",
        "/signup",
        {"email": person.email, "password": person.password, "display_name": "Ann"},
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/"
    return person
