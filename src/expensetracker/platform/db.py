"""Async database access: one engine per process, one PostgreSQL schema per service."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

import asyncpg
from sqlalchemy import URL, delete, make_url, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    create_async_engine,
)

from expensetracker.platform.config import Settings
from expensetracker.platform.errors import NotFound, chained


def async_url(url: str | URL) -> URL:
    """The same URL for SQLAlchemy's asyncpg dialect, whatever driver it named. libpq's
    ``sslmode`` becomes asyncpg's ``ssl``, which takes the same values: the dialect hands the
    query to asyncpg.connect() as keyword arguments, and it has no ``sslmode`` (asyncpg's own
    DSN parser, create_driver_pool's, reads ``sslmode``)."""
    parsed = make_url(url).set(drivername="postgresql+asyncpg")
    if "sslmode" not in parsed.query:
        return parsed
    return parsed.difference_update_query(["sslmode"]).update_query_dict(
        {"ssl": parsed.query["sslmode"]}
    )


def database_location(url: str | URL | None) -> str:
    """`` <name> at <host>:<port>`` of a database URL, to name it in a message: never its user
    or password."""
    if url is None:
        return ""
    parsed = make_url(url)
    name = f" {parsed.database}" if parsed.database else ""
    host = parsed.host or parsed.query.get("host") or "localhost"
    return f"{name} at {host}:{parsed.port or 5432}"


def connect_error_reason(exc: OSError) -> str:
    """Why connecting failed, in a few words: asyncpg raises the socket's own errors."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror) and exc.errno == socket.EAI_NONAME:
        return "unknown host"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return (exc.strerror or str(exc) or type(exc).__name__).lower()


def cannot_connect(url: str | URL | None, reason: str) -> str:
    """What every command says when it cannot connect to its database."""
    return f"cannot connect to the database{database_location(url)} ({reason})"


def identifier(name: str) -> str:
    """``name`` quoted as a PostgreSQL identifier, for the statements that take no parameters."""
    return '"' + name.replace('"', '""') + '"'


async def create_database_if_missing(connection: asyncpg.Connection, name: str) -> bool:
    """Create the empty database ``name`` on the connection's server unless it exists; whether
    this call created it. From template0, so that nothing added to template1 comes along (a
    restore needs a database with nothing in it)."""
    if await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
        return False
    try:
        await connection.execute(f"CREATE DATABASE {identifier(name)} TEMPLATE template0")
    except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
        # Another process created it between the check and here: PostgreSQL says so either
        # way, depending on how far that other CREATE had gone.
        return False
    return True


def _server_settings(settings: Settings, *, application_name: str) -> dict[str, str]:
    parameters = {"application_name": application_name}
    if settings.db_statement_timeout_ms:
        parameters["statement_timeout"] = str(settings.db_statement_timeout_ms)
    return parameters


def _unique_statement_name() -> str:
    return f"__expensetracker_{uuid.uuid4().hex}__"


def statement_cache_arguments(cache_size: int) -> dict[str, Any]:
    """asyncpg's connect arguments for a statement cache of ``cache_size``, with those of
    SQLAlchemy's asyncpg dialect, which prepares every statement it runs. Without a cache its
    statements get names unique across clients: behind PgBouncer one server connection serves
    many clients, whose own counters would give the same names."""
    arguments: dict[str, Any] = {
        "statement_cache_size": cache_size,
        "prepared_statement_cache_size": cache_size,
    }
    if cache_size == 0:
        arguments["prepared_statement_name_func"] = _unique_statement_name
    return arguments


def create_engine(settings: Settings, *, application_name: str) -> AsyncEngine:
    """The ORM's engine and pool: sessions, on the paths that are not hot."""
    if settings.database_url is None:
        raise RuntimeError("EXPENSETRACKER_DATABASE_URL is not set")
    return create_async_engine(
        async_url(settings.database_url.get_secret_value()),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        # No ping before each checkout (a round trip per request): connections are recycled
        # instead, and a connection found dead invalidates the pool at its first error.
        pool_recycle=1800,
        # Statement errors would carry their parameters (e-mail addresses, password hashes)
        # into log lines and traces.
        hide_parameters=True,
        connect_args={
            # A server that does not answer costs at most the pool timeout, never asyncpg's 60 s.
            "timeout": settings.db_pool_timeout_seconds,
            "server_settings": _server_settings(settings, application_name=application_name),
            **statement_cache_arguments(settings.db_statement_cache_size),
        },
    )


async def _roll_back_if_open(connection: asyncpg.Connection) -> None:
    """A returned connection's reset: the hot paths keep no session state (no SET, LISTEN or
    session-level lock), so only a transaction left open by a cancelled request needs undoing.
    asyncpg's own reset costs a round trip on every release."""
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


def _driver_url(settings: Settings, *, read_only: bool = False) -> str:
    secret = settings.database_read_url if read_only else settings.database_url
    if secret is None:
        raise RuntimeError("EXPENSETRACKER_DATABASE_URL is not set")
    return (
        make_url(secret.get_secret_value())
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )


@asynccontextmanager
async def own_connection(
    settings: Settings, *, application_name: str
) -> AsyncIterator[asyncpg.Connection]:
    """A connection of its own to the primary, closed after use: for background work that runs
    a while and so must not hold one of the requests' pooled connections (with two per process,
    a job holding one halves what the process serves while it runs)."""
    connection = await asyncpg.connect(
        _driver_url(settings),
        timeout=settings.db_pool_timeout_seconds,
        server_settings=_server_settings(settings, application_name=application_name),
        statement_cache_size=settings.db_statement_cache_size,
    )
    try:
        yield connection
    finally:
        await connection.close()


async def create_driver_pool(
    settings: Settings, *, application_name: str, read_only: bool = False
) -> asyncpg.Pool:
    """The hot paths' pool: asyncpg's own, without the ORM's layers (about 100 us less per
    request). Connections open on demand, up to the same size as the engine's pool, and close
    after five idle minutes. ``read_only``: on the read URL (EXPENSETRACKER_DATABASE_READ_URL)."""
    return await asyncpg.create_pool(
        _driver_url(settings, read_only=read_only),
        min_size=0,
        max_size=settings.db_pool_size + settings.db_max_overflow,
        max_inactive_connection_lifetime=300,
        reset=_roll_back_if_open,
        timeout=settings.db_pool_timeout_seconds,
        server_settings=_server_settings(settings, application_name=application_name),
        statement_cache_size=settings.db_statement_cache_size,
    )


def pool_turns(settings: Settings) -> asyncio.Semaphore:
    """Requests take a turn before they take a pooled connection, first come, first served.
    SQLAlchemy's pool gives a returned connection to whoever asks next: under load a request
    woken to take it often found it gone and queued again at the back, so a few requests waited
    hundreds of milliseconds while most waited none (docs/performance.md)."""
    return asyncio.Semaphore(settings.db_pool_size + settings.db_max_overflow)


async def lock_until_commit(session: AsyncSession, scope: str) -> None:
    """Waits for, then holds until the transaction ends, the advisory lock named ``scope`` (such
    as ``expenses.rules:<user id>``): the work of other transactions that take it waits its turn."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:scope, 0))"), {"scope": scope}
    )


Owned = TypeVar("Owned")


async def get_owned(
    session: AsyncSession,
    model: type[Owned],
    *,
    user_id: uuid.UUID,
    id: uuid.UUID,
    missing: str,
    for_update: bool = False,
) -> Owned:
    """The caller's row ``id`` of ``model`` (keyed by ``user_id`` and ``id``); another user's id
    answers 404 with ``missing``, like an id that does not exist. ``for_update``, for a change:
    the row locked until the transaction ends (FOR NO KEY UPDATE, which rows referring to it do
    not wait for), so that a deletion under way ends first (a 404) or waits for the change."""
    row = await session.get(
        model, (user_id, id), with_for_update={"key_share": True} if for_update else None
    )
    if row is None:
        raise NotFound(missing)
    return row


async def delete_owned(
    session: AsyncSession, model: type[Any], *, user_id: uuid.UUID, id: uuid.UUID, missing: str
) -> None:
    """Deletes the caller's row ``id`` of ``model`` (keyed by ``user_id`` and ``id``), in a
    transaction of its own; another user's id answers 404 with ``missing``, like an id that does
    not exist."""
    async with session.begin():
        deleted = await session.scalar(
            delete(model).where(model.user_id == user_id, model.id == id).returning(model.id)
        )
    if deleted is None:
        raise NotFound(missing)


class PoolTurnTimeout(TimeoutError):
    """No turn for a pooled connection within the pool timeout."""


@asynccontextmanager
async def taking_turn(turns: asyncio.Semaphore, *, wait_seconds: float) -> AsyncIterator[None]:
    """A turn, waited for at most ``wait_seconds``: a request never hangs longer than that for a
    connection, even when the database is gone and every turn is taken."""
    if turns.locked():  # only a request that must queue pays for the timer
        try:
            # A timer on this task, not wait_for's task of its own (Python 3.11) per waiter.
            async with asyncio.timeout(wait_seconds):
                await turns.acquire()
        except TimeoutError:
            raise PoolTurnTimeout from None
    else:
        await turns.acquire()
    try:
        yield
    finally:
        turns.release()


_UNAVAILABLE = (
    ConnectionError,  # refused, reset: the server is down or restarting
    TimeoutError,  # connecting, or waiting for the pool, took longer than the pool timeout
    sa_exc.TimeoutError,  # SQLAlchemy's pool timeout
    asyncpg.CannotConnectNowError,  # starting up or shutting down
    asyncpg.AdminShutdownError,  # terminated by a fast shutdown
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08: the connection failed or is gone
    asyncpg.CrashShutdownError,
    asyncpg.InterfaceError,  # "connection is closed"
    # An idle pooled connection that the server terminated (a fast shutdown) can be left
    # mid-operation: "cannot switch to state 12; another operation is in progress".
    asyncpg.InternalClientError,
)


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception chained to it) says the database cannot be reached, as
    opposed to a statement failing: such requests answer 503, not 500."""
    return any(
        isinstance(cause, _UNAVAILABLE)
        or (isinstance(cause, sa_exc.DBAPIError) and cause.connection_invalidated)
        for cause in chained(exc)
    )


class DriverPool:
    """asyncpg's pool (create_driver_pool) behind turns taken first come, first served, as the
    ORM's (pool_turns): asyncpg's queue gives a returned connection to whoever asks next, so a
    waiter woken for it could find it gone and queue again at the back, a p99 of 200-400 ms
    under load where the median was 20 ms."""

    def __init__(self, pool: asyncpg.Pool, *, wait_seconds: float) -> None:
        self.pool = pool
        self.turns = asyncio.Semaphore(pool.get_max_size())
        self.wait_seconds = wait_seconds

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection, each statement in its own transaction unless the caller opens one: for
        paths of one statement or a few, where an ORM session and its BEGIN and COMMIT round
        trips cost more than the statements."""
        async with taking_turn(self.turns, wait_seconds=self.wait_seconds):
            proxy = await self.pool.acquire()  # a turn holds a free connection
            try:
                # asyncpg counts its pool's proxy as a Connection (isinstance says so); the
                # stubs keep the two apart.
                yield cast(asyncpg.Connection, proxy)
            except BaseException as exc:
                # A statement refused by PostgreSQL leaves the connection as it was; anything
                # else (the server gone, an operation cut short) may leave it mid-operation,
                # and the next request would fail on it: it is closed, and the pool opens
                # another.
                if not isinstance(exc, asyncpg.PostgresError) or database_unavailable(exc):
                    proxy.terminate()
                raise
            finally:
                await self.pool.release(proxy)


# Statements written once, in asyncpg's $n style, run on the hot paths through the driver
# connection and elsewhere inside an ORM session's transaction (SQLAlchemy's asyncpg dialect
# passes $n parameters through as they are).
Db = AsyncSession | asyncpg.Connection


async def fetch(db: Db, sql: str, *args: object) -> list[Any]:
    """The rows of ``sql``, each indexable by position."""
    if isinstance(db, asyncpg.Connection):
        return await db.fetch(sql, *args)
    result = await (await db.connection()).exec_driver_sql(sql, args)
    return list(result.all()) if result.returns_rows else []


async def fetchval(db: Db, sql: str, *args: object) -> Any:
    """The first column of the first row of ``sql``, or None without rows."""
    rows = await fetch(db, sql, *args)
    return rows[0][0] if rows else None
