"""Recurring expenses: rules whose occurrences become expenses when due.

Occurrence ``n`` of a rule is ``starts_on`` plus ``n`` periods; monthly and yearly rules keep
their day of the month, on the last day of shorter months (31 Jan, 28 Feb, 31 Mar...). The job
(:func:`materialise_due`) creates each due occurrence with the external id
``recurring:<rule>:<date>``, so running it twice, or on two replicas at once, creates nothing
twice.
"""

from __future__ import annotations

import calendar
import uuid
from datetime import date, timedelta

import structlog
from prometheus_client import Counter
from sqlalchemy import func, or_, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from expensetracker.expenses.models import Category, Expense, RecurringRule, idempotency_keys
from expensetracker.expenses.owners import create_for_owner
from expensetracker.expenses.schemas import RecurringCreate, RecurringOut
from expensetracker.expenses.shared import check_category, distinct_tag_names, set_tags
from expensetracker.platform import idempotency, money
from expensetracker.platform.db import delete_owned, lock_until_commit
from expensetracker.platform.errors import Conflict
from expensetracker.platform.pagination import Page, PageRequest, keyset_page
from expensetracker.platform.tables import time_ordered_id

log = structlog.get_logger(__name__)

MATERIALISED = Counter(
    "expensetracker_recurring_expenses_created_total", "Expenses created from recurring rules."
)
# Bounds on the work one request or one run does; what is left stays due for the next run.
# A weekly rule starting a year ago (the earliest start allowed) has 53 past occurrences.
MAX_OCCURRENCES_PER_REQUEST = 60
MAX_OCCURRENCES_PER_RULE = 60  # per maintenance run
MAX_OCCURRENCES_PER_RUN = 2000
MAX_RULES_PER_USER = 100


def occurrence(starts_on: date, frequency: str, n: int) -> date:
    if frequency == "weekly":
        return starts_on + timedelta(weeks=n)
    months = n if frequency == "monthly" else 12 * n
    year, month = divmod(starts_on.month - 1 + months, 12)
    year, month = starts_on.year + year, month + 1
    return date(year, month, min(starts_on.day, calendar.monthrange(year, month)[1]))


def next_due(rule: RecurringRule) -> date | None:
    due = occurrence(rule.starts_on, rule.frequency, rule.done)
    return None if rule.ends_on is not None and due > rule.ends_on else due


