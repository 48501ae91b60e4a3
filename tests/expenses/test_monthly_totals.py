"""The monthly totals behind reports stay equal to the sum of the expenses, whatever happens
to them (property-based: random sequences of inserts, updates, deletes)."""

from __future__ import annotations

import uuid
from datetime import date

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.database import connected
from tests.helpers.expenses import ACTUAL, EXPECTED

pytestmark = pytest.mark.database

CURRENCIES = [("EUR", 2), ("JPY", 0), ("KWD", 3)]

operation = st.one_of(
    st.tuples(
        st.just("insert"),
        st.integers(1, 10**7),
        st.sampled_from(CURRENCIES),
        st.dates(date(2025, 11, 1), date(2026, 3, 31)),
        st.integers(0, 3),
    ),
    st.tuples(st.just("update_amount"), st.integers(0, 30), st.integers(1, 10**7)),
    st.tuples(st.just("move"), st.integers(0, 30), st.dates(date(2025, 11, 1), date(2026, 3, 31))),
    st.tuples(st.just("recategorise"), st.integers(0, 30), st.integers(0, 3)),
    st.tuples(st.just("delete"), st.integers(0, 30)),
    st.tuples(st.just("delete_category"), st.integers(1, 3)),
)


async def apply(connection: asyncpg.Connection, user: uuid.UUID, categories: list, op: tuple):
    ids = [
        r[0]
        for r in await connection.fetch(
            "SELECT id FROM expenses.expenses WHERE user_id = $1 ORDER BY id", user
        )
    ]
    pick = (lambda i: ids[i % len(ids)]) if ids else None
    kind = op[0]
    if kind == "insert":
        _, amount, (currency, exponent), day, category = op
        await connection.execute(
            "INSERT INTO expenses.expenses (user_id, id, amount_minor, currency, "
            "currency_exponent, occurred_on, description, category_id) "
            "VALUES ($1, gen_random_uuid(), $2, $3, $4, $5, 'x', $6)",
            user,
            amount,
            currency,
            exponent,
            day,
            categories[category],
        )
    elif pick is None:
        return
    elif kind == "update_amount":
        await connection.execute(
            "UPDATE expenses.expenses SET amount_minor = $3 WHERE user_id = $1 AND id = $2",
            user,
            pick(op[1]),
            op[2],
        )
    elif kind == "move":
        await connection.execute(
            "UPDATE expenses.expenses SET occurred_on = $3 WHERE user_id = $1 AND id = $2",
            user,
            pick(op[1]),
            op[2],
        )
    elif kind == "recategorise":
        await connection.execute(
            "UPDATE expenses.expenses SET category_id = $3 WHERE user_id = $1 AND id = $2",
            user,
            pick(op[1]),
            categories[op[2]],
        )
    elif kind == "delete":
        await connection.execute(
            "DELETE FROM expenses.expenses WHERE user_id = $1 AND id = $2", user, pick(op[1])
        )
    elif kind == "delete_category" and categories[op[1]] is not None:
        # The foreign key sets category_id to null on the expenses: an UPDATE the trigger sees.
        await connection.execute(
            "DELETE FROM expenses.categories WHERE user_id = $1 AND id = $2",
            user,
            categories[op[1]],
        )
        categories[op[1]] = None


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations=st.lists(operation, max_size=25), bulk=st.integers(0, 50))
async def test_monthly_totals_match_the_expenses(
    database_url: str, operations: list, bulk: int
) -> None:
    user = uuid.uuid4()  # a user of this example alone: examples share the database
    categories: list[uuid.UUID | None] = [None, uuid.uuid4(), uuid.uuid4(), uuid.uuid4()]
    async with connected(database_url) as connection:
        await connection.execute("INSERT INTO expenses.owners (user_id) VALUES ($1)", user)
        for category in categories[1:]:
            await connection.execute(
                "INSERT INTO expenses.categories (user_id, id, name) VALUES ($1, $2, $3)",
                user,
                category,
                category.hex[:8],
            )
        # One multi-row statement too, as an import does.
        await connection.execute(
            "INSERT INTO expenses.expenses (user_id, id, amount_minor, currency, "
            "currency_exponent, occurred_on, description, category_id) "
            "SELECT $1, gen_random_uuid(), n * 7, 'EUR', 2, date '2026-01-01' + n % 60, 'bulk', "
            "CASE WHEN n % 2 = 0 THEN $2::uuid END FROM generate_series(1, $3) n",
            user,
            categories[1],
            bulk,
        )
        for op in operations:
            await apply(connection, user, categories, op)
        expected = [tuple(r) for r in await connection.fetch(EXPECTED, user)]
        actual = [tuple(r) for r in await connection.fetch(ACTUAL, user)]
        assert actual == expected
        # Deleting the user's data leaves no totals behind.
        await connection.execute("DELETE FROM expenses.owners WHERE user_id = $1", user)
        assert await connection.fetch(ACTUAL, user) == []
