"""The ceiling bench/expenses.py measures the expenses service against: FastAPI and asyncpg
alone, sending the service's own statements, with no authentication (the user id comes in a
header), no middleware, no metrics, no validation beyond FastAPI's body model and nothing
between a request and its pooled connection.

    BARE_DATABASE_URL=postgresql://... python -m uvicorn bench.bare_app:app --port 8001
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date
from typing import Annotated

import asyncpg
from fastapi import FastAPI, Header, Query, Request, Response
from pydantic import BaseModel

from expensetracker.expenses import service, shared
from expensetracker.expenses.models import idempotency_keys
from expensetracker.platform import idempotency
from expensetracker.platform.pagination import decode_cursor

POOL_SIZE = int(os.environ.get("BARE_POOL_SIZE", "2"))
EXPONENT = 2  # the benchmark writes EUR only


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with asyncpg.create_pool(
        os.environ["BARE_DATABASE_URL"], min_size=POOL_SIZE, max_size=POOL_SIZE
    ) as pool:
        app.state.pool = pool
        yield


app = FastAPI(lifespan=lifespan)
User = Annotated[uuid.UUID, Header(alias="X-User")]


class NewExpense(BaseModel):
    amount: str
    currency: str
    occurred_on: date
    description: str
    category_id: uuid.UUID | None = None
    tags: list[str] = []


class Change(BaseModel):
    amount: str
    description: str


def minor_units(amount: str) -> int:
    whole, _, fraction = amount.partition(".")
    return int(whole + fraction.ljust(EXPONENT, "0"))


def json_response(document: str, status_code: int = 200) -> Response:
    return Response(document, status_code=status_code, media_type="application/json")


@app.post("/expenses", status_code=201)
async def create(
    request: Request,
    body: NewExpense,
    user: User,
    key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Response:
    args = [
        user,
        uuid.uuid4(),
        minor_units(body.amount),
        body.currency,
        EXPONENT,
        body.occurred_on,
        body.description,
        None,
        None,
        body.category_id,
        *(None, None, None),  # no charged amount
    ]
    if body.tags:
        args.append(body.tags)
    tagged = bool(body.tags)
    async with request.app.state.pool.acquire() as connection:
        if key is None:
            sql = service.CREATE_STATEMENTS[tagged, None]
            return json_response(await connection.fetchval(sql, *args), 201)
        fingerprint = idempotency.fingerprint("POST /api/v1/expenses", body)
        scope = idempotency.lock_scope(idempotency_keys, user_id=user, key=key)
        sql = service.CREATE_STATEMENTS[tagged, "new"]
        _, created = await connection.fetchrow(sql, *args, key, fingerprint, scope)
        return json_response(created, 201)  # every key of the benchmark is new


@app.get("/expenses")
async def list_expenses(
    request: Request,
    user: User,
    category_id: uuid.UUID | None = None,
    from_: Annotated[date | None, Query(alias="from")] = None,
    to: date | None = None,
    q: str | None = None,
    cursor: str | None = None,
) -> Response:
    filters = shared.ExpenseFilter(category_id=category_id, from_=from_, to=to, q=q)
    after = decode_cursor(cursor, list_name="expenses", types=(date.fromisoformat, uuid.UUID))
    async with request.app.state.pool.acquire() as connection:
        rows = await service.fetch_page(
            connection, user_id=user, filters=filters, after=after, limit=50
        )
    return json_response(service.page_json(rows, limit=50))


@app.patch("/expenses/{expense_id}")
async def change(request: Request, expense_id: uuid.UUID, body: Change, user: User) -> Response:
    async with request.app.state.pool.acquire() as connection, connection.transaction():
        current = await connection.fetchrow(service.CURRENT_AMOUNT, user, expense_id)
        args = [user, expense_id, minor_units(body.amount), current["currency"], EXPONENT]
        args.append(body.description)
        sql = service.update_statement(
            ["amount_minor", "currency", "currency_exponent", "description"], tags=False
        )
        return json_response(await connection.fetchval(sql, *args))


@app.delete("/expenses/{expense_id}", status_code=204)
async def delete(request: Request, expense_id: uuid.UUID, user: User) -> Response:
    async with request.app.state.pool.acquire() as connection:
        await connection.execute(service.DELETE, user, expense_id)
    return Response(status_code=204)
