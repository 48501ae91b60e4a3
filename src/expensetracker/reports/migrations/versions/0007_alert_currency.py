"""An alert keeps the currency its amounts were recorded in: a budget's currency may change
later, and its past alerts must not be read in the new one.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SCHEMA = "reports"


def upgrade() -> None:
    op.add_column("budget_alerts", sa.Column("currency", sa.String(3)), schema=SCHEMA)
    # Alerts recorded so far: their budget's currency, the only one known.
    op.execute(
        "UPDATE reports.budget_alerts a SET currency = b.currency FROM reports.budgets b "
        "WHERE b.user_id = a.user_id AND b.id = a.budget_id"
    )
    op.alter_column("budget_alerts", "currency", nullable=False, schema=SCHEMA)


def downgrade() -> None:
    op.drop_column("budget_alerts", "currency", schema=SCHEMA)
