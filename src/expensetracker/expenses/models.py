"""Tables of the expenses service, all in its own PostgreSQL schema.

Every table is keyed by ``(user_id, id)`` and every reference between them includes the user, so
the database itself refuses to link one user's expense to another user's category or tag.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Computed,
    Date,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from expensetracker.platform.tables import belongs_to, key, new_id, user_data_tables, written_at

SCHEMA = "expenses"


# What `?q=` searches, lower-cased once at write time; indexed with pg_trgm.
SEARCH_TEXT = "lower(description || ' ' || coalesce(notes, '') || ' ' || coalesce(merchant, ''))"


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA)


forgotten_users, idempotency_keys, event_positions = user_data_tables(Base.metadata)


def _of_owner() -> ForeignKeyConstraint:
    """The row goes with its owner (and so with the user's whole account)."""
    return ForeignKeyConstraint(["user_id"], [f"{SCHEMA}.owners.user_id"], ondelete="CASCADE")


def _in_category() -> ForeignKeyConstraint:
    """A category of the same user; deleting it leaves the row uncategorised."""
    return ForeignKeyConstraint(
        ["user_id", "category_id"],
        [f"{SCHEMA}.categories.user_id", f"{SCHEMA}.categories.id"],
        ondelete="SET NULL (category_id)",
    )


class Owner(Base):
    """A user known to this service; created on first use, with the default categories."""

    __tablename__ = "owners"

    user_id: Mapped[uuid.UUID] = key()
    # What reports convert to (in=home): set by the user, else by their first expense (0011).
    home_currency: Mapped[str | None] = mapped_column(String(3))
    created_at: Mapped[datetime] = written_at()


class Category(Base):
    __tablename__ = "categories"
    __table_args__ = (
        _of_owner(),
        # A parent always belongs to the same user; deleting it lifts its children to the top.
        ForeignKeyConstraint(
            ["user_id", "parent_id"],
            [f"{SCHEMA}.categories.user_id", f"{SCHEMA}.categories.id"],
            ondelete="SET NULL (parent_id)",
        ),
        Index("uq_categories_user_name", "user_id", func.lower("name"), unique=True),
        Index("ix_categories_user_name_id", "user_id", "name", "id"),
    )

    user_id: Mapped[uuid.UUID] = key()
    id: Mapped[uuid.UUID] = new_id()
    name: Mapped[str] = mapped_column(String(50))
    parent_id: Mapped[uuid.UUID | None] = mapped_column()
    created_at: Mapped[datetime] = written_at()


class Tag(Base):
    __tablename__ = "tags"
    __table_args__ = (
        _of_owner(),
        Index("uq_tags_user_name", "user_id", func.lower("name"), unique=True),
    )

    user_id: Mapped[uuid.UUID] = key()
    id: Mapped[uuid.UUID] = new_id()
    name: Mapped[str] = mapped_column(String(50))
    created_at: Mapped[datetime] = written_at()


class _Spending:
    """The columns of what is spent, in an expense and in a recurring rule alike: the rule's
    occurrences become expenses with these values (recurring.py)."""

    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    # Decimals of the currency (ISO 4217) when written: amounts compare across currencies.
    currency_exponent: Mapped[int] = mapped_column(SmallInteger)
    description: Mapped[str] = mapped_column(String(200))
    notes: Mapped[str | None] = mapped_column(Text)
    merchant: Mapped[str | None] = mapped_column(String(100))
    category_id: Mapped[uuid.UUID | None] = mapped_column()


class Expense(_Spending, Base):
    __tablename__ = "expenses"
    __table_args__ = (
        _of_owner(),
        _in_category(),
        Index("ix_expenses_user_occurred", "user_id", "occurred_on", "id"),
        Index("uq_expenses_user_external_id", "user_id", "external_id", unique=True),
        # Text search within one user's expenses (migration 0010), its pending list 1 MB (0016).
        Index(
            "ix_expenses_user_search",
            "user_id",
            "search_text",
            postgresql_using="gin",
            postgresql_ops={"search_text": "gin_trgm_ops"},
            postgresql_with={"gin_pending_list_limit": 1024},
        ),
    )

    user_id: Mapped[uuid.UUID] = key()
    id: Mapped[uuid.UUID] = new_id()
    occurred_on: Mapped[date] = mapped_column(Date)
    # What the bank took, in the currency it charged (the home currency): beats any rate.
    charged_minor: Mapped[int | None] = mapped_column(BigInteger)
    charged_currency: Mapped[str | None] = mapped_column(String(3))
    charged_exponent: Mapped[int | None] = mapped_column(SmallInteger)
    # Set by imports: importing the same row again finds it instead of creating it twice.
    external_id: Mapped[str | None] = mapped_column(String(100))
    search_text: Mapped[str] = mapped_column(Text, Computed(SEARCH_TEXT))
    created_at: Mapped[datetime] = written_at()
    updated_at: Mapped[datetime] = written_at()


class RecurringRule(_Spending, Base):
    """An expense that repeats; its occurrences become expenses when due (recurring.py)."""

    __tablename__ = "recurring_rules"
    __table_args__ = (
        _of_owner(),
        _in_category(),
        Index("ix_recurring_rules_next_due_on", "next_due_on"),
    )

    user_id: Mapped[uuid.UUID] = key()
    id: Mapped[uuid.UUID] = new_id()
    tags: Mapped[list[str]] = mapped_column(ARRAY(String(50)))
    frequency: Mapped[str] = mapped_column(String(10))  # weekly | monthly | yearly
    starts_on: Mapped[date] = mapped_column(Date)
    ends_on: Mapped[date | None] = mapped_column(Date)
    # Occurrences already turned into expenses; the next one is occurrence number `done`.
    done: Mapped[int] = mapped_column(Integer, default=0)
    next_due_on: Mapped[date | None] = mapped_column(Date)  # None when the rule has ended
    created_at: Mapped[datetime] = written_at()


class CategorisationRule(Base):
    """A pattern on an expense's description or merchant (and optionally an amount range in one
    currency) that sets a category and adds tags; the lowest position that matches wins
    (rules.py, migration 0012)."""

    __tablename__ = "categorisation_rules"
    __table_args__ = (
        _of_owner(),
        _in_category(),
        UniqueConstraint("user_id", "position", name="categorisation_rules_position_key"),
    )

    user_id: Mapped[uuid.UUID] = key()
    id: Mapped[uuid.UUID] = new_id()
    position: Mapped[int] = mapped_column(Integer)
    field: Mapped[str] = mapped_column(String(11))  # any | description | merchant
    match: Mapped[str] = mapped_column(String(8))  # contains | regex
    pattern: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str | None] = mapped_column(String(3))
    min_amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    max_amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    category_id: Mapped[uuid.UUID | None] = mapped_column()
    tags: Mapped[list[str]] = mapped_column(ARRAY(String(50)))
    created_at: Mapped[datetime] = written_at()


class ExpenseTag(Base):
    __tablename__ = "expense_tags"
    __table_args__ = (
        belongs_to(f"{SCHEMA}.expenses", "expense_id"),
        belongs_to(f"{SCHEMA}.tags", "tag_id"),
        Index("ix_expense_tags_user_tag", "user_id", "tag_id", "expense_id"),
    )

    user_id: Mapped[uuid.UUID] = key()
    expense_id: Mapped[uuid.UUID] = key()
    tag_id: Mapped[uuid.UUID] = key()


# Views of the read contract for the reports service (migrations 0005, 0007, 0011 and 0014). The
# table behind monthly_spending_v1, monthly_totals, is kept by triggers written in SQL (0007,
# 0014); the rates table (0011) is written by rates.py in SQL too, and its revisions by triggers.
READ_CONTRACT = (
    "spending_v1",
    "categories_v1",
    "expense_tags_v1",
    "monthly_spending_v1",
    "home_currencies_v1",
    "rates_v1",
    "rate_revisions_v1",
)
