"""Owners (users known to this service) and their categories, one level of grouping.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "expenses"


def upgrade() -> None:
    op.create_table(
        "owners",
        sa.Column("user_id", sa.Uuid(), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        schema=SCHEMA,
    )
    op.create_table(
        "categories",
        sa.Column("user_id", sa.Uuid(), primary_key=True),
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("parent_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.ForeignKeyConstraint(["user_id"], [f"{SCHEMA}.owners.user_id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["user_id", "parent_id"],
            [f"{SCHEMA}.categories.user_id", f"{SCHEMA}.categories.id"],
            ondelete="CASCADE",
        ),
        schema=SCHEMA,
    )
    op.create_index(
        "uq_categories_user_name",
        "categories",
        ["user_id", sa.text("lower(name)")],
        unique=True,
        schema=SCHEMA,
    )
    op.create_index(
        "ix_categories_user_name_id", "categories", ["user_id", "name", "id"], schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_table("categories", schema=SCHEMA)
    op.drop_table("owners", schema=SCHEMA)
