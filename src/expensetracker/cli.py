"""The one command line: ``expensetracker up | serve | migrate``."""

from __future__ import annotations

import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import structlog
import typer
from pydantic import SecretStr, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from expensetracker import __version__
from expensetracker.platform import migrations, server
from expensetracker.platform.application import create_app, process_name
from expensetracker.platform.config import Settings
from expensetracker.platform.db import create_engine
from expensetracker.platform.logging import configure_logging
from expensetracker.platform.service import ServiceSpec
from expensetracker.targets import TARGET_NAMES, resolve_targets

cli = typer.Typer(
    name="expensetracker",
    help="ExpenseTracker: self-hosted expense tracking.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = structlog.get_logger("expensetracker.cli")

TargetOption = Annotated[
    str,
    typer.Option(help=f"Service(s) to run: {' | '.join(TARGET_NAMES)}, or a comma-separated list."),
]
HostOption = Annotated[str, typer.Option(help="Address to listen on.")]
PortOption = Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")]


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def _load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        # Only the messages: pydantic would echo the offending values, which may be secrets.
        reasons = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        _fail(f"invalid configuration: {reasons}")


def _targets(target: str) -> list[ServiceSpec]:
    try:
        return resolve_targets(target)
    except ValueError as exc:
        _fail(str(exc))


def _database_url(settings: Settings) -> str:
    if settings.database_url is None:
        _fail("EXPENSETRACKER_DATABASE_URL is not set")
    return settings.database_url.get_secret_value()


def _migrate(services: list[ServiceSpec], database_url: str) -> None:
    for spec in services:
        migrations.upgrade(spec, database_url)
        log.info("migrated", target=spec.name, revision=migrations.head_revision(spec))


def _prepare(services: list[ServiceSpec], settings: Settings, *, demo: bool) -> None:
    """Migrations, and the demo account when asked for."""
    import asyncio
    from datetime import date

    from expensetracker import demo as demo_data

    _migrate(services, _database_url(settings))
    if demo:

        async def load() -> None:
            async with _database(settings, purpose="demo") as sessionmaker:
                await demo_data.load(sessionmaker, settings, today=date.today())

        asyncio.run(load())
        typer.echo(f"Demo account: {demo_data.EMAIL} / {demo_data.PASSWORD}")


def _serve(services: list[ServiceSpec], settings: Settings, host: str, port: int) -> None:
    try:
        app = create_app(services, settings)
    except ValueError as exc:
        _fail(str(exc))

    def announce() -> None:
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
        typer.echo(f"ExpenseTracker ({process_name(services)}) is ready: http://{shown}:{port}")

    if not server.run(app, settings=settings, host=host, port=port, on_ready=announce):
        _fail("the server did not start (see the log above)", code=1)


def _interrupt(_signum: int, _frame: object) -> NoReturn:
    raise KeyboardInterrupt


def _version(value: bool) -> None:
    if value:
        typer.echo(f"expensetracker {__version__}")
        raise typer.Exit


@cli.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """ExpenseTracker: self-hosted expense tracking."""


@cli.command()
def up(
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Folder for the embedded database [default: ./.expensetracker]"),
    ] = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Load a demo account with a year of expenses.")
    ] = False,
) -> None:
    """Run every service in this process, on the embedded PostgreSQL unless
    EXPENSETRACKER_DATABASE_URL names a server. Ctrl-C or SIGTERM stops both cleanly."""
    from expensetracker.platform.embedded import DataDirInUse, EmbeddedPostgres

    settings = _load_settings(**({"data_dir": data_dir} if data_dir else {}))
    services = _targets("all")
    configure_logging(
        level=settings.effective_log_level,
        fmt=settings.effective_log_format,
        service=process_name(services),
    )
    # Until the server takes over the signals, SIGTERM unwinds like Ctrl-C so the database stops.
    signal.signal(signal.SIGTERM, _interrupt)
    if settings.database_url is not None:
        _prepare(services, settings, demo=demo)
        _serve(services, settings, host, port)
        return
    try:
        with EmbeddedPostgres(settings.data_dir) as database:
            log.info("embedded_postgres_started", data_dir=str(database.data_dir))
            settings = settings.model_copy(update={"database_url": SecretStr(database.url)})
            _prepare(services, settings, demo=demo)
            _serve(services, settings, host, port)
    except DataDirInUse as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        log.info("interrupted_during_startup")
    log.info("stopped")


