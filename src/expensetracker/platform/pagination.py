"""Keyset (cursor) pagination, the same on every list: ``?limit=`` (1..500, default 50) and an
opaque ``cursor``; answers ``{"items": [...], "next_cursor": "..." | null}`` in a stable order.

The cursor is the list's name, then the sort key of the last item returned, base64url-encoded
JSON. Queries are always scoped to the caller, so a hand-made cursor can only move within the
caller's own list; a malformed one, or one of another list (whose key may have the same types
and would decode to a meaningless position), is a 422.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy import ColumnElement, Select, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute

from expensetracker.platform.errors import ValidationProblem
from expensetracker.platform.schemas import check_text

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# A BIGINT's range: a forged cursor's number beyond it would fail in the driver, not be a 422.
_BIGINT = range(-(2**63), 2**63)


@dataclass(frozen=True)
class PageRequest:
    """The page a list request asks for: ``limit`` items after ``cursor`` (None: the first)."""

    limit: int
    cursor: str | None


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


def instant(value: str) -> datetime:
    """A timestamp key, as the database compares it: with an offset, in UTC. A forged one that
    UTC cannot hold (year 1 at +01:00) is no cursor (OverflowError), not a driver's error."""
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(value)
    return moment.astimezone(UTC)


def encode_cursor(key: list[Any], *, list_name: str) -> str:
    """The cursor of the list named ``list_name`` (short and stable: every cursor carries it)
    past the sort key ``key``."""
    cursor = json.dumps([list_name, *key], separators=(",", ":"))
    return base64.urlsafe_b64encode(cursor.encode()).decode()


Parser = type | Callable[[str], Any]


def _parse(value: Any, kind: Parser) -> Any:
    if kind in (str, int):
        if type(value) is not kind or (kind is int and value not in _BIGINT):
            raise ValueError(value)
        return check_text(value) if isinstance(value, str) else value
    if not isinstance(value, str):  # other kinds (UUID, date...) travel as strings
        raise ValueError(value)
    return kind(check_text(value))


def decode_cursor(
    cursor: str | None, *, list_name: str, types: tuple[Parser, ...]
) -> list[Any] | None:
    """The sort key in ``cursor``, a cursor of the list named ``list_name``, as values of
    ``types`` (types, or parsers of strings such as ``date.fromisoformat``), or None for the
    first page."""
    if cursor is None:
        return None
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not isinstance(decoded, list) or len(decoded) != len(types) + 1:
            raise ValueError(decoded)
        name, *key = decoded
        if name != list_name:
            raise ValueError(name)
        return [_parse(value, kind) for value, kind in zip(key, types, strict=True)]
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError, OverflowError):
        raise ValidationProblem.of_field(
            "query.cursor", "Not a cursor of this list.", "cursor"
        ) from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int):
        return value
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


async def keyset_page(
    session: AsyncSession,
    query: Select[*tuple[Any, ...]],
    *,
    list_name: str,
    keys: tuple[ColumnElement[Any] | QueryableAttribute[Any], ...],
    types: tuple[Parser, ...],
    paging: PageRequest,
    item: Callable[..., T],
    descending: bool = False,
) -> Page[T]:
    """One page of ``query`` ordered by ``keys`` (unique together, the last one an id); ``item``
    turns the columns of a row into an answer item. The cursor holds ``list_name`` and the keys
    of the last row."""
    limit = paging.limit
    after = decode_cursor(paging.cursor, list_name=list_name, types=types)
    if after is not None:
        position, bound = tuple_(*keys), tuple_(*after)
        query = query.where(position < bound if descending else position > bound)
    order = [key.desc() for key in keys] if descending else list(keys)
    rows = (await session.execute(query.add_columns(*keys).order_by(*order).limit(limit + 1))).all()
    more, rows = len(rows) > limit, rows[:limit]
    last_keys = [_jsonable(value) for value in rows[-1][-len(keys) :]] if more else None
    return Page(
        items=[item(*row[: -len(keys)]) for row in rows],
        next_cursor=encode_cursor(last_keys, list_name=list_name) if last_keys else None,
    )


async def page_by_name(
    session: AsyncSession,
    model: Any,
    *,
    list_name: str,
    user_id: uuid.UUID,
    paging: PageRequest,
    item: Callable[..., T],
    where: Sequence[ColumnElement[bool]] = (),
) -> Page[T]:
    """One page of the caller's rows of ``model`` (a table of named things keyed by user_id and
    id) by name, then id, in a transaction of its own; only those meeting ``where``, if given.
    Every such list has the same key: ``list_name`` keeps one's cursors out of another."""
    async with session.begin():
        return await keyset_page(
            session,
            select(model).where(model.user_id == user_id, *where),
            list_name=list_name,
            keys=(model.name, model.id),
            types=(str, uuid.UUID),
            paging=paging,
            item=item,
        )


def json_page(items: list[str], *, list_name: str, next_key: list[Any] | None) -> str:
    """A Page as JSON, from items PostgreSQL already wrote as JSON; ``next_key`` is the sort key
    of the last item when more follow, for a cursor of the list named ``list_name``."""
    next_cursor = json.dumps(encode_cursor(next_key, list_name=list_name)) if next_key else "null"
    return '{"items":[' + ",".join(items) + '],"next_cursor":' + next_cursor + "}"
