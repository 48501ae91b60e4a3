"""Keyset (cursor) pagination, the same on every list: ``?limit=`` (1..500, default 50) and an
opaque ``cursor``; answers ``{"items": [...], "next_cursor": "..." | null}`` in a stable order.

The cursor is the sort key of the last item returned, base64url-encoded JSON. Queries are always
scoped to the caller, so a hand-made cursor can only move within the caller's own list; a
malformed one is a 422.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from expensetracker.platform.errors import ValidationProblem

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
Cursor = Annotated[
    str | None,
    Query(max_length=512, description="`next_cursor` of the previous page."),
]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode()


Parser = type | Callable[[str], Any]


def _parse(value: Any, kind: Parser) -> Any:
    if kind in (str, int):
        if type(value) is not kind:
            raise ValueError(value)
        return value
    if not isinstance(value, str):  # other kinds (UUID, date...) travel as strings
        raise ValueError(value)
    return kind(value)  # type: ignore[call-arg]


def decode_cursor(cursor: str | None, *, types: tuple[Parser, ...]) -> list[Any] | None:
    """The sort key in ``cursor`` as values of ``types`` (types, or parsers of strings such as
    ``date.fromisoformat``), or None for the first page."""
    if cursor is None:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not isinstance(key, list) or len(key) != len(types):
            raise ValueError(key)
        return [_parse(value, kind) for value, kind in zip(key, types, strict=True)]
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise ValidationProblem.of_field(
            "query.cursor", "Not a cursor of this list.", "cursor"
        ) from None


def page_of(rows: list[T], *, limit: int, key: Any) -> Page[T]:
    """A page from ``limit + 1`` fetched rows; ``key(row)`` gives the cursor of a row."""
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(items=rows, next_cursor=encode_cursor(key(rows[-1])) if more else None)
