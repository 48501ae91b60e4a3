"""Deleted accounts stay deleted: a tombstone per user whose ``user.deleted`` event was applied,
and the function every creation of a user's rows asks first.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "reports"


def upgrade() -> None:
    op.create_table(
        "forgotten_users",
        sa.Column("user_id", sa.Uuid(), primary_key=True),
        sa.Column(
            "forgotten_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )
    # Volatile: the tombstone check takes its snapshot after the shared lock is granted.
    op.execute(
        f"""
        CREATE FUNCTION {SCHEMA}.user_may_write(p_user_id uuid) RETURNS boolean
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
          PERFORM pg_advisory_xact_lock_shared(
            hashtextextended('{SCHEMA}.owner:' || p_user_id::text, 0));
          RETURN NOT EXISTS (SELECT FROM {SCHEMA}.forgotten_users WHERE user_id = p_user_id);
        END $$
        """
    )


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {SCHEMA}.user_may_write(uuid)")
    op.drop_table("forgotten_users", schema=SCHEMA)
