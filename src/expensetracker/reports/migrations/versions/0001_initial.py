"""Initial revision: the reports schema (created with the version table) is documented as
owned by the reports service.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

OWNER = "Owned by the reports service: budgets, spending summaries and trends."


def upgrade() -> None:
    op.execute(f"COMMENT ON SCHEMA reports IS '{OWNER}'")


def downgrade() -> None:
    op.execute("COMMENT ON SCHEMA reports IS NULL")
