"""The logic behind the expenses routes. Every query is scoped to the caller's user id."""

from __future__ import annotations

import uuid
from contextlib import nullcontext
from datetime import date
from functools import partial
from typing import Any, Literal

import asyncpg
from prometheus_client import Counter
from sqlalchemy import delete, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from expensetracker.expenses.models import (
    CategorisationRule,
    Category,
    Expense,
    ExpenseTag,
    RecurringRule,
    Tag,
    idempotency_keys,
)
from expensetracker.expenses.owners import create_for_owner, ensure_owner
from expensetracker.expenses.schemas import (
    CategoryCreate,
    CategoryOut,
    CategoryUpdate,
    ExpenseCreate,
    ExpenseUpdate,
    TagOut,
)
from expensetracker.expenses.shared import (
    TAGS_OF_E,
    ExpenseFilter,
    flush_unique,
    lock_category,
    not_your_category,
    refuse_nulls,
    tagging,
)
from expensetracker.platform import idempotency, money
from expensetracker.platform.db import delete_owned, get_owned, lock_until_commit
from expensetracker.platform.errors import NotFound, ValidationProblem, reversed_range
from expensetracker.platform.pagination import (
    Page,
    PageRequest,
    decode_cursor,
    json_page,
    page_by_name,
)
from expensetracker.platform.tables import time_ordered_id

EXPENSES_CREATED = Counter("expensetracker_expenses_created_total", "Expenses created.")
EXPENSES_UPDATED = Counter("expensetracker_expenses_updated_total", "Expenses changed.")
EXPENSES_DELETED = Counter("expensetracker_expenses_deleted_total", "Expenses deleted.")

