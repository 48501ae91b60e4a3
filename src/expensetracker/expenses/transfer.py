"""CSV import and CSV/JSON export of expenses.

Import streams the upload to a spooled file (constant memory), validates it row by row and
COPYs valid rows in batches into a temporary table; only when every row is valid do they move
into ``expenses`` in the same transaction, so a file is accepted whole or not at all. A row's
optional ``external_id`` makes importing the same file again create nothing.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import asyncpg
from prometheus_client import Counter
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from expensetracker.expenses.models import Category
from expensetracker.expenses.schemas import EARLIEST_DATE, FUTURE_DAYS
from expensetracker.expenses.service import ExpenseFilter, ensure_owner
from expensetracker.platform import money
from expensetracker.platform.errors import Problem
from expensetracker.platform.schemas import check_text

COLUMNS = (
    "occurred_on",
    "amount",
    "currency",
    "description",
    "notes",
    "merchant",
    "category",
    "tags",
    "external_id",
)
REQUIRED = ("occurred_on", "amount", "currency", "description")
LIMITS = {"description": 200, "notes": 2000, "merchant": 100, "external_id": 100}
TAG_SEPARATOR = ";"
BATCH_ROWS = 2000
MAX_REPORTED_ERRORS = 1000
SPOOL_IN_MEMORY_BYTES = 1024 * 1024
# OWASP's CSV injection rule: a spreadsheet runs a cell that starts with one of these as a
# formula, so export prefixes such cells with an apostrophe. A cell that starts with the
# apostrophe itself is prefixed too, so that import can drop exactly one: what was exported
# imports back unchanged.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
ESCAPE = "'"


def neutralise(cell: str) -> str:
    return ESCAPE + cell if cell.startswith((*FORMULA_STARTS, ESCAPE)) else cell


def restore(cell: str) -> str:
    """Undoes :func:`neutralise`; any other cell is kept as it is."""
    if cell.startswith(ESCAPE) and cell[1:].startswith((*FORMULA_STARTS, ESCAPE)):
        return cell[1:]
    return cell


IMPORT_ROWS = Counter(
    "expensetracker_import_rows_total", "Imported CSV rows by outcome.", ["outcome"]
)  # accepted | rejected
IMPORTS = Counter(
    "expensetracker_imports_total", "CSV imports (whole files) by outcome.", ["outcome"]
)  # succeeded | rejected (invalid: nothing imported)
for _outcome in ("accepted", "rejected"):
    IMPORT_ROWS.labels(_outcome)
for _outcome in ("succeeded", "rejected"):
    IMPORTS.labels(_outcome)


class InvalidImport(Problem):
    status = 422
    type_ = "urn:expensetracker:problem:invalid-import"
    title = "Invalid import"


@dataclass
class ImportResult:
    rows: int
    created: int
    unchanged: int  # rows whose external_id was imported before
    # A dry run: what an import would do, then rolled back. Lists the lines of the first
    # unchanged rows (MAX_REPORTED_ERRORS of them).
    dry_run: bool = False
    unchanged_lines: list[int] = field(default_factory=list)


class _RolledBack(Exception):
    """Ends a dry run's transaction the way an error would: nothing it wrote stays."""

    def __init__(self, result: ImportResult) -> None:
        self.result = result


