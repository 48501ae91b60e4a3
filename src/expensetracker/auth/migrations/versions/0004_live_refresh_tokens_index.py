"""Indexes each session's live refresh tokens (neither used nor revoked): ``/session`` reads
them on every page, and a long session keeps thousands of used ones for reuse detection.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX ix_refresh_tokens_family_id_live ON auth.refresh_tokens (family_id) "
        "WHERE used_at IS NULL AND revoked_at IS NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX auth.ix_refresh_tokens_family_id_live")