# Answers written as JSON by PostgreSQL give timestamps as Pydantic does: UTC, with a "Z".
_UTC_TIMESTAMP = """to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


# --- categories --------------------------------------------------------------------------------


def _category_out(category: Category) -> CategoryOut:
    return CategoryOut.model_validate(category, from_attributes=True)


_CATEGORY_JSON = (
    "json_build_object('id', c.id, 'name', c.name, 'parent_id', c.parent_id, "
    f"'created_at', {_UTC_TIMESTAMP.format('c.created_at')})::text"
)
_CATEGORIES, _CATEGORIES_AFTER = (
    f"SELECT {_CATEGORY_JSON}, c.name, c.id FROM expenses.categories c "
    f"WHERE c.user_id = $1{after} ORDER BY c.name, c.id LIMIT $2"
    for after in ("", " AND (c.name, c.id) > ($3, $4)")
)


async def list_categories(
    connection: asyncpg.Connection, *, user_id: uuid.UUID, paging: PageRequest
) -> str:
    """A page (as Page[CategoryOut] JSON) by name. A new user's first look gives them the
    default categories: only an empty first page asks whether they are an owner yet."""
    limit = paging.limit
    after = decode_cursor(paging.cursor, list_name="categories", types=(str, uuid.UUID))
    if after is None:
        rows = await connection.fetch(_CATEGORIES, user_id, limit + 1)
        if not rows:
            async with connection.transaction():
                await ensure_owner(connection, user_id=user_id)
            rows = await connection.fetch(_CATEGORIES, user_id, limit + 1)
    else:
        rows = await connection.fetch(_CATEGORIES_AFTER, user_id, limit + 1, *after)
    return json_page(
        [row[0] for row in rows[:limit]],
        list_name="categories",
        next_key=[rows[limit - 1][1], str(rows[limit - 1][2])] if len(rows) > limit else None,
    )


_NO_CATEGORY = "No category with this id."
_category = partial(get_owned, model=Category, missing=_NO_CATEGORY)
# Flushes a created or renamed category; a name the user has already is a 409.
_flush_unique_name = partial(
    flush_unique,
    constraint="uq_categories_user_name",
    field="name",
    conflict="You already have a category with this name.",
)


async def _check_parent(
    session: AsyncSession, *, user_id: uuid.UUID, parent_id: uuid.UUID, child: Category | None
) -> None:
    """One level of grouping: the parent is a top-level category of the same user, and a
    category with children cannot become a child itself. A user's moves are checked one at a
    time (two categories moved under each other at once would make a cycle), each against
    those committed before it, and the parent is kept until the transaction ends."""
    await lock_until_commit(session, f"expenses.categories:{user_id}")
    parent = await lock_category(session, user_id=user_id, category_id=parent_id)
    if child is not None and parent_id == child.id:
        problem = "A category cannot be inside itself."
    elif parent is None or parent.parent_id is not None:
        problem = "Not one of your top-level categories."
    elif child is not None and await session.scalar(
        select(exists().where(Category.user_id == user_id, Category.parent_id == child.id))
    ):
        problem = "A category with subcategories stays at the top level."
    else:
        return
    raise ValidationProblem.of_field("body.parent_id", problem, "parent")


async def create_category(
    session: AsyncSession, *, creation: idempotency.Creation, body: CategoryCreate
) -> CategoryOut | idempotency.Stored:
    async def create() -> CategoryOut:
        if body.parent_id is not None:
            await _check_parent(
                session, user_id=creation.user_id, parent_id=body.parent_id, child=None
            )
        category = Category(user_id=creation.user_id, name=body.name, parent_id=body.parent_id)
        session.add(category)
        await _flush_unique_name(session)
        await session.refresh(category)
        return _category_out(category)

    return await create_for_owner(session, creation=creation, body=body, create=create)


async def update_category(
    session: AsyncSession, *, user_id: uuid.UUID, category_id: uuid.UUID, body: CategoryUpdate
) -> CategoryOut:
    async with session.begin():
        category = await _category(session, user_id=user_id, id=category_id, for_update=True)
        if "name" in body.model_fields_set:
            if body.name is None:
                raise ValidationProblem.of_field("body.name", "A name is required.", "missing")
            category.name = body.name
        if "parent_id" in body.model_fields_set:
            if body.parent_id is not None:
                await _check_parent(
                    session, user_id=user_id, parent_id=body.parent_id, child=category
                )
            category.parent_id = body.parent_id
        await _flush_unique_name(session)
        return _category_out(category)


async def delete_category(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    category_id: uuid.UUID,
    move_to: uuid.UUID | None = None,
) -> None:
    """Its subcategories move to the top level. Its expenses, recurring expenses and rules move
    to ``move_to``, another of the user's categories (so their months keep counting in it), or
    are left without a category."""
    if move_to is None:
        await delete_owned(session, Category, user_id=user_id, id=category_id, missing=_NO_CATEGORY)
        return
    async with session.begin():
        # One structural change of a user's categories at a time: two deletions moving into each
        # other's category would otherwise wait for each other.
        await lock_until_commit(session, f"expenses.categories:{user_id}")
        await _category(session, user_id=user_id, id=category_id, for_update=True)
        if move_to == category_id or not await lock_category(
            session, user_id=user_id, category_id=move_to
        ):
            raise ValidationProblem.of_field(
                "query.move_to", "Not another of your categories.", "move_to"
            )
        for model in (Expense, RecurringRule, CategorisationRule):
            await session.execute(
                update(model)
                .where(model.user_id == user_id, model.category_id == category_id)
                .values(category_id=move_to)
            )
        await session.execute(
            delete(Category).where(Category.user_id == user_id, Category.id == category_id)
        )


# --- tags --------------------------------------------------------------------------------------


async def list_tags(
    session: AsyncSession, *, user_id: uuid.UUID, paging: PageRequest
) -> Page[TagOut]:
    """The tags on at least one expense: a tag no expense has any more is not offered."""
    in_use = (
        select(ExpenseTag)
        .where(ExpenseTag.user_id == Tag.user_id, ExpenseTag.tag_id == Tag.id)
        .exists()
    )
    return await page_by_name(
        session,
        Tag,
        list_name="tags",
        user_id=user_id,
        paging=paging,
        item=lambda tag: TagOut(id=tag.id, name=tag.name),
        where=(in_use,),
    )


# --- expenses ----------------------------------------------------------------------------------
# The hot paths: one statement each on the driver connection, whose answer PostgreSQL writes as
# JSON (EXPENSE_JSON, the shape of ExpenseOut), so that Python only passes it on.

# An expense `e` as ExpenseOut; {tags} is its tag names, sorted.
EXPENSE_JSON = (
    "json_build_object("
    "'id', e.id, "
    "'amount', round(e.amount_minor::numeric / 10::numeric ^ e.currency_exponent, "
    "e.currency_exponent)::text, "
    "'currency', e.currency, "
    "'occurred_on', e.occurred_on, "
    "'description', e.description, "
    "'notes', e.notes, "
    "'merchant', e.merchant, "
    "'category_id', e.category_id, "
    "'tags', {tags}, "
    "'charged_amount', round(e.charged_minor::numeric / 10::numeric ^ e.charged_exponent, "
    "e.charged_exponent)::text, "
    "'charged_currency', e.charged_currency, "
    f"'created_at', {_UTC_TIMESTAMP.format('e.created_at')}, "
    f"'updated_at', {_UTC_TIMESTAMP.format('e.updated_at')}"
    ")::text"
)
_TAGGED_NAMES = "ARRAY(SELECT name FROM tagged ORDER BY name)"
_NO_TAGS = "'{}'::text[]"

# The parameters' types, given: INSERT ... SELECT does not infer them from the columns.
_COLUMN_TYPES = (
    *("uuid", "uuid", "bigint", "text", "smallint", "date", "text", "text", "text", "uuid"),
    *("bigint", "text", "smallint"),
)
_COLUMNS = (
    "user_id, id, amount_minor, currency, currency_exponent, occurred_on, description, notes, "
    "merchant, category_id, charged_minor, charged_currency, charged_exponent"
)
# The parameter of the tag names, after the columns'.
_TAGS = len(_COLUMN_TYPES) + 1


def create_statement(*, tagged: bool, key: Literal["new", "claimed"] | None) -> str:
    """Creates the caller's ($1) expense $2 from columns $3-$13 (see _COLUMNS), with tags $14
    (_TAGS) when ``tagged``, and answers it as JSON. With an Idempotency-Key (the next
    parameter):

    - ``claimed``: the key was claimed earlier in the transaction; its answer is stored.
    - ``new``: one statement for a key never seen, then the request hash and the key's lock
      scope: the expense is created and the key stored with its answer only if the lock is
      free; answers (lock taken, the expense or null). A key stored before, by this caller's
      earlier request or by another transaction meanwhile, fails the key's primary key, and
      nothing is written. The primary key, not a lookup, finds it: a lookup's plan, made while
      the table was nearly empty, read the whole table on every creation until the table was
      analyzed again (docs/performance.md).
    """
    n = _TAGS + tagged
    values = ", ".join(f"${i}::{kind}" for i, kind in enumerate(_COLUMN_TYPES, 1))
    if key == "new":
        ctes = [
            f"lock AS MATERIALIZED (SELECT pg_try_advisory_xact_lock(hashtext(${n + 2})) AS taken)",
            f"e AS (INSERT INTO expenses.expenses ({_COLUMNS}) SELECT {values} FROM lock "
            "WHERE taken RETURNING *)",
        ]
    else:
        ctes = [f"e AS (INSERT INTO expenses.expenses ({_COLUMNS}) VALUES ({values}) RETURNING *)"]
    if tagged:
        ctes.append(
            tagging(expense="$2", names=f"${_TAGS}", expense_exists="EXISTS (SELECT FROM e)")
        )
    answer = EXPENSE_JSON.format(tags=_TAGGED_NAMES if tagged else _NO_TAGS)
    if key is None:
        return f"WITH {', '.join(ctes)} SELECT {answer} FROM e"
    ctes.append(f"answer AS (SELECT {answer} AS body FROM e)")
    if key == "claimed":
        ctes.append(
            idempotency.remembering(
                idempotency_keys, key=f"${n}", status_code=201, body="SELECT body FROM answer"
            )
        )
        return f"WITH {', '.join(ctes)} SELECT body FROM answer"
    ctes.append(
        f"kept AS (INSERT INTO {idempotency_keys.fullname} "
        "(user_id, key, request_hash, status_code, response) "
        f"SELECT $1, ${n}, ${n + 1}, 201, body::jsonb FROM answer)"
    )
    return f"WITH {', '.join(ctes)} SELECT taken, (SELECT body FROM answer) FROM lock"


CREATE_STATEMENTS = {
    (tagged, key): create_statement(tagged=tagged, key=key)
    for tagged in (False, True)
    for key in (None, "new", "claimed")
}
_GET = (
    f"SELECT {EXPENSE_JSON.format(tags=TAGS_OF_E)} FROM expenses.expenses e "
    "WHERE e.user_id = $1 AND e.id = $2"
)
DELETE = "DELETE FROM expenses.expenses WHERE user_id = $1 AND id = $2"

# A user without an owner row yet (or no longer) fails these foreign keys first.
_OWNER_MISSING = ("expenses_user_id_fkey", "idempotency_keys_user_id_fkey")
_CATEGORY_MISSING = "expenses_user_id_category_id_fkey"
_KEY_KNOWN = "idempotency_keys_pkey"


async def _write(connection: asyncpg.Connection, sql: str, *args: object) -> str | None:
    """Runs a statement writing an expense; a category that is not the caller's is a 422."""
    rows = await _fetch_created(connection, sql, *args)
    return rows[0][0] if rows else None


