"""The backup operations: create, verify, restore and prune (listing is ``store.scan``).

A backup is pg_dump's custom format taken in a snapshot that stays open while the row counts
and checksums of its manifest are computed in the same snapshot: writes going on meanwhile are
in neither, so what a restore gives back must equal the manifest exactly.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg
import structlog
from sqlalchemy import make_url

from expensetracker.backup import contents, store, tools
from expensetracker.backup.store import (
    Backup,
    Failure,
    Manifest,
    TableContents,
    Verification,
    utc_now,
)
from expensetracker.backup.tools import BackupError, BadUsage
from expensetracker.platform.db import create_database_if_missing, identifier
from expensetracker.platform.migrations import head_revision
from expensetracker.targets import SERVICES

log = structlog.get_logger(__name__)

SCRATCH_PREFIX = "expensetracker_verify_"
# pg_restore --verbose announces each item of the archive it works on with one of these.
_RESTORE_ITEM = re.compile(r"^pg_restore: (creating|processing data|executing) ")
_HARMLESS_ERROR = 'unrecognized configuration parameter "transaction_timeout"'


class InvalidBackup(BackupError):
    """The backup itself is wrong: damaged, tampered with, or not restorable."""


@dataclass(frozen=True)
class Step:
    """Progress of long work: ``done`` of ``total`` (None: unknown), in bytes or items."""

    name: str
    done: int
    total: int | None = None
    in_bytes: bool = False


OnProgress = Callable[[Step], None]


def _ignore(_step: Step) -> None:
    pass


@dataclass(frozen=True)
class Restored:
    backup: Backup
    database: str
    tables: int
    rows: int
    # Service -> (revision restored, this version's head).
    migrations: dict[str, tuple[str | None, str | None]]
    seconds: float


# --- create --------------------------------------------------------------------------------------


async def create(
    *,
    database_url: str,
    folder: Path,
    bin_dir: Path | None = None,
    compress_level: int = 6,
    clock: Callable[[], datetime] = utc_now,
    progress: OnProgress = _ignore,
) -> Backup:
    """Dump the database into ``folder``; the manifest, written last, makes it a backup."""
    name: str | None = None
    try:
        await asyncio.to_thread(store.check_writable, folder)
        pg_dump = tools.find("pg_dump", bin_dir=bin_dir)
        started = time.monotonic()
        connection = await contents.connect(database_url)
        try:
            server_version = tools.server_version_of(await contents.server_version_num(connection))
            tools.check_server(pg_dump, server_version=server_version)
            await _check_services_schemas(connection, database_url=database_url)
            async with connection.transaction(isolation="repeatable_read", readonly=True):
                snapshot = await connection.fetchval("SELECT pg_export_snapshot()")
                created_at = clock()
                name = store.new_name(folder, created_at)
                dump = folder / f"{name}{store.DUMP}"
                partial = store.partial_path(dump)
                log.info("backup_started", backup=name, pg_dump=str(pg_dump.path))
                with store.removed_on_failure(partial):
                    # pg_dump writes into it, and would create it readable by everyone.
                    os.close(store.create_private(partial))
                    held = await _dump_and_read(
                        connection,
                        pg_dump=pg_dump,
                        args=[
                            "--format=custom",
                            f"--compress={compress_level}",
                            f"--snapshot={snapshot}",
                            f"--file={partial}",
                        ],
                        database_url=database_url,
                        partial=partial,
                        progress=progress,
                    )
        finally:
            await connection.close()
        with store.removed_on_failure(partial):
            size = store.size_of(partial)
            sha256 = await asyncio.to_thread(
                _synced_sha256,
                partial,
                lambda done: progress(Step("checking the archive", done, size, in_bytes=True)),
            )
            store.publish(partial, dump)
        manifest = Manifest(
            name=name,
            created_at=created_at,
            duration_seconds=round(time.monotonic() - started, 3),
            database=make_url(database_url).database or "",
            server_version=server_version,
            pg_dump_version=pg_dump.version,
            compress_level=compress_level,
            size_bytes=size,
            sha256=sha256,
            **held,
        )
        manifest_path = folder / f"{name}{store.MANIFEST}"
        try:
            store.write_json(manifest_path, manifest)
        except BaseException:
            # Not written (stopped by SIGTERM, a full disk): without it the archive is no backup.
            if not manifest_path.exists():
                dump.unlink(missing_ok=True)
            raise
    except BadUsage:
        raise  # nothing was attempted: not a failed backup
    except BaseException as exc:
        _record_failure(folder, "create", name, exc, clock)
        raise
    log.info(
        "backup_created",
        backup=name,
        size_bytes=size,
        tables=len(manifest.tables),
        rows=sum(t.rows for t in manifest.tables.values()),
        seconds=manifest.duration_seconds,
    )
    return store.find(folder, name)


async def _check_services_schemas(connection: asyncpg.Connection, *, database_url: str) -> None:
    """A database holding none of the services' schemas is the wrong one, or not migrated yet:
    its backup would restore nothing."""
    found = await contents.schemas(connection)
    expected = [spec.schema for spec in SERVICES.values()]
    if not set(expected) & set(found):
        raise BadUsage(
            f"nothing to back up: the database {make_url(database_url).database} holds none of "
            f"the services' schemas ({', '.join(expected)}); run `migrate` first?"
        )


async def _dump_and_read(
    connection: asyncpg.Connection,
    *,
    pg_dump: tools.Tool,
    args: list[str],
    database_url: str,
    partial: Path,
    progress: OnProgress,
) -> dict[str, object]:
    """pg_dump in the exported snapshot while this connection, still holding it, reads what the
    manifest records."""
    conninfo, env = tools.libpq(database_url)
    dumping = asyncio.create_task(tools.run(pg_dump, [*args, f"--dbname={conninfo}"], env=env))

    async def watch() -> None:
        while True:
            progress(Step("writing the archive", store.size_of(partial), in_bytes=True))
            await asyncio.sleep(0.25)

    watching = asyncio.create_task(watch())
    try:
        tables = await contents.tables(
            connection, progress=lambda done, total: progress(Step("checksumming", done, total))
        )
        owners, roles = await contents.roles(connection)
        held: dict[str, object] = {
            "schemas": await contents.schemas(connection),
            "owners": owners,
            "roles": roles,
            "migrations": await contents.migrations(connection),
            "tables": tables,
        }
        await dumping
    finally:
        watching.cancel()
        dumping.cancel()
        await asyncio.gather(watching, dumping, return_exceptions=True)
    return held


def _synced_sha256(path: Path, progress: Callable[[int], None]) -> str:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())
    return store.sha256_of(path, progress=progress)


def _record_failure(
    folder: Path,
    operation: str,
    name: str | None,
    exc: BaseException,
    clock: Callable[[], datetime],
) -> None:
    """For the metrics (last failure) and whoever lists the folder; never hides ``exc``."""
    error = (
        "interrupted"
        if isinstance(exc, KeyboardInterrupt | asyncio.CancelledError)
        else str(exc) or type(exc).__name__
    )
    log.error(f"backup_{operation}_failed", backup=name, error=error)
    try:
        store.record_failure(
            folder, Failure(at=clock(), operation=operation, backup=name, error=error)
        )
    except OSError as write_error:
        log.error("backup_status_not_written", error=str(write_error))


# --- verify --------------------------------------------------------------------------------------


async def verify(
    *,
    database_url: str,
    folder: Path,
    name: str | None = None,
    bin_dir: Path | None = None,
    jobs: int = 2,
    clock: Callable[[], datetime] = utc_now,
    progress: OnProgress = _ignore,
) -> Backup:
    """Check a backup (the newest by default) in full: its sha256, its table of contents, then a
    restore into a scratch database on the same server whose every table must hold exactly the
    rows of the manifest. The result is kept beside the backup, which is returned with it."""
    backup = store.find(folder, name)
    store.check_writable(folder)  # for the result
    started = time.monotonic()
    try:
        try:
            await _verify(
                backup, database_url=database_url, bin_dir=bin_dir, jobs=jobs, progress=progress
            )
            detail = ""
        except InvalidBackup as exc:
            detail = str(exc)
        verification = Verification(
            verified_at=clock(),
            ok=not detail,
            detail=detail,
            duration_seconds=round(time.monotonic() - started, 3),
        )
        store.write_json(backup.verification_path, verification)
    except BaseException as exc:
        _record_failure(folder, "verify", backup.name, exc, clock)
        raise
    if detail:
        _record_failure(folder, "verify", backup.name, InvalidBackup(detail), clock)
    else:
        log.info("backup_verified", backup=backup.name, seconds=verification.duration_seconds)
    return store.find(folder, backup.name)


async def _verify(
    backup: Backup, *, database_url: str, bin_dir: Path | None, jobs: int, progress: OnProgress
) -> None:
    manifest = await asyncio.to_thread(_intact, backup, progress=progress)
    pg_restore = tools.find("pg_restore", bin_dir=bin_dir)
    tools.check_archive(pg_restore, pg_dump_version=manifest.pg_dump_version)
    items = await _archive_items(pg_restore, backup)
    connection = await contents.connect(database_url)
    try:
        server_version = tools.server_version_of(await contents.server_version_num(connection))
        tools.check_server(pg_restore, server_version=server_version)
        scratch = f"{SCRATCH_PREFIX}{uuid.uuid4().hex[:12]}"
        await connection.execute(f'CREATE DATABASE "{scratch}" TEMPLATE template0')
        try:
            scratch_url = _with_database(database_url, scratch)
            # Owners and grants are left out: they name roles this one may not act as (the
            # backup role reads everything and owns nothing), and the data is what is checked.
            await _pg_restore(
                pg_restore,
                backup,
                scratch_url,
                server_version=server_version,
                options=["--no-owner", "--no-privileges"],
                jobs=jobs,
                items=items,
                step="restoring into a scratch database",
                progress=progress,
            )
            await _compare(manifest, scratch_url, progress=progress)
        finally:
            await connection.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
    finally:
        await connection.close()


def _intact(backup: Backup, *, progress: OnProgress) -> Manifest:
    """The manifest, when the archive is the very file it describes."""
    if backup.manifest is None:
        raise InvalidBackup(f"{backup.name}: {backup.problem}")
    manifest = backup.manifest
    size = backup.dump.stat().st_size
    if size != manifest.size_bytes:
        raise InvalidBackup(
            f"{backup.name}: the archive has {size} bytes, the manifest says {manifest.size_bytes}"
        )
    sha256 = store.sha256_of(
        backup.dump,
        progress=lambda done: progress(Step("checking the sha256", done, size, in_bytes=True)),
    )
    if sha256 != manifest.sha256:
        raise InvalidBackup(
            f"{backup.name}: the archive's sha256 is {sha256}, the manifest says {manifest.sha256}"
        )
    return manifest


async def _archive_items(pg_restore: tools.Tool, backup: Backup) -> int:
    """Entries in the archive's table of contents; pg_restore must be able to read it."""
    try:
        listing = await tools.run(pg_restore, ["--list", str(backup.dump)])
    except BackupError as exc:
        raise InvalidBackup(f"{backup.name}: unreadable archive: {exc}") from exc
    return sum(1 for line in listing.splitlines() if line and not line.startswith(";"))


