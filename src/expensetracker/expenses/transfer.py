"""Import of CSV files and bank statements, and CSV/JSON export of expenses.

Import streams the upload to a spooled file (constant memory) and reads it row by row, in
batches: while PostgreSQL writes one batch (one statement: the expenses, their tags, and the
external ids seen in the file so far, kept in a temporary table), Python reads and checks the
next. All of it happens in one transaction, so a file is accepted whole or not at all: once a
row is bad nothing more is written, the rest is only checked, and the transaction rolls back.
A row's optional ``external_id`` makes importing the same file again create nothing. Bank
statements (statements.py) are read as rows of the same columns and go the same way. A dry run
is the import itself, rolled back, that also keeps the first rows of each outcome to show them.
"""

from __future__ import annotations

import asyncio
import collections
import csv
import dataclasses
import hashlib
import io
import json
import operator
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import asyncpg
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from expensetracker.expenses.models import idempotency_keys
from expensetracker.expenses.owners import ensure_owner
from expensetracker.expenses.rules import Rule, first_match, load_rules
from expensetracker.expenses.schemas import (
    DESCRIPTION_MAX,
    EARLIEST_DATE,
    FUTURE_DAYS,
    MERCHANT_MAX,
    NAME_MAX,
    NOTES_MAX,
    PREVIEW_ROWS,
    TAG_SEPARATOR,
    TAGS_MAX,
    ImportOut,
    ImportPreview,
    PreviewExpense,
    PreviewSkipped,
    PreviewUnchanged,
    check_tag_name,
)
from expensetracker.expenses.shared import TAGS_OF_E, ExpenseFilter, lock_categories
from expensetracker.expenses.statements import (
    SNIFF_BYTES,
    Format,
    InvalidImport,
    Options,
    Statement,
    detect,
)
from expensetracker.platform import idempotency, money
from expensetracker.platform.idempotency import KeyedRequest, Stored
from expensetracker.platform.schemas import NOT_A_DAY, check_name, check_text
from expensetracker.platform.tables import time_ordered_id

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
    # What the bank took in the home currency, when known (docs/expenses.md).
    "charged_amount",
    "charged_currency",
)
# A bank statement's rows (statements.py): every column but the charged amount, which no
# statement gives.
STATEMENT_COLUMNS = COLUMNS[:9]
REQUIRED = ("occurred_on", "amount", "currency", "description")
LIMITS = {
    "description": DESCRIPTION_MAX,
    "notes": NOTES_MAX,
    "merchant": MERCHANT_MAX,
    "external_id": 100,  # the import's own column: the API never takes one
}
# Rows per statement: one batch is written while the next is read and checked.
BATCH_ROWS = 5000
# Reading gives way to the event loop this often: the statements of the batch being written go
# out, and a server's other requests are served, within a few milliseconds.
YIELD_ROWS = 250
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
    "expensetracker_import_rows_total",
    "Imported rows (CSV rows, transactions) by outcome.",
    ["outcome"],
)  # accepted | rejected
IMPORTS = Counter(
    "expensetracker_imports_total", "Imports (whole files) by outcome.", ["outcome"]
)  # succeeded | rejected (invalid: nothing imported)
for _outcome in ("accepted", "rejected"):
    IMPORT_ROWS.labels(_outcome)
for _outcome in ("succeeded", "rejected"):
    IMPORTS.labels(_outcome)


@dataclass
class ImportResult:
    rows: int
    created: int
    unchanged: int  # rows whose external_id was imported before
    format: Format = "csv"
    skipped: int = 0  # a statement's transactions that are not spending (credits)
    # A dry run: what an import would do, then rolled back, with its first rows.
    dry_run: bool = False
    preview: ImportPreview | None = None


class Replayed(Exception):
    """An import sent again under its Idempotency-Key: the first import's stored answer."""

    def __init__(self, stored: Stored) -> None:
        self.stored = stored


class _RolledBack(Exception):
    """Ends a dry run's transaction the way an error would: nothing it wrote stays."""

    def __init__(self, result: ImportResult) -> None:
        self.result = result


