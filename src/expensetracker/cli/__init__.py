"""The one command line: ``expensetracker up | serve | migrate | auth | expenses | rates |
backup``. This module runs the services; the operator commands live beside it, one module per
service (auth.py, expenses.py, backup.py), sharing common.py."""

from __future__ import annotations

import atexit
import gc
import importlib
import signal
import sys
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import structlog
import typer
from pydantic import SecretStr
from typer.core import TyperGroup

from expensetracker import __version__, loading
from expensetracker.cli.common import (
    INTERRUPTED,
    HostOption,
    PortOption,
    database,
    database_failure,
    database_url,
    fail,
    interrupt,
    load_settings,
    start_logging,
)
from expensetracker.platform.config import Environment, Settings
from expensetracker.platform.db import database_location
from expensetracker.platform.embedded import DataDirInUse, DataDirUnusable, EmbeddedPostgres

if TYPE_CHECKING:
    # The Click that Typer vendors, whose classes TyperGroup's methods take and answer.
    from typer._click import Command, Context

    from expensetracker.platform.spec import ServiceSpec

# expensetracker.targets.TARGET_NAMES, which imports every service to list them (a test checks
# that both agree).
TARGET_NAMES = ("auth", "expenses", "reports", "web", "all")

# Each service's operator commands: (module under expensetracker.cli, its typer.Typer). Imported
# when named, and only then: `expenses import` needs neither auth's keys nor the backup tools.
SERVICE_COMMANDS = {
    "auth": ("auth", "cli"),
    "expenses": ("expenses", "cli"),
    "rates": ("expenses", "rates_cli"),
    "backup": ("backup", "cli"),
}


class _ServiceCommands(TyperGroup):
    """The top-level group, whose service commands (SERVICE_COMMANDS) load as they are used, and
    through which every command runs: a database that cannot be reached or used, or a Ctrl-C at
    any moment (while a command loads too), ends it with one line that says so, not a traceback
    (nor Click's `Aborted!`)."""

    def make_context(self, *args: Any, **kwargs: Any) -> Context:
        # The options' parsing, before invoke: the last moment of loading.
        try:
            return super().make_context(*args, **kwargs)
        except KeyboardInterrupt:
            fail("interrupted", code=INTERRUPTED)

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except typer.Exit:
            raise  # the command's own end, said already (raised while handling its cause)
        except KeyboardInterrupt:
            fail("interrupted", code=INTERRUPTED)
        except Exception as exc:
            failure = database_failure(exc)
            if failure is None:
                raise
            fail(failure.message, code=failure.exit_status)

    def list_commands(self, ctx: Context) -> list[str]:
        return [*super().list_commands(ctx), *SERVICE_COMMANDS]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if cmd_name not in SERVICE_COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, attribute = SERVICE_COMMANDS[cmd_name]
        commands = getattr(importlib.import_module(f"expensetracker.cli.{module}"), attribute)
        group = typer.main.get_group(commands)
        group.name = cmd_name
        return group