async def _pg_restore(
    pg_restore: tools.Tool,
    backup: Backup,
    url: str,
    *,
    server_version: str,
    options: list[str],
    jobs: int,
    items: int,
    step: str,
    progress: OnProgress,
) -> None:
    conninfo, env = tools.libpq(url)
    done = 0

    def advance(line: str) -> None:
        nonlocal done
        if _RESTORE_ITEM.match(line):
            done = min(done + 1, items)
            progress(Step(step, done, items))

    # pg_restore 17 and later reset transaction_timeout on each of their connections, and a
    # server older than 17 answers with an error. It is harmless, but it would stop an
    # --exit-on-error restore, so there the restore goes on past errors and they are read from
    # stderr instead: in one process, as parallel workers share stderr and their lines interleave
    # mid-line ("pg_restore: error: pg_restore: processing data ...").
    tolerant = pg_restore.major >= 17 and tools.major_of(server_version) < 17
    returncode, _, said = await tools.execute(
        pg_restore,
        [
            "--verbose",
            f"--jobs={1 if tolerant else jobs}",
            *([] if tolerant else ["--exit-on-error"]),
            *options,
            f"--dbname={conninfo}",
            str(backup.dump),
        ],
        env=env,
        on_line=advance,
    )
    relevant = [line for line in said if _HARMLESS_ERROR not in line]
    errors = [line for line in relevant if line.startswith("pg_restore: error:")]
    if errors or (returncode != 0 and len(relevant) == len(said)):
        raise InvalidBackup(
            f"{backup.name} does not restore: {tools.failure(pg_restore, relevant)}"
        )
    progress(Step(step, items, items))


