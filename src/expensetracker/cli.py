"""The one command line: ``expensetracker up | serve | migrate | auth | expenses | rates |
backup``."""

from __future__ import annotations

import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import structlog
import typer
from pydantic import SecretStr, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from expensetracker import __version__
from expensetracker.platform.config import Settings
from expensetracker.platform.db import create_engine
from expensetracker.platform.logging import configure_logging

# What only some commands use is imported by them: every service's app, the server and the
# migrations are a second or more of start-up that `expenses import` would pay for nothing.
if TYPE_CHECKING:
    from expensetracker.backup.service import OnProgress
    from expensetracker.platform.service import ServiceSpec

# expensetracker.targets.TARGET_NAMES, which imports every service to list them (a test checks
# that both agree).
TARGET_NAMES = ("auth", "expenses", "reports", "web", "all")

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
    from expensetracker.targets import resolve_targets

    try:
        return resolve_targets(target)
    except ValueError as exc:
        _fail(str(exc))


def _database_url(settings: Settings) -> str:
    if settings.database_url is None:
        _fail("EXPENSETRACKER_DATABASE_URL is not set")
    return settings.database_url.get_secret_value()


def _process_name(services: list[ServiceSpec]) -> str:
    from expensetracker.platform.application import process_name

    return process_name(services)


def _migrate(services: list[ServiceSpec], database_url: str) -> None:
    from expensetracker.platform import migrations

    for spec in services:
        if not spec.keeps_data:
            continue
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
    from expensetracker.platform import server
    from expensetracker.platform.application import create_app

    try:
        app = create_app(services, settings)
    except ValueError as exc:
        _fail(str(exc))

    def announce() -> None:
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
        typer.echo(f"ExpenseTracker ({_process_name(services)}) is ready: http://{shown}:{port}")

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
        # Quiet unless asked: a person starting it wants the address, not every query.
        level=settings.log_level or "INFO",
        fmt=settings.effective_log_format,
        service=_process_name(services),
    )
    # Until the server takes over the signals, SIGTERM unwinds like Ctrl-C so the database stops.
    signal.signal(signal.SIGTERM, _interrupt)
    if demo:
        from expensetracker import demo as demo_data

        settings = settings.model_copy(
            update={"demo_credentials": (demo_data.EMAIL, demo_data.PASSWORD)}
        )
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
    if any(spec.keeps_data for spec in services):
        _database_url(settings)
    configure_logging(
        level=settings.effective_log_level,
        fmt=settings.effective_log_format,
        service=_process_name(services),
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
        service=_process_name(services),
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
        Path,
        typer.Argument(
            exists=True, dir_okay=False, readable=True, help="A CSV file or a bank statement."
        ),
    ],
    user: Annotated[str, typer.Option("--user", help="Email address of the account.")],
    format: Annotated[
        str | None,
        typer.Option(
            "--format", help="csv, ofx, camt053, mt940 or qif (default: from the content)."
        ),
    ] = None,
    currency: Annotated[
        str | None, typer.Option("--currency", help="A QIF file's currency (QIF has none).")
    ] = None,
    date_order: Annotated[
        str | None,
        typer.Option("--date-order", help="dmy or mdy: a QIF file's dates, if they do not show."),
    ] = None,
) -> None:
    """Import a CSV file (the format of the export) or a bank statement (OFX/QFX, CAMT.053,
    MT940, QIF) into an account: whole or not at all."""
    import asyncio
    from typing import get_args

    from rich.progress import Progress
    from sqlalchemy import text

    from expensetracker.expenses.schemas import DateOrder, ImportFormat
    from expensetracker.expenses.statements import SNIFF_BYTES, Options, detect
    from expensetracker.expenses.transfer import InvalidImport, import_file

    if format is not None and format not in get_args(ImportFormat):
        _fail(f"--format must be one of {', '.join(get_args(ImportFormat))}")
    if date_order is not None and date_order not in get_args(DateOrder):
        _fail("--date-order must be dmy or mdy")
    # Warnings only: the progress bar is the output.
    settings = _operator_settings(service="expenses", level="WARNING")
    with file.open("rb") as handle:
        format = format or detect(handle.read(SNIFF_BYTES))
        handle.seek(0)
        # A CSV file's rows are its lines; a statement's transactions are known as they come.
        total_rows = max(sum(1 for _ in handle) - 1, 0) if format == "csv" else None

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
            result = await import_file(
                session,
                user_id=user_id,
                chunks=chunks(),
                format=format,
                options=Options(currency=currency, date_order=date_order),
                progress=lambda rows: progress.update(task, completed=rows),
            )
        summary = f"{result.rows} rows: {result.created} created, {result.unchanged} already there"
        return summary + (f", {result.skipped} credits skipped" if format != "csv" else "")

    try:
        with Progress(transient=True) as progress:
            summary = asyncio.run(run(progress))
    except InvalidImport as exc:
        for error in exc.extensions.get("errors", []):
            position = (
                f"line {error['line']}"
                if "line" in error
                else f"transaction {error['transaction']}"
            )
            typer.echo(f"{position}: {error['field']}: {error['message']}", err=True)
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


