"""Initial revision: the auth schema (created with the version table) is documented as
owned by the auth service.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

OWNER = "Owned by the auth service: users, credentials, sessions and signing keys."


def upgrade() -> None:
    op.execute(f"COMMENT ON SCHEMA auth IS '{OWNER}'")


def downgrade() -> None:
    op.execute("COMMENT ON SCHEMA auth IS NULL")
