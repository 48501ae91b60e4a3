"""`expensetracker up --demo`: a demo account with a realistic year of spending.

Everything goes through the services' own logic (registration, the CSV import, budget
creation) with stable external ids and idempotency keys, so loading it again changes nothing.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import date, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from expensetracker.auth import service as auth
from expensetracker.auth.accounts import user_id_by_email
from expensetracker.auth.passwords import PasswordHasher
from expensetracker.expenses import transfer
from expensetracker.platform.config import Settings
from expensetracker.platform.idempotency import Creation, KeyedRequest
from expensetracker.reports import budgets as reports_budgets
from expensetracker.reports import routes as reports_routes
from expensetracker.reports.schemas import BudgetIn

EMAIL = "demo@example.org"
PASSWORD = "demo-expenses-2026"  # noqa: S105 - the published password of a demo account

# (category, merchants, typical amounts in EUR, times per month)
HABITS = [
    ("Groceries", ["Fresh Market", "Corner Shop", "Bio Store"], (18, 95), 8),
    ("Restaurants", ["Trattoria Roma", "Noodle Bar", "Café Central"], (12, 60), 4),
    ("Public transport", ["City Transit"], (2.5, 3.5), 10),
    ("Fuel", ["Shell", "Aral"], (45, 80), 1),
    ("Entertainment", ["Cinema Star", "Concert Hall", "Bookshop"], (9, 45), 2),
    ("Health", ["Pharmacy"], (6, 40), 1),
    ("Shopping", ["Online Store", "Department Store"], (15, 120), 2),
]
MONTHLY = [
    ("Rent", "Landlord", "950.00", 1),
    ("Utilities", "Power & Water Co", "120.00", 5),
    ("Entertainment", "Streaming Service", "12.99", 12),
]


def _row(
    when: date,
    amount: str,
    currency: str,
    what: str,
    category: str,
    tags: str,
    external_id: str,
    charged: str = "",
) -> tuple[object, ...]:
    """A CSV row (transfer.COLUMNS) of ``what``, its description and merchant; ``charged``: what
    the card took in euros, when given."""
    return (
        when,
        amount,
        currency,
        what,
        "",
        what,
        category,
        tags,
        external_id,
        charged,
        "EUR" if charged else "",
    )


def year_of_spending(today: date) -> str:
    rng = random.Random(2026)  # noqa: S311 - made-up spending, the same year every time
    start = today.replace(day=1) - timedelta(days=365)
    rows: list[tuple[object, ...]] = [transfer.COLUMNS]
    n = 0
    month = start.replace(day=1)
    while month <= today:
        for category, merchant, amount, day in MONTHLY:
            when = month.replace(day=day)
            if start <= when <= today:
                rows.append(_row(when, amount, "EUR", merchant, category, "fixed", f"demo-{n}"))
                n += 1
        for category, merchants, (low, high), per_month in HABITS:
            for _ in range(per_month):
                when = month + timedelta(days=rng.randrange(28))
                if start <= when <= today:
                    merchant = rng.choice(merchants)
                    amount = f"{rng.uniform(low, high):.2f}"
                    rows.append(_row(when, amount, "EUR", merchant, category, "", f"demo-{n}"))
                    n += 1
        month = (month + timedelta(days=32)).replace(day=1)
    # A week abroad, in another currency: sums are per currency. The card statement gave what two
    # of them cost in euros (the charged amount); the third waits for a rate.
    trip = today - timedelta(days=120)
    abroad = [("Hotel", "48000", "295.80"), ("Sushi", "3200", ""), ("Train", "14170", "87.30")]
    for i, (what, amount, charged) in enumerate(abroad):
        rows.append(
            _row(
                trip + timedelta(days=i),
                amount,
                "JPY",
                what,
                "Travel",
                "japan",
                f"demo-jp-{i}",
                charged,
            )
        )
    return "".join(",".join(str(value) for value in row) + "\n" for row in rows)


async def _one_chunk(content: str) -> AsyncIterator[bytes]:
    yield content.encode()


async def load(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, *, today: date
) -> bool:
    """Loads the account (once); answers whether PASSWORD still signs in to it: it may have
    been changed since it was first loaded."""
    hasher = PasswordHasher(settings)
    async with sessionmaker() as session:
        await auth.register(
            session, email=EMAIL, password=PASSWORD, display_name="Demo", hasher=hasher
        )
    async with sessionmaker() as session:
        user_id = await user_id_by_email(session, EMAIL)
        assert user_id is not None  # registered just above
        await transfer.import_file(
            session, user_id=user_id, chunks=_one_chunk(year_of_spending(today))
        )
    async with sessionmaker() as session:
        rows = await session.execute(
            text("SELECT name, category_id FROM expenses.categories_v1 WHERE user_id = :u"),
            {"u": user_id},
        )
        categories = {name: category_id for name, category_id in rows}
    starts = (today.replace(day=1) - timedelta(days=180)).replace(day=1).strftime("%Y-%m")
    for name, category, amount, rollover in [
        ("Food", "Food", "650.00", True),
        ("Going out", "Entertainment", "120.00", False),
        ("Everything", None, "2200.00", False),
    ]:
        body = BudgetIn(
            name=name,
            category_id=categories.get(category),
            currency="EUR",
            amount=amount,
            rollover=rollover,
            starts=starts,
        )
        # Keyed as the budgets route keys a request, so that loading it again replays.
        keyed = KeyedRequest.to_endpoint(
            reports_routes.router, reports_routes.create_budget, key=f"demo-{name}"
        )
        async with sessionmaker() as session:
            await reports_budgets.create_budget(
                session, creation=Creation(user_id=user_id, keyed=keyed), body=body, today=today
            )
    async with sessionmaker() as session:
        return await auth.has_password(session, email=EMAIL, password=PASSWORD, hasher=hasher)
