"""Categorisation rules: per user, in an explicit order, the first rule whose pattern matches an
expense's description or merchant (and whose amount range, if any, holds its amount) sets the
category and adds tags. Rules run on every import (transfer.py) and on demand over the
uncategorised expenses (``apply_rules``).

Patterns are at most 200 characters: ``contains`` is a case-insensitive substring, ``regex`` is
RE2 syntax (google-re2): linear time in the text, no backreferences or lookarounds, so no
pattern can backtrack catastrophically; its compiled program is bounded too.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import re2
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from expensetracker.expenses.models import CategorisationRule
from expensetracker.expenses.owners import create_for_owner
from expensetracker.expenses.schemas import (
    POSITION_MAX,
    TAG_SEPARATOR,
    TAGS_MAX,
    RuleChange,
    RuleCreate,
    RuleOut,
    RulesApplied,
    RuleUpdate,
)
from expensetracker.expenses.shared import (
    check_category,
    distinct_tag_names,
    flush_unique,
    lock_categories,
    refuse_nulls,
)
from expensetracker.platform import idempotency, money
from expensetracker.platform.db import delete_owned, get_owned, lock_until_commit
from expensetracker.platform.errors import Conflict, ValidationProblem
from expensetracker.platform.pagination import Page, PageRequest, keyset_page

MAX_RULES = 100
REGEX_MEMORY_BYTES = 256 * 1024
REPORTED_CHANGES = 100
APPLY_BATCH = 5000
# Flushes a created or changed rule; a position another rule has is a 409.
_flush_unique_position = partial(
    flush_unique,
    constraint="categorisation_rules_position_key",
    field="position",
    conflict="Another of your rules has this position.",
)


@dataclass(frozen=True)
class Rule:
    """A rule ready to match: its pattern compiled, its amounts in minor units."""

    id: uuid.UUID
    field: str
    contains: str | None  # casefolded; None for a regex
    regex: Any  # a compiled re2 pattern, or None
    currency: str | None
    min_minor: int | None
    max_minor: int | None
    category_id: uuid.UUID | None
    tags: tuple[str, ...]

    def matches(
        self, *, description: str, merchant: str | None, amount_minor: int, currency: str
    ) -> bool:
        if self.currency is not None:
            if currency != self.currency:
                return False
            if self.min_minor is not None and amount_minor < self.min_minor:
                return False
            if self.max_minor is not None and amount_minor > self.max_minor:
                return False
        texts = {"any": (description, merchant), "description": (description,)}.get(
            self.field, (merchant,)
        )
        for text in texts:
            if not text:
                continue
            if self.regex is not None:
                if self.regex.search(text) is not None:
                    return True
            # contains is set whenever regex is not.
            elif self.contains in text.casefold():  # type: ignore[operator]
                return True
        return False


def first_match(
    rules: Sequence[Rule],
    *,
    description: str,
    merchant: str | None,
    amount_minor: int,
    currency: str,
) -> Rule | None:
    """The first rule, in their order, that matches: the one that applies."""
    for rule in rules:
        if rule.matches(
            description=description, merchant=merchant, amount_minor=amount_minor, currency=currency
        ):
            return rule
    return None


def _regex(pattern: str) -> Any:
    options = re2.Options()
    options.case_sensitive = False
    options.max_mem = REGEX_MEMORY_BYTES
    options.log_errors = False
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ValidationProblem.of_field(
            "body.pattern", f"Not an RE2 regular expression: {reason}.", "pattern"
        ) from None


def _ready(row: CategorisationRule) -> Rule:
    regex = _regex(row.pattern) if row.match == "regex" else None
    return Rule(
        id=row.id,
        field=row.field,
        contains=row.pattern.casefold() if regex is None else None,
        regex=regex,
        currency=row.currency,
        min_minor=row.min_amount_minor,
        max_minor=row.max_amount_minor,
        category_id=row.category_id,
        tags=tuple(row.tags),
    )


async def load_rules(session: AsyncSession, *, user_id: uuid.UUID) -> list[Rule]:
    """The user's rules in their order, ready to match. A rule whose category was deleted and
    that adds no tags does nothing: it is left out, or as the first match it would keep the
    rules after it from applying."""
    rows = await session.scalars(
        select(CategorisationRule)
        .where(CategorisationRule.user_id == user_id)
        .order_by(CategorisationRule.position)
    )
    return [_ready(row) for row in rows if row.category_id is not None or row.tags]


# --- the API's rules ---------------------------------------------------------------------------


def _out(row: CategorisationRule) -> RuleOut:
    def amount(minor: int | None) -> str | None:
        return None if minor is None else money.format_amount(minor, row.currency or "")

    return RuleOut(
        id=row.id,
        position=row.position,
        field=row.field,
        match=row.match,
        pattern=row.pattern,
        currency=row.currency,
        min_amount=amount(row.min_amount_minor),
        max_amount=amount(row.max_amount_minor),
        category_id=row.category_id,
        tags=row.tags,
        created_at=row.created_at,
    )


def _range_needs_currency() -> ValidationProblem:
    # Sent without one, or left without one when the currency is cleared.
    return ValidationProblem.of_field(
        "body.currency", "An amount range needs a currency.", "currency"
    )


def _set_checked(row: CategorisationRule, values: dict[str, Any]) -> None:
    """Sets ``values`` (a body's fields, amounts as decimal strings) on ``row``, then checks the
    whole: a pattern that compiles, amounts that fit the currency, in order, and something to
    do."""
    for name in ("position", "field", "match", "pattern", "currency", "category_id", "tags"):
        if name in values:
            setattr(row, name, values[name])
    for name in ("min_amount", "max_amount"):
        if name in values:
            amount = values[name]
            if amount is not None and row.currency is None:
                raise _range_needs_currency()
            try:
                minor = None if amount is None else money.parse_amount(amount, row.currency or "")
            except ValueError as exc:
                raise ValidationProblem.of_field(f"body.{name}", str(exc), "amount") from None
            setattr(row, f"{name}_minor", minor)
    has_range = row.min_amount_minor is not None or row.max_amount_minor is not None
    if row.currency is None and has_range:
        raise _range_needs_currency()
    if (
        row.min_amount_minor is not None
        and row.max_amount_minor is not None
        and row.min_amount_minor > row.max_amount_minor
    ):
        # The bound sent is the one at fault: a new lowest above the stored highest.
        if "max_amount" not in values:
            raise ValidationProblem.of_field(
                "body.min_amount", "must not be above the highest amount", "amount"
            )
        raise ValidationProblem.of_field(
            "body.max_amount", "must not be below the lowest amount", "amount"
        )
    if row.match == "regex":
        _regex(row.pattern)
    if row.category_id is None and not row.tags:
        raise ValidationProblem.of_field(
            "body.category_id", "A rule sets a category, adds tags, or both.", "missing"
        )


async def create_rule(
    session: AsyncSession, *, creation: idempotency.Creation, body: RuleCreate
) -> RuleOut | idempotency.Stored:
    async def create() -> RuleOut:
        # Concurrent creations of one user count and number their rules one at a time.
        await lock_until_commit(session, f"expenses.rules:{creation.user_id}")
        count, last = (
            await session.execute(
                select(func.count(), func.max(CategorisationRule.position)).where(
                    CategorisationRule.user_id == creation.user_id
                )
            )
        ).one()
        if count >= MAX_RULES:
            raise Conflict(f"You have {MAX_RULES} rules, the most there may be.")
        await check_category(session, user_id=creation.user_id, category_id=body.category_id)
        row = CategorisationRule(
            user_id=creation.user_id, min_amount_minor=None, max_amount_minor=None
        )
        values = body.model_dump()
        values["position"] = body.position or (last or 0) + 1
        if values["position"] > POSITION_MAX:
            # Past the last is past the highest there may be: one no request could give.
            message = f"Your last rule is at {POSITION_MAX:,}: give this one a free position."
            errors = [{"field": "body.position", "message": message, "type": "position"}]
            raise Conflict(message, errors=errors)
        values["tags"] = await distinct_tag_names(session, names=body.tags)
        _set_checked(row, values)
        session.add(row)
        await _flush_unique_position(session)
        await session.refresh(row)
        return _out(row)

    return await create_for_owner(session, creation=creation, body=body, create=create)


async def list_rules(
    session: AsyncSession, *, user_id: uuid.UUID, paging: PageRequest
) -> Page[RuleOut]:
    """One page of them, in their order (positions are unique per user)."""
    async with session.begin():
        return await keyset_page(
            session,
            select(CategorisationRule).where(CategorisationRule.user_id == user_id),
            list_name="rules",
            keys=(CategorisationRule.position,),
            types=(int,),
            paging=paging,
            item=_out,
        )


_NO_RULE = "No rule with this id."
_rule = partial(get_owned, model=CategorisationRule, missing=_NO_RULE)


async def get_rule(session: AsyncSession, *, user_id: uuid.UUID, rule_id: uuid.UUID) -> RuleOut:
    return _out(await _rule(session, user_id=user_id, id=rule_id))


async def update_rule(
    session: AsyncSession, *, user_id: uuid.UUID, rule_id: uuid.UUID, body: RuleUpdate
) -> RuleOut:
    async with session.begin():
        row = await _rule(session, user_id=user_id, id=rule_id, for_update=True)
        values = body.model_dump(include=body.model_fields_set)
        refuse_nulls(values, ("position", "field", "match", "pattern", "tags"))
        if "category_id" in values:
            await check_category(session, user_id=user_id, category_id=body.category_id)
        if "currency" in values:
            for name in ("min_amount", "max_amount"):
                if name not in values:
                    values[name] = _bound_in(row, name, currency=values["currency"])
        if body.tags is not None:
            values["tags"] = await distinct_tag_names(session, names=body.tags)
        _set_checked(row, values)
        await _flush_unique_position(session)
        return _out(row)


def _bound_in(row: CategorisationRule, name: str, *, currency: str | None) -> str | None:
    """The stored bound ``name``, not sent with a new currency, as the same amount in it (5.00
    EUR is 5 JPY): never its minor units read again. One that does not fit is the currency's
    fault, the field sent; without a currency, the bound is refused as sent with none."""
    minor: int | None = getattr(row, f"{name}_minor")
    if minor is None or row.currency is None:
        return None
    if currency is None:
        return money.format_amount(minor, row.currency)
    try:
        return money.format_amount(money.rescale(minor, row.currency, currency), currency)
    except ValueError as exc:
        stored = money.format_amount(minor, row.currency)
        raise ValidationProblem.of_field(
            "body.currency",
            f"The rule's {name} {stored} {row.currency} does not fit: {exc}. "
            f"Send {name} in {currency} with it.",
            "amount",
        ) from None


async def delete_rule(session: AsyncSession, *, user_id: uuid.UUID, rule_id: uuid.UUID) -> None:
    await delete_owned(session, CategorisationRule, user_id=user_id, id=rule_id, missing=_NO_RULE)


# --- on demand ---------------------------------------------------------------------------------


async def apply_rules(session: AsyncSession, *, user_id: uuid.UUID, dry_run: bool) -> RulesApplied:
    """Runs the rules over the user's uncategorised expenses (a category someone chose is never
    changed), oldest first: the first matching rule sets its category and adds its tags. A dry
    run reports the same and writes nothing."""
    matched = 0
    changes: list[RuleChange] = []
    async with session.begin():
        await lock_categories(session, user_id=user_id)
        rules = await load_rules(session, user_id=user_id)
        if not rules:
            return RulesApplied(matched=matched, dry_run=dry_run, changes=changes)
        connection = (await (await session.connection()).get_raw_connection()).driver_connection
        assert connection is not None  # an open session's connection has its driver's
        pending: list[tuple[uuid.UUID, Rule]] = []
        # The rules' tags as PostgreSQL's lower() spells them, as it compares tag names.
        lowered: dict[str, str] = dict(
            await connection.fetch(_LOWERED, sorted({tag for rule in rules for tag in rule.tags}))
        )
        async for row in connection.cursor(_UNCATEGORISED, user_id, prefetch=1000):
            rule = first_match(
                rules,
                description=row["description"],
                merchant=row["merchant"],
                amount_minor=row["amount_minor"],
                currency=row["currency"],
            )
            if rule is None:
                continue
            had = set(row["tag_names"])
            added = {lowered[tag] for tag in rule.tags} - had
            # A rule that sets no category and adds no tag the expense lacks would not change
            # it: neither reported nor written again. One whose tags would take the expense
            # past the most tags an expense has is left alone, as an import refuses that row.
            if (rule.category_id is None and not added) or len(had) + len(added) > TAGS_MAX:
                continue
            matched += 1
            if len(changes) < REPORTED_CHANGES:
                changes.append(
                    RuleChange(
                        expense_id=row["id"],
                        rule_id=rule.id,
                        description=row["description"],
                        category_id=rule.category_id,
                        tags=list(rule.tags),
                    )
                )
            if not dry_run:
                pending.append((row["id"], rule))
                if len(pending) == APPLY_BATCH:
                    await _write(connection, user_id=user_id, pending=pending)
                    pending.clear()
        if pending:
            await _write(connection, user_id=user_id, pending=pending)
    return RulesApplied(matched=matched, dry_run=dry_run, changes=changes)


async def _write(
    connection: Any, *, user_id: uuid.UUID, pending: list[tuple[uuid.UUID, Rule]]
) -> None:
    ids = [expense_id for expense_id, _ in pending]
    claimed = {
        row["id"]
        for row in await connection.fetch(
            _CLAIM_UNCATEGORISED, user_id, ids, [rule.category_id for _, rule in pending]
        )
    }
    tagged = [
        (expense_id, TAG_SEPARATOR.join(rule.tags))
        for expense_id, rule in pending
        if rule.tags and expense_id in claimed
    ]
    if tagged:
        expense_ids, tags = zip(*tagged, strict=True)
        await connection.execute(_NEW_TAGS, user_id, list(tags))
        await connection.execute(_LINK_TAGS, user_id, list(expense_ids), list(tags))


_LOWERED = "SELECT g, lower(g) FROM unnest($1::text[]) AS g"
# With the names of the tags the expense has, lower() as PostgreSQL compares them.
_UNCATEGORISED = """
    SELECT e.id, e.description, e.merchant, e.amount_minor, e.currency,
           ARRAY(SELECT lower(t.name) FROM expenses.expense_tags et
                 JOIN expenses.tags t ON t.user_id = et.user_id AND t.id = et.tag_id
                 WHERE et.user_id = $1 AND et.expense_id = e.id) AS tag_names
    FROM expenses.expenses e
    WHERE e.user_id = $1 AND e.category_id IS NULL ORDER BY e.occurred_on, e.id