@dataclass
class _Validator:
    """Checks one row (its cells in the header's order) and makes the values of its expense."""

    header: list[str]
    categories: dict[str, uuid.UUID]
    # The user's categorisation rules, in their order: they categorise rows that name no
    # category, and add their tags.
    rules: list[Rule] = field(default_factory=list)
    latest: date = field(default_factory=lambda: date.today() + timedelta(days=FUTURE_DAYS))
    # A row's cells in the order of COLUMNS; a column the header lacks reads the empty cell that
    # row() appends.
    _cells: Callable[[list[str]], tuple[str, ...]] = field(init=False)
    _exponents: dict[str, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        width = len(self.header)
        positions = [self.header.index(name) if name in self.header else width for name in COLUMNS]
        self._cells = operator.itemgetter(*positions)

    def row(
        self, line: int, values: list[str]
    ) -> tuple[tuple[Any, ...] | None, list[tuple[str, str]], str | None]:
        """(the expense's values in the order of import_rows's columns, or None when the row
        has errors; its errors as (field, message); its external id, when it is to be checked for
        appearing twice in the file)."""
        joined = "".join(values)
        try:
            check_text(joined)  # a cell fails only if the row does: one check for most rows
        except ValueError:
            errors = []
            for name, value in zip(self.header, values, strict=True):
                try:
                    check_text(value)
                except ValueError as exc:
                    errors.append((name, str(exc)))
            return None, errors, None
        values.append("")
        cells = self._cells(values)
        if ESCAPE in joined:
            cells = tuple(map(restore, cells))
        # The columns of the expense, of its charged amount.
        own, paid = cells[: len(STATEMENT_COLUMNS)], cells[len(STATEMENT_COLUMNS) :]
        occurred, amount, currency, description, notes, merchant, category, tags, external = own
        errors = [(name, "is required") for name in REQUIRED if not cells[_POSITIONS[name]].strip()]
        for name, limit in LIMITS.items():
            if len(cells[_POSITIONS[name]]) > limit:
                errors.append((name, f"is longer than {limit} characters"))
        if errors:
            return None, errors, None
        try:
            occurred_on = date.fromisoformat(occurred.strip())
        except ValueError:
            errors.append(("occurred_on", NOT_A_DAY))
        else:
            if not EARLIEST_DATE <= occurred_on <= self.latest:
                errors.append(("occurred_on", f"must be between {EARLIEST_DATE} and {self.latest}"))
        currency = currency.strip()
        amount_minor = _minor_units(amount.strip(), currency, errors, columns=_AMOUNT_COLUMNS)
        category_id = None
        if category.strip():
            try:
                category = check_name(category)
            except ValueError as exc:
                errors.append(("category", str(exc)))
            else:
                category_id = self.categories.get(category) or self.categories.get(category.lower())
                if category_id is None:
                    errors.append(("category", f"no category named {category!r}"))
        paid_amount, paid_currency = map(str.strip, paid)
        charged = _charged(paid_amount, paid_currency, errors)
        try:
            names = [
                check_tag_name(check_name(tag)) for tag in tags.split(TAG_SEPARATOR) if tag.strip()
            ]
        except ValueError as exc:
            names = []
            errors.append(("tags", str(exc)))
        if len(names) > TAGS_MAX or any(len(tag) > NAME_MAX for tag in names):
            errors.append(("tags", f"at most {TAGS_MAX} tags of at most {NAME_MAX} characters"))
        external_id = external.strip() or None
        if errors:
            return None, errors, external_id
        assert amount_minor is not None  # without errors, the amount was read
        if self.rules and category_id is None:
            rule = first_match(
                self.rules,
                description=description,
                merchant=merchant,
                amount_minor=amount_minor,
                currency=currency,
            )
            if rule is not None:
                category_id = rule.category_id
                names += rule.tags
                # Python's lower() stands in for PostgreSQL's, which decides which names are one.
                if len({name.lower() for name in names}) > TAGS_MAX:
                    message = f"with the matching rule's tags, more than {TAGS_MAX} tags"
                    return None, [("tags", message)], external_id
        exponent = self._exponents.get(currency)
        if exponent is None:
            exponent = self._exponents[currency] = money.exponent(currency)
        # Names differing in case only are one tag: PostgreSQL's lower() decides, in SQL.
        tag_list = TAG_SEPARATOR.join(names) or None
        # The id is made here, while the batch before is being written, not by the database,
        # whose work is the import's critical path.
        expense = (line, time_ordered_id(), occurred_on, amount_minor, currency, exponent)
        row = (*expense, description, notes or None, merchant or None, category_id, *charged)
        return (*row, external_id, tag_list), [], external_id


_POSITIONS = {name: position for position, name in enumerate(COLUMNS)}


def _minor_units(
    amount: str, currency: str, errors: list[tuple[str, str]], *, columns: tuple[str, str]
) -> int | None:
    """``amount`` in ``currency`` as minor units, or None: a problem with either is added to
    ``errors`` under its own column of ``columns`` (the amount's, the currency's)."""
    amount_column, currency_column = columns
    try:
        money.exponent(currency)
    except ValueError as exc:
        errors.append((currency_column, str(exc)))
        return None
    try:
        return money.parse_amount(amount, currency)
    except ValueError as exc:
        errors.append((amount_column, str(exc)))
        return None


_AMOUNT_COLUMNS = ("amount", "currency")
_CHARGED_COLUMNS = ("charged_amount", "charged_currency")


def _charged(amount: str, currency: str, errors: list[tuple[str, str]]) -> tuple[Any, ...]:
    """A row's charged amount as its three columns (None when it has none); a problem with it
    is added to ``errors``."""
    if not (amount or currency):
        return (None, None, None)
    if not (amount and currency):
        errors.append(("charged_amount", "charged_amount and charged_currency go together"))
        return (None, None, None)
    minor = _minor_units(amount, currency, errors, columns=_CHARGED_COLUMNS)
    if minor is None:
        return (None, None, None)
    return (minor, currency, money.exponent(currency))


def _open(spool: Any) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """A CSV file's header, checked, and its rows after it, with their line numbers."""
    reader = csv.reader(io.TextIOWrapper(spool, encoding="utf-8-sig", newline=""))
    try:
        header = [name.strip().lower() for name in next(reader)]
    except StopIteration:
        raise InvalidImport("The file is empty: expected a header row.") from None
    unknown = sorted(set(header) - set(COLUMNS))
    missing = [name for name in REQUIRED if name not in header]
    # Named too: a header refused for a column given twice said "unknown: none, missing: none".
    repeated = sorted(name for name, count in collections.Counter(header).items() if count > 1)
    if unknown or missing or repeated:
        twice = f", more than once: {', '.join(repeated)}" if repeated else ""
        raise InvalidImport(
            f"Header must name columns among {', '.join(COLUMNS)} once each, with "
            f"{', '.join(REQUIRED)}; unknown: {', '.join(unknown) or 'none'}, missing: "
            f"{', '.join(missing) or 'none'}{twice}."
        )
    return header, ((reader.line_num, values) for values in reader)


async def import_file(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    chunks: AsyncIterator[bytes],
    format: Format | None = None,
    options: Options | None = None,
    progress: Callable[[int], None] | None = None,
    dry_run: bool = False,
    keyed: KeyedRequest | None = None,
) -> ImportResult:
    """A CSV file or a bank statement (``format``, or detected from the content when None).
    ``dry_run`` does everything an import would, reports it, and keeps nothing (not even its
    key). An import under an Idempotency-Key (``keyed``) happens once: sent again with the same
    file and options, it raises Replayed with what the first answered, in the same transaction."""
    keyed = None if dry_run else keyed
    digest = hashlib.sha256(f"{keyed.route}\n{format}\n{options}\n".encode()) if keyed else None
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES) as spool:
        async for chunk in chunks:
            spool.write(chunk)
            if digest is not None:
                digest.update(chunk)
        spool.seek(0)
        if format is None:
            format = detect(spool.read(SNIFF_BYTES))
            spool.seek(0)
        statement = (
            None
            if format == "csv"
            else Statement(format, options or Options(), skips=[] if dry_run else None)
        )
        try:
            async with session.begin():
                await ensure_owner(session, user_id=user_id)
                if keyed is not None and digest is not None:
                    stored = await idempotency.claim(
                        session,
                        idempotency_keys,
                        user_id=user_id,
                        key=keyed.key,
                        request_hash=digest.digest(),
                    )
                    if stored is not None:
                        raise Replayed(stored)
                batches, rows = await _stage(
                    session,
                    user_id=user_id,
                    spool=spool,
                    statement=statement,
                    progress=progress,
                    dry_run=dry_run,
                )
                result = _publish(batches, rows=rows, statement=statement)
                if batches.preview is not None:
                    preview = await batches.preview.shown(
                        batches.connection, user_id=user_id, result=result, statement=statement
                    )
                    raise _RolledBack(dataclasses.replace(result, dry_run=True, preview=preview))
                if keyed is not None:
                    await idempotency.remember(
                        session,
                        idempotency_keys,
                        user_id=user_id,
                        key=keyed.key,
                        status_code=201,
                        body=import_answer(result).model_dump_json(),
                    )
        except _RolledBack as rolled_back:
            return rolled_back.result
        except InvalidImport:
            if not dry_run:  # a dry run is a preview, not an import
                IMPORTS.labels("rejected").inc()
            raise
    IMPORTS.labels("succeeded").inc()
    IMPORT_ROWS.labels("accepted").inc(result.rows)
    return result


