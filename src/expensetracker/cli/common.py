"""What every command shares: failing with a message, the settings, the logging, a database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from expensetracker.auth.accounts import user_id_by_email
from expensetracker.platform.config import Settings
from expensetracker.platform.db import create_driver_pool, create_engine
from expensetracker.platform.logging import configure_logging

HostOption = Annotated[str, typer.Option(help="Address to listen on.")]
PortOption = Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")]
# `--email` and `--user` both name the account: the first commands said `--user`.
EmailOption = Annotated[
    str, typer.Option("--email", "--user", help="Email address of the account.")
]


def fail(message: str, code: int = 2) -> NoReturn:
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
    return settings.database_url.get_secret_value()


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
