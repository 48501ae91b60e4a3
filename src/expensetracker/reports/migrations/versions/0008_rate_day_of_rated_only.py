"""A kept converted total names the day of the oldest rate it used only when it used rates:
expenses counted at their charged amount had the day of a rate they never used.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SCHEMA = "reports"
RATED = 2  # conversion.RATED: the `how` of totals made with rates


def upgrade() -> None:
    op.execute(
        f"UPDATE {SCHEMA}.converted_month_totals SET oldest_rate_day = NULL "
        f"WHERE how <> {RATED} AND oldest_rate_day IS NOT NULL"
    )
    op.create_check_constraint(
        "converted_month_totals_rate_day_of_rated",
        "converted_month_totals",
        f"how = {RATED} OR oldest_rate_day IS NULL",
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_constraint(
        "converted_month_totals_rate_day_of_rated", "converted_month_totals", schema=SCHEMA
    )