@dataclass
class _Preview:
    """A dry run's first rows (PREVIEW_ROWS) of those it would create and of those imported
    before, kept as each batch's answer comes: a bounded list whatever the file's size. An import
    keeps none."""

    # The validator's rows: (line, occurred_on, amount_minor, currency, ..., external_id, tags).
    expenses: list[tuple[Any, ...]] = field(default_factory=list)
    unchanged: list[tuple[int, str]] = field(default_factory=list)  # (line, external id)

    def add(
        self, expenses: list[tuple[Any, ...]], *, unchanged: set[int], repeated: set[int]
    ) -> None:
        """A written batch's rows: those it did not create are ``unchanged`` (imported before) or
        ``repeated`` (met before in this file: an error, reported by the batches)."""
        for row in expenses:
            if len(self.expenses) == len(self.unchanged) == PREVIEW_ROWS:
                return
            line = row[0]
            if line in unchanged:
                if len(self.unchanged) < PREVIEW_ROWS:
                    self.unchanged.append((line, row[-2]))
            elif line not in repeated and len(self.expenses) < PREVIEW_ROWS:
                self.expenses.append(row)

    async def shown(
        self,
        connection: Any,
        *,
        user_id: uuid.UUID,
        result: ImportResult,
        statement: Statement | None,
    ) -> ImportPreview:
        """The kept rows as the import made them, read before the dry run rolls back: each
        category's name, each tag by the name it has (an existing tag's spelling wins)."""
        named = await connection.fetch(
            _PREVIEW_NAMES,
            user_id,
            [row[_CATEGORY_ID] for row in self.expenses],
            [row[-1] for row in self.expenses],
        )
        skips = (statement.skips if statement is not None else None) or []
        return ImportPreview(
            limit=PREVIEW_ROWS,
            expenses=[
                _previewed(row, category=names["category"], tags=names["tags"])
                for row, names in zip(self.expenses, named, strict=True)
            ],
            more_expenses=result.created > len(self.expenses),
            unchanged=[
                PreviewUnchanged(position=line, external_id=external_id)
                for line, external_id in self.unchanged
            ],
            more_unchanged=result.unchanged > len(self.unchanged),
            skipped=[PreviewSkipped(position=line, reason=reason) for line, reason in skips],
            more_skipped=result.skipped > len(skips),
        )


