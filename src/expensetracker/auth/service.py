"""Accounts and sessions: the logic behind the auth routes.

A session is a family of refresh tokens rotated from one login; its id is the ``sid`` claim of
the access tokens issued in it. Every security event is an audit log line (never a secret) and,
where docs/auth.md lists one, a metric.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg
import jwt
import structlog
from prometheus_client import Counter
from sqlalchemy import CursorResult, delete, exists, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from expensetracker.auth import throttle
from expensetracker.auth.keys import KeyStore
from expensetracker.auth.models import OutboxEvent, RefreshToken, User
from expensetracker.auth.passwords import PasswordHasher, policy_violation
from expensetracker.auth.schemas import TokenPair
from expensetracker.platform.config import Settings
from expensetracker.platform.errors import InvalidToken, Problem, ValidationProblem
from expensetracker.platform.events import USER_DELETED
from expensetracker.platform.tokens import Principal

audit = structlog.get_logger("expensetracker.audit")


@dataclass(frozen=True)
class AuthContext:
    """What issuing and checking credentials needs besides the database: the routes' one
    dependency."""

    keys: KeyStore
    hasher: PasswordHasher
    settings: Settings


@dataclass(frozen=True)
class PasswordAttempt:
    """A password offered from a client address: throttled, and recorded when wrong, as every
    login is."""

    password: str
    client_address: str


USERS_REGISTERED = Counter("expensetracker_users_registered_total", "Accounts created.")
LOGINS = Counter(
    "expensetracker_logins_total", "Login attempts by outcome.", ["outcome"]
)  # succeeded | failed | throttled
REFRESH_REUSE_DETECTED = Counter(
    "expensetracker_refresh_token_reuse_detected_total",
    "Refresh tokens presented again after use; their whole session was revoked.",
)
for _outcome in ("succeeded", "failed", "throttled"):
    LOGINS.labels(_outcome)  # present at 0 from the start, so rates work at once


class InvalidCredentials(Problem):
    status = 401
    default_detail = "The email address or the password is wrong."


class InvalidRefreshToken(Problem):
    status = 401
    default_detail = "The refresh token is invalid, expired or revoked; log in again."


class WrongPassword(Problem):
    status = 403
    default_detail = "The password is wrong."


class TooManyAttempts(Problem):
    status = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"Too many failed attempts; try again in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )


def _hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _check_policy(password: str, *, email: str, field: str) -> None:
    if reason := policy_violation(password, email=email):
        raise ValidationProblem.of_field(f"body.{field}", reason, "password_policy")


async def register(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    display_name: str | None,
    hasher: PasswordHasher,
) -> None:
    """Creates the account unless the email is taken; the caller cannot tell which. Without a
    display name, the email's local part is used. The password is one RegisterRequest allowed."""
    display_name = display_name or email.rsplit("@", 1)[0][:100]
    password_hash = await hasher.hash(password)  # also for a taken email: same time
    async with session.begin():
        created = await session.scalar(
            pg_insert(User)
            .values(email=email, display_name=display_name, password_hash=password_hash)
            .on_conflict_do_nothing(index_elements=[User.email])
            .returning(User.id)
        )
    if created is None:
        audit.info("registration_for_existing_account", account=throttle.account_subject(email))
        return
    USERS_REGISTERED.inc()
    audit.info("user_registered", user_id=str(created))


async def has_password(
    session: AsyncSession, *, email: str, password: str, hasher: PasswordHasher
) -> bool:
    """Whether the account's password is ``password``, not counted as a sign-in, failed or
    not: `up --demo` shows the demo account's published password only while it still is."""
    password_hash = await session.scalar(select(User.password_hash).where(User.email == email))
    return password_hash is not None and await hasher.verify(password_hash, password)


async def _issue_tokens(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    auth: AuthContext,
) -> TokenPair:
    refresh_token = secrets.token_urlsafe(32)
    session.add(
        RefreshToken(
            user_id=user_id,
            family_id=session_id,
            token_hash=_hash_token(refresh_token),
            expires_at=datetime.now(UTC)
            + timedelta(seconds=auth.settings.refresh_token_ttl_seconds),
        )
    )
    key = await auth.keys.signing_key()
    now = int(time.time())
    claims = {
        "iss": auth.settings.token_issuer,
        "aud": auth.settings.token_audience,
        "sub": str(user_id),
        "sid": str(session_id),
        "iat": now,
        "nbf": now,
        "exp": now + auth.settings.access_token_ttl_seconds,
        "jti": uuid.uuid4().hex,
    }
    access_token = jwt.encode(claims, key.private_key, algorithm="EdDSA", headers={"kid": key.kid})
    return TokenPair(
        access_token=access_token,
        refresh_token=refresh_token,
        expires_in=auth.settings.access_token_ttl_seconds,
    )


