"""Budgets, their alerts, idempotency keys and the position in auth's account events.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "reports"


def _now(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.create_table(
        "budgets",
        sa.Column("user_id", sa.Uuid(), primary_key=True),
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("category_id", sa.Uuid(), nullable=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("rollover", sa.Boolean(), nullable=False),
        sa.Column("thresholds", postgresql.ARRAY(sa.SmallInteger()), nullable=False),
        sa.Column("starts_on", sa.Date(), nullable=False),
        _now("created_at"),
        _now("updated_at"),
        sa.CheckConstraint("amount_minor > 0", name="budgets_amount_positive"),
        sa.CheckConstraint("extract(day FROM starts_on) = 1", name="budgets_start_of_month"),
        schema=SCHEMA,
    )
    op.create_table(
        "budget_alerts",
        sa.Column("user_id", sa.Uuid(), primary_key=True),
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("budget_id", sa.Uuid(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("threshold", sa.SmallInteger(), nullable=False),
        sa.Column("spent_minor", sa.BigInteger(), nullable=False),
        sa.Column("available_minor", sa.BigInteger(), nullable=False),
        _now("created_at"),
        sa.ForeignKeyConstraint(
            ["user_id", "budget_id"],
            [f"{SCHEMA}.budgets.user_id", f"{SCHEMA}.budgets.id"],
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("user_id", "budget_id", "month", "threshold"),
        schema=SCHEMA,
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("user_id", sa.Uuid(), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("request_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response", postgresql.JSONB(), nullable=True),
        _now("created_at"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"], schema=SCHEMA
    )
    op.create_table(
        "event_positions",
        sa.Column("consumer", sa.String(100), primary_key=True),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    for table in ("event_positions", "idempotency_keys", "budget_alerts", "budgets"):
        op.drop_table(table, schema=SCHEMA)