@dataclass
class _Validator:
    categories: dict[str, uuid.UUID]
    latest: date = field(default_factory=lambda: date.today() + timedelta(days=FUTURE_DAYS))
    external_ids: set[str] = field(default_factory=set)

    def row(self, values: dict[str, str]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        errors: list[tuple[str, str]] = []
        record: dict[str, Any] = {}
        for name, value in values.items():
            try:
                check_text(value)
            except ValueError as exc:
                errors.append((name, str(exc)))
        if errors:
            return record, errors
        values = {name: restore(value) for name, value in values.items()}
        for name in REQUIRED:
            if not values.get(name, "").strip():
                errors.append((name, "is required"))
        for name, limit in LIMITS.items():
            if len(values.get(name, "")) > limit:
                errors.append((name, f"is longer than {limit} characters"))
        if errors:
            return record, errors
        try:
            occurred_on = date.fromisoformat(values["occurred_on"].strip())
            if not EARLIEST_DATE <= occurred_on <= self.latest:
                raise ValueError(f"must be between {EARLIEST_DATE} and {self.latest}")
            record["occurred_on"] = occurred_on
        except ValueError as exc:
            errors.append(("occurred_on", str(exc)))
        currency = values["currency"].strip()
        try:
            record.update(money.stored(values["amount"].strip(), currency))
        except ValueError as exc:
            errors.append(("amount", str(exc)))
        category = values.get("category", "").strip()
        record["category_id"] = None
        if category:
            record["category_id"] = self.categories.get(category.casefold())
            if record["category_id"] is None:
                errors.append(("category", f"no category named {category!r}"))
        tags = [t.strip() for t in values.get("tags", "").split(TAG_SEPARATOR) if t.strip()]
        if len(tags) > 20 or any(len(tag) > 50 for tag in tags):
            errors.append(("tags", "at most 20 tags of at most 50 characters"))
        record["tags"] = tags  # names differing in case only: one tag (PostgreSQL's lower())
        external_id = values.get("external_id", "").strip() or None
        if external_id is not None:
            if external_id in self.external_ids:
                errors.append(("external_id", "appears twice in this file"))
            self.external_ids.add(external_id)
        record["external_id"] = external_id
        record["description"] = values["description"]
        record["notes"] = values.get("notes") or None
        record["merchant"] = values.get("merchant") or None
        return record, errors


def _rows(spool: Any) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, values by column) for each data row; the header is checked first."""
    reader = csv.reader(io.TextIOWrapper(spool, encoding="utf-8-sig", newline=""))
    try:
        header = [name.strip().lower() for name in next(reader)]
    except StopIteration:
        raise InvalidImport("The file is empty: expected a header row.") from None
    unknown = sorted(set(header) - set(COLUMNS))
    missing = [name for name in REQUIRED if name not in header]
    if unknown or missing or len(set(header)) != len(header):
        raise InvalidImport(
            f"Header must name columns among {', '.join(COLUMNS)} once each, with "
            f"{', '.join(REQUIRED)}; unknown: {unknown or 'none'}, missing: {missing or 'none'}."
        )
    for values in reader:
        if not any(values):
            continue
        if len(values) != len(header):
            yield reader.line_num, {"__shape__": f"has {len(values)} fields, not {len(header)}"}
            continue
        yield reader.line_num, dict(zip(header, values, strict=True))


async def import_csv(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    chunks: AsyncIterator[bytes],
    progress: Callable[[int], None] | None = None,
    dry_run: bool = False,
) -> ImportResult:
    """``dry_run`` does everything an import would, reports it, and keeps nothing."""
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES) as spool:
        async for chunk in chunks:
            spool.write(chunk)
        spool.seek(0)
        try:
            async with session.begin():
                await ensure_owner(session, user_id=user_id)
                result = await _load(session, user_id=user_id, spool=spool, progress=progress)
                if dry_run:
                    raise _RolledBack(await _previewed(session, result=result, user_id=user_id))
        except _RolledBack as rolled_back:
            return rolled_back.result
        except InvalidImport:
            IMPORTS.labels("rejected").inc()
            raise
    IMPORTS.labels("succeeded").inc()
    IMPORT_ROWS.labels("accepted").inc(result.rows)
    return result


async def _load(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    spool: Any,
    progress: Callable[[int], None] | None,
) -> ImportResult:
    categories = {
        name.casefold(): category_id
        for category_id, name in await session.execute(
            select(Category.id, Category.name).where(Category.user_id == user_id)
        )
    }
    validator = _Validator(categories)
    connection = (await (await session.connection()).get_raw_connection()).driver_connection
    await session.execute(
        text(
            "CREATE TEMP TABLE import_rows (line int, id uuid, occurred_on date, "
            "amount_minor bigint, currency text, currency_exponent smallint, description text, "
            "notes text, merchant text, category_id uuid, external_id text, tags text[]) "
            "ON COMMIT DROP"
        )
    )
    errors: list[dict[str, Any]] = []
    rejected = rows = 0
    batch: list[tuple[Any, ...]] = []

    async def flush() -> None:
        if batch and not errors:
            await connection.copy_records_to_table(
                "import_rows", records=batch, columns=_STAGING_COLUMNS
            )
        batch.clear()

    try:
        for line, values in _rows(spool):
            rows += 1
            if shape := values.get("__shape__"):
                row_errors = [("row", shape)]
                record: dict[str, Any] = {}
            else:
                record, row_errors = validator.row(values)
            if row_errors:
                rejected += 1
                errors += [
                    {"line": line, "field": name, "message": message}
                    for name, message in row_errors
                ][: max(0, MAX_REPORTED_ERRORS - len(errors))]
                continue
            batch.append((line, uuid.uuid4(), *(record[name] for name in _STAGING_COLUMNS[2:])))
            if len(batch) >= BATCH_ROWS:
                await flush()
                if progress:
                    progress(rows)
        await flush()
    except UnicodeDecodeError as exc:
        raise InvalidImport(f"The file is not UTF-8 text ({exc.reason}).") from None
    except csv.Error as exc:
        raise InvalidImport(f"The file is not valid CSV: {exc}.") from None
    if progress:
        progress(rows)
    if rejected:
        IMPORT_ROWS.labels("rejected").inc(rejected)
        raise InvalidImport(
            f"{rejected} of {rows} rows are invalid; nothing was imported.",
            rejected_rows=rejected,
            errors=errors,
        )
    created = await session.scalar(
        text(
            """
            WITH inserted AS (
              INSERT INTO expenses.expenses (user_id, id, amount_minor, currency,
                currency_exponent, occurred_on, description, notes, merchant, category_id,
                external_id)
              SELECT :user_id, id, amount_minor, currency, currency_exponent, occurred_on,
                     description, notes, merchant, category_id, external_id
              FROM import_rows ORDER BY line
              ON CONFLICT (user_id, external_id) DO NOTHING
              RETURNING id
            )
            SELECT count(*) FROM inserted
            """
        ),
        {"user_id": user_id},
    )
    await session.execute(
        text(
            """
            INSERT INTO expenses.tags (user_id, id, name)
            SELECT DISTINCT ON (lower(tag)) :user_id, gen_random_uuid(), tag
            FROM import_rows, unnest(tags) AS tag
            ON CONFLICT DO NOTHING
            """
        ),
        {"user_id": user_id},
    )
    await session.execute(
        text(
            """
            INSERT INTO expenses.expense_tags (user_id, expense_id, tag_id)
            SELECT DISTINCT :user_id, r.id, t.id
            FROM import_rows r
            JOIN expenses.expenses e ON e.user_id = :user_id AND e.id = r.id
            CROSS JOIN unnest(r.tags) AS tag
            JOIN expenses.tags t ON t.user_id = :user_id AND lower(t.name) = lower(tag)
            """
        ),
        {"user_id": user_id},
    )
    return ImportResult(rows=rows, created=created or 0, unchanged=rows - (created or 0))


async def _previewed(
    session: AsyncSession, *, result: ImportResult, user_id: uuid.UUID
) -> ImportResult:
    lines = await session.scalars(
        text(
            "SELECT line FROM import_rows r WHERE NOT EXISTS (SELECT FROM expenses.expenses e "
            "WHERE e.user_id = :user_id AND e.id = r.id) ORDER BY line LIMIT :limit"
        ),
        {"user_id": user_id, "limit": MAX_REPORTED_ERRORS},
    )
    return ImportResult(
        rows=result.rows,
        created=result.created,
        unchanged=result.unchanged,
        dry_run=True,
        unchanged_lines=list(lines),
    )


_STAGING_COLUMNS = (
    "line",
    "id",
    "occurred_on",
    "amount_minor",
    "currency",
    "currency_exponent",
    "description",
    "notes",
    "merchant",
    "category_id",
    "external_id",
    "tags",
)


# --- export ------------------------------------------------------------------------------------


# Conditions on expenses `e` by ExpenseFilter.where.
_EXPORT = """
SELECT e.id, e.occurred_on, e.amount_minor, e.currency, e.description, e.notes, e.merchant,
       e.external_id, c.name AS category_name,
       ARRAY(SELECT t.name FROM expenses.expense_tags et
             JOIN expenses.tags t ON t.user_id = et.user_id AND t.id = et.tag_id
             WHERE et.user_id = e.user_id AND et.expense_id = e.id ORDER BY t.name) AS tag_names
