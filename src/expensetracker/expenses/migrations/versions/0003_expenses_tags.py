"""Expenses and tags. Money is BIGINT minor units with its ISO 4217 currency; text search uses
a trigram GIN index, never a scan of everyone's rows. Deleting a
parent category now lifts its children to the top level instead of deleting them.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "expenses"


def _owner_fk() -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["user_id"], [f"{SCHEMA}.owners.user_id"], ondelete="CASCADE")


def _timestamp(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    # A trusted extension: the database owner may create it. Where an administrator prepared the
    # database (Kubernetes), it exists and the service's role may not create extensions, a right
    # that IF NOT EXISTS alone would still check.
    op.execute(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_trgm') "
        "THEN CREATE EXTENSION pg_trgm; END IF; END $$"
    )

    op.drop_constraint("categories_user_id_parent_id_fkey", "categories", schema=SCHEMA)
    op.execute(
        f"ALTER TABLE {SCHEMA}.categories ADD CONSTRAINT categories_user_id_parent_id_fkey "
        f"FOREIGN KEY (user_id, parent_id) REFERENCES {SCHEMA}.categories (user_id, id) "
        "ON DELETE SET NULL (parent_id)"
    )

    op.create_table(
        "tags",
        sa.Column("user_id", sa.Uuid(), primary_key=True),
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("name", sa.String(50), nullable=False),
        _timestamp("created_at"),
        _owner_fk(),
        schema=SCHEMA,
    )
    op.create_index(
        "uq_tags_user_name", "tags", ["user_id", sa.text("lower(name)")], unique=True, schema=SCHEMA
    )

    op.create_table(
        "expenses",
        sa.Column("user_id", sa.Uuid(), primary_key=True),
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("currency_exponent", sa.SmallInteger(), nullable=False),
        sa.Column("occurred_on", sa.Date(), nullable=False),
        sa.Column("description", sa.String(200), nullable=False),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("merchant", sa.String(100), nullable=True),
        sa.Column("category_id", sa.Uuid(), nullable=True),
        sa.Column("external_id", sa.String(100), nullable=True),
        sa.Column(
            "search_text",
            sa.Text(),
            # STORED: PostgreSQL 18 makes generated columns virtual by default, and those
            # cannot be indexed.
            sa.Computed(
                "lower(description || ' ' || coalesce(notes, '') || ' ' || coalesce(merchant, ''))",
                persisted=True,
            ),
        ),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        _owner_fk(),
        sa.CheckConstraint("amount_minor > 0", name="expenses_amount_positive"),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name="expenses_currency_code"),
        sa.CheckConstraint("char_length(notes) <= 2000", name="expenses_notes_length"),
        schema=SCHEMA,
    )
    op.execute(
        f"ALTER TABLE {SCHEMA}.expenses ADD CONSTRAINT expenses_user_id_category_id_fkey "
        f"FOREIGN KEY (user_id, category_id) REFERENCES {SCHEMA}.categories (user_id, id) "
        "ON DELETE SET NULL (category_id)"
    )
    op.create_index(
        "ix_expenses_user_occurred", "expenses", ["user_id", "occurred_on", "id"], schema=SCHEMA
    )
    op.create_index(
        "uq_expenses_user_external_id",
        "expenses",
        ["user_id", "external_id"],
        unique=True,
        schema=SCHEMA,
    )
    # Trigrams alone: a rare word is found at once, and the user filter is applied to those few
    # rows; a common word makes the planner read the user's own rows (ix_expenses_user_occurred).
    op.execute(
        f"CREATE INDEX ix_expenses_search ON {SCHEMA}.expenses USING gin (search_text gin_trgm_ops)"
    )

    op.create_table(
        "expense_tags",
        sa.Column("user_id", sa.Uuid(), primary_key=True),
        sa.Column("expense_id", sa.Uuid(), primary_key=True),
        sa.Column("tag_id", sa.Uuid(), primary_key=True),
        sa.ForeignKeyConstraint(
            ["user_id", "expense_id"],
            [f"{SCHEMA}.expenses.user_id", f"{SCHEMA}.expenses.id"],
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id", "tag_id"],
            [f"{SCHEMA}.tags.user_id", f"{SCHEMA}.tags.id"],
            ondelete="CASCADE",
        ),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_expense_tags_user_tag",
        "expense_tags",
        ["user_id", "tag_id", "expense_id"],
        schema=SCHEMA,
    )


def downgrade() -> None:
    for table in ("expense_tags", "expenses", "tags"):
        op.drop_table(table, schema=SCHEMA)
    op.drop_constraint("categories_user_id_parent_id_fkey", "categories", schema=SCHEMA)
    op.create_foreign_key(
        "categories_user_id_parent_id_fkey",
        "categories",
        "categories",
        ["user_id", "parent_id"],
        ["user_id", "id"],
        source_schema=SCHEMA,
        referent_schema=SCHEMA,
        ondelete="CASCADE",
    )