async def _authenticate(
    session: AsyncSession, *, email: str, attempt: PasswordAttempt, auth: AuthContext
) -> User | None:
    """The user when the password is right, else None (the failure is recorded). Throttled
    subjects are refused before any password is checked. Runs inside the caller's transaction."""
    password, client_address = attempt.password, attempt.client_address
    account = throttle.account_subject(email)
    address = throttle.address_subject(client_address)
    pair = throttle.pair_subject(email, client_address)
    limits = throttle.Limits(
        per_address=auth.settings.login_max_failures_per_address,
        per_account_address=auth.settings.login_max_failures_per_account_address,
        per_account=auth.settings.login_max_failures_per_account,
        window=timedelta(seconds=auth.settings.login_throttle_window_seconds),
    )
    await throttle.serialise(session, account)
    wait = await throttle.retry_after(
        session, account=account, address=address, pair=pair, limits=limits
    )
    if wait:
        LOGINS.labels("throttled").inc()
        audit.warning("login_throttled", account=account, client_address=client_address)
        raise TooManyAttempts(wait)
    # Read after the lock, as the attempts before this one left it: a password change that
    # waited for another is checked against the new password (populate_existing: the caller
    # may have loaded the user before the lock).
    user = await session.scalar(
        select(User).where(User.email == email).execution_options(populate_existing=True)
    )
    # Without a user the hasher does the same work and answers False.
    verified = await auth.hasher.verify(user.password_hash if user else None, password)
    if user is None or not verified:
        await throttle.record_failure(
            session, subjects=[account, address, pair], window=limits.window
        )
        LOGINS.labels("failed").inc()
        audit.warning(
            "login_failed",
            account=account,
            user_id=str(user.id) if user else None,
            client_address=client_address,
        )
        return None
    # This address is in good standing again; the account's count (other addresses' failures)
    # stays until it leaves the window.
    await throttle.forget(session, subject=pair)
    if auth.hasher.needs_rehash(user.password_hash):
        user.password_hash = await auth.hasher.hash(password)
        audit.info("password_rehashed", user_id=str(user.id))
    return user


async def login(
    session: AsyncSession, *, email: str, attempt: PasswordAttempt, auth: AuthContext
) -> TokenPair:
    async with session.begin():
        user = await _authenticate(session, email=email, attempt=attempt, auth=auth)
        tokens = None
        if user is not None:
            tokens = await _issue_tokens(
                session, user_id=user.id, session_id=uuid.uuid4(), auth=auth
            )
    if user is None or tokens is None:  # raised only now, so that the failure is committed
        raise InvalidCredentials
    LOGINS.labels("succeeded").inc()
    audit.info("login_succeeded", user_id=str(user.id), client_address=attempt.client_address)
    return tokens


async def refresh(session: AsyncSession, *, refresh_token: str, auth: AuthContext) -> TokenPair:
    """Rotates the refresh token. A token presented a second time means it was stolen (or the
    client misbehaves): the whole session is revoked."""
    token_hash = _hash_token(refresh_token)
    now = datetime.now(UTC)
    async with session.begin():
        current = (
            await session.execute(
                update(RefreshToken)
                .where(
                    RefreshToken.token_hash == token_hash,
                    RefreshToken.used_at.is_(None),
                    RefreshToken.revoked_at.is_(None),
                    RefreshToken.expires_at > now,
                )
                .values(used_at=now)
                .returning(RefreshToken.user_id, RefreshToken.family_id)
            )
        ).one_or_none()
        if current is not None:
            return await _issue_tokens(
                session,
                user_id=current.user_id,
                session_id=current.family_id,
                auth=auth,
            )
        reused = (
            await session.execute(
                select(RefreshToken.user_id, RefreshToken.family_id).where(
                    RefreshToken.token_hash == token_hash, RefreshToken.used_at.is_not(None)
                )
            )
        ).one_or_none()
        if reused is not None:
            await _revoke(session, user_id=reused.user_id, session_id=reused.family_id, now=now)
    if reused is not None:
        REFRESH_REUSE_DETECTED.inc()
        audit.warning(
            "refresh_token_reuse_detected",
            user_id=str(reused.user_id),
            session_id=str(reused.family_id),
        )
    raise InvalidRefreshToken


# A token counts as live a while past its expiry: a refresh that took it just before may still be
# committing its successor, and the replicas' clocks differ a little.
_EXPIRY_GRACE = timedelta(minutes=5)
# Rows deleted per transaction: short locks, however many sessions ended.
_PURGE_BATCH = 1000


async def purge_ended_sessions(
    sessionmaker: async_sessionmaker[AsyncSession], *, now: datetime, batch: int = _PURGE_BATCH
) -> int:
    """Deletes the refresh tokens of the sessions that have ended: none of their tokens can be
    used any more (each is used, revoked or expired). A used token stays as long as its session
    lives, however old it is, so that presented again it still revokes the session. Returns how
    many rows it deleted."""
    live = aliased(RefreshToken)
    ended = (
        select(RefreshToken.id)
        .where(
            ~exists().where(
                live.family_id == RefreshToken.family_id,
                # The probe reads the index of live tokens (migration 0004).
                live.used_at.is_(None),
                live.revoked_at.is_(None),
                live.expires_at > now - _EXPIRY_GRACE,
            )
        )
        .limit(batch)
    )
    deleted = 0
    while True:
        async with sessionmaker.begin() as session:
            # A DELETE's result is a CursorResult, which has the row count.
            result = cast(
                CursorResult[Any],
                await session.execute(delete(RefreshToken).where(RefreshToken.id.in_(ended))),
            )
        deleted += result.rowcount
        if result.rowcount < batch:
            return deleted


