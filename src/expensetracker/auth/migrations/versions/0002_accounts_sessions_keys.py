"""Accounts, sessions (refresh-token families), signing keys, login throttling, and the outbox
of events for the other services with its published view ``user_events_v1``.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "auth"


def _timestamp(name: str, *, nullable: bool = False, default: bool = True) -> sa.Column:
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        nullable=nullable,
        server_default=sa.func.now() if default else None,
    )


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("email", sa.String(254), nullable=False, unique=True),
        sa.Column("display_name", sa.String(100), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        _timestamp("created_at"),
        _timestamp("password_changed_at"),
        sa.CheckConstraint("email = lower(email)", name="users_email_lower_case"),
        schema=SCHEMA,
    )
    op.create_table(
        "refresh_tokens",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column(
            "user_id",
            sa.Uuid(),
            sa.ForeignKey(f"{SCHEMA}.users.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("family_id", sa.Uuid(), nullable=False, index=True),
        sa.Column("token_hash", sa.LargeBinary(32), nullable=False, unique=True),
        _timestamp("issued_at"),
        _timestamp("expires_at", default=False),
        _timestamp("used_at", nullable=True, default=False),
        _timestamp("revoked_at", nullable=True, default=False),
        schema=SCHEMA,
    )
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        sa.Column("algorithm", sa.String(16), nullable=False),
        sa.Column("public_jwk", postgresql.JSONB(), nullable=False),
        sa.Column("private_key_encrypted", sa.LargeBinary(), nullable=False),
        _timestamp("created_at"),
        _timestamp("retired_at", nullable=True, default=False),
        schema=SCHEMA,
    )
    op.create_table(
        "login_failures",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("subject", sa.String(100), nullable=False),
        _timestamp("failed_at"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_login_failures_subject_failed_at",
        "login_failures",
        ["subject", "failed_at"],
        schema=SCHEMA,
    )
    op.create_index(
        "ix_auth_login_failures_failed_at", "login_failures", ["failed_at"], schema=SCHEMA
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        _timestamp("created_at"),
        schema=SCHEMA,
    )
    # The published read contract (docs/contracts/auth-user-events-v1.md): consumers keep their
    # own position (the last id they handled) and never touch the table itself.
    op.execute(
        f"""
        CREATE VIEW {SCHEMA}.user_events_v1 AS
        SELECT id, event_type, user_id, payload, created_at FROM {SCHEMA}.outbox
        """
    )


def downgrade() -> None:
    op.execute(f"DROP VIEW {SCHEMA}.user_events_v1")
    for table in ("outbox", "login_failures", "signing_keys", "refresh_tokens", "users"):
        op.drop_table(table, schema=SCHEMA)