FROM expenses.expenses e
LEFT JOIN expenses.categories c ON c.user_id = e.user_id AND c.id = e.category_id
WHERE {where}
ORDER BY e.occurred_on DESC, e.id DESC
"""


def _export_row(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "occurred_on": row["occurred_on"].isoformat(),
        "amount": money.format_amount(row["amount_minor"], row["currency"]),
        "currency": row["currency"],
        "description": row["description"],
        "notes": row["notes"],
        "merchant": row["merchant"],
        "category": row["category_name"],
        "tags": row["tag_names"],
        "external_id": row["external_id"],
    }


async def export_rows(
    connection: asyncpg.Connection, *, filters: ExpenseFilter, user_id: uuid.UUID
) -> AsyncIterator[dict[str, Any]]:
    """The filtered expenses, newest first, read through a server-side cursor."""
    args: list[object] = [user_id]
    sql = _EXPORT.format(where=filters.where(args))
    async with connection.transaction(readonly=True):
        async for row in connection.cursor(sql, *args, prefetch=1000):
            yield _export_row(row)


async def as_csv(rows: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """The import format: what this writes, import reads back."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    async for row in rows:
        cells = [
            row["occurred_on"],
            row["amount"],
            row["currency"],
            row["description"],
            row["notes"] or "",
            row["merchant"] or "",
            row["category"] or "",
            TAG_SEPARATOR.join(row["tags"]),
            row["external_id"] or "",
        ]
        writer.writerow([neutralise(cell) for cell in cells])
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


async def as_json(rows: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    separator = b"["
    async for row in rows:
        yield separator + json.dumps(row, ensure_ascii=False).encode()
        separator = b","
    yield b"[]" if separator == b"[" else b"]"