async def materialise_due(
    session: AsyncSession, *, today: date, limit: int = MAX_OCCURRENCES_PER_RUN
) -> int:
    """Creates occurrences due by ``today``, at most ``limit`` (and MAX_OCCURRENCES_PER_RULE per
    rule), the longest overdue first; returns how many expenses were created. What is left
    stays due for the next run. Rules being handled by another replica right now are skipped
    (SKIP LOCKED), and those whose category is being deleted."""
    created = 0
    async with session.begin():
        due = RecurringRule.next_due_on <= today
        # The categories first, as a deletion takes them before it clears the rules' (which
        # waits for the rule's lock): holding a rule and then waiting for its category would
        # deadlock with it. One being deleted is skipped; its rules are due at the next run.
        categories = (
            await session.execute(
                select(Category.user_id, Category.id)
                .where(
                    tuple_(Category.user_id, Category.id).in_(
                        select(RecurringRule.user_id, RecurringRule.category_id)
                        .where(due)
                        .order_by(RecurringRule.next_due_on)
                        .limit(limit)
                    )
                )
                .with_for_update(read=True, key_share=True, skip_locked=True)
            )
        ).all()
        rule_category = tuple_(RecurringRule.user_id, RecurringRule.category_id)
        rules = await session.scalars(
            select(RecurringRule)
            .where(
                due,
                or_(
                    RecurringRule.category_id.is_(None),
                    rule_category.in_([tuple(row) for row in categories]),
                ),
            )
            .order_by(RecurringRule.next_due_on)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        for rule in rules:
            if created >= limit:
                break
            created += await materialise_rule(
                session,
                rule=rule,
                today=today,
                limit=min(MAX_OCCURRENCES_PER_RULE, limit - created),
            )
    if created:
        log.info("recurring_expenses_created", count=created)
    return created


async def materialise_rule(
    session: AsyncSession, *, rule: RecurringRule, today: date, limit: int
) -> int:
    """At most ``limit`` due occurrences of one rule, in the caller's transaction."""
    created = 0
    for _ in range(limit):
        due = next_due(rule)
        if due is None or due > today:
            break
        created += await _create_occurrence(session, rule=rule, due=due)
        rule.done += 1
    rule.next_due_on = next_due(rule)
    MATERIALISED.inc(created)
    return created


async def _create_occurrence(session: AsyncSession, *, rule: RecurringRule, due: date) -> int:
    expense_id = time_ordered_id()
    inserted = await session.scalar(
        pg_insert(Expense)
        .values(
            user_id=rule.user_id,
            id=expense_id,
            amount_minor=rule.amount_minor,
            currency=rule.currency,
            currency_exponent=rule.currency_exponent,
            occurred_on=due,
            description=rule.description,
            notes=rule.notes,
            merchant=rule.merchant,
            category_id=rule.category_id,
            external_id=f"recurring:{rule.id}:{due.isoformat()}",
        )
        .on_conflict_do_nothing(index_elements=[Expense.user_id, Expense.external_id])
        .returning(Expense.id)
    )
    if inserted is None:
        return 0
    await set_tags(session, user_id=rule.user_id, expense_id=expense_id, names=rule.tags)
    return 1


def _rule_out(rule: RecurringRule) -> RecurringOut:
    return RecurringOut(
        id=rule.id,
        amount=money.format_amount(rule.amount_minor, rule.currency),
        currency=rule.currency,
        description=rule.description,
        notes=rule.notes,
        merchant=rule.merchant,
        category_id=rule.category_id,
        tags=rule.tags,
        frequency=rule.frequency,
        starts_on=rule.starts_on,
        ends_on=rule.ends_on,
        next_due_on=rule.next_due_on,
        created_at=rule.created_at,
    )


async def _check_rule_count(session: AsyncSession, *, user_id: uuid.UUID) -> None:
    """At most MAX_RULES_PER_USER rules; concurrent creations of one user count one at a time."""
    await lock_until_commit(session, f"expenses.recurring:{user_id}")
    count = await session.scalar(
        select(func.count()).select_from(RecurringRule).where(RecurringRule.user_id == user_id)
    )
    assert count is not None  # count() answers one row
    if count >= MAX_RULES_PER_USER:
        raise Conflict(
            f"You have {MAX_RULES_PER_USER} recurring expenses already; delete one first."
        )


async def create_rule(
    session: AsyncSession, *, creation: idempotency.Creation, body: RecurringCreate, today: date
) -> RecurringOut | idempotency.Stored:
    """Creates the rule and, at once, the occurrences already due."""

    async def create() -> RecurringOut:
        await check_category(session, user_id=creation.user_id, category_id=body.category_id)
        await _check_rule_count(session, user_id=creation.user_id)
        rule = RecurringRule(
            user_id=creation.user_id,
            id=time_ordered_id(),
            **money.stored(body.amount, body.currency),
            description=body.description,
            notes=body.notes,
            merchant=body.merchant,
            category_id=body.category_id,
            tags=await distinct_tag_names(session, names=body.tags),
            frequency=body.frequency,
            starts_on=body.starts_on,
            ends_on=body.ends_on,
            done=0,
        )
        rule.next_due_on = next_due(rule)
        session.add(rule)
        await session.flush()
        await materialise_rule(session, rule=rule, today=today, limit=MAX_OCCURRENCES_PER_REQUEST)
        await session.flush()
        await session.refresh(rule)
        return _rule_out(rule)

    return await create_for_owner(session, creation=creation, body=body, create=create)


async def list_rules(
    session: AsyncSession, *, user_id: uuid.UUID, paging: PageRequest
) -> Page[RecurringOut]:
    async with session.begin():
        return await keyset_page(
            session,
            select(RecurringRule).where(RecurringRule.user_id == user_id),
            list_name="recurring",
            keys=(RecurringRule.id,),
            types=(uuid.UUID,),
            paging=paging,
            item=_rule_out,
        )


_NO_RULE = "No recurring expense with this id."


async def delete_rule(session: AsyncSession, *, user_id: uuid.UUID, rule_id: uuid.UUID) -> None:
    """Stops the rule; the expenses it already created stay."""
    await delete_owned(session, RecurringRule, user_id=user_id, id=rule_id, missing=_NO_RULE)


async def run_maintenance(sessionmaker: async_sessionmaker[AsyncSession], *, today: date) -> int:
    """The service's periodic work: due recurring expenses, expired idempotency keys."""
    async with sessionmaker() as session:
        created = await materialise_due(session, today=today)
    async with sessionmaker.begin() as session:
        await idempotency.purge_expired(session, idempotency_keys)
    return created
