"""``expensetracker backup``: backups of the database: create, verify, list, restore, prune,
and the metrics of the backup folder."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
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
from rich.table import Table
from typer.core import TyperGroup

from expensetracker.backup import store
from expensetracker.backup.tools import BackupError, BadUsage
from expensetracker.cli.common import (
    HostOption,
    PortOption,
    database_url,
    fail,
    interrupt,
    load_settings,
    operator_settings,
)
from expensetracker.platform.config import Environment, Settings, check_database_url
from expensetracker.platform.embedded import (
    DataDirInUse,
    DataDirUnusable,
    embedded_database,
    holds_database,
)

if TYPE_CHECKING:
    # The Click that Typer vendors, whose Context TyperGroup's methods take.
    from typer._click import Context

    from expensetracker.backup.service import OnProgress, Step


@contextmanager
def _exit_status() -> Iterator[None]:
    """The exit status of what the backup tools raise (docs/operations.md), with one line:
    2 bad usage or configuration, 1 failed (a Ctrl-C is the top-level group's: 130)."""
    try:
        yield
    except BadUsage as exc:
        fail(str(exc))
    except BackupError as exc:
        fail(str(exc), code=1)


class _BackupCommands(TyperGroup):
    """The backup commands, each ending with its exit status wherever it stops, while it loads
    the backup service (a second) as during its work."""

    def invoke(self, ctx: Context) -> Any:
        with _exit_status():
            return super().invoke(ctx)


cli = typer.Typer(
    cls=_BackupCommands,
    help="Backups of the database: create, verify, list, restore, prune.",
    no_args_is_help=True,
)

FolderOption = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="Backup folder (default: EXPENSETRACKER_BACKUP_DIR, else <data dir>/backups).",
    ),
]
JobsOption = Annotated[int, typer.Option(min=1, max=16, help="Parallel pg_restore jobs.")]
T = TypeVar("T")


def _defaulted_in_help(help: str, **kwargs: Any) -> Any:
    """An option whose default comes from the settings: its ``help`` names it, in place of
    Typer's `[default: None]`."""
    return typer.Option(help=help, show_default=False, **kwargs)


# expensetracker.backup.service and .metrics are imported lazily, inside the commands: they
# import every service's migrations (alembic and the targets), seconds of start-up that the
# other commands would pay for nothing (tests/cli/test_cli_startup.py).


def _backup_settings() -> Settings:
    # On a terminal the progress bars are the output; elsewhere (a CronJob) the log lines are.
    settings = operator_settings(
        service="backup",
        level="WARNING" if sys.stderr.isatty() else None,
        needs_database=False,
    )
    # SIGTERM (a Job's deadline) unwinds like Ctrl-C: scratch databases and temporary files go.
    signal.signal(signal.SIGTERM, interrupt)
    return settings


def _backup_folder(settings: Settings, folder: Path | None) -> Path:
    return folder or settings.backup_dir or settings.data_dir / "backups"


# What must hold before `create` or `verify` starts the embedded database, given the settings
# and the backup folder.
BeforeStart = Callable[[Settings, Path], object]


@contextmanager
def _backup_database(settings: Settings, *, before_start: Callable[[], object]) -> Iterator[str]:
    """EXPENSETRACKER_DATABASE_URL or, when unset in development, the embedded database of the
    data folder: the one `up` runs, or one started for the while, once ``before_start`` holds
    (a command run from another folder made one there, some 40 MB, only to be refused).
    Elsewhere an unset URL is refused, as `migrate` does: an embedded database started there
    would be a new, empty one."""
    if settings.database_url is not None or settings.env is not Environment.development:
        yield database_url(settings)
        return
    before_start()  # refused first: no database is started, or made in a folder without one
    try:
        with embedded_database(settings.data_dir) as url:
            yield url
    except DataDirInUse as exc:
        fail(f"{exc}, which does not run the embedded PostgreSQL yet")
    except DataDirUnusable as exc:
        fail(str(exc))


def _holds_database(settings: Settings, _folder: Path) -> None:
    """A backup is of an existing database: none is made to find nothing in it."""
    if not holds_database(settings.data_dir):
        fail(
            f"no embedded database in {settings.data_dir}: run `expensetracker up` there first, "
            "or set EXPENSETRACKER_DATA_DIR or EXPENSETRACKER_DATABASE_URL"
        )