@expenses_cli.command("home-currency")
def home_currency(
    currency: Annotated[str, typer.Argument(help="An ISO 4217 code, e.g. EUR.")],
    user: Annotated[str, typer.Option("--user", help="Email address of the account.")],
) -> None:
    """Set an account's home currency: what reports convert to with in=home."""
    import asyncio

    from expensetracker.expenses.rates import set_home_currency
    from expensetracker.platform import money

    try:
        money.exponent(currency)
    except ValueError as exc:
        _fail(str(exc))
    settings = _operator_settings(service="expenses")

    async def run() -> None:
        async with _driver_connection(settings, purpose="home-currency") as connection:
            user_id = await connection.fetchval(
                "SELECT user_id FROM auth.accounts_v1 WHERE email = lower($1)", user
            )
            if user_id is None:
                _fail(f"no account with the email address {user}")
            await set_home_currency(connection, user_id=user_id, currency=currency)

    asyncio.run(run())
    typer.echo(f"home currency of {user}: {currency}")


@asynccontextmanager
async def _driver_connection(settings: Settings, *, purpose: str) -> AsyncIterator[Any]:
    from expensetracker.platform.db import create_driver_pool

    pool = await create_driver_pool(settings, application_name=f"expensetracker-{purpose}")
    try:
        async with pool.acquire() as connection:
            yield connection
    finally:
        await pool.close()


rates_cli = typer.Typer(help="Exchange rates (kept by the expenses service).", no_args_is_help=True)
cli.add_typer(rates_cli, name="rates")


@rates_cli.command("load")
def load_rates(
    location: Annotated[
        str, typer.Argument(help="The ECB's reference-rate XML file: a path or an http(s) URL.")
    ],
) -> None:
    """Load the ECB's reference rates (daily, 90-day or full history file); a day's rates
    already there are replaced. The file is kept whole or not at all."""
    import asyncio

    import httpx

    from expensetracker.expenses.rates import InvalidRates, load_ecb

    settings = _operator_settings(service="expenses")

    async def run() -> int:
        async with _driver_connection(settings, purpose="rates") as connection:
            return await load_ecb(connection, location)

    try:
        kept = asyncio.run(run())
    except (InvalidRates, httpx.HTTPError, OSError) as exc:
        _fail(f"{location}: {getattr(exc, 'detail', None) or exc}", code=1)
    typer.echo(f"rates kept: {kept}")


backup_cli = typer.Typer(
    help="Backups of the database: create, verify, list, restore, prune.", no_args_is_help=True
)
cli.add_typer(backup_cli, name="backup")

FolderOption = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="Backup folder (default: EXPENSETRACKER_BACKUP_DIR, else <data dir>/backups).",
    ),
]
JobsOption = Annotated[int, typer.Option(min=1, max=16, help="Parallel pg_restore jobs.")]
T = TypeVar("T")


def _backup_settings() -> Settings:
    settings = _load_settings()
    # On a terminal the progress bars are the output; elsewhere (a CronJob) the log lines are.
    configure_logging(
        level="WARNING" if sys.stderr.isatty() else settings.effective_log_level,
        fmt=settings.effective_log_format,
        service="backup",
    )
    # SIGTERM (a Job's deadline) unwinds like Ctrl-C: scratch databases and temporary files go.
    signal.signal(signal.SIGTERM, _interrupt)
    return settings


def _backup_folder(settings: Settings, folder: Path | None) -> Path:
    return folder or settings.backup_dir or settings.data_dir / "backups"


