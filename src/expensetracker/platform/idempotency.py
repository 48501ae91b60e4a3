"""``Idempotency-Key`` on creating POSTs, in the same transaction as what they create.

Each service keeps its own table (:func:`idempotency_table`). Within the caller's transaction,
:func:`claim` either lets the request go on (the key is new: it is now taken) or hands back the
answer stored for it. The same key with the same body replays that answer; with another body it
is a 422; while the first request with that key is still running, a 409. Keys are scoped to the
user and kept for 24 hours.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

from pydantic import BaseModel
from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Uuid,
    delete,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import JSONResponse, Response

from expensetracker.platform.db import Db, fetch
from expensetracker.platform.errors import Conflict, ValidationProblem, problems
from expensetracker.platform.schemas import JsonDocument

if TYPE_CHECKING:
    from fastapi import APIRouter
    from fastapi.routing import APIRoute

RETENTION = timedelta(hours=24)

# The answer a creation makes (an ...Out model), or the one stored for its key.
Created = TypeVar("Created", bound=BaseModel)

# What an Idempotency-Key may be: 1 to 255 visible ASCII characters.
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"


@dataclass(frozen=True)
class KeyedRequest:
    """An ``Idempotency-Key`` and the route it was sent to, whose fingerprint covers both."""

    key: str
    route: str  # the route's method and path template: "POST /api/v1/expenses"

    @classmethod
    def to(cls, route: APIRoute, *, key: str) -> KeyedRequest:
        assert route.methods is not None  # an APIRoute always has its methods (GET by default)
        [method] = route.methods
        return cls(key=key, route=f"{method} {route.path}")

    @classmethod
    def to_endpoint(
        cls, router: APIRouter, endpoint: Callable[..., object], *, key: str
    ) -> KeyedRequest:
        """The key as if sent to the route of ``endpoint`` (for callers outside HTTP)."""
        [route] = [r for r in router.routes if getattr(r, "endpoint", None) is endpoint]
        return cls.to(cast("APIRoute", route), key=key)


@dataclass(frozen=True)
class Creation:
    """A creating request: who creates, and the Idempotency-Key it came with (if any)."""

    user_id: uuid.UUID
    keyed: KeyedRequest | None


# What a creating route answers: 201, or 409 while a request with its key is in progress.
# `@router.post(path, response_model=Out, **CREATES)`
CREATES: dict[str, Any] = {"status_code": 201, "responses": problems(409)}


def idempotency_table(metadata: MetaData) -> Table:
    return Table(
        "idempotency_keys",
        metadata,
        Column("user_id", Uuid, primary_key=True),
        Column("key", String(255), primary_key=True),
        Column("request_hash", LargeBinary(32), nullable=False),
        Column("status_code", Integer),
        Column("response", JSONB),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Index("ix_idempotency_keys_created_at", "created_at"),
    )


@dataclass(frozen=True)
class Stored:
    status_code: int
    body: str  # the JSON document answered the first time


def fingerprint(route: str, body: BaseModel) -> bytes:
    return hashlib.sha256(f"{route}\n{body.model_dump_json()}".encode()).digest()


# One statement: the key is taken (inserted, or an expired one taken over) only while no other
# transaction works on it; the advisory lock tells that case apart (a 409) without waiting.
_CLAIM = """
WITH lock AS MATERIALIZED (SELECT pg_try_advisory_xact_lock(hashtext($4)) AS taken),
claimed AS (
    INSERT INTO {table} AS k (user_id, key, request_hash)
    SELECT $1, $2, $3 FROM lock WHERE taken
    ON CONFLICT (user_id, key) DO UPDATE
        SET request_hash = excluded.request_hash, status_code = NULL, response = NULL,
            created_at = now()
        WHERE k.created_at < now() - $5::interval
    RETURNING 1
)
SELECT taken, EXISTS (SELECT FROM claimed) FROM lock
"""
_STORED = (
    "SELECT request_hash, status_code, response::text FROM {table} WHERE user_id = $1 AND key = $2"
)
_REMEMBERING = (
    "remembered AS (UPDATE {table} SET status_code = {status}, response = ({body})::jsonb "
    "WHERE user_id = $1 AND key = {key})"
)


def lock_scope(table: Table, *, user_id: uuid.UUID, key: str) -> str:
    """What the advisory lock of a key is taken on (hashtext of it), by whoever works on it."""
    return f"idempotency:{table.fullname}:{user_id}:{key}"


def in_progress() -> Conflict:
    return Conflict("A request with this Idempotency-Key is still being processed.")


async def claim(
    db: Db, table: Table, *, user_id: uuid.UUID, key: str, request_hash: bytes
) -> Stored | None:
    """None: go on, the key is yours until this transaction ends. Else the stored answer."""
    scope = lock_scope(table, user_id=user_id, key=key)
    [(taken, claimed)] = await fetch(
        db, _CLAIM.format(table=table.fullname), user_id, key, request_hash, scope, RETENTION
    )
    if not taken:
        raise in_progress()
    if claimed:
        return None
    [(stored_hash, status_code, response)] = await fetch(
        db,
        _STORED.format(table=table.fullname),
        user_id,
        key,
    )
    if stored_hash != request_hash:
        raise ValidationProblem.of_field(
            "header.Idempotency-Key",
            "This key was used with a different request (another body, or another route).",
            "idempotency_key_reused",
        )
    return Stored(status_code=status_code, body=response)


def remembering(table: Table, *, key: str, status_code: int, body: str) -> str:
    """``remember`` as a common table expression (``remembered``), for a creating statement
    that stores its own answer: ``key`` and ``body`` are SQL ($n placeholders, an expression),
    the user is $1."""
    return _REMEMBERING.format(table=table.fullname, status=status_code, body=body, key=key)


async def remember(
    db: Db, table: Table, *, user_id: uuid.UUID, key: str, status_code: int, body: str
) -> None:
    """Stores the answer (a JSON document) given for the key claimed in this transaction."""
    remembered = remembering(table, key="$2", status_code=status_code, body="$3::text")
    await fetch(db, f"WITH {remembered} SELECT", user_id, key, body)


async def purge_expired(session: AsyncSession, table: Table) -> int:
    # A DELETE's result is a CursorResult, which has the row count; execute() is typed for any
    # statement.
    result = cast(
        CursorResult[Any],
        await session.execute(
            delete(table).where(table.c.created_at < datetime.now(UTC) - RETENTION)
        ),
    )
    return result.rowcount


async def create_once(
    session: AsyncSession,
    table: Table,
    *,
    creation: Creation,
    body: BaseModel,
    create: Callable[[], Awaitable[Created]],
    status_code: int = 201,
) -> Created | Stored:
    """``create()`` unless the key was seen for the same route and ``body``: then the answer
    stored for it. Runs inside the caller's transaction, so the key and the created object
    commit together."""
    user_id, keyed = creation.user_id, creation.keyed
    if keyed is None:
        return await create()
    request_hash = fingerprint(keyed.route, body)
    stored = await claim(session, table, user_id=user_id, key=keyed.key, request_hash=request_hash)
    if stored is not None:
        return stored
    created = await create()
    await remember(
        session,
        table,
        user_id=user_id,
        key=keyed.key,
        status_code=status_code,
        body=created.model_dump_json(),
    )
    return created


def respond(result: BaseModel | Stored | str, *, status_code: int = 201) -> Response:
    """The answer to a creating request: what it created (a model, or its JSON document), or
    the answer stored for its key."""
    if isinstance(result, Stored):
        return JsonDocument(
            result.body, status_code=result.status_code, headers={"Idempotent-Replayed": "true"}
        )
    if isinstance(result, str):
        return JsonDocument(result, status_code=status_code)
    return JSONResponse(result.model_dump(mode="json"), status_code=status_code)