@cli.command()
def serve(
    target: TargetOption = "all",
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
) -> None:
    """Run one or several services against EXPENSETRACKER_DATABASE_URL (no migrations)."""
    settings = _load_settings()
    services = _targets(target)
    _database_url(settings)
    configure_logging(
        level=settings.effective_log_level,
        fmt=settings.effective_log_format,
        service=process_name(services),
    )
    _serve(services, settings, host, port)


@cli.command()
def migrate(target: TargetOption = "all") -> None:
    """Apply every pending migration of the target services to EXPENSETRACKER_DATABASE_URL."""
    settings = _load_settings()
    services = _targets(target)
    configure_logging(
        level=settings.effective_log_level,
        fmt=settings.effective_log_format,
        service=process_name(services),
    )
    _migrate(services, _database_url(settings))


def _operator_settings(*, service: str, level: str | None = None) -> Settings:
    """Settings and logging of a one-off operator command against the configured database."""
    settings = _load_settings()
    _database_url(settings)
    configure_logging(
        level=level or settings.effective_log_level,
        fmt=settings.effective_log_format,
        service=service,
    )
    return settings


@asynccontextmanager
async def _database(
    settings: Settings, *, purpose: str
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(settings, application_name=f"expensetracker-{purpose}")
    try:
        yield async_sessionmaker(engine, expire_on_commit=False)
    finally:
        await engine.dispose()


auth_cli = typer.Typer(help="Operations of the auth service.", no_args_is_help=True)
cli.add_typer(auth_cli, name="auth")


@auth_cli.command("rotate-keys")
def rotate_keys() -> None:
    """Create a new signing key; tokens signed by the old one stay valid until they expire."""
    import asyncio

    from expensetracker.auth.keys import KeyEncryption, KeyStore

    settings = _operator_settings(service="auth")

    async def rotate() -> str:
        async with _database(settings, purpose="rotate-keys") as sessionmaker:
            keys = KeyStore(
                sessionmaker=sessionmaker,
                encryption=KeyEncryption.from_settings(settings),
                token_ttl_seconds=settings.access_token_ttl_seconds,
            )
            return await keys.rotate()

    typer.echo(f"new signing key: {asyncio.run(rotate())}")


expenses_cli = typer.Typer(help="Operations of the expenses service.", no_args_is_help=True)
cli.add_typer(expenses_cli, name="expenses")


@expenses_cli.command("import")
def import_expenses(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="A CSV file.")
    ],
    user: Annotated[str, typer.Option("--user", help="Email address of the account.")],
) -> None:
    """Import a CSV file (the format of the export) into an account: whole or not at all."""
    import asyncio

    from rich.progress import Progress
    from sqlalchemy import text

    from expensetracker.expenses.transfer import InvalidImport, import_csv

    # Warnings only: the progress bar is the output.
    settings = _operator_settings(service="expenses", level="WARNING")
    with file.open("rb") as handle:
        total_rows = max(sum(1 for _ in handle) - 1, 0)

    async def chunks() -> AsyncIterator[bytes]:
        with file.open("rb") as handle:
            while chunk := handle.read(1024 * 1024):
                yield chunk

    async def run(progress: Progress) -> str:
        task = progress.add_task("validating and loading", total=total_rows)
        async with (
            _database(settings, purpose="import") as sessionmaker,
            sessionmaker() as session,
        ):
            user_id = await session.scalar(
                text("SELECT user_id FROM auth.accounts_v1 WHERE email = lower(:email)"),
                {"email": user},
            )
            await session.rollback()
            if user_id is None:
                _fail(f"no account with the email address {user}")
            result = await import_csv(
                session,
                user_id=user_id,
                chunks=chunks(),
                progress=lambda rows: progress.update(task, completed=rows),
            )
        return f"{result.rows} rows: {result.created} created, {result.unchanged} already there"

    try:
        with Progress(transient=True) as progress:
            summary = asyncio.run(run(progress))
    except InvalidImport as exc:
        for error in exc.extensions.get("errors", []):
            typer.echo(f"line {error['line']}: {error['field']}: {error['message']}", err=True)
        _fail(exc.detail)
    typer.echo(summary)


@expenses_cli.command("run-jobs")
def run_jobs() -> None:
    """Create the recurring expenses that are due and purge expired idempotency keys (the service
    also does this every EXPENSETRACKER_MAINTENANCE_INTERVAL_SECONDS)."""
    import asyncio
    from datetime import date

    from expensetracker.expenses.recurring import run_maintenance

    settings = _operator_settings(service="expenses")

    async def run() -> int:
        async with _database(settings, purpose="jobs") as sessionmaker:
            return await run_maintenance(sessionmaker, today=date.today())

    typer.echo(f"recurring expenses created: {asyncio.run(run())}")


def main() -> None:
    sys.exit(cli())
