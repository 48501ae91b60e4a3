"""The request dependencies every service's routes take, each a typed ``Annotated`` alias (as
the full-stack FastAPI template's ``api/deps.py``).

They live apart from what they hand out (state.py, db.py, tokens.py, idempotency.py,
pagination.py), which the command line uses too: an operator command imports no FastAPI
(tests/cli/test_cli_startup.py). Every dependency is a coroutine: FastAPI runs a plain function
in its thread pool, two thread hand-offs per request (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import asyncpg
import structlog
from fastapi import Depends, Header, Query, Request
from fastapi.security import HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from expensetracker.platform.db import taking_turn
from expensetracker.platform.errors import InvalidToken, ValidationProblem
from expensetracker.platform.idempotency import KEY_PATTERN, Creation, KeyedRequest
from expensetracker.platform.pagination import DEFAULT_LIMIT, MAX_LIMIT, PageRequest
from expensetracker.platform.schemas import TEXT
from expensetracker.platform.state import AppState, app_state
from expensetracker.platform.tokens import Principal


async def _request_state(request: Request) -> AppState:
    return app_state(request.app)


State = Annotated[AppState, Depends(_request_state)]


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    state = app_state(request.app)
    turn = taking_turn(state.db.pool_turns, wait_seconds=state.settings.db_pool_timeout_seconds)
    async with turn, state.db.sessionmaker() as session:
        yield session


# An ORM session, for paths of several statements.
DbSession = Annotated[AsyncSession, Depends(_session)]


async def _connection(request: Request) -> AsyncIterator[asyncpg.Connection]:
    async with app_state(request.app).db.driver_pool.connection() as connection:
        yield connection


# asyncpg's own connection (db.DriverPool), for hot paths of one statement or a few.
DbConnection = Annotated[asyncpg.Connection, Depends(_connection)]


async def _read_connection(request: Request) -> AsyncIterator[asyncpg.Connection]:
    async with app_state(request.app).db.read_driver_pool.connection() as connection:
        yield connection


# For paths that only read and may lag the primary (a replica, with the read URL): never one
# that writes, nor one whose reads decide a write.
DbReadConnection = Annotated[asyncpg.Connection, Depends(_read_connection)]


class BearerPrincipal(HTTPBearer):
    """The caller of every authenticated route, from ``Authorization: Bearer``: one dependency
    (declared in the OpenAPI document as the bearer scheme), verified by the app's verifier."""

    # HTTPBearer is subclassed for its OpenAPI security scheme; as a dependency this answers
    # the verified Principal where HTTPBearer answers the raw credentials.
    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        # Two name no one caller: Starlette would keep the first, where a proxy may read another.
        if len(request.headers.getlist("authorization")) > 1:
            raise InvalidToken("Send one Authorization header, not several.")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise InvalidToken("An access token is required (Authorization: Bearer ...).")
        principal = await app_state(request.app).verifier.verify(token)
        structlog.contextvars.bind_contextvars(user_id=str(principal.user_id))
        return principal


current_user = BearerPrincipal(
    auto_error=False, description="An access token from POST /api/v1/auth/login"
)
CurrentUser = Annotated[Principal, Depends(current_user)]

_KeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=KEY_PATTERN,
        description="Retrying with the same key and body returns the first answer.",
    ),
]


async def _keyed_request(request: Request, key: _KeyHeader = None) -> KeyedRequest | None:
    # Two keys name no one request: FastAPI would keep the first, and a retry sending the other
    # first would create again.
    if len(request.headers.getlist("idempotency-key")) > 1:
        raise ValidationProblem.of_field("header.Idempotency-Key", "must be given once", "repeated")
    return None if key is None else KeyedRequest.to(request.scope["route"], key=key)


# A creating route's Idempotency-Key header, with the route it came to.
IdempotencyKey = Annotated[KeyedRequest | None, Depends(_keyed_request)]


async def _creation(user: CurrentUser, keyed: IdempotencyKey = None) -> Creation:
    return Creation(user_id=user.user_id, keyed=keyed)


# A creating route's caller and Idempotency-Key, as every creating service function takes them.
Creating = Annotated[Creation, Depends(_creation)]

_Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
_Cursor = Annotated[
    str | None,
    Query(max_length=512, description="`next_cursor` of the previous page."),
    TEXT,
]


async def _page_request(limit: _Limit = DEFAULT_LIMIT, cursor: _Cursor = None) -> PageRequest:
    return PageRequest(limit=limit, cursor=cursor)


# Every list's ?limit= and ?cursor=, as one typed dependency.
Paging = Annotated[PageRequest, Depends(_page_request)]


async def _one_value_each(request: Request) -> None:
    """Every query parameter once: FastAPI keeps the last of ``?currency=EUR&currency=JPY``, so
    that a list filtered by one of them looked filtered by both."""
    names = [name for name, _value in request.query_params.multi_items()]
    if repeated := [name for name in dict.fromkeys(names) if names.count(name) > 1]:
        raise ValidationProblem(
            [
                {"field": f"query.{name}", "message": "must be given once", "type": "repeated"}
                for name in repeated
            ]
        )


# On the routers whose routes take query parameters: `APIRouter(dependencies=SINGLE_QUERY_VALUES)`.
SINGLE_QUERY_VALUES = [Depends(_one_value_each)]
