"""Tables of the auth service, all in its own PostgreSQL schema."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    LargeBinary,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from expensetracker.platform.tables import new_id, written_at

SCHEMA = "auth"


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA)


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = new_id()
    # Normalised (lower case); unique, so addresses differing only in case are one account.
    email: Mapped[str] = mapped_column(String(254), unique=True)
    display_name: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = written_at()
    password_changed_at: Mapped[datetime] = written_at()


class RefreshToken(Base):
    """One opaque refresh token; a session is the family of tokens rotated from one login."""

    __tablename__ = "refresh_tokens"
    __table_args__ = (
        # /session reads a family's live token on every page: a long session's many used
        # tokens stay out of it (migration 0004).
        Index(
            "ix_refresh_tokens_family_id_live",
            "family_id",
            postgresql_where=text("used_at IS NULL AND revoked_at IS NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = new_id()
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(f"{SCHEMA}.users.id", ondelete="CASCADE"), index=True
    )
    family_id: Mapped[uuid.UUID] = mapped_column(index=True)
    # SHA-256 of the token: a stolen table holds no usable token.
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    issued_at: Mapped[datetime] = written_at()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SigningKey(Base):
    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(16))
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # AES-256-GCM under the key-encryption key from settings: nonce || ciphertext.
    private_key_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = written_at()
    # Set when a newer key takes over signing; the public key stays published a while longer.
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LoginFailure(Base):
    """Failed attempts per subject ("account:<sha256 of email>" or "address:<ip>"), shared by
    every replica through the database."""

    __tablename__ = "login_failures"
    __table_args__ = (
        Index("ix_login_failures_subject_failed_at", "subject", "failed_at"),
        Index("ix_auth_login_failures_failed_at", "failed_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    subject: Mapped[str] = mapped_column(String(100))
    failed_at: Mapped[datetime] = written_at()


class OutboxEvent(Base):
    """Events for other services, written in the same transaction as the change they report.
    Consumers read them through the view ``auth.user_events_v1`` (docs/contracts)."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_type: Mapped[str] = mapped_column(Text)
    user_id: Mapped[uuid.UUID] = mapped_column()
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = written_at()
