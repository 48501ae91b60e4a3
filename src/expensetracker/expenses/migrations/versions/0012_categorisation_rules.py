"""Categorisation rules: per user, in an explicit order, a pattern on the description or the
merchant (and optionally an amount range) that sets a category and adds tags (issue 15).

Numbered 0012 after 0010 here; it follows 0011 (home currency and rates) once both are merged.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

SCHEMA = "expenses"


def upgrade() -> None:
    op.create_table(
        "categorisation_rules",
        sa.Column("user_id", sa.Uuid(), primary_key=True),
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("field", sa.String(11), nullable=False),
        sa.Column("match", sa.String(8), nullable=False),
        sa.Column("pattern", sa.String(200), nullable=False),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("min_amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("max_amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("category_id", sa.Uuid(), nullable=True),
        sa.Column("tags", postgresql.ARRAY(sa.String(50)), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.ForeignKeyConstraint(["user_id"], [f"{SCHEMA}.owners.user_id"], ondelete="CASCADE"),
        sa.UniqueConstraint("user_id", "position", name="categorisation_rules_position_key"),
        sa.CheckConstraint(
            "field IN ('any', 'description', 'merchant')", name="categorisation_rules_field"
        ),
        sa.CheckConstraint("match IN ('contains', 'regex')", name="categorisation_rules_match"),
        sa.CheckConstraint(
            "(min_amount_minor IS NULL AND max_amount_minor IS NULL) OR currency IS NOT NULL",
            name="categorisation_rules_range_has_currency",
        ),
        schema=SCHEMA,
    )
    op.execute(
        f"ALTER TABLE {SCHEMA}.categorisation_rules ADD CONSTRAINT "
        f"categorisation_rules_category_fkey FOREIGN KEY (user_id, category_id) "
        f"REFERENCES {SCHEMA}.categories (user_id, id) ON DELETE SET NULL (category_id)"
    )


def downgrade() -> None:
    op.drop_table("categorisation_rules", schema=SCHEMA)
