"""What a database holds, as a manifest records it and a restore must give back: every table's
row count and checksum, the schemas, the roles that own objects or are granted them, and each
service's migration."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
from sqlalchemy import make_url

from expensetracker.backup.store import TableContents
from expensetracker.backup.tools import BackupError
from expensetracker.platform.db import cannot_connect, connect_error_reason, identifier
from expensetracker.platform.migrations import VERSION_TABLE
from expensetracker.targets import SERVICES

# A row's text depends on these settings: fixed, the same rows give the same checksum in any
# session and on any server version. No statement timeout: a checksum reads whole tables.
SESSION_SETTINGS = {
    "application_name": "expensetracker-backup",
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
    "statement_timeout": "0",
}

# Schemas of the database's own objects: not the system's, not an extension's.
_USER_SCHEMA = (
    "n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' AND NOT EXISTS ("
    "SELECT FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass AND d.objid = n.oid "
    "AND d.deptype = 'e')"
)


def _not_extension_member(catalog: str, alias: str) -> str:
    return (
        f"NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = '{catalog}'::regclass "
        f"AND d.objid = {alias}.oid AND d.deptype = 'e')"
    )


_TABLES = f"""
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND {_USER_SCHEMA} AND {_not_extension_member("pg_class", "c")}
ORDER BY 1, 2
"""  # noqa: S608 - constant SQL

_CHECKSUM = (
    "SELECT count(*), coalesce(sum(('x' || left(md5(t::text), 16))::bit(64)::bigint), 0)::text "
    "FROM {table} AS t"
)

_SCHEMAS = f"""
SELECT n.nspname FROM pg_namespace n WHERE {_USER_SCHEMA} AND n.nspname <> 'public' ORDER BY 1
"""  # noqa: S608 - constant SQL

# Owners of the schemas and of the objects in them (extension members are the extension's), the
# roles of default privileges, and everyone their access lists name. OID 0 is PUBLIC.
_ROLES = f"""
WITH spaces AS (SELECT n.* FROM pg_namespace n WHERE {_USER_SCHEMA}),
objects AS (
    SELECT nspowner AS owner, nspacl AS acl FROM spaces WHERE nspname <> 'public'
    UNION ALL SELECT relowner, relacl FROM pg_class c
        WHERE relnamespace IN (SELECT oid FROM spaces) AND {_not_extension_member("pg_class", "c")}
    UNION ALL SELECT proowner, proacl FROM pg_proc p
        WHERE pronamespace IN (SELECT oid FROM spaces) AND {_not_extension_member("pg_proc", "p")}
    UNION ALL SELECT typowner, typacl FROM pg_type t
        WHERE typnamespace IN (SELECT oid FROM spaces) AND {_not_extension_member("pg_type", "t")}
        -- A table's row type and an array type go with their table or element type.
        AND t.typrelid = 0 AND NOT EXISTS (SELECT FROM pg_type e WHERE e.typarray = t.oid)
    UNION ALL SELECT defaclrole, defaclacl FROM pg_default_acl
),
named AS (
    SELECT owner AS role, true AS owns FROM objects
    UNION ALL SELECT a.grantee, false FROM objects, aclexplode(objects.acl) AS a
    UNION ALL SELECT a.grantor, false FROM objects, aclexplode(objects.acl) AS a
)
SELECT pg_get_userbyid(role) AS role, bool_or(owns) AS owns FROM named WHERE role <> 0
GROUP BY role ORDER BY 1
"""  # noqa: S608 - constant SQL

_USER_RELATIONS = f"""
SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {_USER_SCHEMA}
  AND {_not_extension_member("pg_class", "c")}
"""  # noqa: S608 - constant SQL


def asyncpg_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def connect(url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(asyncpg_url(url), server_settings=SESSION_SETTINGS)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # A server down or refusing the role: the run fails, in one line rather than a trace,
        # said as every command says it.
        reason = connect_error_reason(exc) if isinstance(exc, OSError) else str(exc)
        raise BackupError(cannot_connect(url, reason)) from exc


async def server_version_num(connection: asyncpg.Connection) -> int:
    return await connection.fetchval("SELECT current_setting('server_version_num')::int")


async def tables(
    connection: asyncpg.Connection, *, progress: Callable[[int, int], None] | None = None
) -> dict[str, TableContents]:
    """Row count and an order-independent checksum (the sum of the rows' md5, as 64-bit
    integers) of every table, in the connection's snapshot."""
    names = await connection.fetch(_TABLES)
    found = {}
    for done, (schema, table) in enumerate(names, start=1):
        qualified = f"{identifier(schema)}.{identifier(table)}"
        row = await connection.fetchrow(_CHECKSUM.format(table=qualified))
        assert row is not None  # an aggregate answers one row
        rows, checksum = row
        found[f"{schema}.{table}"] = TableContents(rows=rows, checksum=checksum)
        if progress is not None:
            progress(done, len(names))
    return found


async def schemas(connection: asyncpg.Connection) -> list[str]:
    return [row[0] for row in await connection.fetch(_SCHEMAS)]


async def roles(connection: asyncpg.Connection) -> tuple[list[str], list[str]]:
    """(owners, every role named): the first must be taken on by a restore keeping owners, the
    second must exist for one keeping grants."""
    rows = await connection.fetch(_ROLES)
    return [role for role, owns in rows if owns], [role for role, _ in rows]


async def migrations(connection: asyncpg.Connection) -> dict[str, str | None]:
    """Each service's Alembic revision (None: not migrated)."""
    revisions: dict[str, str | None] = {}
    for name, spec in SERVICES.items():
        table = f"{identifier(spec.schema)}.{VERSION_TABLE}"
        exists = await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", table)
        revisions[name] = (
            await connection.fetchval(f"SELECT version_num FROM {table}")  # noqa: S608
            if exists
            else None
        )
    return revisions


async def is_empty(connection: asyncpg.Connection) -> bool:
    return await connection.fetchval(_USER_RELATIONS) == 0


async def roles_missing(
    connection: asyncpg.Connection, *, owners: list[str], named: list[str]
) -> tuple[list[str], list[str]]:
    """The roles a restore keeping owners and grants cannot use: those that do not exist here,
    and the owners that the connected role may not act as."""
    missing = await connection.fetch(
        "SELECT r FROM unnest($1::text[]) AS r WHERE NOT EXISTS "
        "(SELECT FROM pg_roles WHERE rolname = r) ORDER BY 1",
        named,
    )
    foreign = await connection.fetch(
        "SELECT r FROM unnest($1::text[]) AS r WHERE EXISTS "
        "(SELECT FROM pg_roles WHERE rolname = r) AND NOT pg_has_role(current_user, r, 'MEMBER') "
        "ORDER BY 1",
        owners,
    )
    return [row[0] for row in missing], [row[0] for row in foreign]