def _previewed(row: tuple[Any, ...], *, category: str | None, tags: list[str]) -> PreviewExpense:
    # The validator's row, as import_rows holds it.
    line, _, occurred_on, amount_minor, currency, _, description, _, merchant, *rest = row
    category_id, charged_minor, charged_currency, _, external_id, _ = rest
    return PreviewExpense(
        position=line,
        occurred_on=occurred_on,
        amount=money.format_amount(amount_minor, currency),
        currency=currency,
        charged_amount=(
            None
            if charged_currency is None
            else money.format_amount(charged_minor, charged_currency)
        ),
        charged_currency=charged_currency,
        description=description,
        merchant=merchant,
        category_id=category_id,
        category=category,
        tags=tags,
        external_id=external_id,
    )


class _Batches:
    """Writes each batch of rows while the next one is read and checked: one batch in flight on
    the connection at a time, the order of the file kept. Inside the import's transaction, so a
    file with a bad row leaves nothing behind; once a row is bad, batches are only checked for
    external ids that appear twice, and nothing more is written."""

    def __init__(
        self, connection: Any, *, user_id: uuid.UUID, preview: _Preview | None = None
    ) -> None:
        self.connection = connection
        self.user_id = user_id
        self.created = 0
        self.preview = preview  # a dry run's
        self.rejected = 0
        self.errors: list[dict[str, Any]] = []
        self._in_flight: asyncio.Future[None] | None = None

    def reject(self, line: int, errors: list[tuple[str, str]]) -> None:
        self.rejected += 1
        self.errors += [{"line": line, "field": name, "message": text} for name, text in errors]
        self._bound_errors()

    def _bound_errors(self) -> None:
        # Errors of repeated external ids come a batch late: keep the first ones by line.
        if len(self.errors) > 2 * MAX_REPORTED_ERRORS:
            self.reported_errors()

    def reported_errors(self) -> list[dict[str, Any]]:
        self.errors.sort(key=operator.itemgetter("line"))  # stable: a row's errors keep their order
        del self.errors[MAX_REPORTED_ERRORS:]
        return self.errors

    async def send(
        self,
        expenses: list[tuple[Any, ...]],
        external_ids: list[tuple[int, str]],
        rejected_lines: set[int],
    ) -> None:
        """Waits for the batch in flight, then starts this one (writing it if every row so far
        was valid, checking its external ids only if not)."""
        await self.wait()
        if not expenses and not external_ids:
            return
        job = self._check(external_ids, rejected_lines) if self.rejected else self._write(expenses)
        self._in_flight = asyncio.ensure_future(job)
        await asyncio.sleep(0)  # the batch's first statement goes out before reading on

    async def wait(self) -> None:
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            await in_flight

    async def abandon(self) -> None:
        """On the way out after an error: the batch in flight ends before the transaction does
        (its outcome no longer matters)."""
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            await asyncio.wait([in_flight])
            if not in_flight.cancelled():
                in_flight.exception()

    async def _write(self, expenses: list[tuple[Any, ...]]) -> None:
        # COPY's binary rows cost a tenth of the client's time of one array per column: asyncpg
        # checks every element of an array for being an array itself (docs/performance.md).
        await self.connection.copy_records_to_table(
            "import_rows", records=expenses, schema_name="pg_temp"
        )
        if any(row[-1] is not None for row in expenses):
            await self.connection.execute(_INSERT_TAGS, self.user_id)
        answer = await self.connection.fetch(_INSERT_EXPENSES, self.user_id)
        await self.connection.execute("TRUNCATE pg_temp.import_rows")
        unchanged = {row["line"] for row in answer if not row["repeated"]}
        repeated = [row["line"] for row in answer if row["repeated"]]
        self.created += len(expenses) - len(unchanged)
        if self.preview is not None:
            self.preview.add(expenses, unchanged=unchanged, repeated=set(repeated))
        self._repeated(repeated, set())

    async def _check(self, external_ids: list[tuple[int, str]], rejected_lines: set[int]) -> None:
        if external_ids:
            lines, ids = zip(*external_ids, strict=True)
            answer = await self.connection.fetch(_CHECK_EXTERNAL_IDS, list(lines), list(ids))
            self._repeated([row["line"] for row in answer], rejected_lines)

    def _repeated(self, lines: list[int], rejected_lines: set[int]) -> None:
        for line in sorted(lines):
            self.rejected += line not in rejected_lines
            self.errors.append(
                {"line": line, "field": "external_id", "message": "appears twice in this file"}
            )
        self._bound_errors()


