"""Tables of the expenses service, all in its own PostgreSQL schema."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, ForeignKeyConstraint, Index, MetaData, String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA = "expenses"

metadata = MetaData(schema=SCHEMA)


class Base(DeclarativeBase):
    metadata = metadata


class Owner(Base):
    """A user known to this service; created on first use, with the default categories."""

    __tablename__ = "owners"

    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Category(Base):
    __tablename__ = "categories"
    __table_args__ = (
        ForeignKeyConstraint(["user_id"], [f"{SCHEMA}.owners.user_id"], ondelete="CASCADE"),
        # A parent always belongs to the same user: the key includes the user.
        ForeignKeyConstraint(
            ["user_id", "parent_id"],
            [f"{SCHEMA}.categories.user_id", f"{SCHEMA}.categories.id"],
            ondelete="CASCADE",
        ),
        Index("uq_categories_user_name", "user_id", func.lower("name"), unique=True),
        Index("ix_categories_user_name_id", "user_id", "name", "id"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(50))
    parent_id: Mapped[uuid.UUID | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
