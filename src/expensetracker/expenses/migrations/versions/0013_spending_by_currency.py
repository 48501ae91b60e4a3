"""An index of expenses by user, currency and day: reports converted to a home currency read a
user's expenses in the other currencies only (reports/conversion.py), often a few scattered among
the rest. It carries the columns those reads take (all but the merchant), so that they read the
index alone, not one table page per expense.

Revision ID: 0013
Revises: 0012
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

SCHEMA = "expenses"


def upgrade() -> None:
    op.create_index(
        "ix_expenses_user_currency_occurred",
        "expenses",
        ["user_id", "currency", "occurred_on"],
        schema=SCHEMA,
        postgresql_include=[
            "amount_minor",
            "currency_exponent",
            "charged_minor",
            "charged_currency",
            "category_id",
            "id",
        ],
    )


def downgrade() -> None:
    op.drop_index("ix_expenses_user_currency_occurred", "expenses", schema=SCHEMA)