async def _stage(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    spool: Any,
    statement: Statement | None,
    progress: Callable[[int], None] | None,
    dry_run: bool,
) -> tuple[_Batches, int]:
    """Reads and checks every row of the file, writing them in batches while every row so far
    is valid; answers the batches (what they created, what they rejected, a dry run's first
    rows) and the row count."""
    # By name as written, else by lower(), as the unique index on the names tells them apart:
    # casefold() made "Straße" and "STRASSE", two categories there, one, and filed one's rows
    # under the other.
    named = await lock_categories(session, user_id=user_id)
    categories = {name.lower(): category_id for category_id, name in named} | {
        name: category_id for category_id, name in named
    }
    connection = (await (await session.connection()).get_raw_connection()).driver_connection
    assert connection is not None  # an open session's connection has its driver's
    await connection.execute(_CREATE_STAGING)
    batches = _Batches(connection, user_id=user_id, preview=_Preview() if dry_run else None)
    rows = 0
    expenses: list[tuple[Any, ...]] = []
    external_ids: list[tuple[int, str]] = []
    rejected_lines: set[int] = set()

    async def send() -> None:
        await batches.send(expenses.copy(), external_ids.copy(), rejected_lines.copy())
        for pending in (expenses, external_ids, rejected_lines):
            pending.clear()
        if progress:
            progress(rows)

    try:
        header, reader = (
            _open(spool) if statement is None else (list(STATEMENT_COLUMNS), statement.rows(spool))
        )
        validator = _Validator(header, categories, rules=await load_rules(session, user_id=user_id))
        width = len(header)
        for line, values in reader:
            if not any(values):
                continue
            rows += 1
            if len(values) != width:
                batches.reject(line, [("row", f"has {len(values)} fields, not {width}")])
                rejected_lines.add(line)
            else:
                expense, errors, external_id = validator.row(line, values)
                if external_id is not None:
                    external_ids.append((line, external_id))
                if expense is None:
                    batches.reject(line, errors)
                    rejected_lines.add(line)
                elif not batches.rejected:
                    expenses.append(expense)
            if rows % BATCH_ROWS == 0:
                await send()
            elif rows % YIELD_ROWS == 0:
                # The batch in flight may have its next statement to send, and a server has
                # other requests to serve.
                await asyncio.sleep(0)
        await send()
        await batches.wait()
    except BaseException as exc:
        await batches.abandon()
        if isinstance(exc, UnicodeDecodeError):
            raise InvalidImport(f"The file is not UTF-8 text ({exc.reason}).") from None
        if isinstance(exc, csv.Error):
            raise InvalidImport(f"The file is not valid CSV: {exc}.") from None
        raise
    return batches, rows


