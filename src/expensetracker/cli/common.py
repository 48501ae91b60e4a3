"""What every command shares: failing with a message, the settings, the logging, a database,
and what a failure to use the database says."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn

import asyncpg
import typer
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from expensetracker.auth.accounts import user_id_by_email
from expensetracker.platform.config import Settings
from expensetracker.platform.db import (
    cannot_connect,
    connect_error_reason,
    create_driver_pool,
    create_engine,
    database_location,
)
from expensetracker.platform.errors import chained
from expensetracker.platform.logging import configure_logging

HostOption = Annotated[str, typer.Option(help="Address to listen on.")]
PortOption = Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")]
# `--email` and `--user` both name the account: the first commands said `--user`.
EmailOption = Annotated[
    str, typer.Option("--email", "--user", help="Email address of the account.")
]


# Exit statuses besides 0, and 1 (the command failed): docs/operations.md#exit-status.
USAGE_ERROR = 2  # bad usage or configuration, as Click's own usage errors
DATABASE_UNAVAILABLE = 69  # sysexits.h's EX_UNAVAILABLE: trying again later may succeed
INTERRUPTED = 130  # a shell's status for SIGINT (128 + 2); SIGTERM unwinds as one too

# The database the command works on, which a failure to use it names (database_failure).
_current_database_url: ContextVar[str | None] = ContextVar("_current_database_url", default=None)


def fail(message: str, code: int = USAGE_ERROR) -> NoReturn:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def interrupt(_signum: int, _frame: object) -> NoReturn:
    """A SIGTERM handler unwinding like Ctrl-C, so what was started is stopped cleanly."""
    raise KeyboardInterrupt


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]  # overrides are Settings fields
    except ValidationError as exc:
        # Only the messages: pydantic would echo the offending values, which may be secrets.
        reasons = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        fail(f"invalid configuration: {reasons}")


def start_logging(settings: Settings, *, service: str, level: str | None = None) -> None:
    configure_logging(
        level=level or settings.effective_log_level,
        fmt=settings.effective_log_format,
        service=service,
    )


def database_url(settings: Settings) -> str:
    if settings.database_url is None:
        fail("EXPENSETRACKER_DATABASE_URL is not set")
    url = settings.database_url.get_secret_value()
    _current_database_url.set(url)
    return url


def operator_settings(
    *, service: str, level: str | None = None, needs_database: bool = True
) -> Settings:
    """Settings and logging of a one-off operator command (against the configured database
    unless ``needs_database`` is false)."""
    settings = load_settings()
    if needs_database:
        database_url(settings)
    start_logging(settings, service=service, level=level)
    return settings


@asynccontextmanager
async def database(
    settings: Settings, *, purpose: str
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(settings, application_name=f"expensetracker-{purpose}")
    try:
        yield async_sessionmaker(engine, expire_on_commit=False)
    finally:
        await engine.dispose()


@asynccontextmanager
async def driver_connection(settings: Settings, *, purpose: str) -> AsyncIterator[Any]:
    pool = await create_driver_pool(settings, application_name=f"expensetracker-{purpose}")
    try:
        async with pool.acquire() as connection:
            yield connection
    finally:
        await pool.close()


async def account(session: AsyncSession, email: str) -> uuid.UUID:
    """The user id of the account with this email address, or the command fails."""
    user_id = await user_id_by_email(session, email)
    if user_id is None:
        fail(f"no account with the email address {email}")
    return user_id


@dataclass(frozen=True)
class DatabaseFailure:
    message: str
    exit_status: int


# Besides class 08 (connection exceptions), SQLSTATEs of a server that takes no connection now
# (too many, shutting down, starting up): trying again later may work.
_SERVER_UNAVAILABLE = ("53300", "57P01", "57P02", "57P03")
# The URL names a role, a password or a database the server refuses.
_CONNECTION_REFUSED = ("28000", "28P01", "3D000")
# A relation or a schema that migrations create is missing.
_NOT_MIGRATED = ("42P01", "3F000")


def database_failure(exc: BaseException) -> DatabaseFailure | None:
    """What to tell the operator when ``exc`` (or an exception it was raised from) says that the
    database could not be reached or used; None when it says something else, a bug whose
    traceback must show."""
    url = _current_database_url.get()
    for cause in chained(exc):
        if isinstance(cause, asyncpg.PostgresError):
            sqlstate = cause.sqlstate or ""
            if sqlstate.startswith("08") or sqlstate in _SERVER_UNAVAILABLE:
                return _cannot_connect(url, str(cause), DATABASE_UNAVAILABLE)
            if sqlstate in _CONNECTION_REFUSED:
                return _cannot_connect(url, str(cause), USAGE_ERROR)
            if sqlstate in _NOT_MIGRATED:
                where = database_location(url)
                return DatabaseFailure(
                    f"the database{where} is not migrated ({cause}): run `expensetracker migrate`",
                    USAGE_ERROR,
                )
        # Connecting fails with the socket's own errors: asyncpg's, below every connection of
        # the program (SQLAlchemy's included), raises them as they come. A file's errors raised
        # elsewhere are not the database's.
        elif isinstance(cause, OSError) and _raised_within_asyncpg(cause):
            return _cannot_connect(url, connect_error_reason(cause), DATABASE_UNAVAILABLE)
    return None


def _raised_within_asyncpg(exc: BaseException) -> bool:
    traceback = exc.__traceback__
    while traceback is not None:
        if traceback.tb_frame.f_globals.get("__name__", "").startswith("asyncpg."):
            return True
        traceback = traceback.tb_next
    return False


def _cannot_connect(url: str | None, reason: str, exit_status: int) -> DatabaseFailure:
    return DatabaseFailure(cannot_connect(url, reason), exit_status)
