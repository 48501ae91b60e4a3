"""The backup folder: one archive per backup with its manifest and, once verified, the result.

    expensetracker-20260301T020000Z.dump               pg_dump's custom format, compressed
    expensetracker-20260301T020000Z.manifest.json      what it holds (Manifest)
    expensetracker-20260301T020000Z.verification.json  the last verification (Verification)
    status.json                                        the last failed run, for the metrics

Every file is written under a hidden temporary name, synced, then renamed: a reader (the metrics,
`list`, a restore) never sees half a file. The manifest is written last, so an archive without
one is an unfinished backup.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from expensetracker.backup.tools import BadUsage

PREFIX = "expensetracker-"
DUMP = ".dump"
MANIFEST = ".manifest.json"
VERIFICATION = ".verification.json"
STATUS = "status.json"
# A backup's name: the time it was taken, and a count when two were taken in the same second.
NAME_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
NAME_TIME = re.compile(rf"{re.escape(PREFIX)}(\d{{8}}T\d{{6}}Z)(?:-\d+)?")
PARTIAL = ".partial"
# A temporary file nobody has written to for this long was left by a killed run.
ABANDONED_AFTER = timedelta(hours=1)
# The archives hold password hashes and encrypted keys: every file is its owner's alone, and so
# is the folder when a command creates it (one that exists keeps the mode it was given).
PRIVATE_FILE = 0o600
PRIVATE_FOLDER = 0o700


def utc_now() -> datetime:
    return datetime.now(UTC)


class TableContents(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: int
    # Sum of the rows' hashes: independent of the order rows come back in.
    checksum: str


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1] = 1
    name: str
    created_at: datetime
    duration_seconds: float
    database: str
    server_version: str
    pg_dump_version: str
    compress_level: int
    size_bytes: int
    sha256: str
    # Dropped and recreated by a restore.
    schemas: list[str]
    # Roles owning the dumped objects, and every role named by their grants: a restore that
    # keeps owners and grants needs them all on the target server.
    owners: list[str]
    roles: list[str]
    # Each service's Alembic revision.
    migrations: dict[str, str | None]
    tables: dict[str, TableContents]


class Verification(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    verified_at: datetime
    ok: bool
    detail: str
    duration_seconds: float


class Failure(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    at: datetime
    operation: Literal["create", "verify"]
    backup: str | None
    error: str


class Status(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    last_failure: Failure | None = None


@dataclass(frozen=True)
class Backup:
    name: str
    folder: Path
    manifest: Manifest | None
    # Why the manifest could not be read (a damaged backup).
    problem: str | None
    verification: Verification | None

    @property
    def dump(self) -> Path:
        return self.folder / f"{self.name}{DUMP}"

    @property
    def manifest_path(self) -> Path:
        return self.folder / f"{self.name}{MANIFEST}"

    @property
    def verification_path(self) -> Path:
        return self.folder / f"{self.name}{VERIFICATION}"

    @property
    def created_at(self) -> datetime:
        if self.manifest is not None:
            return self.manifest.created_at
        # A damaged backup: its name carries the time it was taken (new_name); the manifest's
        # modification time is when it was last copied or edited. Only a name not made by
        # new_name leaves the modification time as the best guess.
        taken = NAME_TIME.fullmatch(self.name)
        if taken is not None:
            with suppress(ValueError):  # 20261399T...: digits, but no time
                return datetime.strptime(taken[1], NAME_TIME_FORMAT).replace(tzinfo=UTC)
        return datetime.fromtimestamp(self.manifest_path.stat().st_mtime, UTC)

    @property
    def state(self) -> Literal["verified", "failed", "unverified", "damaged"]:
        if self.manifest is None:
            return "damaged"
        if self.verification is None:
            return "unverified"
        return "verified" if self.verification.ok else "failed"


def new_name(folder: Path, at: datetime) -> str:
    name = f"{PREFIX}{at.astimezone(UTC):{NAME_TIME_FORMAT}}"
    taken = 1
    while (folder / f"{name}{DUMP}").exists() or (folder / f"{name}{MANIFEST}").exists():
        taken += 1
        name = f"{PREFIX}{at.astimezone(UTC):{NAME_TIME_FORMAT}}-{taken}"
    return name


def check_writable(folder: Path) -> None:
    """That backups can be written in ``folder``, created when missing; else BadUsage, before
    anything is attempted."""
    try:
        folder.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise BadUsage(f"{folder} is not a folder") from exc
    except OSError as exc:
        raise BadUsage(f"cannot create the backup folder {folder}: {exc.strerror}") from exc
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise BadUsage(f"cannot write in the backup folder {folder}: {exc.strerror}") from exc


def partial_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{PARTIAL}")


def create_private(path: Path) -> int:
    """``path`` created, or emptied, for its owner alone: a descriptor to write it with."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    os.fchmod(descriptor, PRIVATE_FILE)  # a file that was already there keeps its mode otherwise
    return descriptor