def _backup_step(
    step: Callable[..., Coroutine[Any, Any, T]],
    *,
    folder: Path | None,
    before_start: BeforeStart,
    **options: object,
) -> T:
    """``create`` or ``verify`` on the configured database, with progress on a terminal."""
    settings = _backup_settings()
    target = _backup_folder(settings, folder)
    with (
        _backup_database(settings, before_start=lambda: before_start(settings, target)) as url,
        _progress() as progress,
    ):
        return asyncio.run(
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


@cli.command("create")
def backup_create(
    folder: FolderOption = None,
    compress_level: Annotated[
        int, typer.Option(min=0, max=9, help="gzip level of the archive (0: uncompressed).")
    ] = 6,
) -> None:
    """Dump the database into the backup folder, with a manifest of what every table holds."""
    from expensetracker.backup import service  # lazy: see above

    backup = _backup_step(
        service.create, folder=folder, before_start=_holds_database, compress_level=compress_level
    )
    assert backup.manifest is not None
    rows = sum(table.rows for table in backup.manifest.tables.values())
    typer.echo(
        f"created {backup.dump} ({filesize.decimal(backup.manifest.size_bytes)}, "
        f"{len(backup.manifest.tables)} tables, {rows:,} rows) "
        f"in {backup.manifest.duration_seconds:.1f} s"
    )


@cli.command("verify")
def backup_verify(
    name: Annotated[
        str | None, typer.Argument(help="A backup's name (default: the newest).")
    ] = None,
    folder: FolderOption = None,
    jobs: JobsOption = 2,
) -> None:
    """Check a backup's sha256 and table of contents, restore it into a scratch database (always
    dropped afterwards) and compare every table with the manifest; the result is kept."""
    from expensetracker.backup import service  # lazy: see above

    backup = _backup_step(
        service.verify,
        folder=folder,
        before_start=lambda _settings, target: store.find(target, name),
        name=name,
        jobs=jobs,
    )
    assert backup.verification is not None
    if not backup.verification.ok:
        fail(f"verification failed: {backup.verification.detail}", code=1)
    typer.echo(f"verified {backup.name} in {backup.verification.duration_seconds:.1f} s")


@cli.command("list")
def backup_list(folder: FolderOption = None) -> None:
    """The backups, oldest first: when, size, what they hold, and whether they were verified."""
    settings = load_settings()
    target = _backup_folder(settings, folder)
    backups = store.scan(target)
    if not backups:
        typer.echo(f"no backups in {target}")
        return
    now = store.utc_now()
    table = Table("backup", "taken (UTC)", "age", "size", "rows", "state", title=str(target))
    for backup in backups:
        manifest = backup.manifest
        state: str = backup.state
        if backup.verification is not None and not backup.verification.ok:
            state += f": {backup.verification.detail}"
        elif manifest is None:
            state += f": {backup.problem}"
        table.add_row(
            backup.name,
            f"{backup.created_at:%Y-%m-%d %H:%M}",
            _age(now - backup.created_at),
            filesize.decimal(manifest.size_bytes) if manifest else "",
            f"{sum(t.rows for t in manifest.tables.values()):,}" if manifest else "",
            state,
        )
    Console(width=160).print(table)


@cli.command("restore")
def backup_restore(
    name: Annotated[
        str, typer.Argument(help="A backup's name, or `latest` (the newest verified backup).")
    ],
    target_url: Annotated[
        str | None,
        _defaulted_in_help("URL of the target database (default: EXPENSETRACKER_DATABASE_URL's)."),
    ] = None,
    target_db: Annotated[
        str | None,
        _defaulted_in_help(
            "Name of the target database on the configured server (created if missing)."
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
    from expensetracker.backup import service  # lazy: see above

    if target_url is not None and target_db is not None:
        fail("give --target-url or --target-db, not both")
    # Refused before anything is done, in one line, as EXPENSETRACKER_DATABASE_URL is.
    if target_url is not None:
        try:
            check_database_url(target_url)
        except ValueError as exc:
            fail(f"--target-url: {exc}")
    if target_db is not None and not target_db.strip():
        fail("--target-db: empty: give a database name")
    settings = _backup_settings()
    with ExitStack() as stack, _progress() as progress:
        created: str | None = None  # a database this command creates for the restore
        if target_url is None:
            latest = name == "latest"
            backups = _backup_folder(settings, folder)
            server = stack.enter_context(
                _backup_database(
                    settings,
                    before_start=lambda: store.find(
                        backups, None if latest else name, verified=latest
                    ),
                )
            )
            target_url = server
            if target_db is not None:
                target_url, is_new = asyncio.run(
                    service.create_database(server_url=server, name=target_db)
                )
                created = target_db if is_new else None
        try:
            restored = asyncio.run(
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
        except BaseException:
            # A restore refused, failed or stopped leaves no database of its own behind: the
            # operator would take an empty or half-restored one for the backup's.
            if created is not None:
                asyncio.run(service.drop_database(server_url=server, name=created))
            raise
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


@cli.command("prune")
def backup_prune(
    folder: FolderOption = None,
    keep_days: Annotated[
        int | None,
        _defaulted_in_help(
            "Days to keep (default: EXPENSETRACKER_BACKUP_RETENTION_DAYS, 7).", min=1
        ),
    ] = None,
) -> None:
    """Delete the backups older than the retention, never the newest verified one nor the
    newest one, and the files killed runs left (untouched for an hour)."""
    from expensetracker.backup import service  # lazy: see above

    settings = _backup_settings()
    target = _backup_folder(settings, folder)
    removed = service.prune(folder=target, keep_days=keep_days or settings.backup_retention_days)
    for name in removed:
        typer.echo(f"removed {name}")
    typer.echo(f"{len(store.scan(target))} backup(s) kept in {target}")


@cli.command("serve-metrics")
def backup_serve_metrics(
    host: HostOption = "127.0.0.1", port: PortOption = 8000, folder: FolderOption = None
) -> None:
    """Serve /metrics (the backups' age, last failure, size and number, read from the folder at
    each scrape) and /livez."""
    from expensetracker.backup.metrics import create_app  # lazy: see above
    from expensetracker.platform import server  # lazy: uvicorn
    from expensetracker.platform.health import Readiness  # lazy: alembic, for /readyz

    settings = operator_settings(service="backup", needs_database=False)
    target = _backup_folder(settings, folder)

    def announce() -> None:
        typer.echo(f"ExpenseTracker (backup metrics of {target}) is ready: http://{host}:{port}")

    # Nothing routes requests to it: no drain on SIGTERM.
    settings = settings.model_copy(update={"shutdown_drain_seconds": 0.0})
    # Nothing routes traffic to it: its readiness only records the shutdown.
    if not server.run(
        create_app(target),
        settings=settings,
        host=host,
        port=port,
        readiness=Readiness(),
        on_ready=announce,
    ):
        fail("the server did not start (see the log above)", code=1)
