"""The read contract for the reports service (docs/contracts/expenses-spending-v1.md) and this
service's position in the auth service's account events.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SCHEMA = "expenses"


def upgrade() -> None:
    op.execute(
        f"""
        CREATE VIEW {SCHEMA}.spending_v1 AS
        SELECT e.user_id, e.id AS expense_id, e.occurred_on, e.amount_minor, e.currency,
               e.currency_exponent, e.category_id, c.parent_id AS category_parent_id, e.merchant
        FROM {SCHEMA}.expenses e
        LEFT JOIN {SCHEMA}.categories c ON c.user_id = e.user_id AND c.id = e.category_id
        """
    )
    op.execute(
        f"""
        CREATE VIEW {SCHEMA}.categories_v1 AS
        SELECT user_id, id AS category_id, name, parent_id FROM {SCHEMA}.categories
        """
    )
    op.execute(
        f"""
        CREATE VIEW {SCHEMA}.expense_tags_v1 AS
        SELECT et.user_id, et.expense_id, t.name AS tag
        FROM {SCHEMA}.expense_tags et
        JOIN {SCHEMA}.tags t ON t.user_id = et.user_id AND t.id = et.tag_id
        """
    )
    op.create_table(
        "event_positions",
        sa.Column("consumer", sa.String(100), primary_key=True),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("event_positions", schema=SCHEMA)
    for view in ("expense_tags_v1", "categories_v1", "spending_v1"):
        op.execute(f"DROP VIEW {SCHEMA}.{view}")