async def _fetch_created(
    connection: asyncpg.Connection, sql: str, *args: object
) -> list[asyncpg.Record]:
    try:
        return await connection.fetch(sql, *args)
    except asyncpg.ForeignKeyViolationError as exc:
        if exc.constraint_name == _CATEGORY_MISSING:
            raise not_your_category() from None
        raise


def charged_columns(amount: str | None, currency: str | None) -> dict[str, int | str | None]:
    """The columns of an expense's charged amount (all None when it has none)."""
    if amount is None or currency is None:
        return {"charged_minor": None, "charged_currency": None, "charged_exponent": None}
    return {
        "charged_minor": money.parse_amount(amount, currency),
        "charged_currency": currency,
        "charged_exponent": money.exponent(currency),
    }


async def create_expense(
    connection: asyncpg.Connection, *, creation: idempotency.Creation, body: ExpenseCreate
) -> str | idempotency.Stored:
    """The created expense as JSON, or the answer stored for the Idempotency-Key. The owner row
    is not checked on each creation: the insert finds it missing (a first creation, or a deleted
    account) through its foreign key, and only then is it claimed."""
    user_id, keyed = creation.user_id, creation.keyed
    stored = money.stored(body.amount, body.currency)
    args: list[object] = [
        user_id,
        time_ordered_id(),
        stored["amount_minor"],
        body.currency,
        stored["currency_exponent"],
        body.occurred_on,
        body.description,
        body.notes,
        body.merchant,
        body.category_id,
        *charged_columns(body.charged_amount, body.charged_currency).values(),
    ]
    if body.tags:
        args.append(body.tags)
    tagged = bool(body.tags)

    async def create() -> str | idempotency.Stored:
        if keyed is None:
            # An INSERT ... RETURNING answers its row: never None here.
            return await _write(connection, CREATE_STATEMENTS[tagged, None], *args)  # type: ignore[return-value]
        request_hash = idempotency.fingerprint(keyed.route, body)
        scope = idempotency.lock_scope(idempotency_keys, user_id=user_id, key=keyed.key)
        created: str | None
        try:
            [(taken, created)] = await _fetch_created(
                connection,
                CREATE_STATEMENTS[tagged, "new"],
                *args,
                keyed.key,
                request_hash,
                scope,
            )
        except asyncpg.UniqueViolationError as exc:  # the key is known
            if exc.constraint_name != _KEY_KNOWN:
                raise
            taken, created = True, None
        if not taken:
            raise idempotency.in_progress()
        if created is not None:
            return created
        # A key seen before (a replay, another body, or expired): the general path.
        async with connection.transaction():
            replay = await idempotency.claim(
                connection,
                idempotency_keys,
                user_id=user_id,
                key=keyed.key,
                request_hash=request_hash,
            )
            if replay is not None:
                return replay
            # An INSERT ... RETURNING answers its row: never None here.
            return await _write(connection, CREATE_STATEMENTS[tagged, "claimed"], *args, keyed.key)  # type: ignore[return-value]

    try:
        result = await create()
    except asyncpg.ForeignKeyViolationError as exc:
        if exc.constraint_name not in _OWNER_MISSING:
            raise
        async with connection.transaction():
            await ensure_owner(connection, user_id=user_id)
        result = await create()
    if not isinstance(result, idempotency.Stored):
        EXPENSES_CREATED.inc()
    return result