async def _compare(manifest: Manifest, url: str, *, progress: OnProgress) -> dict[str, str | None]:
    """Every table as the manifest has it, else InvalidBackup naming the differences; the
    revisions restored."""
    connection = await contents.connect(url)
    try:
        async with connection.transaction(isolation="repeatable_read", readonly=True):
            found = await contents.tables(
                connection,
                progress=lambda done, total: progress(Step("comparing rows", done, total)),
            )
            revisions = await contents.migrations(connection)
    finally:
        await connection.close()
    problems = [
        f"{table}: {_describe(manifest.tables.get(table))} in the backup, "
        f"{_describe(found.get(table))} restored"
        for table in sorted(manifest.tables.keys() | found.keys())
        if manifest.tables.get(table) != found.get(table)
    ]
    problems += [
        f"{service} migration: {manifest.migrations.get(service)} in the backup, "
        f"{revisions.get(service)} restored"
        for service in sorted(manifest.migrations.keys() | revisions.keys())
        if manifest.migrations.get(service) != revisions.get(service)
    ]
    if problems:
        raise InvalidBackup(f"{manifest.name}: restored contents differ: " + "; ".join(problems))
    return revisions


def _describe(table: TableContents | None) -> str:
    return "absent" if table is None else f"{table.rows} rows (checksum {table.checksum})"


