"""Column shapes that the services' tables share. Every row belongs to a user: ``user_id`` leads
each primary key, and a row refers to another of the same user by (user_id, id)."""

from __future__ import annotations

import os
import time
import uuid
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import DateTime, ForeignKeyConstraint, MetaData, Table, func
from sqlalchemy.orm import Mapped, mapped_column

from expensetracker.platform.events import event_positions_table, forgotten_users_table
from expensetracker.platform.idempotency import idempotency_table


def key() -> Mapped[uuid.UUID]:
    """A column of the primary key (``user_id``, or the ids a link table joins)."""
    return mapped_column(primary_key=True)


def time_ordered_id() -> uuid.UUID:
    """A UUIDv7 (RFC 9562): the Unix time in milliseconds, then 74 random bits. Ids made later
    sort later, so a list ordered by day then id shows a day's latest first, and new rows land
    at the end of each user's part of the primary key instead of all over it."""
    value = time.time_ns() // 1_000_000 << 80 | int.from_bytes(os.urandom(10))
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # the RFC's variant
    return uuid.UUID(int=value)


def new_id() -> Mapped[uuid.UUID]:
    """The row's own id, after ``user_id`` in the primary key."""
    return mapped_column(primary_key=True, default=time_ordered_id)


def written_at() -> Mapped[datetime]:
    """When the row was written, by the database's clock."""
    return mapped_column(DateTime(timezone=True), server_default=func.now())


def belongs_to(table: str, column: str) -> ForeignKeyConstraint:
    """(user_id, ``column``) refers to a row of ``table`` (schema-qualified) of the same user,
    and goes with it."""
    return ForeignKeyConstraint(
        ["user_id", column], [f"{table}.user_id", f"{table}.id"], ondelete="CASCADE"
    )


class UserDataTables(NamedTuple):
    """The tables every service that keeps users' data has alike, in its own schema: who was
    forgotten, the idempotency records of its creations, and how far it read account events."""

    forgotten_users: Table
    idempotency_keys: Table
    event_positions: Table


def user_data_tables(metadata: MetaData) -> UserDataTables:
    return UserDataTables(
        forgotten_users_table(metadata),
        idempotency_table(metadata),
        event_positions_table(metadata),
    )