async def get_expense(
    connection: asyncpg.Connection, *, user_id: uuid.UUID, expense_id: uuid.UUID
) -> str:
    expense: str | None = await connection.fetchval(_GET, user_id, expense_id)
    if expense is None:
        raise NotFound("No expense with this id.")
    return expense


CURRENT_AMOUNT = (
    "SELECT amount_minor, currency FROM expenses.expenses WHERE user_id = $1 AND id = $2 FOR UPDATE"
)


def update_statement(columns: list[str], *, tags: bool) -> str:
    """Sets ``columns`` ($3...) of the caller's ($1) expense $2, and with ``tags`` its tags (the
    last parameter); answers the expense as JSON, or nothing when there is no such expense."""
    assignments = ", ".join(
        ["updated_at = now()"] + [f"{column} = ${n}" for n, column in enumerate(columns, 3)]
    )
    update = (
        f"e AS (UPDATE expenses.expenses SET {assignments} "
        "WHERE user_id = $1 AND id = $2 RETURNING *)"
    )
    if not tags:
        return f"WITH {update} SELECT {EXPENSE_JSON.format(tags=TAGS_OF_E)} FROM e"
    tagged = tagging(
        expense="$2", names=f"${len(columns) + 3}", expense_exists="EXISTS (SELECT FROM e)"
    )
    return f"WITH {update}, {tagged} SELECT {EXPENSE_JSON.format(tags=_TAGGED_NAMES)} FROM e"


