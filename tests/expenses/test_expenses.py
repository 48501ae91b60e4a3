"""Expenses: money to the cent, validation that changes nothing, filters, isolation."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import UTC, date, datetime, time, timedelta

import httpx
import pytest

from expensetracker.expenses import service
from expensetracker.expenses.schemas import ExpenseCreate
from expensetracker.expenses.shared import ExpenseFilter
from expensetracker.platform import idempotency
from expensetracker.platform.pagination import PageRequest
from tests.helpers.apps import counter
from tests.helpers.database import connected
from tests.helpers.expenses import VALID, create, every_item
from tests.helpers.users import Account, signed_up

pytestmark = pytest.mark.database


async def listing(client: httpx.AsyncClient, account: Account, **params) -> list[dict]:
    response = await client.get("/api/v1/expenses", params=params, headers=account.headers)
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def count_rows(database_url: str) -> int:
    async with connected(database_url) as connection:
        return await connection.fetchval("SELECT count(*) FROM expenses.expenses")


async def test_create_read_update_delete(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    created = await create(client, account, tags=["work", "Food", "work"], merchant="Café")
    assert created["amount"] == "12.34"
    assert created["tags"] == ["Food", "work"]
    fetched = await client.get(f"/api/v1/expenses/{created['id']}", headers=account.headers)
    assert fetched.json() == created

    patched = await client.patch(
        f"/api/v1/expenses/{created['id']}",
        json={"amount": "1000", "currency": "JPY", "notes": "team", "tags": []},
        headers=account.headers,
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert (body["amount"], body["currency"], body["notes"], body["tags"]) == (
        "1000",
        "JPY",
        "team",
        [],
    )
    assert body["description"] == "Lunch with Sam"  # untouched
    cleared = await client.patch(
        f"/api/v1/expenses/{created['id']}", json={"notes": None}, headers=account.headers
    )
    assert cleared.json()["notes"] is None

    deleted = await client.delete(f"/api/v1/expenses/{created['id']}", headers=account.headers)
    assert deleted.status_code == 204
    gone = await client.get(f"/api/v1/expenses/{created['id']}", headers=account.headers)
    assert gone.status_code == 404


@pytest.mark.parametrize(
    ("amount", "currency", "stored"),
    [
        ("0.01", "EUR", "0.01"),
        ("1234", "JPY", "1234"),
        ("1.005", "KWD", "1.005"),
        ("7", "EUR", "7.00"),
    ],
)
async def test_amounts_keep_every_minor_unit(
    client: httpx.AsyncClient, amount: str, currency: str, stored: str
) -> None:
    account = await signed_up(client)
    assert (await create(client, account, amount=amount, currency=currency))["amount"] == stored


BAD_INPUT = [
    ({"currency": "eur"}, "body.currency"),
    ({"currency": "ABC"}, "body.currency"),
    ({"currency": "XAU"}, "body.currency"),  # gold has no minor unit: not money to spend
    ({"amount": "12.345"}, "body.amount"),  # more decimals than EUR has
    ({"amount": "1.5", "currency": "JPY"}, "body.amount"),
    ({"amount": "0"}, "body.amount"),
    ({"amount": "-5.00"}, "body.amount"),
    ({"amount": "1000000000.00"}, "body.amount"),
    ({"amount": "1e3"}, "body.amount"),
    ({"amount": 12.34}, "body.amount"),  # a JSON number: floats never touch money
    ({"occurred_on": "1969-12-31"}, "body.occurred_on"),
    ({"occurred_on": (date.today() + timedelta(days=400)).isoformat()}, "body.occurred_on"),
    ({"occurred_on": "2026-02-30"}, "body.occurred_on"),
    ({"description": ""}, "body.description"),
    ({"description": "x" * 201}, "body.description"),
    ({"description": "   "}, "body.description"),  # its export could not be imported again
    ({"notes": "n" * 2001}, "body.notes"),
    ({"tags": ["t"] * 0 + [f"t{i}" for i in range(21)]}, "body.tags"),
    ({"tags": ["x" * 51]}, "body.tags.0"),
    ({"tags": ["   "]}, "body.tags.0"),
    ({"user_id": str(uuid.uuid4())}, "body.user_id"),  # no mass assignment
    ({"category_id": str(uuid.uuid4())}, "body.category_id"),
    # The charged amount is checked against its own currency, and named when it does not fit.
    ({"charged_amount": "1.5", "charged_currency": "JPY"}, "body.charged_amount"),
    ({"charged_amount": "1.001", "charged_currency": "EUR"}, "body.charged_amount"),
    # One without the other is named as an import names it, not as the whole body.
    ({"charged_amount": "18.41"}, "body.charged_amount"),
    ({"charged_currency": "EUR"}, "body.charged_amount"),
]


@pytest.mark.parametrize(("change", "field"), BAD_INPUT)
async def test_bad_input_is_a_422_and_changes_nothing(
    client: httpx.AsyncClient, database_url: str, change: dict, field: str
) -> None:
    account = await signed_up(client)
    before = await count_rows(database_url)
    response = await client.post(
        "/api/v1/expenses", json={**VALID, **change}, headers=account.headers
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in {error["field"] for error in response.json()["errors"]}
    assert await count_rows(database_url) == before
    if field == "body.currency":  # a refusal says what is wrong, never repeating what was sent
        assert change["currency"] not in response.text


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("12.345", "EUR amounts have at most 2 decimals"),
        ("-5.00", "amount must be greater than zero"),
        ("99999999999999999999", "amount must be below 1,000,000,000"),  # not "malformed"
        ("0", "amount must be greater than zero"),
        ("1e3", 'amount must be a decimal string such as "12.34"'),
    ],
)
async def test_a_bad_amount_is_explained_in_its_checks_own_words(
    client: httpx.AsyncClient, amount: str, message: str
) -> None:
    """As the web app shows it next to the field: no "Value error, " of the library's."""
    account = await signed_up(client)
    response = await client.post(
        "/api/v1/expenses", json={**VALID, "amount": amount}, headers=account.headers
    )
    assert response.status_code == 422, response.text
    [error] = [error for error in response.json()["errors"] if error["field"] == "body.amount"]
    assert (error["message"], error["type"]) == (message, "value_error")


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"description": ""}, "body.description", "must not be empty"),
        ({"description": "leave out"}, "body.description", "is required"),
        ({"occurred_on": "2026-02-30"}, "body.occurred_on", "must be a real calendar date"),
        ({"tags": [f"t{i}" for i in range(21)]}, "body.tags", "must have at most 20 items"),
        ({"description": "x" * 201}, "body.description", "must have at most 200 characters"),
        ({"category_id": "food"}, "body.category_id", "must be an id as the API gives it"),
        ({"bogus": 1}, "body.bogus", "is not a field this request takes"),
    ],
)
async def test_the_librarys_refusals_are_said_in_plain_words(
    client: httpx.AsyncClient, change: dict, field: str, message: str
) -> None:
    account = await signed_up(client)
    body = {key: value for key, value in {**VALID, **change}.items() if value != "leave out"}
    response = await client.post("/api/v1/expenses", json=body, headers=account.headers)
    assert response.status_code == 422, response.text
    messages = {error["field"]: error["message"] for error in response.json()["errors"]}
    assert messages[field].startswith(message), messages