cli = typer.Typer(
    cls=_ServiceCommands,
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


# Imported inside the functions below, lazily, and only there: the targets import every service's
# app, the server uvicorn and the migrations alembic, seconds of start-up on a small machine that
# the operator commands (`expenses import`) would pay for nothing (tests/cli/test_cli_startup.py).


def _targets(target: str) -> list[ServiceSpec]:
    from expensetracker.targets import resolve_targets  # lazy: every service's app

    try:
        return resolve_targets(target)
    except ValueError as exc:
        fail(str(exc))


def _process_name(services: list[ServiceSpec]) -> str:
    from expensetracker.platform.application import process_name  # lazy: FastAPI app set-up

    return process_name(services)


def _migrate(services: list[ServiceSpec], url: str) -> None:
    from expensetracker.platform import migrations  # lazy: alembic

    services = [spec for spec in services if spec.keeps_data]
    # Checked before any is upgraded: Alembic fails on the first such service, the ones before
    # it already upgraded.
    if unknown := migrations.unknown_revisions(services, url):
        at = ", ".join(
            f"{spec.name} at {revision} (this version's newest is {migrations.head_revision(spec)})"
            for spec, revision in unknown
        )
        fail(
            f"the database{database_location(url)} is migrated beyond this version: {at}; "
            "run a version that knows these migrations, or restore a backup taken by this one"
        )
    for spec in services:
        migrations.upgrade(spec, url)
        log.info("migrated", target=spec.name, revision=migrations.head_revision(spec))


def _prepare(services: list[ServiceSpec], settings: Settings, *, demo: bool) -> Settings:
    """Migrations, and the demo account when asked for: the settings to serve with, which
    offer its credentials on the sign-in page while its published password still works."""
    import asyncio

    from expensetracker import demo as demo_data  # lazy: the auth service and the importer

    _migrate(services, database_url(settings))
    if not demo:
        return settings

    async def load() -> bool:
        async with database(settings, purpose="demo") as sessionmaker:
            return await demo_data.load(sessionmaker, settings, today=date.today())

    if not asyncio.run(load()):
        typer.echo(f"Demo account: {demo_data.EMAIL} (its password is no longer the published one)")
        return settings
    typer.echo(f"Demo account: {demo_data.EMAIL} / {demo_data.PASSWORD}")
    return settings.model_copy(update={"demo_credentials": (demo_data.EMAIL, demo_data.PASSWORD)})


def _serve(services: list[ServiceSpec], settings: Settings, host: str, port: int) -> None:
    import asyncio

    from expensetracker.platform import server  # lazy: uvicorn
    from expensetracker.platform.application import create_app  # lazy: FastAPI app set-up
    from expensetracker.platform.health import all_ok, readiness_checks  # lazy: with create_app
    from expensetracker.platform.state import app_state  # lazy: with create_app

    try:
        app = create_app(services, settings)
    except ValueError as exc:
        fail(str(exc))
    readiness = app_state(app).readiness
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
    served = f"ExpenseTracker ({_process_name(services)})"
    address = f"http://{shown}:{port}"

    async def announce_when_ready() -> None:
        """ "is ready" once /readyz would answer 200: listening is not enough when the database
        is down or not migrated."""
        checks = await readiness_checks(app)
        if not all_ok(checks):
            failing = ", ".join(
                f"{name}: {value}" for name, value in checks.items() if value != "ok"
            )
            typer.echo(f"{served} is listening on {address}, not ready yet ({failing})")
            while not all_ok(checks):
                if readiness.shutting_down:
                    return
                await asyncio.sleep(2)  # a check that fails logs why: not at every turn
                checks = await readiness_checks(app)
        typer.echo(f"{served} is ready: {address}")

    announcing: list[asyncio.Task[None]] = []  # a task the loop only holds weakly

    def announce() -> None:
        announcing.append(asyncio.get_running_loop().create_task(announce_when_ready()))

    if not server.run(
        app, settings=settings, host=host, port=port, readiness=readiness, on_ready=announce
    ):
        fail("the server did not start (see the log above)", code=1)


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
    # Called once the command named is loaded, before it runs: what is loaded by now lives as
    # long as the process, and later collections skip it. Collection was off while loading
    # (expensetracker/__main__.py).
    gc.freeze()
    gc.enable()
    if loading.loaded():
        raise KeyboardInterrupt  # pressed while loading, where Python dropped it


@cli.command()
def up(
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    data_dir: Annotated[
        Path | None,
        # No `[default: ...]`: Rich reads it as markup and prints nothing.
        typer.Option(
            help="Folder for the embedded database "
            "(default: EXPENSETRACKER_DATA_DIR, else ./.expensetracker).",
            show_default=False,
        ),
    ] = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Load a demo account with a year of expenses.")
    ] = False,
) -> None:
    """Run every service in this process, on the embedded PostgreSQL unless
    EXPENSETRACKER_DATABASE_URL names a server. Ctrl-C or SIGTERM stops both cleanly."""
    settings = load_settings(**({"data_dir": data_dir} if data_dir else {}))
    services = _targets("all")
    # Quiet unless asked: a person starting it wants the address, not every query.
    start_logging(settings, service=_process_name(services), level=settings.log_level or "INFO")
    # Until the server takes over the signals, SIGTERM unwinds like Ctrl-C so the database stops.
    signal.signal(signal.SIGTERM, interrupt)
    if demo and settings.env is Environment.production:
        fail("--demo makes an account with a published password: not in production")
    if settings.database_url is not None:
        _serve(services, _prepare(services, settings, demo=demo), host, port)
        return
    try:
        with EmbeddedPostgres(settings.data_dir) as embedded:
            log.info("embedded_postgres_started", data_dir=str(embedded.data_dir))
            settings = settings.model_copy(update={"database_url": SecretStr(embedded.url)})
            _serve(services, _prepare(services, settings, demo=demo), host, port)
    except (DataDirInUse, DataDirUnusable) as exc:
        fail(str(exc))
    # A Ctrl-C before the server took over stopped the database on its way out, and ends the
    # command as on a server of EXPENSETRACKER_DATABASE_URL and as every command: "interrupted",
    # exit status 130 (_ServiceCommands.invoke).
    log.info("stopped")


@cli.command()
def serve(
    target: TargetOption = "all",
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
) -> None:
    """Run one or several services against EXPENSETRACKER_DATABASE_URL (no migrations)."""
    settings = load_settings()
    services = _targets(target)
    if any(spec.keeps_data for spec in services):
        database_url(settings)
    start_logging(settings, service=_process_name(services))
    _serve(services, settings, host, port)


@cli.command()
def migrate(target: TargetOption = "all") -> None:
    """Apply every pending migration of the target services to EXPENSETRACKER_DATABASE_URL."""
    settings = load_settings()
    services = _targets(target)
    start_logging(settings, service=_process_name(services))
    _migrate(services, database_url(settings))


def main() -> None:
    # Whatever is alive at exit is frozen first, so that the interpreter's last collections skip
    # it: with the services' modules loaded, exiting took 0.3 s of every command, 20 ms now
    # (docs/performance.md). Files and connections are closed by then; refcounts still free.
    atexit.register(gc.freeze)
    sys.exit(cli())