def import_answer(result: ImportResult) -> ImportOut:
    return ImportOut.model_validate(result, from_attributes=True)


def _publish(batches: _Batches, *, rows: int, statement: Statement | None) -> ImportResult:
    """What the import did, or, when a row was bad, an InvalidImport with the first errors
    (the transaction then keeps nothing)."""
    if batches.rejected:
        if batches.preview is None:  # rows a dry run would refuse were not refused imports
            IMPORT_ROWS.labels("rejected").inc(batches.rejected)
        reported = batches.reported_errors()
        if statement is not None:  # a position in a statement is a transaction's number
            reported = [{"transaction": error.pop("line"), **error} for error in reported]
        kind = "rows" if statement is None else "transactions"
        raise InvalidImport(
            f"{batches.rejected} of {rows} {kind} are invalid; nothing was imported.",
            rejected_rows=batches.rejected,
            errors=reported,
        )
    return ImportResult(
        rows=rows,
        created=batches.created,
        unchanged=rows - batches.created,
        format=statement.format if statement else "csv",
        skipped=statement.skipped if statement else 0,
    )


# Where a validator's row holds its category's id (the tags are last).
_CATEGORY_ID = 9
# A dry run's listed rows (their categories, their tags joined by TAG_SEPARATOR), read in the
# dry run's transaction: each category's name, and each tag as the expense would be linked to it
# (_INSERT_EXPENSES: by lower(), the tag's first spelling), ordered as TAGS_OF_E orders them.
_PREVIEW_NAMES = """
    SELECT (SELECT c.name FROM expenses.categories c
            WHERE c.user_id = $1::uuid AND c.id = r.category_id) AS category,
           ARRAY(SELECT t.name FROM expenses.tags t
                 WHERE t.user_id = $1::uuid
                   AND lower(t.name) IN (SELECT lower(tag)
                                         FROM unnest(string_to_array(r.tags, ';')) AS tag)
                 ORDER BY t.name) AS tags
    FROM unnest($2::uuid[], $3::text[]) WITH ORDINALITY AS r(category_id, tags, n)
    ORDER BY r.n
"""


# The import's own tables, gone when its transaction ends: the batch being written (the
# validator's rows, copied in, in the order of their columns; the tags of a row are its names
# joined by TAG_SEPARATOR, which no name contains), and the external ids met so far in the file.
_CREATE_STAGING = """
    CREATE TEMP TABLE import_rows (
      line int, id uuid, occurred_on date, amount_minor bigint, currency text,
      currency_exponent smallint, description text, notes text, merchant text, category_id uuid,
      charged_minor bigint, charged_currency text, charged_exponent smallint, external_id text,
      tags text
    ) ON COMMIT DROP;
    CREATE TEMP TABLE import_external_ids (external_id text PRIMARY KEY, line int NOT NULL)
    ON COMMIT DROP
"""