@pytest.mark.parametrize(
    ("path", "params", "field", "message"),
    [
        ("/api/v1/expenses", {"limit": "ten"}, "query.limit", "must be a whole number"),
        ("/api/v1/expenses", {"limit": "501"}, "query.limit", "must be at most 500"),
        ("/api/v1/expenses", {"currency": "EU"}, "query.currency", "must be an ISO 4217"),
        ("/api/v1/expenses", {"currency": "XYZ"}, "query.currency", "must be an ISO 4217"),
        ("/api/v1/reports/budgets", {"month": "2026-3"}, "query.month", "must be a month as"),
        ("/api/v1/reports/summary", {"group_by": "x"}, "query.group_by", "must be one of"),
        ("/api/v1/reports/summary", {}, "query.from", "is required"),
    ],
)
async def test_query_refusals_are_said_in_plain_words(
    client: httpx.AsyncClient, path: str, params: dict, field: str, message: str
) -> None:
    account = await signed_up(client)
    response = await client.get(path, params=params, headers=account.headers)
    assert response.status_code == 422, response.text
    messages = {error["field"]: error["message"] for error in response.json()["errors"]}
    assert messages[field].startswith(message), messages


# What pydantic alone would read as a day, keeping only its date: a datetime at midnight, with
# a time zone or without, a date with a time zone, and a Unix timestamp of a midnight.
NOT_A_DAY_ALONE = ["{}T00:00:00", "{}T00:00:00+01:00", "{} 00:00Z", "{}+01:00", "timestamp"]