_REQUIRED = ("currency", "amount", "occurred_on", "description")
_SETTABLE = ("occurred_on", "description", "notes", "merchant", "category_id")


async def update_expense(
    connection: asyncpg.Connection,
    *,
    user_id: uuid.UUID,
    expense_id: uuid.UUID,
    body: ExpenseUpdate,
) -> str:
    """Only the fields sent change. A new amount or currency alone is read against the other,
    stored one, and new tags replace the old: then the row is read first, locked; otherwise one
    statement."""
    changes = {field: getattr(body, field) for field in body.model_fields_set}
    if not changes:  # the expense as it is: a write would date it and the month's totals now
        return await get_expense(connection, user_id=user_id, expense_id=expense_id)
    refuse_nulls(changes, _REQUIRED)
    columns: list[str] = []
    values: list[object] = []
    # Only a read before the write needs a transaction: one statement is atomic on its own. The
    # tags are replaced by a delete and an insert that see their statement's snapshot: two
    # replacements at once would each keep the other's links, unless the second waits for the
    # first on the row's lock before its statement begins.
    reads_amount = ("currency" in changes) != ("amount" in changes)
    locks_first = reads_amount or "tags" in changes
    async with connection.transaction() if locks_first else nullcontext():
        current = None
        if locks_first:
            current = await connection.fetchrow(CURRENT_AMOUNT, user_id, expense_id)
            if current is None:
                raise NotFound("No expense with this id.")
        if "currency" in changes or "amount" in changes:
            currency, amount = changes.get("currency"), changes.get("amount")
            if current is not None and reads_amount:
                # One of the two was sent: the other is read from the row.
                if amount is None:
                    amount = _amount_in(current, currency=changes["currency"])
                currency = currency or current["currency"]
            try:
                # Both are set by now: sent (null is refused above) or read from the row.
                stored = money.stored(amount, currency)  # type: ignore[arg-type]
            except ValueError as exc:
                raise ValidationProblem.of_field("body.amount", str(exc), "amount") from None
            columns += stored
            values += stored.values()
        if {"charged_amount", "charged_currency"} & changes.keys():
            if not {"charged_amount", "charged_currency"} <= changes.keys():
                raise ValidationProblem.of_field(
                    "body.charged_currency",
                    "charged_amount and charged_currency go together.",
                    "charged",
                )
            charged = charged_columns(changes["charged_amount"], changes["charged_currency"])
            columns += charged
            values += charged.values()
        for field in _SETTABLE:
            if field in changes:
                columns.append(field)
                values.append(changes[field])
        if "tags" in changes:
            values.append(changes["tags"])
        sql = update_statement(columns, tags="tags" in changes)
        expense = await _write(connection, sql, user_id, expense_id, *values)
        if expense is None:
            raise NotFound("No expense with this id.")
    EXPENSES_UPDATED.inc()
    return expense


def _amount_in(current: asyncpg.Record, *, currency: str) -> str:
    """The stored amount, its currency changed alone, as the same amount in the new one (12.00
    EUR is 12 JPY): never its minor units read again. One that does not fit is the currency's
    fault, the field sent."""
    try:
        minor = money.rescale(current["amount_minor"], current["currency"], currency)
    except ValueError as exc:
        stored = money.format_amount(current["amount_minor"], current["currency"])
        raise ValidationProblem.of_field(
            "body.currency",
            f"The expense's amount {stored} {current['currency']} does not fit: {exc}. "
            f"Send the amount in {currency} with it.",
            "amount",
        ) from None
    return money.format_amount(minor, currency)