async def _revoke(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    now: datetime,
    session_id: uuid.UUID | None = None,
    keep_session_id: uuid.UUID | None = None,
) -> None:
    """Revokes one session, or every session of the user but ``keep_session_id``."""
    statement = update(RefreshToken).where(
        RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None)
    )
    if session_id is not None:
        statement = statement.where(RefreshToken.family_id == session_id)
    if keep_session_id is not None:
        statement = statement.where(RefreshToken.family_id != keep_session_id)
    await session.execute(statement.values(revoked_at=now))


async def logout(session: AsyncSession, *, principal: Principal) -> None:
    async with session.begin():
        await _revoke(
            session,
            user_id=principal.user_id,
            session_id=principal.session_id,
            now=datetime.now(UTC),
        )
    audit.info("logout", user_id=str(principal.user_id), session_id=str(principal.session_id))


async def logout_all(session: AsyncSession, *, principal: Principal) -> None:
    async with session.begin():
        await _revoke(session, user_id=principal.user_id, now=datetime.now(UTC))
    audit.info("logout_all", user_id=str(principal.user_id))


async def get_user(session: AsyncSession, *, principal: Principal) -> User:
    user = await session.get(User, principal.user_id)
    if user is None:  # deleted since the token was issued
        raise InvalidToken
    return user


# One statement on the driver's connection: clients that keep a session of their own ask this
# on every request.
_LIVE_SESSION = """
SELECT u.id, u.email, u.display_name, u.created_at
FROM auth.users u
WHERE u.id = $1 AND EXISTS (
  SELECT FROM auth.refresh_tokens t
  WHERE t.user_id = $1 AND t.family_id = $2 AND t.used_at IS NULL AND t.revoked_at IS NULL
    AND t.expires_at > now())
"""


async def get_live_session(db: asyncpg.Connection, *, principal: Principal) -> asyncpg.Record:
    """The caller's account, if the session of the token is still live: not signed out, not
    ended by a password change or ``logout-all``, not expired."""
    user = await db.fetchrow(_LIVE_SESSION, principal.user_id, principal.session_id)
    if user is None:
        raise InvalidToken("The session has ended.")
    return user


async def _with_password(
    session: AsyncSession,
    *,
    principal: Principal,
    attempt: PasswordAttempt,
    auth: AuthContext,
    then: Callable[[User], Awaitable[None]],
) -> None:
    """``then(user)`` in one transaction with the check that ``attempt`` is the caller's
    password; else WrongPassword, raised once that transaction has committed the failure
    (throttled and recorded like a login's)."""
    async with session.begin():
        account = await get_user(session, principal=principal)
        user = await _authenticate(session, email=account.email, attempt=attempt, auth=auth)
        if user is not None:
            await then(user)
    if user is None:
        raise WrongPassword


async def change_password(
    session: AsyncSession,
    *,
    principal: Principal,
    attempt: PasswordAttempt,
    new_password: str,
    auth: AuthContext,
) -> None:
    """Sets the new password and revokes every other session of the user."""

    async def change(user: User) -> None:
        _check_policy(new_password, email=user.email, field="new_password")
        now = datetime.now(UTC)
        user.password_hash = await auth.hasher.hash(new_password)
        user.password_changed_at = now
        await _revoke(session, user_id=user.id, keep_session_id=principal.session_id, now=now)

    await _with_password(session, principal=principal, attempt=attempt, auth=auth, then=change)
    audit.info("password_changed", user_id=str(principal.user_id))


async def delete_account(
    session: AsyncSession, *, principal: Principal, attempt: PasswordAttempt, auth: AuthContext
) -> None:
    """Deletes the account at once, and in the same transaction writes the ``user.deleted``
    event from which the other services delete the user's data."""

    async def delete(user: User) -> None:
        await delete_user(session, user_id=user.id)

    await _with_password(session, principal=principal, attempt=attempt, auth=auth, then=delete)
    audit.info("account_deleted", user_id=str(principal.user_id))


async def delete_user(session: AsyncSession, *, user_id: uuid.UUID) -> None:
    """Deletes the user (sessions follow by cascade) and records the event, in the caller's
    transaction: both happen or neither does."""
    await session.execute(delete(User).where(User.id == user_id))
    await session.execute(
        insert(OutboxEvent).values(
            event_type=USER_DELETED,
            user_id=user_id,
            payload={"user_id": str(user_id), "deleted_at": datetime.now(UTC).isoformat()},
        )
    )