@contextmanager
def _backup_database(settings: Settings) -> Iterator[str]:
    """EXPENSETRACKER_DATABASE_URL or, when unset (development), the embedded database of the
    data folder: the one `up` runs, or one started for the while."""
    if settings.database_url is not None:
        yield settings.database_url.get_secret_value()
        return
    from expensetracker.platform.embedded import DataDirInUse, embedded_database

    try:
        with embedded_database(settings.data_dir) as url:
            yield url
    except DataDirInUse as exc:
        _fail(f"{exc}, which does not run the embedded PostgreSQL yet")


def _run_backup(work: Coroutine[Any, Any, T]) -> T:
    import asyncio

    from expensetracker.backup.tools import BackupError

    try:
        return asyncio.run(work)
    except BackupError as exc:
        _fail(str(exc), code=1)
    except KeyboardInterrupt:
        _fail("interrupted", code=130)


def _backup_step(
    step: Callable[..., Coroutine[Any, Any, T]], *, folder: Path | None, **options: object
) -> T:
    """``create`` or ``verify`` on the configured database, with progress on a terminal."""
    settings = _backup_settings()
    target = _backup_folder(settings, folder)
    with _backup_database(settings) as url, _progress() as progress:
        return _run_backup(
            step(
                database_url=url,
                folder=target,
                bin_dir=settings.pg_bin_dir,
                progress=progress,
                **options,
            )
        )


@contextmanager
def _progress() -> Iterator[OnProgress]:
    """Progress bars on a terminal, nothing elsewhere."""
    from rich import filesize
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
    )

    from expensetracker.backup.service import Step

    console = Console(stderr=True)
    tasks: dict[str, TaskID] = {}
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[amount]}"),
        TimeElapsedColumn(),
    )
    with Progress(
        *columns, console=console, transient=True, disable=not console.is_terminal
    ) as bars:

        def show(step: Step) -> None:
            if step.in_bytes:
                amount = filesize.decimal(step.done)
                amount += f" of {filesize.decimal(step.total)}" if step.total else ""
            else:
                amount = f"{step.done} of {step.total}" if step.total else ""
            if step.name not in tasks:
                tasks[step.name] = bars.add_task(step.name, total=step.total, amount=amount)
            bars.update(tasks[step.name], completed=step.done, total=step.total, amount=amount)

        yield show