async def delete_expense(
    connection: asyncpg.Connection, *, user_id: uuid.UUID, expense_id: uuid.UUID
) -> None:
    if await connection.execute(DELETE, user_id, expense_id) != "DELETE 1":
        raise NotFound("No expense with this id.")
    EXPENSES_DELETED.inc()


_PAGE_LIST, _PAGE_KEYS = "expenses", (date.fromisoformat, uuid.UUID)


def page_statement(
    *, user_id: uuid.UUID, filters: ExpenseFilter, after: list[Any] | None, limit: int
) -> tuple[str, list[object]]:
    """The statement of a page and its parameters: up to ``limit`` + 1 rows (JSON, then the
    sort key), newest first, past the key ``after``."""
    args: list[object] = [user_id]
    where = filters.where(args)
    if after is not None:
        args += after
        where += f" AND (e.occurred_on, e.id) < (${len(args) - 1}, ${len(args)})"
    args.append(limit + 1)
    sql = (
        f"SELECT {EXPENSE_JSON.format(tags=TAGS_OF_E)}, e.occurred_on, e.id "
        f"FROM expenses.expenses e WHERE {where} "
        f"ORDER BY e.occurred_on DESC, e.id DESC LIMIT ${len(args)}"
    )
    return sql, args


def page_json(rows: list[asyncpg.Record], *, limit: int) -> str:
    more = len(rows) > limit
    last = rows[limit - 1] if more else None
    return json_page(
        [row[0] for row in rows[:limit]],
        list_name=_PAGE_LIST,
        next_key=[last[1].isoformat(), str(last[2])] if last is not None else None,
    )


async def fetch_page(
    connection: asyncpg.Connection,
    *,
    user_id: uuid.UUID,
    filters: ExpenseFilter,
    after: list[Any] | None,
    limit: int,
) -> list[asyncpg.Record]:
    """The rows of page_statement. A text search is planned for its own word on every call: the
    plan PostgreSQL keeps for a prepared statement once it stops planning each call reads newest
    first whatever the word, all of a user's rows for a word in few or none of them
    (docs/expenses.md)."""
    sql, args = page_statement(user_id=user_id, filters=filters, after=after, limit=limit)
    if filters.q is None:
        return await connection.fetch(sql, *args)
    async with connection.transaction(readonly=True):
        await connection.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        return await connection.fetch(sql, *args)


async def merge_search_pending_list(connection: asyncpg.Connection) -> int:
    """Moves the words of rows written since the last merge from the trigram index's pending
    list into the index itself, as PostgreSQL does once the list is full (1 MB, migration 0016)
    inside whichever write fills it: every search reads the list whole, so that searches after
    a burst of writes are not slower for it (docs/expenses.md). Answers the pages merged."""
    merged: int = await connection.fetchval(
        "SELECT gin_clean_pending_list('expenses.ix_expenses_user_search'::regclass)"
    )
    return merged


def matchable(*, filters: ExpenseFilter) -> ExpenseFilter:
    """The filters, when they can match something: a last day before the first, or a highest
    amount below the lowest, is refused by name (the range in every service's words), where it
    would answer an empty list as if there were nothing to show."""
    errors = reversed_range(from_=filters.from_, to=filters.to)
    if (
        filters.min_amount is not None
        and filters.max_amount is not None
        and filters.max_amount < filters.min_amount
    ):
        errors.append(
            {
                "field": "query.max_amount",
                "message": "Must not be below the lowest amount.",
                "type": "range",
            }
        )
    if errors:
        raise ValidationProblem(errors)
    return filters


async def list_expenses(
    connection: asyncpg.Connection,
    *,
    user_id: uuid.UUID,
    filters: ExpenseFilter,
    paging: PageRequest,
) -> str:
    """A page (as Page[ExpenseOut] JSON), newest first: by (occurred_on, id) descending."""
    after = decode_cursor(paging.cursor, list_name=_PAGE_LIST, types=_PAGE_KEYS)
    rows = await fetch_page(
        connection, user_id=user_id, filters=filters, after=after, limit=paging.limit
    )
    return page_json(rows, limit=paging.limit)
