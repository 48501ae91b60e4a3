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
from typing import Annotated, Any

from fastapi import Header
from fastapi.responses import JSONResponse, Response
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
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from expensetracker.platform.errors import Conflict, ValidationProblem

RETENTION = timedelta(hours=24)

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Retrying with the same key and body returns the first answer.",
    ),
]


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
    body: Any


def fingerprint(route: str, body: BaseModel) -> bytes:
    return hashlib.sha256(f"{route}\n{body.model_dump_json()}".encode()).digest()


async def claim(
    session: AsyncSession, table: Table, *, user_id: uuid.UUID, key: str, request_hash: bytes
) -> Stored | None:
    """None: go on, the key is yours until this transaction ends. Else the stored answer."""
    locked = await session.scalar(
        text("SELECT pg_try_advisory_xact_lock(hashtext(:scope))"),
        {"scope": f"idempotency:{table.fullname}:{user_id}:{key}"},
    )
    if not locked:
        raise Conflict("A request with this Idempotency-Key is still being processed.")
    now = datetime.now(UTC)
    await session.execute(
        delete(table).where(table.c.user_id == user_id, table.c.created_at < now - RETENTION)
    )
    claimed = await session.scalar(
        pg_insert(table)
        .values(user_id=user_id, key=key, request_hash=request_hash)
        .on_conflict_do_nothing()
        .returning(table.c.key)
    )
    if claimed is not None:
        return None
    row = (
        await session.execute(
            select(table.c.request_hash, table.c.status_code, table.c.response).where(
                table.c.user_id == user_id, table.c.key == key
            )
        )
    ).one()
    if row.request_hash != request_hash:
        raise ValidationProblem.of_field(
            "header.Idempotency-Key",
            "This key was used with a different request body.",
            "idempotency_key_reused",
        )
    return Stored(status_code=row.status_code, body=row.response)


async def remember(
    session: AsyncSession,
    table: Table,
    *,
    user_id: uuid.UUID,
    key: str,
    status_code: int,
    body: BaseModel,
) -> None:
    await session.execute(
        update(table)
        .where(table.c.user_id == user_id, table.c.key == key)
        .values(status_code=status_code, response=body.model_dump(mode="json"))
    )


async def purge_expired(session: AsyncSession, table: Table) -> int:
    result = await session.execute(
        delete(table).where(table.c.created_at < datetime.now(UTC) - RETENTION)
    )
    return result.rowcount


async def create_once(
    session: AsyncSession,
    table: Table,
    *,
    user_id: uuid.UUID,
    key: str | None,
    route: str,
    body: BaseModel,
    create: Callable[[], Awaitable[BaseModel]],
    status_code: int = 201,
) -> BaseModel | Stored:
    """``create()`` unless ``key`` was seen for the same ``route`` and ``body``: then the answer
    stored for it. Runs inside the caller's transaction, so the key and the created object
    commit together."""
    if key is None:
        return await create()
    request_hash = fingerprint(route, body)
    stored = await claim(session, table, user_id=user_id, key=key, request_hash=request_hash)
    if stored is not None:
        return stored
    created = await create()
    await remember(session, table, user_id=user_id, key=key, status_code=status_code, body=created)
    return created


def respond(result: BaseModel | Stored, *, status_code: int = 201) -> Response:
    if isinstance(result, Stored):
        return JSONResponse(
            result.body, status_code=result.status_code, headers={"Idempotent-Replayed": "true"}
        )
    return JSONResponse(result.model_dump(mode="json"), status_code=status_code)
