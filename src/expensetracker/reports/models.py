"""Tables of the reports service, all in its own PostgreSQL schema. Spending itself is read
through the views the expenses service publishes (docs/contracts/expenses-spending-v1.md)."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Date,
    MetaData,
    SmallInteger,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from expensetracker.platform.tables import belongs_to, key, new_id, user_data_tables, written_at

SCHEMA = "reports"


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA)


forgotten_users, idempotency_keys, event_positions = user_data_tables(Base.metadata)


class Budget(Base):
    """A monthly limit for one category (with its subcategories) or for everything, in one
    currency (or in every currency, converted to it), from ``starts_on``'s month on."""

    __tablename__ = "budgets"

    user_id: Mapped[uuid.UUID] = key()
    id: Mapped[uuid.UUID] = new_id()
    name: Mapped[str] = mapped_column(String(100))
    category_id: Mapped[uuid.UUID | None] = mapped_column()
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    rollover: Mapped[bool] = mapped_column(Boolean, default=False)
    # Spending in every currency counts, converted to ``currency`` (reports/conversion.py).
    converted: Mapped[bool] = mapped_column(Boolean, default=False)
    thresholds: Mapped[list[int]] = mapped_column(ARRAY(SmallInteger))
    starts_on: Mapped[date] = mapped_column(Date)  # the first day of the budget's first month
    created_at: Mapped[datetime] = written_at()
    updated_at: Mapped[datetime] = written_at()


class BudgetAlert(Base):
    """A budget that reached one of its thresholds in a month: recorded once."""

    __tablename__ = "budget_alerts"
    __table_args__ = (
        belongs_to(f"{SCHEMA}.budgets", "budget_id"),
        UniqueConstraint("user_id", "budget_id", "month", "threshold"),
    )

    user_id: Mapped[uuid.UUID] = key()
    id: Mapped[uuid.UUID] = new_id()
    budget_id: Mapped[uuid.UUID] = mapped_column()
    month: Mapped[date] = mapped_column(Date)
    threshold: Mapped[int] = mapped_column(SmallInteger)
    spent_minor: Mapped[int] = mapped_column(BigInteger)
    available_minor: Mapped[int] = mapped_column(BigInteger)
    # The budget's currency when recorded (migration 0007): it may change later.
    currency: Mapped[str] = mapped_column(String(3))
    created_at: Mapped[datetime] = written_at()


# The converted monthly totals (migration 0006) are written and read in SQL by conversion.py.
