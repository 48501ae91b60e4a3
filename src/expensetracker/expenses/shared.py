"""What the expenses modules (service.py, recurring.py, rules.py, transfer.py) build on: the
filter of a list or an export, the tags of an expense, the checks of a category, of a unique
name and of a partial update's nulls. Every query is scoped to the caller's user id."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from sqlalchemy import Row, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from expensetracker.expenses.models import Category
from expensetracker.platform.db import Db, fetch
from expensetracker.platform.errors import Conflict, ValidationProblem


async def flush_unique(
    session: AsyncSession, *, constraint: str, field: str, conflict: str
) -> None:
    """Flushes the session; a row breaking the unique ``constraint`` is a 409 saying
    ``conflict``, which names the body's ``field`` as a 422 names its fields (a form shows it
    there)."""
    try:
        await session.flush()
    except IntegrityError as exc:
        if constraint in str(exc.orig):
            errors = [{"field": f"body.{field}", "message": conflict, "type": "unique"}]
            raise Conflict(conflict, errors=errors) from None
        raise


def refuse_nulls(changes: Mapping[str, object], fields: Iterable[str]) -> None:
    """A partial update's ``null`` clears an optional field: none of these ``fields``."""
    for name in fields:
        if name in changes and changes[name] is None:
            raise ValidationProblem.of_field(f"body.{name}", "This field cannot be null.", "null")


def not_your_category() -> ValidationProblem:
    # The same answer for another user's category as for none at all.
    return ValidationProblem.of_field("body.category_id", "Not one of your categories.", "category")


async def lock_category(
    session: AsyncSession, *, user_id: uuid.UUID, category_id: uuid.UUID
) -> Row[uuid.UUID, uuid.UUID | None] | None:
    """The user's category (``id``, ``parent_id``), or None when they have none of this id;
    locked against deletion until the transaction ends (FOR KEY SHARE, as a foreign key's own
    check locks it): a deletion under way ends first (and the category is gone), or waits for
    the rows that refer to it (and then clears their reference)."""
    return (
        await session.execute(
            select(Category.id, Category.parent_id)
            .where(Category.user_id == user_id, Category.id == category_id)
            .with_for_update(read=True, key_share=True)
        )
    ).one_or_none()


async def lock_categories(
    session: AsyncSession, *, user_id: uuid.UUID
) -> Sequence[Row[uuid.UUID, str]]:
    """All the user's categories (``id``, ``name``), locked as ``lock_category`` locks one: for
    work that reads them first and writes rows referring to them later (an import, a run of the
    rules). Read the rules after this: a deletion that ended first has cleared theirs."""
    return (
        await session.execute(
            select(Category.id, Category.name)
            .where(Category.user_id == user_id)
            .with_for_update(read=True, key_share=True)
        )
    ).all()


async def check_category(
    session: AsyncSession, *, user_id: uuid.UUID, category_id: uuid.UUID | None
) -> None:
    """A category that a row about to be written refers to: the user's, and kept until then."""
    if category_id is None:
        return
    if await lock_category(session, user_id=user_id, category_id=category_id) is None:
        raise not_your_category()


# The tag names of an expense `e`, sorted.
TAGS_OF_E = (
    "ARRAY(SELECT t.name FROM expenses.expense_tags et JOIN expenses.tags t "
    "ON t.user_id = et.user_id AND t.id = et.tag_id "
    "WHERE et.user_id = e.user_id AND et.expense_id = e.id ORDER BY t.name)"
)


# Names given for an expense ($names) -> their tags, created when missing, and the expense
# ($expense) linked to exactly those. PostgreSQL's lower() alone decides which names are the same
# tag (as the unique index does): matching in Python disagreed with it for names such as
# "İstanbul". The first spelling given names a new tag. A tag created meanwhile by a concurrent
# request is not in this statement's snapshot: the conflict finds it (DO UPDATE returns it).
# Used as common table expressions; `tagged` holds the tags (id, name) of the expense.
_TAGGING = """
given AS ({first_spellings}),
known AS (
    SELECT t.id, t.name FROM expenses.tags t
    WHERE t.user_id = $1 AND lower(t.name) IN (SELECT lower(name) FROM given)
),
added AS (
    INSERT INTO expenses.tags AS t (user_id, id, name)
    SELECT $1, gen_random_uuid(), g.name FROM given g
    WHERE lower(g.name) NOT IN (SELECT lower(name) FROM known)
    ON CONFLICT (user_id, lower(name)) DO UPDATE SET name = t.name
    RETURNING t.id, t.name
),
tagged AS (SELECT id, name FROM known UNION ALL SELECT id, name FROM added),
unlinked AS (
    DELETE FROM expenses.expense_tags et
    WHERE et.user_id = $1 AND et.expense_id = {expense} AND et.tag_id NOT IN (SELECT id FROM tagged)
),
linked AS (
    INSERT INTO expenses.expense_tags (user_id, expense_id, tag_id)
    SELECT $1, {expense}, id FROM tagged
    ON CONFLICT DO NOTHING
)"""