"""
# The expenses still uncategorised as the rules' changes are written (rechecked on the row's
# latest version, after a person's change to it commits), with the matching rule's category if
# it sets one: the run changes these alone, a category chosen meanwhile stays.
_CLAIM_UNCATEGORISED = """
    UPDATE expenses.expenses e SET category_id = r.category_id, updated_at = now()
    FROM unnest($2::uuid[], $3::uuid[]) AS r(id, category_id)
    WHERE e.user_id = $1 AND e.id = r.id AND e.category_id IS NULL
    RETURNING e.id
"""
# A new tag is named by its first spelling; PostgreSQL's lower() decides which names are one.
_NEW_TAGS = """
    INSERT INTO expenses.tags (user_id, id, name)
    SELECT DISTINCT ON (lower(tag)) $1::uuid, gen_random_uuid(), tag
    FROM unnest($2::text[]) AS r(tags) CROSS JOIN unnest(string_to_array(r.tags, ';')) AS tag
    ORDER BY lower(tag)
    ON CONFLICT DO NOTHING
"""
_LINK_TAGS = """
    INSERT INTO expenses.expense_tags (user_id, expense_id, tag_id)
    SELECT DISTINCT $1::uuid, r.expense_id, t.id
    FROM unnest($2::uuid[], $3::text[]) AS r(expense_id, tags)
    CROSS JOIN unnest(string_to_array(r.tags, ';')) AS tag
    JOIN expenses.tags t ON t.user_id = $1::uuid AND lower(t.name) = lower(tag)
    ON CONFLICT DO NOTHING
"""
