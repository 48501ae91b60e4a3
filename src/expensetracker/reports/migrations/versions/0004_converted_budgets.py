"""Budgets that count spending in every currency, converted to theirs (docs/reports.md).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SCHEMA = "reports"


def upgrade() -> None:
    op.add_column(
        "budgets",
        sa.Column("converted", sa.Boolean(), nullable=False, server_default=sa.false()),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_column("budgets", "converted", schema=SCHEMA)