def sync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def publish(partial: Path, path: Path) -> None:
    """Rename a complete, synced file to its final name, durably."""
    os.replace(partial, path)
    sync_folder(path.parent)


def write_json(path: Path, model: BaseModel) -> None:
    partial = partial_path(path)
    with removed_on_failure(partial):
        with os.fdopen(create_private(partial), "w", encoding="utf-8") as handle:
            handle.write(model.model_dump_json(indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        publish(partial, path)


@contextmanager
def removed_on_failure(path: Path) -> Iterator[Path]:
    try:
        yield path
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def size_of(path: Path) -> int:
    """Bytes in the file so far (0 before it exists)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def sha256_of(path: Path, *, progress: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    done = 0
    with path.open("rb") as handle:
        while chunk := handle.read(4 * 1024 * 1024):
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done)
    return digest.hexdigest()


def read_manifest(path: Path) -> Manifest:
    return Manifest.model_validate_json(path.read_bytes())


def scan(folder: Path) -> list[Backup]:
    """Every backup with a manifest, oldest first (none in a folder not made yet)."""
    if not folder.is_dir():
        if folder.exists():
            raise BadUsage(f"{folder} is not a folder")
        return []
    backups = []
    for path in folder.glob(f"{PREFIX}*{MANIFEST}"):
        name = path.name.removesuffix(MANIFEST)
        manifest: Manifest | None = None
        problem: str | None = None
        try:
            manifest = read_manifest(path)
        except (OSError, ValueError) as exc:
            problem = f"unreadable manifest: {_first_line(exc)}"
        if manifest is not None and manifest.name != name:
            problem = f"the manifest names another backup ({manifest.name})"
            manifest = None
        if problem is None and not (folder / f"{name}{DUMP}").is_file():
            manifest, problem = None, "the archive is missing"
        verification = None
        with suppress(OSError, ValueError):
            verification = Verification.model_validate_json(
                (folder / f"{name}{VERIFICATION}").read_bytes()
            )
        backups.append(Backup(name, folder, manifest, problem, verification))
    return sorted(backups, key=lambda backup: (backup.created_at, backup.name))


def _first_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        # What is wrong and where (truncated JSON, a field missing): a count said nothing.
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        more = exc.error_count() - 1
        return (
            (f"{where}: " if where else "")
            + first["msg"]
            + (f" (and {more} more problems)" if more else "")
        )
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def find(folder: Path, name: str | None, *, verified: bool = False) -> Backup:
    """A backup by name (or archive file name); without one the newest, or the newest verified.
    None there is BadUsage: a name mistyped is no failed backup."""
    backups = scan(folder)
    if name is None:
        candidates = [b for b in backups if not verified or b.state == "verified"]
        if not candidates:
            kind = "verified backup" if verified else "backup"
            raise BadUsage(f"no {kind} in {folder}")
        return candidates[-1]
    wanted = Path(name).name.removesuffix(DUMP).removesuffix(MANIFEST)
    for backup in backups:
        if backup.name == wanted:
            return backup
    raise BadUsage(f"no backup named {wanted} in {folder}")


def read_status(folder: Path) -> Status:
    try:
        return Status.model_validate_json((folder / STATUS).read_bytes())
    except (OSError, ValueError):
        return Status()


def record_failure(folder: Path, failure: Failure) -> None:
    write_json(folder / STATUS, Status(last_failure=failure))


def expired(backups: list[Backup], *, keep_days: int, now: datetime) -> list[Backup]:
    """Backups older than ``keep_days``, except the newest verified one and the newest one:
    however long backups have been failing, something to restore stays."""
    keep = {b.name for b in backups[-1:]}
    keep |= {b.name for b in [b for b in backups if b.state == "verified"][-1:]}
    cutoff = now - timedelta(days=keep_days)
    return [b for b in backups if b.created_at < cutoff and b.name not in keep]


def leftovers(folder: Path, *, now: datetime) -> list[Path]:
    """Files of no backup: abandoned temporary files, archives whose manifest was never written
    (a killed run), verification results of deleted backups."""
    if not folder.is_dir():
        return []
    names = {path.name.removesuffix(MANIFEST) for path in folder.glob(f"{PREFIX}*{MANIFEST}")}
    found = []
    for path in folder.iterdir():
        modified = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        if now - modified < ABANDONED_AFTER:
            continue
        if path.name.endswith(PARTIAL) and path.name.startswith("."):
            found.append(path)
        elif path.name.startswith(PREFIX):
            name = path.name.removesuffix(DUMP).removesuffix(VERIFICATION)
            if name != path.name and name not in names:
                found.append(path)
    return found
