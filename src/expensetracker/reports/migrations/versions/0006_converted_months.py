"""Converted monthly totals kept ahead of time (reports/conversion.py, docs/reports.md): per
user, target currency and maximum rate age, per month and currency, what the expenses of that
currency convert to, per category and way of conversion, with what they were made from, so that
a converted report of whole months reads a few rows per month instead of every expense.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SCHEMA = "reports"


def upgrade() -> None:
    op.execute(
        f"""
        CREATE TABLE {SCHEMA}.converted_months (
            user_id uuid NOT NULL,
            target char(3) NOT NULL,
            max_age integer NOT NULL,
            month date NOT NULL,
            currency char(3) NOT NULL,
            -- The sums and counts of the revisions they were made from (expenses migration 0014).
            totals_sum numeric NOT NULL,
            totals_count integer NOT NULL,
            rates_sum numeric NOT NULL,
            rates_count integer NOT NULL,
            PRIMARY KEY (user_id, target, max_age, month, currency)
        )
        """
    )
    op.execute(
        f"""
        CREATE TABLE {SCHEMA}.converted_month_totals (
            user_id uuid NOT NULL,
            target char(3) NOT NULL,
            max_age integer NOT NULL,
            month date NOT NULL,
            currency char(3) NOT NULL,
            category_id uuid,
            how smallint NOT NULL CHECK (how BETWEEN 1 AND 3),  -- charged, rated, missing
            total_minor bigint NOT NULL,  -- in the target; when missing, in the currency
            expense_count integer NOT NULL,
            oldest_rate_day date,
            FOREIGN KEY (user_id, target, max_age, month, currency)
                REFERENCES {SCHEMA}.converted_months ON DELETE CASCADE,
            UNIQUE NULLS NOT DISTINCT
                (user_id, target, max_age, month, currency, category_id, how)
        )
        """
    )


def downgrade() -> None:
    op.execute(f"DROP TABLE {SCHEMA}.converted_month_totals")
    op.execute(f"DROP TABLE {SCHEMA}.converted_months")