# The first spelling of each name in {names} (name, position), as PostgreSQL's lower() tells
# them apart.
_FIRST_SPELLINGS = """
SELECT DISTINCT ON (lower(g.name)) g.name, g.position
FROM unnest({names}::text[]) WITH ORDINALITY AS g(name, position)
WHERE {expense_exists}
ORDER BY lower(g.name), g.position"""


def tagging(*, expense: str, names: str, expense_exists: str = "true") -> str:
    first_spellings = _FIRST_SPELLINGS.format(names=names, expense_exists=expense_exists)
    return _TAGGING.format(expense=expense, first_spellings=first_spellings)


async def distinct_tag_names(session: AsyncSession, *, names: list[str]) -> list[str]:
    """``names`` without a second spelling of one tag, in their order: what a rule keeps, so
    that it shows the tags it adds as the expenses will have them."""
    if not names:
        return []  # no round trip for a rule without tags
    first_spellings = _FIRST_SPELLINGS.format(names="CAST(:names AS text[])", expense_exists="true")
    statement = f"SELECT array_agg(name ORDER BY position) FROM ({first_spellings}) AS s"
    return list(await session.scalar(text(statement), {"names": names}))


async def set_tags(db: Db, *, user_id: uuid.UUID, expense_id: uuid.UUID, names: list[str]) -> None:
    """Links the expense to exactly the named tags (see _TAGGING), inside the caller's
    transaction."""
    await fetch(db, f"WITH {tagging(expense='$2', names='$3')} SELECT", user_id, expense_id, names)


@dataclass(frozen=True, kw_only=True)
class ExpenseFilter:
    """What a list or an export asks for: every given field must match."""

    from_: date | None = None
    to: date | None = None
    category_id: uuid.UUID | None = None  # a category includes its subcategories
    tag: str | None = None
    q: str | None = None
    min_amount: Decimal | None = None
    max_amount: Decimal | None = None
    currency: str | None = None

    def where(self, args: list[object]) -> str:
        """The conditions on expenses `e` (after ``args``, the caller's id first), appending
        their parameters to ``args``. Only the filters given appear, so that each combination
        is its own prepared statement, with a plan that stays good as a generic plan (but a
        text search's: service.fetch_page plans it for its word on every call)."""
        conditions = ["e.user_id = $1"]

        def parameter(value: object) -> str:
            args.append(value)
            return f"${len(args)}"

        if self.from_ is not None:
            conditions.append(f"e.occurred_on >= {parameter(self.from_)}")
        if self.to is not None:
            conditions.append(f"e.occurred_on <= {parameter(self.to)}")
        if self.category_id is not None:
            category = parameter(self.category_id)
            conditions.append(
                "e.category_id IN (SELECT c.id FROM expenses.categories c WHERE c.user_id = $1 "
                f"AND (c.id = {category} OR c.parent_id = {category}))"
            )
        if self.tag is not None:
            conditions.append(
                "EXISTS (SELECT FROM expenses.expense_tags et JOIN expenses.tags t "
                "ON t.user_id = et.user_id AND t.id = et.tag_id WHERE et.user_id = $1 "
                f"AND et.expense_id = e.id AND lower(t.name) = lower({parameter(self.tag)}))"
            )
        if self.q is not None:  # served by the trigram index on search_text, lower-cased
            escaped = self.q.replace("/", "//").replace("%", "/%").replace("_", "/_")
            conditions.append(f"e.search_text LIKE lower({parameter(f'%{escaped}%')}) ESCAPE '/'")
        scale = "10::numeric ^ e.currency_exponent"
        if self.min_amount is not None:
            conditions.append(f"e.amount_minor >= {parameter(self.min_amount)}::numeric * {scale}")
        if self.max_amount is not None:
            conditions.append(f"e.amount_minor <= {parameter(self.max_amount)}::numeric * {scale}")
        if self.currency is not None:
            conditions.append(f"e.currency = {parameter(self.currency)}")
        return " AND ".join(conditions)