def _age(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h {minutes % 60} min"
    return f"{minutes // (24 * 60)} d {minutes // 60 % 24} h"


@backup_cli.command("create")
def backup_create(
    folder: FolderOption = None,
    compress_level: Annotated[
        int, typer.Option(min=0, max=9, help="gzip level of the archive (0: uncompressed).")
    ] = 6,
) -> None:
    """Dump the database into the backup folder, with a manifest of what every table holds."""
    from rich.filesize import decimal

    from expensetracker.backup import service

    backup = _backup_step(service.create, folder=folder, compress_level=compress_level)
    assert backup.manifest is not None
    rows = sum(table.rows for table in backup.manifest.tables.values())
    typer.echo(
        f"created {backup.dump} ({decimal(backup.manifest.size_bytes)}, "
        f"{len(backup.manifest.tables)} tables, {rows:,} rows) "
        f"in {backup.manifest.duration_seconds:.1f} s"
    )


@backup_cli.command("verify")
def backup_verify(
    name: Annotated[
        str | None, typer.Argument(help="A backup's name (default: the newest).")
    ] = None,
    folder: FolderOption = None,
    jobs: JobsOption = 2,
) -> None:
    """Check a backup's sha256 and table of contents, restore it into a scratch database (always
    dropped afterwards) and compare every table with the manifest; the result is kept."""
    from expensetracker.backup import service

    backup = _backup_step(service.verify, folder=folder, name=name, jobs=jobs)
    assert backup.verification is not None
    if not backup.verification.ok:
        _fail(f"verification failed: {backup.verification.detail}", code=1)
    typer.echo(f"verified {backup.name} in {backup.verification.duration_seconds:.1f} s")


@backup_cli.command("list")
def backup_list(folder: FolderOption = None) -> None:
    """The backups, oldest first: when, size, what they hold, and whether they were verified."""
    from rich.console import Console
    from rich.filesize import decimal
    from rich.table import Table

    from expensetracker.backup import store

    settings = _load_settings()
    target = _backup_folder(settings, folder)
    backups = store.scan(target)
    if not backups:
        typer.echo(f"no backups in {target}")
        return
    now = store.utc_now()
    table = Table("backup", "taken (UTC)", "age", "size", "rows", "state", title=str(target))
    for backup in backups:
        manifest = backup.manifest
        state = backup.state
        if backup.verification is not None and not backup.verification.ok:
            state += f": {backup.verification.detail}"
        elif manifest is None:
            state += f": {backup.problem}"
        table.add_row(
            backup.name,
            f"{backup.created_at:%Y-%m-%d %H:%M}",
            _age(now - backup.created_at),
            decimal(manifest.size_bytes) if manifest else "",
            f"{sum(t.rows for t in manifest.tables.values()):,}" if manifest else "",
            state,
        )
    Console(width=160).print(table)


@backup_cli.command("restore")
def backup_restore(
    name: Annotated[
        str, typer.Argument(help="A backup's name, or `latest` (the newest verified backup).")
    ],
    target_url: Annotated[
        str | None,
        typer.Option(
            help="URL of the target database (default: EXPENSETRACKER_DATABASE_URL's).",
            show_default=False,
        ),
    ] = None,
    target_db: Annotated[
        str | None,
        typer.Option(
            help="Name of the target database on the configured server (created if missing).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace what the target database holds.")
    ] = False,
    no_owner: Annotated[
        bool,
        typer.Option(
            "--no-owner",
            help="Own every object as the restoring role and restore no grants (for a server "
            "without the services' roles); `migrate` grants the read contracts again.",
        ),
    ] = False,
    folder: FolderOption = None,
    jobs: JobsOption = 2,
) -> None:
    """Restore a backup into a database: refused when it is not empty (unless --force), then
    every table is checked against the manifest and each service's migration is reported."""
    from expensetracker.backup import service

    if target_url and target_db:
        _fail("give --target-url or --target-db, not both")
    settings = _backup_settings()
    with ExitStack() as stack, _progress() as progress:
        if target_url is None:
            server = stack.enter_context(_backup_database(settings))
            target_url = (
                server
                if target_db is None
                else _run_backup(service.create_database(server_url=server, name=target_db))
            )
        restored = _run_backup(
            service.restore(
                folder=_backup_folder(settings, folder),
                name=None if name == "latest" else name,
                target_url=target_url,
                force=force,
                keep_owners=not no_owner,
                bin_dir=settings.pg_bin_dir,
                jobs=jobs,
                progress=progress,
            )
        )
    typer.echo(
        f"restored {restored.backup.name} into {restored.database}: {restored.tables} tables, "
        f"{restored.rows:,} rows, each as in the backup ({restored.seconds:.1f} s)"
    )
    behind = []
    for service_name, (revision, head) in restored.migrations.items():
        at_head = revision == head
        typer.echo(f"  {service_name}: migration {revision}" + (" (head)" if at_head else ""))
        if not at_head:
            behind.append(f"{service_name} (this version's head is {head})")
    if behind:
        typer.echo(f"not at this version's migrations: {', '.join(behind)}; run `migrate`")


@backup_cli.command("prune")
def backup_prune(
    folder: FolderOption = None,
    keep_days: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Days to keep (default: EXPENSETRACKER_BACKUP_RETENTION_DAYS, 7).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Delete the backups older than the retention, never the newest verified one."""
    from expensetracker.backup import service, store

    settings = _backup_settings()
    target = _backup_folder(settings, folder)
    removed = service.prune(folder=target, keep_days=keep_days or settings.backup_retention_days)
    for name in removed:
        typer.echo(f"removed {name}")
    typer.echo(f"{len(store.scan(target))} backup(s) kept in {target}")


@backup_cli.command("serve-metrics")
def backup_serve_metrics(
    host: HostOption = "127.0.0.1", port: PortOption = 8000, folder: FolderOption = None
) -> None:
    """Serve /metrics (the backups' age, last failure, size and number, read from the folder at
    each scrape) and /livez."""
    from expensetracker.backup.metrics import create_app
    from expensetracker.platform import server

    settings = _load_settings()
    configure_logging(
        level=settings.effective_log_level, fmt=settings.effective_log_format, service="backup"
    )
    target = _backup_folder(settings, folder)

    def announce() -> None:
        typer.echo(f"ExpenseTracker (backup metrics of {target}) is ready: http://{host}:{port}")

    # Nothing routes requests to it: no drain on SIGTERM.
    settings = settings.model_copy(update={"shutdown_drain_seconds": 0.0})
    if not server.run(
        create_app(target), settings=settings, host=host, port=port, on_ready=announce
    ):
        _fail("the server did not start (see the log above)", code=1)


def main() -> None:
    sys.exit(cli())
