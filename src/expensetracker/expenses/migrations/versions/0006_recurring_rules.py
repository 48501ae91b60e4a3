"""Recurring expenses: weekly, monthly or yearly rules whose due occurrences become expenses.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SCHEMA = "expenses"


def upgrade() -> None:
    op.create_table(
        "recurring_rules",
        sa.Column("user_id", sa.Uuid(), primary_key=True),
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("currency_exponent", sa.SmallInteger(), nullable=False),
        sa.Column("description", sa.String(200), nullable=False),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("merchant", sa.String(100), nullable=True),
        sa.Column("category_id", sa.Uuid(), nullable=True),
        sa.Column("tags", postgresql.ARRAY(sa.String(50)), nullable=False),
        sa.Column("frequency", sa.String(10), nullable=False),
        sa.Column("starts_on", sa.Date(), nullable=False),
        sa.Column("ends_on", sa.Date(), nullable=True),
        sa.Column("done", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_due_on", sa.Date(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.ForeignKeyConstraint(["user_id"], [f"{SCHEMA}.owners.user_id"], ondelete="CASCADE"),
        sa.CheckConstraint("amount_minor > 0", name="recurring_rules_amount_positive"),
        sa.CheckConstraint(
            "frequency IN ('weekly', 'monthly', 'yearly')", name="recurring_rules_frequency"
        ),
        schema=SCHEMA,
    )
    op.execute(
        f"ALTER TABLE {SCHEMA}.recurring_rules ADD CONSTRAINT recurring_rules_category_fkey "
        f"FOREIGN KEY (user_id, category_id) REFERENCES {SCHEMA}.categories (user_id, id) "
        "ON DELETE SET NULL (category_id)"
    )
    op.create_index(
        "ix_recurring_rules_next_due_on", "recurring_rules", ["next_due_on"], schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_table("recurring_rules", schema=SCHEMA)