def _with_database(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


# --- restore -------------------------------------------------------------------------------------


async def create_database(*, server_url: str, name: str) -> tuple[str, bool]:
    """The URL of database ``name`` on the server of ``server_url``, created when missing, and
    whether it was."""
    connection = await contents.connect(server_url)
    try:
        created = await create_database_if_missing(connection, name)
    finally:
        await connection.close()
    return _with_database(server_url, name), created


async def drop_database(*, server_url: str, name: str) -> None:
    """Drop database ``name`` on the server of ``server_url``, whoever is connected to it."""
    connection = await contents.connect(server_url)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {identifier(name)} WITH (FORCE)")
    finally:
        await connection.close()


async def restore(
    *,
    folder: Path,
    name: str | None,
    target_url: str,
    force: bool = False,
    keep_owners: bool = True,
    bin_dir: Path | None = None,
    jobs: int = 2,
    progress: OnProgress = _ignore,
) -> Restored:
    """Restore a backup (None: the newest verified) into the database of ``target_url``.

    The backup's schemas are dropped and recreated, so the target must hold nothing (unless
    ``force``). With ``keep_owners`` every object gets back its owner and grants (the services'
    roles in Kubernetes, and the read contracts granted to them): the connected role must be
    able to act as each owner, as a superuser can. Without, the connected role owns everything
    and no grant is restored (for a server without the services' roles; ``migrate`` grants the
    read contracts again to the roles that exist). Everything is checked before the target is
    touched; afterwards every table must hold the rows of the manifest."""
    started = time.monotonic()
    backup = store.find(folder, name, verified=name is None)
    manifest = await asyncio.to_thread(_intact, backup, progress=progress)
    pg_restore = tools.find("pg_restore", bin_dir=bin_dir)
    tools.check_archive(pg_restore, pg_dump_version=manifest.pg_dump_version)
    items = await _archive_items(pg_restore, backup)
    database = make_url(target_url).database or ""
    connection = await contents.connect(target_url)
    try:
        server_version = tools.server_version_of(await contents.server_version_num(connection))
        tools.check_server(pg_restore, server_version=server_version)
        if tools.major_of(server_version) < tools.major_of(manifest.server_version):
            raise BackupError(
                f"{backup.name} is of PostgreSQL {manifest.server_version}, the target runs "
                f"{server_version}: PostgreSQL does not restore into an older major version"
            )
        if not force and not await contents.is_empty(connection):
            raise BackupError(
                f"the target database {database} is not empty: restoring replaces the schemas "
                f"{', '.join(manifest.schemas)}; give --force to do so"
            )
        if keep_owners:
            missing, foreign = await contents.roles_missing(
                connection, owners=manifest.owners, named=manifest.roles
            )
            if missing or foreign:
                reasons = [f"roles that do not exist here: {', '.join(missing)}"] if missing else []
                if foreign:
                    reasons.append(f"owners it may not act as: {', '.join(foreign)}")
                raise BackupError(
                    f"the backup's owners and grants cannot be restored by "
                    f"{make_url(target_url).username}: {'; '.join(reasons)}. Restore as a "
                    "superuser, or with --no-owner (everything owned by the restoring role)"
                )
        log.info("restore_started", backup=backup.name, database=database, force=force)
        for schema in manifest.schemas:
            await connection.execute(f"DROP SCHEMA IF EXISTS {identifier(schema)} CASCADE")
        await _pg_restore(
            pg_restore,
            backup,
            target_url,
            server_version=server_version,
            options=[] if keep_owners else ["--no-owner", "--no-privileges"],
            jobs=jobs,
            items=items,
            step="restoring",
            progress=progress,
        )
        progress(Step("analyzing", 0))
        await connection.execute("ANALYZE")
    finally:
        await connection.close()
    revisions = await _compare(manifest, target_url, progress=progress)
    restored = Restored(
        backup=backup,
        database=database,
        tables=len(manifest.tables),
        rows=sum(table.rows for table in manifest.tables.values()),
        migrations={
            service: (revisions.get(service), head_revision(spec))
            for service, spec in SERVICES.items()
        },
        seconds=round(time.monotonic() - started, 3),
    )
    log.info(
        "restored",
        backup=backup.name,
        database=database,
        rows=restored.rows,
        seconds=restored.seconds,
    )
    return restored


# --- prune ---------------------------------------------------------------------------------------


def prune(*, folder: Path, keep_days: int, now: datetime | None = None) -> list[str]:
    """Delete the backups older than ``keep_days`` (never the newest verified one, nor the
    newest one) and the files of no backup; what was deleted."""
    now = now or utc_now()
    removed: list[str] = []
    try:
        for backup in store.expired(store.scan(folder), keep_days=keep_days, now=now):
            # The manifest first: a reader never finds a manifest whose archive is gone.
            for path in (backup.manifest_path, backup.dump, backup.verification_path):
                path.unlink(missing_ok=True)
            removed.append(backup.name)
        for path in store.leftovers(folder, now=now):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    except OSError as exc:
        raise BackupError(f"cannot prune {folder}: {exc.filename}: {exc.strerror}") from exc
    finally:
        # What went before a failure is said too: the log tells what is gone.
        if removed:
            store.sync_folder(folder)
            log.info("backups_pruned", removed=removed, keep_days=keep_days)
    return removed