@pytest.mark.parametrize("form", NOT_A_DAY_ALONE)
async def test_a_date_is_the_day_alone(
    client: httpx.AsyncClient, database_url: str, form: str
) -> None:
    """Every date of the expenses and reports APIs, in a body, a path or a query, is YYYY-MM-DD
    and nothing more: anything else is a 422 naming it, and nothing is written."""
    account = await signed_up(client)
    today = date.today()
    midnight = datetime.combine(today, time(), tzinfo=UTC)
    sent = int(midnight.timestamp()) if form == "timestamp" else form.format(today)
    created = await create(client, account, occurred_on=today.isoformat())
    before = await count_rows(database_url)
    expense = f"/api/v1/expenses/{created['id']}"
    rule = {"amount": "9.99", "currency": "EUR", "description": "Streaming", "frequency": "weekly"}
    span = {"from": today.isoformat(), "to": today.isoformat()}
    refused = [
        ("POST", "/api/v1/expenses", {"json": {**VALID, "occurred_on": sent}}, "body.occurred_on"),
        ("PATCH", expense, {"json": {"occurred_on": sent}}, "body.occurred_on"),
        (
            "POST",
            "/api/v1/expenses/recurring",
            {"json": {**rule, "starts_on": sent}},
            "body.starts_on",
        ),
        (
            "POST",
            "/api/v1/expenses/recurring",
            {"json": {**rule, "starts_on": today.isoformat(), "ends_on": sent}},
            "body.ends_on",
        ),
        ("PUT", f"/api/v1/expenses/rates/{sent}/EUR/USD", {"json": {"rate": "1.1"}}, "path.day"),
        ("GET", "/api/v1/expenses", {"params": {**span, "from": sent}}, "query.from"),
        ("GET", "/api/v1/expenses/export", {"params": {**span, "to": sent}}, "query.to"),
        ("GET", "/api/v1/reports/summary", {"params": {**span, "to": sent}}, "query.to"),
    ]
    for method, path, sending, field in refused:
        response = await client.request(method, path, headers=account.headers, **sending)
        assert response.status_code == 422, (method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        [error] = response.json()["errors"]
        assert error["field"] == field, (method, path, error)
        assert error["message"] == (
            'must be a date as YYYY-MM-DD, such as "2026-03-01", without a time'
        )
    assert await count_rows(database_url) == before
    assert (await client.get(expense, headers=account.headers)).json() == created
    async with connected(database_url) as connection:
        rules = await connection.fetchval("SELECT count(*) FROM expenses.recurring_rules")
        own_rates = "SELECT count(*) FROM expenses.rates WHERE user_id IS NOT NULL"
        assert (rules, await connection.fetchval(own_rates)) == (0, 0)
    # The day alone is taken everywhere.
    assert [item["id"] for item in await listing(client, account, **span)] == [created["id"]]
    for method, path, sending, status in [
        ("GET", "/api/v1/reports/summary", {"params": span}, 200),
        ("PUT", f"/api/v1/expenses/rates/{today}/EUR/USD", {"json": {"rate": "1.1"}}, 200),
        ("POST", "/api/v1/expenses/recurring", {"json": {**rule, "starts_on": str(today)}}, 201),
    ]:
        response = await client.request(method, path, headers=account.headers, **sending)
        assert response.status_code == status, (path, response.text)


async def test_tags_replaced_at_once_end_as_one_of_the_requests_sent(
    client: httpx.AsyncClient,
) -> None:
    account = await signed_up(client)
    created = await create(client, account, tags=["first"])
    path = f"/api/v1/expenses/{created['id']}"
    sets = [[f"set{n}a", f"set{n}b"] for n in range(10)]
    answers = await asyncio.gather(
        *(client.patch(path, json={"tags": tags}, headers=account.headers) for tags in sets)
    )
    assert [answer.status_code for answer in answers] == [200] * 10
    final = (await client.get(path, headers=account.headers)).json()["tags"]
    assert final in sets, final  # one request's tags, not a mix of several


async def test_only_tags_on_an_expense_are_listed(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)

    async def listed() -> list[str]:
        tags = await client.get("/api/v1/tags", headers=account.headers)
        return [tag["name"] for tag in tags.json()["items"]]

    kept = await create(client, account, tags=["Groceries", "Trip"])
    dropped = await create(client, account, tags=["Trip"])
    assert await listed() == ["Groceries", "Trip"]
    await client.patch(f"/api/v1/expenses/{kept['id']}", json={"tags": []}, headers=account.headers)
    assert await listed() == ["Trip"]
    await client.delete(f"/api/v1/expenses/{dropped['id']}", headers=account.headers)
    assert await listed() == []
    # Named again, the tag is back, as first spelt.
    await create(client, account, tags=["trip"])
    assert await listed() == ["Trip"]


async def test_a_new_currency_alone_keeps_the_amount_or_is_refused(
    client: httpx.AsyncClient,
) -> None:
    account = await signed_up(client)
    created = await create(client, account, amount="12.00", currency="EUR")
    path = f"/api/v1/expenses/{created['id']}"
    # 12.00 EUR is 12 JPY and 12.000 KWD: the amount stays, its minor units do not.
    for currency, amount in (("JPY", "12"), ("KWD", "12.000"), ("EUR", "12.00")):
        changed = await client.patch(path, json={"currency": currency}, headers=account.headers)
        assert changed.status_code == 200, changed.text
        assert (changed.json()["currency"], changed.json()["amount"]) == (currency, amount)
    await client.patch(path, json={"amount": "12.34"}, headers=account.headers)
    refused = await client.patch(path, json={"currency": "JPY"}, headers=account.headers)
    assert refused.status_code == 422, refused.text
    [error] = refused.json()["errors"]
    assert error["field"] == "body.currency"
    assert "12.34 EUR" in error["message"]
    fetched = (await client.get(path, headers=account.headers)).json()
    assert (fetched["amount"], fetched["currency"]) == ("12.34", "EUR")


async def test_bad_patch_changes_nothing(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    created = await create(client, account)
    for change in ({"currency": "JPY"}, {"amount": None}, {"description": ""}, {"bogus": 1}):
        response = await client.patch(
            f"/api/v1/expenses/{created['id']}", json=change, headers=account.headers
        )
        assert response.status_code == 422, (change, response.text)
    fetched = await client.get(f"/api/v1/expenses/{created['id']}", headers=account.headers)
    assert fetched.json() == created


async def test_an_empty_patch_changes_nothing(client: httpx.AsyncClient, database_url: str) -> None:
    # It rewrote the row: a new updated_at, and a new revision of its month's totals, which
    # tells the reports that the month changed.
    account = await signed_up(client)
    created = await create(client, account)
    path = f"/api/v1/expenses/{created['id']}"

    async def totals_revisions() -> list[int]:
        async with connected(database_url) as connection:
            rows = await connection.fetch(
                "SELECT t.revision FROM expenses.monthly_totals t JOIN expenses.expenses e "
                "ON e.user_id = t.user_id WHERE e.id = $1 ORDER BY 1",
                uuid.UUID(created["id"]),
            )
        return [row["revision"] for row in rows]

    before = await totals_revisions()
    patched = await client.patch(path, json={}, headers=account.headers)
    assert patched.status_code == 200, patched.text
    assert patched.json() == created
    assert (await client.get(path, headers=account.headers)).json() == created
    assert await totals_revisions() == before != []
    stranger = await signed_up(client)  # another user's expense is not found, empty or not
    elsewhere = await client.patch(path, json={}, headers=stranger.headers)
    assert elsewhere.status_code == 404


async def test_unknown_and_malformed_ids(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    missing = await client.get(f"/api/v1/expenses/{uuid.uuid4()}", headers=account.headers)
    malformed = await client.get("/api/v1/expenses/not-a-uuid", headers=account.headers)
    assert missing.status_code == 404
    assert malformed.status_code == 422


async def test_another_users_expense_is_invisible_and_untouchable(
    client: httpx.AsyncClient,
) -> None:
    owner, other = await signed_up(client), await signed_up(client)
    expense = await create(client, owner, tags=["secret"])
    path = f"/api/v1/expenses/{expense['id']}"
    missing = (await client.get(f"/api/v1/expenses/{uuid.uuid4()}", headers=other.headers)).json()
    for response in (
        await client.get(path, headers=other.headers),
        await client.patch(path, json={"description": "mine now"}, headers=other.headers),
        await client.delete(path, headers=other.headers),
    ):
        assert response.status_code == 404
        assert response.json() == missing  # exactly as a missing one
    assert await listing(client, other) == []
    assert await listing(client, other, tag="secret") == []
    tags = (await client.get("/api/v1/tags", headers=other.headers)).json()
    assert tags["items"] == []
    # Another user's category cannot be used either.
    categories = (await client.get("/api/v1/categories", headers=owner.headers)).json()["items"]
    foreign = await client.post(
        "/api/v1/expenses",
        json={**VALID, "category_id": categories[0]["id"]},
        headers=other.headers,
    )
    assert foreign.status_code == 422
    assert (await client.get(path, headers=owner.headers)).json() == expense


async def test_filters(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    categories = {
        c["name"]: c["id"]
        for c in (await client.get("/api/v1/categories", headers=account.headers)).json()["items"]
    }
    lunch = await create(
        client,
        account,
        occurred_on="2026-01-31",
        amount="9.50",
        category_id=categories["Restaurants"],
    )
    rent = await create(
        client,
        account,
        occurred_on="2026-02-01",
        amount="800.00",
        description="Rent February",
        notes="paid by transfer 100%_sure",
        category_id=categories["Rent"],
        tags=["home"],
    )
    yen = await create(client, account, occurred_on="2026-02-15", amount="1500", currency="JPY")

    def ids(items: list[dict]) -> list[str]:
        return [item["id"] for item in items]

    assert ids(await listing(client, account)) == [yen["id"], rent["id"], lunch["id"]]
    assert ids(await listing(client, account, **{"from": "2026-02-01", "to": "2026-02-01"})) == [
        rent["id"]
    ]
    assert ids(await listing(client, account, category_id=categories["Food"])) == [lunch["id"]]
    assert ids(await listing(client, account, tag="HOME")) == [rent["id"]]
    assert ids(await listing(client, account, q="transfer")) == [rent["id"]]
    assert ids(await listing(client, account, q="100%_")) == [rent["id"]]  # no LIKE wildcards
    assert ids(await listing(client, account, q="1%s")) == []  # as a pattern it would match
    assert ids(await listing(client, account, currency="JPY")) == [yen["id"]]
    assert ids(await listing(client, account, min_amount="10")) == [yen["id"], rent["id"]]
    assert ids(await listing(client, account, max_amount="9.50")) == [lunch["id"]]
    for bad in ({"min_amount": "ten"}, {"currency": "eur"}, {"from": "2026-13-01"}, {"q": ""}):
        response = await client.get("/api/v1/expenses", params=bad, headers=account.headers)
        assert response.status_code == 422, bad
    # A range that can match nothing is said so by name, in the list and the export alike.
    reversed_dates = {"from": "2026-02-01", "to": "2026-01-31"}
    reversed_amounts = {"min_amount": "10", "max_amount": "9.99"}
    for path in ("/api/v1/expenses", "/api/v1/expenses/export"):
        for params, field in ((reversed_dates, "query.to"), (reversed_amounts, "query.max_amount")):
            response = await client.get(path, params=params, headers=account.headers)
            assert response.status_code == 422, (path, params)
            assert [error["field"] for error in response.json()["errors"]] == [field]


async def test_keyset_pages_are_stable(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    created = [
        (await create(client, account, occurred_on=f"2026-01-{day:02d}"))["id"]
        for day in (1, 1, 2, 3, 3)
    ]
    seen = [item["id"] for item in await every_item(client, account, "/api/v1/expenses", limit=2)]
    assert sorted(seen) == sorted(created) and len(seen) == 5


async def test_a_days_expenses_are_listed_latest_first(client: httpx.AsyncClient) -> None:
    # Ids are UUIDv7: time first, to the millisecond, so a day's ties order by creation.
    account = await signed_up(client)
    created = []
    for n in range(4):
        expense = await create(client, account, occurred_on="2026-01-05", description=f"No {n}")
        created.append(expense["id"])
        await asyncio.sleep(0.002)
    listed = [item["id"] for item in await every_item(client, account, "/api/v1/expenses", limit=3)]
    assert listed == created[::-1]
    assert {uuid.UUID(id).version for id in listed} == {7}


async def test_text_search_uses_an_index_not_everyones_rows(database_url: str) -> None:
    users = [uuid.uuid4() for _ in range(3)]
    async with connected(database_url) as connection:
        await connection.executemany(
            "INSERT INTO expenses.owners (user_id) VALUES ($1)", [(user,) for user in users]
        )
        # 30,000 expenses of 3 users; one of them once crossed a zebra.
        await connection.execute(
            """
            INSERT INTO expenses.expenses (user_id, id, amount_minor, currency, currency_exponent,
                                           occurred_on, description)
            SELECT ($1::uuid[])[1 + n % 3], gen_random_uuid(), n, 'EUR', 2,
                   date '2026-01-01' + (n % 300),
                   CASE WHEN n = 100 THEN 'zebra crossing fee' ELSE 'groceries week ' || n END
            FROM generate_series(1, 30000) AS n
            """,
            users,
        )
        await connection.execute("ANALYZE expenses.expenses")
        plans = {}
        for word in ("zebra", "groceries"):  # a rare word, and one in every row
            rows = await connection.fetch(
                "EXPLAIN SELECT id FROM expenses.expenses WHERE user_id = $1 "
                f"AND search_text LIKE '%{word}%'",
                users[0],
            )
            plans[word] = "\n".join(row[0] for row in rows)
    # Through an index on the user (their words, or their rows), never every user's rows.
    for plan in plans.values():
        assert "Seq Scan" not in plan, plan
        assert re.search(r"(Index|Recheck) Cond: \(.*user_id = ", plan), plan


# 2,500 expenses, newest last: (word, the rows that contain it). "alpha" is in every seventh
# row, "bravo" in six spread over the older rows, "charlie" in three of the oldest, "delta" in
# none; "li" is too short for a trigram. Another user has 40,000 expenses, all with "alpha" and
# "bravo".
SEARCH_ROWS = 2_500
SEARCH_WORDS = {
    "alpha": lambda n: n % 7 == 0,
    "bravo": lambda n: n % 300 == 0 and n <= 1_800,
    "charlie": lambda n: n in (5, 17, 800),
    "delta": lambda n: False,
}


async def searchable_account(
    client: httpx.AsyncClient, database_url: str
) -> tuple[Account, uuid.UUID]:
    account = await signed_up(client)
    first = await create(client, account, occurred_on="2024-12-31", description="first")
    async with connected(database_url) as connection:
        user_id = await connection.fetchval(
            "SELECT user_id FROM expenses.expenses WHERE id = $1", uuid.UUID(first["id"])
        )
        rows = []
        for n in range(1, SEARCH_ROWS + 1):
            words = " ".join(word for word, has in SEARCH_WORDS.items() if has(n))
            day = date(2025, 1, 1) + timedelta(days=n // 10)  # ten a day: ties broken by id
            rows.append((user_id, n, day, f"row {n}", words or None))
        await connection.executemany(
            """
            INSERT INTO expenses.expenses (user_id, id, amount_minor, currency, currency_exponent,
                                           occurred_on, description, notes)
            VALUES ($1, gen_random_uuid(), $2, 'EUR', 2, $3, $4, $5)
            """,
            rows,
        )
        other = uuid.uuid4()
        await connection.execute("INSERT INTO expenses.owners (user_id) VALUES ($1)", other)
        await connection.execute(
            """
            INSERT INTO expenses.expenses (user_id, id, amount_minor, currency, currency_exponent,
                                           occurred_on, description)
            SELECT $1, gen_random_uuid(), n, 'EUR', 2, date '2025-01-01' + n % 400,
                   'alpha bravo ' || n
            FROM generate_series(1, 40000) AS n
            """,
            other,
        )
    return account, user_id


async def test_text_search_pages_hold_every_match_in_order(
    client: httpx.AsyncClient, database_url: str
) -> None:
    account, user_id = await searchable_account(client, database_url)
    async with connected(database_url) as connection:
        expected = {
            (word, to): [
                str(row["id"])
                for row in await connection.fetch(
                    "SELECT id FROM expenses.expenses WHERE user_id = $1 "
                    "AND search_text LIKE lower($2) AND occurred_on <= $3 "
                    "ORDER BY occurred_on DESC, id DESC",
                    user_id,
                    f"%{word}%",
                    to,
                )
            ]
            for word in (*SEARCH_WORDS, "li", "ROW 24")
            for to in (date(2026, 1, 1), date(2025, 3, 1))
        }
    assert len(expected["alpha", date(2026, 1, 1)]) == SEARCH_ROWS // 7
    assert len(expected["bravo", date(2026, 1, 1)]) == 6
    for (word, to), ids in expected.items():
        # In pages of 2 and 50 (sparse words), and of 50 and 500 (dense ones).
        for limit in (50, 500) if len(ids) > 20 else (2, 50):
            found = await every_item(
                client, account, "/api/v1/expenses", limit=limit, q=word, to=to.isoformat()
            )
            assert [item["id"] for item in found] == ids, (word, to, limit)


async def test_text_search_is_planned_for_its_word_every_time(
    client: httpx.AsyncClient, database_url: str
) -> None:
    """After five calls PostgreSQL may keep one plan for a prepared statement, whatever its
    parameters: for a search that plan reads all of a user's rows when the word is in none of
    them. The search statement is planned for its word on every call (service.fetch_page): on
    the statement-caching connection the routes use, it counts custom plans only, while the
    plain page's statement, called as often, goes generic."""
    _, user_id = await searchable_account(client, database_url)
    words = list(SEARCH_WORDS)
    calls = 3 * len(words)
    async with connected(database_url) as connection:
        for n in range(calls):
            for filters in (ExpenseFilter(q=words[n % len(words)]), ExpenseFilter()):
                await service.list_expenses(
                    connection,
                    user_id=user_id,
                    filters=filters,
                    paging=PageRequest(limit=50, cursor=None),
                )
        plans = await connection.fetch(
            "SELECT statement LIKE '%search_text LIKE%' AS search, generic_plans, custom_plans "
            "FROM pg_prepared_statements WHERE statement LIKE '%FROM expenses.expenses e %' "
            "AND statement NOT LIKE '%pg_prepared_statements%' ORDER BY 1"
        )
    assert [tuple(plan) for plan in plans] == [
        (False, calls - 5, 5),  # the plain page: five custom plans, then the kept one
        (True, 0, calls),
    ]


async def test_the_search_index_keeps_a_short_pending_list(database_url: str) -> None:
    """Every search reads the trigram index's pending list whole: 1 MB, not PostgreSQL's 4 MB,
    bounds what that adds to a search (migration 0016)."""
    async with connected(database_url) as connection:
        options = await connection.fetchval(
            "SELECT reloptions FROM pg_class "
            "WHERE oid = 'expenses.ix_expenses_user_search'::regclass"
        )
    assert options == ["gin_pending_list_limit=1024"]


async def test_the_search_index_pending_list_is_merged_into_the_index(database_url: str) -> None:
    """Every search reads the pending list whole; the expenses service's search_index job
    merges it into the index between the writes that fill it (service.merge_search_pending_list)."""
    owner = uuid.uuid4()
    async with connected(database_url) as connection:
        await connection.execute("INSERT INTO expenses.owners (user_id) VALUES ($1)", owner)
        async with connection.transaction():
            await connection.execute(
                """
                INSERT INTO expenses.expenses (user_id, id, amount_minor, currency,
                                               currency_exponent, occurred_on, description)
                SELECT $1, gen_random_uuid(), n, 'EUR', 2, date '2026-01-01' + n % 300,
                       'quokka sighting ' || n
                FROM generate_series(1, 2000) AS n
                """,
                owner,
            )
            merged = await service.merge_search_pending_list(connection)
        assert merged > 0  # pages of the list: the rows' words were in it
        assert await service.merge_search_pending_list(connection) == 0
        found = await service.list_expenses(
            connection,
            user_id=owner,
            filters=ExpenseFilter(q="quokka sighting 1999"),
            paging=PageRequest(limit=50, cursor=None),
        )
    assert [item["description"] for item in json.loads(found)["items"]] == ["quokka sighting 1999"]


async def test_the_expenses_service_merges_the_search_index_as_it_serves(
    client: httpx.AsyncClient,
) -> None:
    runs = "expensetracker_background_job_runs_total"
    job = {"service": "expenses", "background_job": "search_index"}
    for _ in range(100):  # its first run starts with the app
        if counter(runs, **job, outcome="succeeded"):
            break
        await asyncio.sleep(0.1)
    assert counter(runs, **job, outcome="succeeded") > 0
    assert counter(runs, **job, outcome="failed") == 0


async def test_a_keyed_creation_scans_no_stored_keys(
    client: httpx.AsyncClient, database_url: str
) -> None:
    """A creation with an Idempotency-Key finds a known key by the keys' primary key. A lookup
    of the key in its statement was planned as a read of the whole table when the table had
    been analyzed while (nearly) empty, as after a restore or the benchmark's load: then every
    creation read every stored key, until the table was analyzed again."""
    account = await signed_up(client)
    first = await create(client, account)
    body = ExpenseCreate.model_validate(VALID)
    async with connected(database_url) as connection:
        user_id = await connection.fetchval(
            "SELECT user_id FROM expenses.expenses WHERE id = $1", uuid.UUID(first["id"])
        )

        async def scans_of_stored_keys() -> int:
            keyed = idempotency.KeyedRequest(key=str(uuid.uuid4()), route="POST /api/v1/expenses")
            creation = idempotency.Creation(user_id=user_id, keyed=keyed)
            async with connection.transaction():
                await service.create_expense(connection, creation=creation, body=body)
                return await connection.fetchval(
                    "SELECT pg_stat_get_xact_numscans('expenses.idempotency_keys'::regclass)"
                )

        # Analyzed empty; past the five calls after which PostgreSQL may keep one plan; then
        # with 2,000 keys stored.
        await connection.execute("ANALYZE expenses.idempotency_keys")
        scans = [await scans_of_stored_keys() for _ in range(7)]
        await connection.execute(
            "INSERT INTO expenses.idempotency_keys (user_id, key, request_hash) "
            "SELECT $1, 'stored ' || n, '\\x00' FROM generate_series(1, 2000) AS n",
            user_id,
        )
        scans += [await scans_of_stored_keys() for _ in range(3)]
        created = await connection.fetchval(
            "SELECT count(*) FROM expenses.expenses WHERE user_id = $1", user_id
        )
    assert scans == [0] * 10
    assert created == 11


async def test_categories_crud(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    made = await client.post("/api/v1/categories", json={"name": "Pets"}, headers=account.headers)
    assert made.status_code == 201
    pets = made.json()
    child = await client.post(
        "/api/v1/categories", json={"name": "Vet", "parent_id": pets["id"]}, headers=account.headers
    )
    assert child.status_code == 201
    duplicate = await client.post(
        "/api/v1/categories", json={"name": "pets"}, headers=account.headers
    )
    assert duplicate.status_code == 409
    grandchild = await client.post(
        "/api/v1/categories",
        json={"name": "Cat food", "parent_id": child.json()["id"]},
        headers=account.headers,
    )
    assert grandchild.status_code == 422  # one level of grouping
    renamed = await client.patch(
        f"/api/v1/categories/{pets['id']}", json={"name": "Animals"}, headers=account.headers
    )
    assert renamed.json()["name"] == "Animals"
    expense = await create(client, account, category_id=child.json()["id"])
    assert (
        await client.delete(f"/api/v1/categories/{pets['id']}", headers=account.headers)
    ).status_code == 204
    vet = await client.get("/api/v1/categories", headers=account.headers)
    lifted = next(c for c in vet.json()["items"] if c["name"] == "Vet")
    assert lifted["parent_id"] is None  # children move to the top level
    assert (
        await client.delete(f"/api/v1/categories/{lifted['id']}", headers=account.headers)
    ).status_code == 204
    fetched = await client.get(f"/api/v1/expenses/{expense['id']}", headers=account.headers)
    assert fetched.json()["category_id"] is None  # the expense stays, uncategorised


async def test_categories_of_another_user_answer_404(client: httpx.AsyncClient) -> None:
    owner, other = await signed_up(client), await signed_up(client)
    category = (await client.get("/api/v1/categories", headers=owner.headers)).json()["items"][0]
    path = f"/api/v1/categories/{category['id']}"
    assert (await client.patch(path, json={"name": "x"}, headers=other.headers)).status_code == 404
    assert (await client.delete(path, headers=other.headers)).status_code == 404
    as_parent = await client.post(
        "/api/v1/categories",
        json={"name": "Sub", "parent_id": category["id"]},
        headers=other.headers,
    )
    assert as_parent.status_code == 422


@pytest.mark.parametrize(
    "cursor",
    ["garbage", "WyIyMDI2LTAxLTAxIl0=", "WyJub3QtYS1kYXRlIiwgIjEiXQ==", "W10="],
)
async def test_forged_expense_cursors_are_422(client: httpx.AsyncClient, cursor: str) -> None:
    account = await signed_up(client)
    response = await client.get(
        "/api/v1/expenses", params={"cursor": cursor}, headers=account.headers
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "query.cursor"


async def test_recurring_rules_are_per_user(client: httpx.AsyncClient) -> None:
    owner, other = await signed_up(client), await signed_up(client)
    made = await client.post(
        "/api/v1/expenses/recurring",
        json={
            "amount": "5",
            "currency": "EUR",
            "description": "gym",
            "frequency": "monthly",
            "starts_on": (date.today() - timedelta(days=30)).isoformat(),
        },
        headers=owner.headers,
    )
    assert made.status_code == 201
    listed = (await client.get("/api/v1/expenses/recurring", headers=other.headers)).json()
    assert listed["items"] == []


async def test_counters_follow_changes(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    before = {
        name: counter(f"expensetracker_expenses_{name}_total")
        for name in ("created", "updated", "deleted")
    }
    created = await create(client, account)
    await client.post(  # a replay creates nothing, and counts nothing
        "/api/v1/expenses", json=VALID, headers={**account.headers, "Idempotency-Key": "c"}
    )
    await client.post(
        "/api/v1/expenses", json=VALID, headers={**account.headers, "Idempotency-Key": "c"}
    )
    path = f"/api/v1/expenses/{created['id']}"
    await client.patch(path, json={"description": "changed"}, headers=account.headers)
    await client.delete(path, headers=account.headers)
    after = {
        name: counter(f"expensetracker_expenses_{name}_total")
        for name in ("created", "updated", "deleted")
    }
    assert after == {
        "created": before["created"] + 2,
        "updated": before["updated"] + 1,
        "deleted": before["deleted"] + 1,
    }
