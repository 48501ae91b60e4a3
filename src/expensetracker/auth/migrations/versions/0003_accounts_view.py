"""Publishes ``accounts_v1`` (user id and email): how operator commands such as
``expensetracker expenses import --user EMAIL`` find a user without reading auth's tables.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE VIEW auth.accounts_v1 AS SELECT id AS user_id, email FROM auth.users")


def downgrade() -> None:
    op.execute("DROP VIEW auth.accounts_v1")
