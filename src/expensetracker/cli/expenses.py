"""``expensetracker expenses`` and ``expensetracker rates``: operations of the expenses service,
which keeps the exchange rates."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Annotated, cast, get_args

import httpx
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from expensetracker.cli.common import (
    EmailOption,
    account,
    database,
    database_failure,
    driver_connection,
    fail,
    operator_settings,
)
from expensetracker.expenses.rates import InvalidRates, load_ecb, set_home_currency
from expensetracker.expenses.recurring import run_maintenance
from expensetracker.expenses.rules import apply_rules
from expensetracker.expenses.schemas import DateOrder, ImportFormat, ImportPreview
from expensetracker.expenses.statements import SNIFF_BYTES, MissingOption, Options, detect
from expensetracker.expenses.transfer import ImportResult, InvalidImport, import_file
from expensetracker.platform import money
from expensetracker.platform.logging import hide_url_credentials

cli = typer.Typer(help="Operations of the expenses service.", no_args_is_help=True)
rules_cli = typer.Typer(help="The categorisation rules of an account.", no_args_is_help=True)
cli.add_typer(rules_cli, name="rules")
rates_cli = typer.Typer(help="Exchange rates (kept by the expenses service).", no_args_is_help=True)
# A dry run's table shows this many of the rows it would import.
SHOWN_ROWS = 20


@cli.command("import")
def import_expenses(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, readable=True, help="A CSV file or a bank statement."
        ),
    ],
    user: EmailOption,
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
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Check the whole file and show its first rows; keep none."),
    ] = False,
) -> None:
    """Import a CSV file (the format of the export) or a bank statement (OFX/QFX, CAMT.053,
    MT940, QIF) into an account: whole or not at all."""
    if format is not None and format not in get_args(ImportFormat):
        fail(f"--format must be one of {', '.join(get_args(ImportFormat))}")
    if date_order is not None and date_order not in get_args(DateOrder):
        fail("--date-order must be dmy or mdy")
    # Warnings only: the progress bar is the output.
    settings = operator_settings(service="expenses", level="WARNING")
    with file.open("rb") as handle:
        format = format or detect(handle.read(SNIFF_BYTES))
        handle.seek(0)
        # A CSV file's rows are its lines; a statement's transactions are known as they come.
        total_rows = max(sum(1 for _ in handle) - 1, 0) if format == "csv" else None

    async def chunks() -> AsyncIterator[bytes]:
        with file.open("rb") as handle:
            while chunk := handle.read(1024 * 1024):
                yield chunk

    async def run(progress: Progress) -> ImportResult:
        task = progress.add_task("validating and loading", total=total_rows)
        async with (
            database(settings, purpose="import") as sessionmaker,
            sessionmaker() as session,
        ):
            return await import_file(
                session,
                user_id=await account(session, user),
                chunks=chunks(),
                # Both checked against their Literal's values above.
                format=cast(ImportFormat, format),
                options=Options(currency=currency, date_order=cast(DateOrder | None, date_order)),
                progress=lambda rows: progress.update(task, completed=rows),
                dry_run=dry_run,
            )

    try:
        # Off when the output is no terminal: the bar still printed an empty line there.
        console = Console()
        with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
            result = asyncio.run(run(progress))
    except MissingOption as exc:
        fail(exc.reason.format(option=f"--{exc.option.replace('_', '-')}"))
    except InvalidImport as exc:
        for error in exc.extensions.get("errors", []):
            position = (
                f"line {error['line']}"
                if "line" in error
                else f"transaction {error['transaction']}"
            )
            typer.echo(f"{position}: {error['field']}: {error['message']}", err=True)
        # The file refused, as `rates load` refuses one (docs/operations.md#exit-status): 2 is
        # for the command's usage, such as a QIF file's missing option above.
        fail(exc.detail, code=1)
    if result.preview is not None:
        _show_preview(result.preview, statement=format != "csv")
    created = "would be created" if dry_run else "created"
    summary = f"{result.rows} rows: {result.created} {created}, {result.unchanged} already there"
    summary += f", {result.skipped} credits skipped" if format != "csv" else ""
    typer.echo(summary + ("; dry run: nothing was imported" if dry_run else ""))


def _show_preview(preview: ImportPreview, *, statement: bool) -> None:
    """A dry run's first rows to import, as a table, and the positions of those skipped."""
    position = "transaction" if statement else "line"
    shown = preview.expenses[:SHOWN_ROWS]
    if shown:
        table = Table(
            position, "date", "amount", "charged", "description", "merchant", "category", "tags"
        )
        for row in shown:
            charged = f"{row.charged_amount} {row.charged_currency}" if row.charged_amount else ""
            table.add_row(
                str(row.position),
                row.occurred_on.isoformat(),
                f"{row.amount} {row.currency}",
                charged,
                row.description,
                row.merchant or "",
                row.category or "",
                ", ".join(row.tags),
            )
        Console(width=160).print(table)
        if len(shown) < len(preview.expenses) or preview.more_expenses:
            typer.echo(f"... the first {len(shown)} rows to import")
    if preview.unchanged:
        listed = ", ".join(f"{row.position} ({row.external_id})" for row in preview.unchanged)
        more = ", ..." if preview.more_unchanged else ""
        typer.echo(f"already imported, skipped: {position} {listed}{more}")
    if preview.skipped:
        listed = ", ".join(f"{row.position} ({row.reason})" for row in preview.skipped)
        more = ", ..." if preview.more_skipped else ""
        typer.echo(f"not spending, skipped: {position} {listed}{more}")


