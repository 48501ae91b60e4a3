"""A kept converted month records the revisions of the monthly totals it was made from, each
one, instead of their sum and count.

A monthly total's row is deleted when it drops to zero, and a revision handed out before a
refresh's snapshot may be committed after it: a row removed and rows written since could then
add up to the sum and count kept, and a stale month was read as fresh, for good (the refresh
saw nothing to do either). The same revisions are the same rows.

The kept months are a cache: they are dropped here, and the reports process makes them again.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

SCHEMA = "reports"


def upgrade() -> None:
    op.execute(f"DELETE FROM {SCHEMA}.converted_months")
    op.execute(
        f"ALTER TABLE {SCHEMA}.converted_months DROP COLUMN totals_sum, "
        "DROP COLUMN totals_count, ADD COLUMN totals_revisions bigint[] NOT NULL"
    )


def downgrade() -> None:
    op.execute(f"DELETE FROM {SCHEMA}.converted_months")
    op.execute(
        f"ALTER TABLE {SCHEMA}.converted_months DROP COLUMN totals_revisions, "
        "ADD COLUMN totals_sum numeric NOT NULL, ADD COLUMN totals_count integer NOT NULL"
    )
