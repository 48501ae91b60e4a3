"""``expensetracker auth``: operations of the auth service."""

from __future__ import annotations

import asyncio

import typer

from expensetracker.auth.keys import KeyEncryption, KeyStore
from expensetracker.cli.common import database, operator_settings

cli = typer.Typer(help="Operations of the auth service.", no_args_is_help=True)


@cli.command("rotate-keys")
def rotate_keys() -> None:
    """Create a new signing key; tokens signed by the old one stay valid until they expire."""
    settings = operator_settings(service="auth")

    async def rotate() -> str:
        async with database(settings, purpose="rotate-keys") as sessionmaker:
            keys = KeyStore(
                sessionmaker=sessionmaker,
                encryption=KeyEncryption.from_settings(settings),
                token_ttl_seconds=settings.access_token_ttl_seconds,
            )
            return await keys.rotate()

    typer.echo(f"new signing key: {asyncio.run(rotate())}")