@cli.command("run-jobs")
def run_jobs() -> None:
    """Create the recurring expenses that are due and purge expired idempotency keys (the service
    also does this every EXPENSETRACKER_MAINTENANCE_INTERVAL_SECONDS)."""
    settings = operator_settings(service="expenses")

    async def run() -> int:
        async with database(settings, purpose="jobs") as sessionmaker:
            return await run_maintenance(sessionmaker, today=date.today())

    typer.echo(f"recurring expenses created: {asyncio.run(run())}")


@cli.command("home-currency")
def home_currency(
    currency: Annotated[str, typer.Argument(help="An ISO 4217 code, e.g. EUR.")],
    user: EmailOption,
) -> None:
    """Set an account's home currency: what reports convert to with in=home."""
    try:
        money.exponent(currency)
    except ValueError as exc:
        fail(f"The currency {exc}.")
    settings = operator_settings(service="expenses")

    async def run() -> None:
        async with (
            database(settings, purpose="home-currency") as sessionmaker,
            sessionmaker() as session,
        ):
            user_id = await account(session, user)
        async with driver_connection(settings, purpose="home-currency") as connection:
            await set_home_currency(connection, user_id=user_id, currency=currency)

    asyncio.run(run())
    typer.echo(f"home currency of {user}: {currency}")


@rules_cli.command("apply")
def apply(
    email: EmailOption,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would change, change nothing.")
    ] = False,
) -> None:
    """Run the account's categorisation rules over its uncategorised expenses (a category someone
    chose is never changed), as POST /api/v1/expenses/rules/apply does."""
    settings = operator_settings(service="expenses")

    async def run() -> None:
        async with (
            database(settings, purpose="rules-apply") as sessionmaker,
            sessionmaker() as session,
        ):
            applied = await apply_rules(
                session, user_id=await account(session, email), dry_run=dry_run
            )
        for change in applied.changes:
            tags = f" +{','.join(change.tags)}" if change.tags else ""
            typer.echo(
                f"{change.expense_id} {change.description!r}: category {change.category_id}"
                f"{tags} (rule {change.rule_id})"
            )
        if applied.matched > len(applied.changes):
            typer.echo(f"... and {applied.matched - len(applied.changes)} more")
        verb = "would change" if dry_run else "changed"
        typer.echo(f"{applied.matched} uncategorised expense(s) {verb}")

    asyncio.run(run())


@rates_cli.command("load")
def load_rates(
    location: Annotated[
        str, typer.Argument(help="The ECB's reference-rate XML file: a path or an http(s) URL.")
    ],
) -> None:
    """Load the ECB's reference rates (daily, 90-day or full history file); a day's rates
    already there are replaced. The file is kept whole or not at all."""
    settings = operator_settings(service="expenses")

    async def run() -> int:
        async with driver_connection(settings, purpose="rates") as connection:
            return await load_ecb(connection, location)

    try:
        kept = asyncio.run(run())
    except (InvalidRates, httpx.HTTPError, OSError) as exc:
        if database_failure(exc) is not None:
            raise  # the database's, not the file's: told as such (cli._ServiceCommands)
        if isinstance(exc, httpx.HTTPStatusError):  # httpx's own text is two lines and a link
            reason = f"answered {exc.response.status_code} {exc.response.reason_phrase}"
        else:
            reason = getattr(exc, "detail", None) or str(exc)
        fail(hide_url_credentials(f"{location}: {reason}"), code=1)
    typer.echo(f"rates kept: {kept}")