# The batch's tag names that are new to the user: a new tag is named by its first spelling.
# Only rows that will be created name tags: a row whose external id was imported before is
# skipped whole, its tags included. OFFSET 0 keeps that test a probe of the unique index per row:
# as an anti join, planned for a user of average size, it read every expense of a big importer,
# in each batch (docs/performance.md).
_INSERT_TAGS = """
    INSERT INTO expenses.tags (user_id, id, name)
    SELECT DISTINCT ON (lower(tag)) $1::uuid, gen_random_uuid(), tag
    FROM pg_temp.import_rows r
    CROSS JOIN LATERAL unnest(string_to_array(r.tags, ';')) WITH ORDINALITY AS t(tag, m)
    WHERE r.tags IS NOT NULL AND NOT EXISTS (
      SELECT FROM expenses.expenses e WHERE e.user_id = $1::uuid AND e.external_id = r.external_id
      OFFSET 0
    )
    ORDER BY lower(tag), r.line, m
    ON CONFLICT DO NOTHING
"""

# One statement per batch (so the monthly totals trigger runs once per batch), from the batch's
# rows: the expenses whose external id is new to the user, their tags, and the external ids met
# for the first time in this file. Answers the lines not created: an external id imported before
# (repeated false) or already seen in this file (repeated true).
_INSERT_EXPENSES = """
    WITH first_seen AS (
      INSERT INTO pg_temp.import_external_ids (external_id, line)
      SELECT external_id, line FROM pg_temp.import_rows
      WHERE external_id IS NOT NULL ORDER BY line
      ON CONFLICT DO NOTHING
      RETURNING line
    ),
    inserted AS (
      INSERT INTO expenses.expenses (user_id, id, amount_minor, currency, currency_exponent,
        occurred_on, description, notes, merchant, category_id, charged_minor, charged_currency,
        charged_exponent, external_id)
      SELECT $1::uuid, id, amount_minor, currency, currency_exponent, occurred_on, description,
             notes, merchant, category_id, charged_minor, charged_currency, charged_exponent,
             external_id
      FROM pg_temp.import_rows ORDER BY line
      ON CONFLICT (user_id, external_id) DO NOTHING
      RETURNING id
    ),
    linked AS (
      INSERT INTO expenses.expense_tags (user_id, expense_id, tag_id)
      SELECT DISTINCT $1::uuid, r.id, t.id
      FROM inserted i
      JOIN pg_temp.import_rows r ON r.id = i.id
      CROSS JOIN unnest(string_to_array(r.tags, ';')) AS tag
      JOIN expenses.tags t ON t.user_id = $1::uuid AND lower(t.name) = lower(tag)
    )
    SELECT line, false AS repeated FROM pg_temp.import_rows r
    WHERE NOT EXISTS (SELECT FROM inserted i WHERE i.id = r.id)
    UNION ALL
    SELECT line, true FROM pg_temp.import_rows r
    WHERE external_id IS NOT NULL AND NOT EXISTS (SELECT FROM first_seen f WHERE f.line = r.line)
"""

# Once a row is bad nothing is written: the external ids are still checked, for the report.
_CHECK_EXTERNAL_IDS = """
    WITH input AS (SELECT * FROM unnest($1::int[], $2::text[]) AS r(line, external_id)),
    first_seen AS (
      INSERT INTO pg_temp.import_external_ids (external_id, line)
      SELECT external_id, line FROM input ORDER BY line
      ON CONFLICT DO NOTHING
      RETURNING line
    )
    SELECT line FROM input r WHERE NOT EXISTS (SELECT FROM first_seen f WHERE f.line = r.line)
"""


# --- export ------------------------------------------------------------------------------------


# Conditions on expenses `e` by ExpenseFilter.where.
_EXPORT = """
SELECT e.id, e.occurred_on, e.amount_minor, e.currency, e.description, e.notes, e.merchant,
       e.external_id, e.charged_minor, e.charged_currency, c.name AS category_name,
       {tags} AS tag_names
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
        "charged_amount": (
            None
            if row["charged_currency"] is None
            else money.format_amount(row["charged_minor"], row["charged_currency"])
        ),
        "charged_currency": row["charged_currency"],
    }


async def export_rows(
    connection: asyncpg.Connection, *, filters: ExpenseFilter, user_id: uuid.UUID
) -> AsyncIterator[dict[str, Any]]:
    """The filtered expenses, newest first, read through a server-side cursor."""
    args: list[object] = [user_id]
    sql = _EXPORT.format(tags=TAGS_OF_E, where=filters.where(args))
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
            row["charged_amount"] or "",
            row["charged_currency"] or "",
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
