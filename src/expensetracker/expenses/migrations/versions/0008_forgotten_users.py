"""Deleted accounts stay deleted: a tombstone per user whose ``user.deleted`` event was applied,
and the one function through which a user's owner row is created, which refuses them.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SCHEMA = "expenses"


def upgrade() -> None:
    op.create_table(
        "forgotten_users",
        sa.Column("user_id", sa.Uuid(), primary_key=True),
        sa.Column(
            "forgotten_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema=SCHEMA,
    )
    # A volatile function takes a new snapshot per statement: once the shared lock is granted
    # (after a purge holding it exclusively has committed), the tombstone is visible.
    op.execute(
        f"""
        CREATE FUNCTION {SCHEMA}.claim_owner(p_user_id uuid) RETURNS text
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
          PERFORM pg_advisory_xact_lock_shared(
            hashtextextended('{SCHEMA}.owner:' || p_user_id::text, 0));
          IF EXISTS (SELECT FROM {SCHEMA}.forgotten_users WHERE user_id = p_user_id) THEN
            RETURN 'forgotten';
          END IF;
          INSERT INTO {SCHEMA}.owners (user_id) VALUES (p_user_id) ON CONFLICT DO NOTHING;
          RETURN CASE WHEN FOUND THEN 'created' ELSE 'exists' END;
        END $$
        """
    )


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {SCHEMA}.claim_owner(uuid)")
    op.drop_table("forgotten_users", schema=SCHEMA)
