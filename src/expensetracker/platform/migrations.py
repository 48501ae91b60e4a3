"""Alembic, once per service: each history lives in the service's ``migrations/`` folder and keeps
its version table inside the service's own schema, so services migrate independently."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from alembic import command, context
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from expensetracker.platform.db import async_url, statement_cache_arguments
from expensetracker.platform.spec import ServiceSpec

VERSION_TABLE = "alembic_version"
# Alembic's `context` is a module-level proxy: one migration at a time per process.
_ALEMBIC_CONTEXT = threading.Lock()


def alembic_config(spec: ServiceSpec, database_url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(spec.migrations))
    config.attributes["service"] = spec
    config.attributes["database_url"] = database_url
    return config


def upgrade(spec: ServiceSpec, database_url: str, revision: str = "head") -> None:
    """Migrate one service; blocking (run it in a thread from async code)."""
    with _ALEMBIC_CONTEXT:
        command.upgrade(alembic_config(spec, database_url), revision)


def head_revision(spec: ServiceSpec) -> str | None:
    return ScriptDirectory.from_config(alembic_config(spec)).get_current_head()


def unknown_revisions(specs: list[ServiceSpec], database_url: str) -> list[tuple[ServiceSpec, str]]:
    """Each service whose database is at a revision its history does not hold (a newer version
    migrated it), with that revision: Alembic cannot upgrade it, nor the others meanwhile."""
    revisions = asyncio.run(_current_revisions(specs, database_url))
    unknown = []
    for spec in specs:
        revision = revisions[spec.name]
        script = ScriptDirectory.from_config(alembic_config(spec))
        if revision is not None and revision not in {s.revision for s in script.walk_revisions()}:
            unknown.append((spec, revision))
    return unknown


async def _current_revisions(specs: list[ServiceSpec], url: str) -> dict[str, str | None]:
    async with _connected(url) as connection:
        return {spec.name: await current_revision(connection, spec) for spec in specs}


async def current_revision(connection: AsyncConnection, spec: ServiceSpec) -> str | None:
    table = f"{spec.schema}.{VERSION_TABLE}"
    exists = await connection.scalar(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": table})
    if not exists:
        return None
    revision: str | None = await connection.scalar(
        text(f"SELECT version_num FROM {table}")  # noqa: S608
    )
    return revision


def run_migrations_from_env() -> None:
    """Body of every service's ``migrations/env.py``."""
    spec: ServiceSpec = context.config.attributes["service"]
    url = context.config.attributes["database_url"]
    asyncio.run(_run_online(spec, url))


async def _run_online(spec: ServiceSpec, url: str) -> None:
    async with _connected(url) as connection:
        await connection.run_sync(_migrate, spec)


@asynccontextmanager
async def _connected(url: str) -> AsyncIterator[AsyncConnection]:
    # No statement cache: a migration runs each statement once, and so it works through any
    # PgBouncer, whatever its version.
    engine = create_async_engine(
        async_url(url),
        poolclass=pool.NullPool,
        hide_parameters=True,
        connect_args=statement_cache_arguments(0),
    )
    try:
        async with engine.connect() as connection:
            yield connection
    finally:
        await engine.dispose()


def _migrate(connection: Connection, spec: ServiceSpec) -> None:
    with connection.begin():
        # Replicas or Jobs starting together: one migrates, the others wait and find it done.
        connection.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"migrate:{spec.schema}"}
        )
        # Checked first: in Kubernetes the schema exists, owned by the service's role, which
        # may not create schemas (CREATE SCHEMA IF NOT EXISTS checks that privilege anyway).
        if connection.scalar(text("SELECT to_regnamespace(:s)"), {"s": spec.schema}) is None:
            connection.execute(text(f'CREATE SCHEMA "{spec.schema}"'))
        context.configure(
            connection=connection,
            target_metadata=spec.metadata,
            version_table=VERSION_TABLE,
            version_table_schema=spec.schema,
            include_schemas=False,
            transactional_ddl=True,
        )
        context.run_migrations()
        _grant_readers(connection, spec)


def _grant_readers(connection: Connection, spec: ServiceSpec) -> None:
    for role, views in spec.readers.items():
        exists = connection.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role})
        if not exists:
            continue
        connection.execute(text(f'GRANT USAGE ON SCHEMA "{spec.schema}" TO "{role}"'))
        # Those of the contract that exist: a migration to an earlier revision has fewer.
        names = [f'"{spec.schema}"."{view}"' for view in views]
        present = [
            name
            for name in names
            if connection.scalar(text("SELECT to_regclass(:name)"), {"name": name}) is not None
        ]
        if present:
            connection.execute(text(f'GRANT SELECT ON {", ".join(present)} TO "{role}"'))
