"""Backups on real PostgreSQL (embedded 18, or CI's 15 with a role that is not a superuser):
made, verified, damaged on purpose, restored, pruned, and their metrics over HTTP."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import pwd
import shutil
import signal
import stat
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import make_url

from expensetracker.backup import contents, service, store
from expensetracker.backup.store import TableContents, Verification
from expensetracker.backup.tools import BackupError
from expensetracker.platform.db import identifier
from expensetracker.platform.migrations import upgrade
from expensetracker.targets import SERVICES
from tests.helpers.apps import AppFactory
from tests.helpers.database import admin_execute, connected, with_database
from tests.helpers.polling import eventually
from tests.helpers.processes import (
    clean_env,
    cli,
    cpu_seconds,
    free_port,
    interrupt_after,
    spawn,
)
from tests.helpers.roles import (
    BACKUP,
    BACKUP_PASSWORD,
    ROLES,
    prepare_roles_for_a_non_superuser,
    role_url,
    run_init_script,
)
from tests.helpers.users import signed_up

pytestmark = [pytest.mark.database, pytest.mark.timeout(120)]
# Runs of `create` that Ctrl-C may stop, at moments spread over a whole run.
RUNS_INTERRUPTED = 8


# --- helpers -------------------------------------------------------------------------------------


async def load_expenses(url: str, count: int) -> uuid.UUID:
    """``count`` expenses of a new user, over a year, in one category."""
    user, category = uuid.uuid4(), uuid.uuid4()
    async with connected(url) as connection:
        await connection.execute("INSERT INTO expenses.owners (user_id) VALUES ($1)", user)
        await connection.execute(
            "INSERT INTO expenses.categories (user_id, id, name) VALUES ($1, $2, 'Food')",
            user,
            category,
        )
        await insert_expenses(connection, user, category, count)
    return user


async def insert_expenses(
    connection: asyncpg.Connection, user: uuid.UUID, category: uuid.UUID | None, count: int
) -> None:
    await connection.execute(
        """
        INSERT INTO expenses.expenses (user_id, id, amount_minor, currency, currency_exponent,
            occurred_on, description, merchant, category_id)
        SELECT $1, gen_random_uuid(), 100 + n % 5000, 'EUR', 2, date '2025-01-01' + n % 365,
               'expense ' || n, 'shop ' || n % 20, $2
        FROM generate_series(1, $3::int) AS n
        """,
        user,
        category,
        count,
    )


async def snapshot_of(url: str) -> dict[str, TableContents]:
    connection = await contents.connect(url)
    try:
        return await contents.tables(connection)
    finally:
        await connection.close()


async def fetchval(url: str, query: str) -> object:
    async with connected(url) as connection:
        return await connection.fetchval(query)


async def scratch_databases(url: str) -> list[str]:
    async with connected(url) as connection:
        rows = await connection.fetch(
            "SELECT datname FROM pg_database WHERE starts_with(datname, $1)",
            service.SCRATCH_PREFIX,
        )
    return [row[0] for row in rows]


@pytest.fixture
async def new_database(postgres_admin_url: str) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """``await new_database()``: the URL of one more empty database, dropped after the test."""
    names: list[str] = []

    async def make() -> str:
        name = f"et_test_{uuid.uuid4().hex[:12]}"
        await admin_execute(postgres_admin_url, f'CREATE DATABASE "{name}" TEMPLATE template0')
        names.append(name)
        return with_database(postgres_admin_url, name)

    yield make
    for name in names:
        await admin_execute(postgres_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(args: list[str], **env: str) -> tuple[int, str]:
    with spawn(cli(*args), clean_env(**env)) as process:
        returncode = process.wait(timeout=90)
    return returncode, process.output


# --- the command line, end to end ----------------------------------------------------------------


async def test_round_trip_through_the_command_line(
    serve_app: AppFactory, database_url: str, tmp_path: Path
) -> None:
    async with serve_app() as client:
        account = await signed_up(client)
        for amount in ("12.50", "3.20", "99.99"):
            response = await client.post(
                "/api/v1/expenses",
                json={
                    "amount": amount,
                    "currency": "EUR",
                    "occurred_on": "2026-03-01",
                    "description": "lunch",
                },
                headers=account.headers,
            )
            assert response.status_code == 201, response.text
        budget = await client.post(
            "/api/v1/budgets",
            json={"name": "Food", "amount": "300.00", "currency": "EUR", "starts": "2026-01"},
            headers=account.headers,
        )
        assert budget.status_code == 201, budget.text
    await load_expenses(database_url, 2_000)
    before = await snapshot_of(database_url)
    env = {"EXPENSETRACKER_DATABASE_URL": database_url, "EXPENSETRACKER_BACKUP_DIR": str(tmp_path)}

    code, output = await asyncio.to_thread(run, ["backup", "create"], **env)
    assert code == 0, output
    code, output = await asyncio.to_thread(run, ["backup", "verify"], **env)
    assert code == 0, output
    [backup] = store.scan(tmp_path)
    assert f"verified {backup.name}" in output
    code, output = await asyncio.to_thread(run, ["backup", "list"], **env)
    assert code == 0 and backup.name in output and "verified" in output, output

    # The data is damaged: as many rows, other contents.
    async with connected(database_url) as connection:
        await connection.execute("UPDATE expenses.expenses SET description = 'oops'")
        await connection.execute("DELETE FROM reports.budgets")
    damaged = await snapshot_of(database_url)
    assert damaged["expenses.expenses"].rows == before["expenses.expenses"].rows
    assert damaged["expenses.expenses"].checksum != before["expenses.expenses"].checksum

    code, output = await asyncio.to_thread(run, ["backup", "restore", "latest"], **env)
    assert code == 1 and "is not empty" in output and "--force" in output, output
    assert await snapshot_of(database_url) == damaged  # refused: nothing touched
    code, output = await asyncio.to_thread(run, ["backup", "restore", "latest", "--force"], **env)
    assert code == 0, output
    assert f"restored {backup.name}" in output and "(head)" in output, output
    assert await snapshot_of(database_url) == before == backup.manifest.tables

    code, output = await asyncio.to_thread(run, ["backup", "prune"], **env)
    assert code == 0 and "1 backup(s) kept" in output, output


# --- refusals ------------------------------------------------------------------------------------


async def test_outside_development_the_database_url_is_required(tmp_path: Path) -> None:
    """Without it the embedded default would start a new, empty database: a backup of nothing
    that verifies, and that prune keeps as the newest verified one."""
    data_dir, backups = tmp_path / "data", tmp_path / "backups"
    env = {
        "EXPENSETRACKER_ENV": "production",
        "EXPENSETRACKER_DATA_DIR": str(data_dir),
        "EXPENSETRACKER_BACKUP_DIR": str(backups),
    }
    for command in (["create"], ["verify"], ["restore", "latest"]):
        code, output = await asyncio.to_thread(run, ["backup", *command], **env)
        assert (code, output) == (2, "error: EXPENSETRACKER_DATABASE_URL is not set"), command
    assert not data_dir.exists() and not backups.exists()


async def test_a_refused_command_makes_no_embedded_database(tmp_path: Path) -> None:
    """Run from another folder (the data folder is ./.expensetracker), `create` made a new
    PostgreSQL there, 40 MB and a backup folder, only to find nothing to back up; `verify` and
    `restore` made one only to find no backup."""
    data_dir = tmp_path / "data"
    backups = data_dir / "backups"
    env = {"EXPENSETRACKER_ENV": "development", "EXPENSETRACKER_DATA_DIR": str(data_dir)}
    for command, said in (
        (
            ["create"],
            f"no embedded database in {data_dir}: run `expensetracker up` there first, "
            "or set EXPENSETRACKER_DATA_DIR or EXPENSETRACKER_DATABASE_URL",
        ),
        (["verify"], f"no backup in {backups}"),
        (["restore", "nosuch"], f"no backup named nosuch in {backups}"),
        (["restore", "latest", "--target-db", "copy"], f"no verified backup in {backups}"),
    ):
        code, output = await asyncio.to_thread(run, ["backup", *command], **env)
        assert (code, output) == (2, f"error: {said}"), command
        assert not data_dir.exists(), command


async def test_a_database_without_the_services_schemas_is_not_backed_up(
    empty_database_url: str, tmp_path: Path
) -> None:
    async with connected(empty_database_url) as connection:
        await connection.execute("CREATE TABLE public.unrelated (id int)")
    env = {"EXPENSETRACKER_DATABASE_URL": empty_database_url}
    code, output = await asyncio.to_thread(run, ["backup", "create", "--dir", str(tmp_path)], **env)
    assert (code, output) == (
        2,
        f"error: nothing to back up: the database {make_url(empty_database_url).database} holds "
        "none of the services' schemas (auth, expenses, reports); run `migrate` first?",
    )
    assert os.listdir(tmp_path) == []  # no archive, and no failure recorded


async def test_a_backup_or_folder_that_does_not_exist_is_a_usage_error(
    database_url: str, tmp_path: Path
) -> None:
    """A typo is no failed backup: the BackupFailed alert must not fire on it."""
    backups, missing = tmp_path / "backups", tmp_path / "missing"
    await service.create(database_url=database_url, folder=backups)
    env = {"EXPENSETRACKER_DATABASE_URL": database_url}
    for args, said in (
        (["verify", "nosuch", "--dir", str(backups)], f"no backup named nosuch in {backups}"),
        (["verify", "--dir", str(missing)], f"no backup in {missing}"),
        (["restore", "nosuch", "--dir", str(backups)], f"no backup named nosuch in {backups}"),
        (["restore", "latest", "--dir", str(backups)], f"no verified backup in {backups}"),
    ):
        code, output = await asyncio.to_thread(run, ["backup", *args], **env)
        assert (code, output) == (2, f"error: {said}"), args
    assert store.read_status(backups).last_failure is None
    assert not missing.exists()


async def test_a_folder_that_cannot_be_used_is_a_usage_error(
    database_url: str, tmp_path: Path
) -> None:
    a_file = tmp_path / "somefile.csv"
    a_file.write_text("date,amount\n")
    env = {"EXPENSETRACKER_DATABASE_URL": database_url}
    for args, said in (
        (["create", "--dir", "/proc/nope"], "cannot create the backup folder /proc/nope: "),
        (["create", "--dir", "/proc"], "cannot write in the backup folder /proc: "),
        (["create", "--dir", str(a_file)], f"{a_file} is not a folder"),
        (["list", "--dir", str(a_file)], f"{a_file} is not a folder"),
        (["verify", "--dir", str(a_file)], f"{a_file} is not a folder"),
        (["prune", "--dir", str(a_file)], f"{a_file} is not a folder"),
    ):
        code, output = await asyncio.to_thread(run, ["backup", *args], **env)
        assert code == 2, (args, output)
        assert output.startswith(f"error: {said}") and "\n" not in output, (args, output)


def modes(folder: Path) -> dict[str, int]:
    """The permission bits of ``folder`` (as ".") and of each of its files."""
    paths = [folder, *folder.iterdir()]
    return {
        "." if path == folder else path.name: stat.S_IMODE(path.stat().st_mode) for path in paths
    }


async def test_backups_are_readable_by_their_owner_alone(database_url: str, tmp_path: Path) -> None:
    """The archives hold password hashes and encrypted keys. A folder the command creates is
    private too; one that exists keeps the mode its operator gave it (a volume's group)."""
    created, existing = tmp_path / "created", tmp_path / "existing"
    existing.mkdir()
    existing.chmod(0o750)
    for folder in (created, existing):
        backup = await service.create(database_url=database_url, folder=folder)
        await service.verify(database_url=database_url, folder=folder)
        backup.dump.write_bytes(b"damaged")
        await service.verify(database_url=database_url, folder=folder)  # a failure recorded
        assert modes(folder) == {
            ".": 0o700 if folder == created else 0o750,
            backup.dump.name: 0o600,
            backup.manifest_path.name: 0o600,
            backup.verification_path.name: 0o600,
            store.STATUS: 0o600,
        }


async def test_a_damaged_manifest_says_what_is_wrong(database_url: str, tmp_path: Path) -> None:
    """A manifest cut short (a disk full, a copy interrupted) or missing fields: `list` and
    `verify` say what is wrong in it, where they said `1 invalid field(s)`."""
    cut, emptied = [
        await service.create(database_url=database_url, folder=tmp_path / n) for n in "ab"
    ]
    cut.manifest_path.write_bytes(cut.manifest_path.read_bytes()[:40])
    emptied.manifest_path.write_text("{}")
    for backup, problem in (
        (cut, "unreadable manifest: Invalid JSON: EOF while parsing"),
        (emptied, "unreadable manifest: name: Field required (and "),
    ):
        env = {
            "EXPENSETRACKER_DATABASE_URL": database_url,
            "EXPENSETRACKER_BACKUP_DIR": str(backup.folder),
        }
        code, output = await asyncio.to_thread(run, ["backup", "list"], **env)
        assert code == 0 and f"damaged: {problem}" in output, output
        code, output = await asyncio.to_thread(run, ["backup", "verify"], **env)
        assert code == 1, output
        assert f"error: verification failed: {backup.name}: {problem}" in output, output


async def test_a_damaged_backup_is_listed_at_the_time_its_name_carries(
    database_url: str, tmp_path: Path
) -> None:
    """A damaged manifest says nothing of when the backup was taken; its file's modification time
    is when someone last touched it (a copy, an edit). The name carries the time of the backup."""
    backup = await service.create(database_url=database_url, folder=tmp_path)
    backup.manifest_path.write_text("{}")
    touched = datetime(2020, 1, 2, 3, 4, tzinfo=UTC).timestamp()
    os.utime(backup.manifest_path, (touched, touched))
    taken = datetime.strptime(backup.name, f"{store.PREFIX}%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    [listed] = store.scan(tmp_path)
    assert listed.state == "damaged" and listed.created_at == taken
    env = {"EXPENSETRACKER_DATABASE_URL": database_url, "EXPENSETRACKER_BACKUP_DIR": str(tmp_path)}
    code, output = await asyncio.to_thread(run, ["backup", "list"], **env)
    assert code == 0 and f"{taken:%Y-%m-%d %H:%M}" in output, output
    assert "2020-01-02" not in output, output


async def test_a_database_that_cannot_be_reached_is_a_failed_backup(tmp_path: Path) -> None:
    port = free_port()
    unreachable = f"postgresql://expensetracker:secret@127.0.0.1:{port}/expensetracker"
    env = {"EXPENSETRACKER_DATABASE_URL": unreachable}
    code, output = await asyncio.to_thread(run, ["backup", "create", "--dir", str(tmp_path)], **env)
    assert code == 1, output
    error = output.splitlines()[-1]
    # As every command says it (docs/operations.md#exit-status), with backup's own status.
    assert error == (
        f"error: cannot connect to the database expensetracker at 127.0.0.1:{port} "
        "(connection refused)"
    ), output
    assert "Traceback" not in output and "secret" not in output
    failure = store.read_status(tmp_path).last_failure
    assert failure is not None and f"error: {failure.error}" == error


# --- verify --------------------------------------------------------------------------------------


async def test_verify_detects_truncated_and_flipped_archives_and_tampered_manifests(
    database_url: str, postgres_admin_url: str, tmp_path: Path
) -> None:
    await load_expenses(database_url, 3_000)
    backup = await service.create(database_url=database_url, folder=tmp_path)
    assert backup.manifest is not None
    archive, manifest = backup.dump.read_bytes(), backup.manifest_path.read_bytes()

    async def verify() -> Verification:
        verified = await service.verify(database_url=database_url, folder=tmp_path)
        assert await scratch_databases(postgres_admin_url) == []  # always dropped
        assert verified.verification is not None
        return verified.verification

    def reseal(damaged: bytes) -> None:
        """The damage made consistent with the manifest: only a restore can tell."""
        backup.dump.write_bytes(damaged)
        store.write_json(
            backup.manifest_path,
            backup.manifest.model_copy(
                update={"size_bytes": len(damaged), "sha256": store.sha256_of(backup.dump)}
            ),
        )

    assert (await verify()).ok
    flipped = bytearray(archive)
    flipped[len(archive) // 2] ^= 0x10
    cases: list[tuple[str, Callable[[], None], str]] = [
        ("truncated", lambda: backup.dump.write_bytes(archive[:-1000]), "bytes, the manifest says"),
        ("bit flipped", lambda: backup.dump.write_bytes(bytes(flipped)), "sha256"),
        ("truncated, resealed", lambda: reseal(archive[: len(archive) // 2]), "restore"),
        ("bit flipped, resealed", lambda: reseal(bytes(flipped)), "restore"),
        (
            "a row count changed",
            lambda: store.write_json(
                backup.manifest_path,
                backup.manifest.model_copy(
                    update={
                        "tables": {
                            **backup.manifest.tables,
                            "expenses.expenses": TableContents(
                                rows=3_001,
                                checksum=backup.manifest.tables["expenses.expenses"].checksum,
                            ),
                        }
                    }
                ),
            ),
            "expenses.expenses: 3001 rows",
        ),
        (
            "a checksum changed",
            lambda: backup.manifest_path.write_bytes(
                manifest.replace(
                    backup.manifest.tables["expenses.expenses"].checksum.encode(), b"12345"
                )
            ),
            "expenses.expenses: 3000 rows (checksum 12345) in the backup",
        ),
        ("not JSON", lambda: backup.manifest_path.write_bytes(manifest[:-20]), "manifest"),
    ]
    for case, damage, expected in cases:
        damage()
        verification = await verify()
        assert not verification.ok, case
        assert expected in verification.detail, (case, verification.detail)
        failure = store.read_status(tmp_path).last_failure
        assert failure is not None and failure.operation == "verify", case
        assert failure.error == verification.detail, case
        backup.dump.write_bytes(archive)
        backup.manifest_path.write_bytes(manifest)
    assert (await verify()).ok
    assert [b.state for b in store.scan(tmp_path)] == ["verified"]


@pytest.mark.slow
async def test_verify_drops_its_scratch_database_when_stopped(
    database_url: str, postgres_admin_url: str, tmp_path: Path
) -> None:
    await load_expenses(database_url, 300_000)
    await service.create(database_url=database_url, folder=tmp_path)
    env = clean_env(
        EXPENSETRACKER_DATABASE_URL=database_url, EXPENSETRACKER_BACKUP_DIR=str(tmp_path)
    )
    with spawn(cli("backup", "verify", "--jobs", "1"), env) as process:
        await eventually(
            "verify's scratch database",
            lambda: scratch_databases(postgres_admin_url),
            within=60,
            processes=(process,),
        )
        # As Kubernetes stops a Job at its deadline.
        process.signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 130, process.output
    assert "interrupted" in process.output
    assert await scratch_databases(postgres_admin_url) == []
    assert store.read_status(tmp_path).last_failure.error == "interrupted"
    assert [b.state for b in store.scan(tmp_path)] == ["unverified"]


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_create_interrupted_at_any_moment_says_so_and_leaves_nothing(
    database_url: str, tmp_path: Path
) -> None:
    """Ctrl-C sent at moments spread from when the command line is loaded (then `create` loads
    the backup service, a second of imports, and works) to the end of a whole run: each run
    stopped says `interrupted` (exit status 130) and leaves none of its files; a run the signal
    came too late for made its backup. A fixed number of runs, however slow the machine."""
    await load_expenses(database_url, 20_000)
    env = clean_env(EXPENSETRACKER_DATABASE_URL=database_url)
    loading = cpu_seconds(cli("backup", "create", "--help"))
    whole = cpu_seconds(cli("backup", "create", "--dir", str(tmp_path / "whole")), env)
    assert [b.state for b in store.scan(tmp_path / "whole")] == ["unverified"]
    first = loading * 1.3  # past the loading of the command line, with a margin
    interrupted = 0
    for step in range(RUNS_INTERRUPTED):
        moment = first + (whole - first) * step / RUNS_INTERRUPTED
        folder = tmp_path / f"after-{moment:.2f}-cpu-seconds"
        with spawn(cli("backup", "create", "--dir", str(folder)), env) as process:
            await interrupt_after(process, cpu_seconds=moment)
            code = await asyncio.to_thread(process.wait, 60)
        if made := store.scan(folder):
            # Made before the signal came (which may still stop the process on its way out).
            assert [b.state for b in made] == ["unverified"], process.output
            continue
        # 130, or (one run in three here, after the message) the end by the signal itself, -2:
        # a shell shows 130 for both.
        assert code in (130, -signal.SIGINT), process.output
        assert process.output.endswith("error: interrupted"), process.output
        # What prune would delete as left by a killed run: temporary files, a lone archive.
        assert store.leftovers(folder, now=store.utc_now() + timedelta(hours=2)) == []
        interrupted += 1
    assert interrupted >= 3


# --- consistency ---------------------------------------------------------------------------------


@pytest.mark.slow
async def test_writes_during_a_backup_are_wholly_in_it_or_not_at_all(
    database_url: str, new_database: Callable[[], Awaitable[str]], tmp_path: Path
) -> None:
    user = await load_expenses(database_url, 100_000)
    stop, writing = asyncio.Event(), asyncio.Event()
    batches = 0

    async def write() -> None:
        nonlocal batches
        async with connected(database_url) as connection:
            while not stop.is_set():
                # Each batch also updates the monthly totals (a trigger): a dump that saw part
                # of a batch would restore totals that disagree with the expenses.
                await insert_expenses(connection, user, None, 50)
                batches += 1
                writing.set()

    writer = asyncio.create_task(write())
    try:
        await writing.wait()
        during = batches
        backup = await service.create(database_url=database_url, folder=tmp_path)
        written_meanwhile = batches - during
        rows_at_end = await fetchval(database_url, "SELECT count(*) FROM expenses.expenses")
    finally:
        stop.set()
        await writer
    assert backup.manifest is not None
    rows = backup.manifest.tables["expenses.expenses"].rows
    assert written_meanwhile > 0 and rows < rows_at_end
    assert (rows - 100_000) % 50 == 0  # whole batches only

    target = await new_database()
    restored = await service.restore(folder=tmp_path, name=backup.name, target_url=target)
    assert restored.rows == sum(t.rows for t in backup.manifest.tables.values())
    assert await snapshot_of(target) == backup.manifest.tables
    totals = await fetchval(
        target,
        "SELECT (SELECT (sum(total_minor), sum(expense_count)) FROM expenses.monthly_totals) = "
        "(SELECT (sum(amount_minor), count(*)) FROM expenses.expenses)",
    )
    assert totals is True


# --- restore -------------------------------------------------------------------------------------


async def test_restore_refuses_a_non_empty_target_unless_forced(
    database_url: str, new_database: Callable[[], Awaitable[str]], tmp_path: Path
) -> None:
    await load_expenses(database_url, 500)
    backup = await service.create(database_url=database_url, folder=tmp_path)
    assert backup.manifest is not None
    with pytest.raises(BackupError, match="no verified backup"):
        await service.restore(folder=tmp_path, name=None, target_url=database_url)
    await service.verify(database_url=database_url, folder=tmp_path)

    target = await new_database()
    await service.restore(folder=tmp_path, name=None, target_url=target)  # empty: fine
    await load_expenses(target, 10)
    changed = await snapshot_of(target)
    with pytest.raises(BackupError, match=r"is not empty.*--force"):
        await service.restore(folder=tmp_path, name=None, target_url=target)
    assert await snapshot_of(target) == changed
    restored = await service.restore(folder=tmp_path, name=None, target_url=target, force=True)
    assert await snapshot_of(target) == backup.manifest.tables
    heads = {name: revision for name, (revision, _) in restored.migrations.items()}
    assert heads == backup.manifest.migrations
    assert all(revision == head for revision, head in restored.migrations.values())


async def test_restore_checks_the_archive_before_touching_the_target(
    database_url: str, new_database: Callable[[], Awaitable[str]], tmp_path: Path
) -> None:
    backup = await service.create(database_url=database_url, folder=tmp_path)
    target = await new_database()
    await load_expenses(database_url, 1)
    backup.dump.write_bytes(backup.dump.read_bytes()[:-10])
    with pytest.raises(BackupError, match=r"sha256|bytes"):
        await service.restore(folder=tmp_path, name=backup.name, target_url=target, force=True)
    assert await fetchval(target, "SELECT count(*) FROM pg_namespace WHERE nspname = 'auth'") == 0


async def test_restore_into_a_database_of_any_name(
    database_url: str, postgres_admin_url: str, tmp_path: Path
) -> None:
    """Names are given to pg_restore quoted, whatever they hold: a space, a quote, a slash."""
    await load_expenses(database_url, 10)
    backup = await service.create(database_url=database_url, folder=tmp_path)
    await service.verify(database_url=database_url, folder=tmp_path)
    name = f"et_test {uuid.uuid4().hex[:8]} it's a/b"
    env = {"EXPENSETRACKER_DATABASE_URL": database_url, "EXPENSETRACKER_BACKUP_DIR": str(tmp_path)}
    try:
        code, output = await asyncio.to_thread(
            run, ["backup", "restore", "latest", "--target-db", name], **env
        )
        assert code == 0, output
        assert f"restored {backup.name} into {name}:" in output
        assert await snapshot_of(with_database(postgres_admin_url, name)) == backup.manifest.tables
    finally:
        await admin_execute(
            postgres_admin_url, f"DROP DATABASE IF EXISTS {identifier(name)} WITH (FORCE)"
        )


async def test_a_restore_target_that_names_no_database_is_a_usage_error(
    database_url: str, tmp_path: Path
) -> None:
    """A --target-url that is no PostgreSQL URL, or an empty --target-db, is refused in one line
    as EXPENSETRACKER_DATABASE_URL is, where it ended in SQLAlchemy's or PostgreSQL's traceback
    or in a connection to a MySQL host."""
    await service.create(database_url=database_url, folder=tmp_path)
    await service.verify(database_url=database_url, folder=tmp_path)
    env = {"EXPENSETRACKER_DATABASE_URL": database_url, "EXPENSETRACKER_BACKUP_DIR": str(tmp_path)}
    with_ssl = make_url(database_url).update_query_dict({"ssl": "true"})
    for option, value, said in (
        ("--target-url", "sekret", "--target-url: not a URL such as"),
        ("--target-url", "mysql://u:sekret@db/x", "--target-url: only PostgreSQL URLs"),
        (
            "--target-url",
            with_ssl.render_as_string(hide_password=False),
            "--target-url: write sslmode=, not ssl=",
        ),
        ("--target-db", "", "--target-db: empty"),
    ):
        code, output = await asyncio.to_thread(
            run, ["backup", "restore", "latest", option, value], **env
        )
        assert code == 2 and output.startswith(f"error: {said}"), output
        assert len(output.splitlines()) == 1 and "sekret" not in output, output


async def test_a_refused_restore_leaves_no_database_it_created(
    database_url: str, postgres_admin_url: str, tmp_path: Path
) -> None:
    """`--target-db` creates the database when missing; a restore refused (no such backup, a
    damaged one) drops it again, and leaves one that existed before as it was."""
    await load_expenses(database_url, 3)
    backup = await service.create(database_url=database_url, folder=tmp_path)
    backup.dump.write_bytes(backup.dump.read_bytes()[:-10])
    name = f"et_test_{uuid.uuid4().hex[:12]}"
    exists = f"SELECT count(*) FROM pg_database WHERE datname = '{name}'"
    env = {"EXPENSETRACKER_DATABASE_URL": database_url, "EXPENSETRACKER_BACKUP_DIR": str(tmp_path)}
    try:
        for args, status, error in (
            (["nosuch"], 2, f"error: no backup named nosuch in {tmp_path}"),
            ([backup.name], 1, f"error: {backup.name}: "),
        ):
            code, output = await asyncio.to_thread(
                run, ["backup", "restore", *args, "--target-db", name], **env
            )
            assert (code, error in output) == (status, True), output
            assert await fetchval(postgres_admin_url, exists) == 0

        await admin_execute(postgres_admin_url, f'CREATE DATABASE "{name}"')
        code, output = await asyncio.to_thread(
            run, ["backup", "restore", backup.name, "--target-db", name], **env
        )
        assert code == 1, output
        assert await fetchval(postgres_admin_url, exists) == 1
    finally:
        await admin_execute(postgres_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- roles ---------------------------------------------------------------------------------------


async def test_owners_and_read_contract_grants_survive_a_restore(
    empty_database_url: str, new_database: Callable[[], Awaitable[str]], tmp_path: Path
) -> None:
    """The database as Kubernetes has it: each service's role owns its schema, the backup role
    reads everything and owns nothing. It backs up and verifies; a role that may act as every
    owner restores owners and grants; it may not, and says why; with --no-owner it may."""
    await prepare_roles_for_a_non_superuser(empty_database_url)
    run_init_script(empty_database_url)
    for name, spec in SERVICES.items():
        await asyncio.to_thread(upgrade, spec, role_url(empty_database_url, name))
    await load_expenses(empty_database_url, 100)
    backup_url = (
        make_url(empty_database_url)
        .set(username=BACKUP, password=BACKUP_PASSWORD)
        .render_as_string(hide_password=False)
    )

    backup = await service.create(database_url=backup_url, folder=tmp_path)
    assert backup.manifest is not None
    assert set(backup.manifest.owners) == set(ROLES.values())
    assert backup.manifest.schemas == ["auth", "expenses", "reports"]
    verified = await service.verify(database_url=backup_url, folder=tmp_path)
    assert verified.verification is not None and verified.verification.ok, verified.verification

    async def owners(url: str) -> dict[str, str]:
        async with connected(url) as connection:
            rows = await connection.fetch(
                "SELECT DISTINCT schemaname, tableowner FROM pg_tables "
                "WHERE schemaname = ANY($1::text[])",
                list(SERVICES),
            )
        return dict(rows)

    target = await new_database()
    await service.restore(folder=tmp_path, name=None, target_url=target)
    assert await owners(target) == {name: ROLES[name] for name in SERVICES}
    async with connected(role_url(target, "reports")) as reader:
        assert await reader.fetchval("SELECT count(*) FROM expenses.spending_v1") == 100
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await reader.fetchval("SELECT count(*) FROM expenses.expenses")

    # The backup role may create a database but act as none of the owners.
    own = make_url(backup_url).set(database=f"et_test_{uuid.uuid4().hex[:12]}")
    own_url = own.render_as_string(hide_password=False)
    await service.create_database(server_url=backup_url, name=own.database)
    try:
        with pytest.raises(BackupError, match="owners it may not act as: expensetracker_auth"):
            await service.restore(folder=tmp_path, name=None, target_url=own_url)
        assert await fetchval(own_url, "SELECT count(*) FROM pg_class WHERE relname = 'users'") == 0
        await service.restore(folder=tmp_path, name=None, target_url=own_url, keep_owners=False)
        assert await owners(own_url) == {name: BACKUP for name in SERVICES}
        assert await snapshot_of(own_url) == backup.manifest.tables
    finally:
        await admin_execute(
            empty_database_url, f'DROP DATABASE IF EXISTS "{own.database}" WITH (FORCE)'
        )


# --- versions ------------------------------------------------------------------------------------


def fake_tools(folder: Path, version: str) -> Path:
    """pg_dump and pg_restore that say they are ``version`` (and do nothing else)."""
    folder.mkdir()
    for name in ("pg_dump", "pg_restore"):
        tool = folder / name
        tool.write_text(f'#!/bin/sh\necho "{name} (PostgreSQL) {version}"\n')
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return folder


async def test_tools_older_than_the_server_are_refused_clearly(
    database_url: str, tmp_path: Path
) -> None:
    old = fake_tools(tmp_path / "bin", "14.11")
    server = await fetchval(database_url, "SELECT current_setting('server_version_num')::int")
    server_version = f"{server // 10000}.{server % 10000}"
    backups = tmp_path / "backups"
    code, output = await asyncio.to_thread(
        run,
        ["backup", "create"],
        EXPENSETRACKER_DATABASE_URL=database_url,
        EXPENSETRACKER_BACKUP_DIR=str(backups),
        EXPENSETRACKER_PG_BIN_DIR=str(old),
    )
    assert code == 1, output
    assert (
        f"the PostgreSQL server is version {server_version}, newer than pg_dump 14.11 "
        f"({old / 'pg_dump'}): use the tools of PostgreSQL {server // 10000} or newer"
    ) in output
    assert store.scan(backups) == [] and not list(backups.glob(".*"))
    failure = store.read_status(backups).last_failure
    assert failure is not None and "newer than pg_dump 14.11" in failure.error

    # An archive of newer tools than those given to restore it.
    await service.create(database_url=database_url, folder=backups)
    with pytest.raises(BackupError, match=r"written by pg_dump \d+\.\d+, newer than pg_restore"):
        await service.restore(
            folder=backups, name=store.scan(backups)[0].name, target_url=database_url, bin_dir=old
        )


# --- retention -----------------------------------------------------------------------------------


async def test_ten_days_of_pruning_keep_seven_days_and_the_newest_verified(
    database_url: str, tmp_path: Path
) -> None:
    """Daily backups at 02:00, pruned at 03:00 with 7 days of retention; verification works on
    the first two days and fails on every later one."""
    start = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
    names, removed = [], {}
    for day in range(10):
        backup = await service.create(
            database_url=database_url, folder=tmp_path, clock=lambda day=day: start + timedelta(day)
        )
        names.append(backup.name)
        store.write_json(
            backup.verification_path,
            Verification(
                verified_at=start + timedelta(days=day, minutes=5),
                ok=day < 2,
                detail="" if day < 2 else "restored contents differ",
                duration_seconds=1.0,
            ),
        )
        now = start + timedelta(days=day, hours=1)
        removed[day] = service.prune(folder=tmp_path, keep_days=7, now=now)
    # Day 0 goes once 7 days old; day 1, the newest verified, stays past its 7 days; day 2 goes.
    assert removed == {day: [] for day in range(10)} | {7: [names[0]], 9: [names[2]]}
    assert [b.name for b in store.scan(tmp_path)] == [names[1], *names[3:]]

    # Verification works again: the old verified backup goes at the next run.
    store.write_json(
        store.find(tmp_path, names[9]).verification_path,
        Verification(
            verified_at=start + timedelta(days=9), ok=True, detail="", duration_seconds=1.0
        ),
    )
    now = start + timedelta(days=9, hours=2)
    assert service.prune(folder=tmp_path, keep_days=7, now=now) == [names[1]]
    assert [b.name for b in store.scan(tmp_path)] == names[3:]


def test_prune_removes_what_killed_runs_left_and_nothing_in_progress(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    abandoned = tmp_path / ".expensetracker-20260301T020000Z.dump.partial"
    writing = tmp_path / ".expensetracker-20260302T020000Z.dump.partial"
    unfinished = tmp_path / "expensetracker-20260301T030000Z.dump"
    for path in (abandoned, writing, unfinished):
        path.write_bytes(b"x")
    two_hours_ago = (now - timedelta(hours=2)).timestamp()
    for path in (abandoned, unfinished):
        os.utime(path, (two_hours_ago, two_hours_ago))
    removed = service.prune(folder=tmp_path, keep_days=7, now=now)
    assert sorted(removed) == sorted([abandoned.name, unfinished.name])
    assert [p.name for p in tmp_path.iterdir()] == [writing.name]


def test_a_folder_whose_files_cannot_be_deleted_fails_prune_in_one_line() -> None:
    """An operator's folder they may read but not write: prune says so, not a traceback. As
    root (CI) the prune runs as nobody, whom the folder's mode binds."""
    folder = Path(tempfile.mkdtemp(prefix="et-prune-", dir="/tmp"))  # nobody can reach it
    try:
        abandoned = folder / ".expensetracker-20260301T020000Z.dump.partial"
        abandoned.write_bytes(b"x")
        long_ago = (datetime.now(UTC) - timedelta(days=1)).timestamp()
        os.utime(abandoned, (long_ago, long_ago))
        folder.chmod(0o555)
        as_nobody = os.geteuid() == 0
        with (
            ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("fork"),
                initializer=os.setuid if as_nobody else None,
                initargs=(pwd.getpwnam("nobody").pw_uid,) if as_nobody else (),
            ) as child,
            pytest.raises(BackupError) as failed,
        ):
            child.submit(service.prune, folder=folder, keep_days=7).result()
        assert str(failed.value) == f"cannot prune {folder}: {abandoned}: Permission denied"
        assert abandoned.exists()
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


def test_a_file_that_cannot_be_written_leaves_no_temporary_file(tmp_path: Path) -> None:
    in_the_way = tmp_path / store.STATUS
    in_the_way.mkdir()
    with pytest.raises(IsADirectoryError):
        store.write_json(in_the_way, store.Status())
    assert os.listdir(tmp_path) == [store.STATUS]


# --- metrics -------------------------------------------------------------------------------------


async def scrape(url: str) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{url}/metrics")
    assert response.status_code == 200
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


async def test_metrics_of_the_backup_folder_over_http(database_url: str, tmp_path: Path) -> None:
    args = cli("backup", "serve-metrics", "--port", str(free_port()), "--dir", str(tmp_path))
    with spawn(args, clean_env()) as process:
        url = await asyncio.to_thread(process.wait_ready)
        async with httpx.AsyncClient(timeout=10) as client:
            assert (await client.get(f"{url}/livez")).status_code == 200
        assert await scrape(url) == {
            "expensetracker_backup_last_failure_timestamp_seconds": 0,
            "expensetracker_backup_size_bytes": 0,
            "expensetracker_backups": 0,
        }

        first = await service.create(database_url=database_url, folder=tmp_path)
        await service.verify(database_url=database_url, folder=tmp_path)
        await load_expenses(database_url, 1_000)
        second = await service.create(database_url=database_url, folder=tmp_path)
        assert first.manifest is not None and second.manifest is not None
        metrics = await scrape(url)
        # The newest backup is not verified yet: success is the first one's time.
        assert metrics == {
            "expensetracker_backup_last_success_timestamp_seconds": pytest.approx(
                first.manifest.created_at.timestamp()
            ),
            "expensetracker_backup_last_failure_timestamp_seconds": 0,
            "expensetracker_backup_size_bytes": second.manifest.size_bytes,
            "expensetracker_backups": 2,
        }

        second.dump.write_bytes(second.dump.read_bytes()[:100])
        before = time.time()
        await service.verify(database_url=database_url, folder=tmp_path)
        metrics = await scrape(url)
        assert before <= metrics["expensetracker_backup_last_failure_timestamp_seconds"]
        assert metrics["expensetracker_backup_last_failure_timestamp_seconds"] <= time.time()
        assert metrics["expensetracker_backup_last_success_timestamp_seconds"] == pytest.approx(
            first.manifest.created_at.timestamp()
        )

        process.signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0, process.output
