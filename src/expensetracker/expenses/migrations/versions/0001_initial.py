"""Initial revision: the expenses schema (created with the version table) is documented as
owned by the expenses service.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

OWNER = "Owned by the expenses service: expenses, categories, tags, idempotency, import, export."


def upgrade() -> None:
    op.execute(f"COMMENT ON SCHEMA expenses IS '{OWNER}'")


def downgrade() -> None:
    op.execute("COMMENT ON SCHEMA expenses IS NULL")
