"""Categories of the expenses service: a default set per user, keyset pages, isolation, and
what concurrent changes and deletions leave (one level of nesting, no 500)."""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import date

import httpx
import pytest

from expensetracker.expenses.owners import DEFAULT_CATEGORIES
from expensetracker.platform.pagination import encode_cursor
from tests.helpers.expenses import HEADER, create, every_item, upload
from tests.helpers.users import Account, signed_up

pytestmark = pytest.mark.database

DEFAULT_COUNT = len(DEFAULT_CATEGORIES) + sum(map(len, DEFAULT_CATEGORIES.values()))


async def all_pages(client: httpx.AsyncClient, headers: dict, limit: int) -> list[list[dict]]:
    pages, cursor = [], None
    while True:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/api/v1/categories", params=params, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


async def test_new_user_gets_the_default_categories_once(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    first = (await client.get("/api/v1/categories", headers=account.headers)).json()
    second = (await client.get("/api/v1/categories", headers=account.headers)).json()
    assert first == second
    assert first["next_cursor"] is None
    by_name = {item["name"]: item for item in first["items"]}
    assert len(by_name) == DEFAULT_COUNT
    assert by_name["Groceries"]["parent_id"] == by_name["Food"]["id"]
    assert by_name["Food"]["parent_id"] is None
    assert [item["name"] for item in first["items"]] == sorted(by_name)


async def test_concurrent_first_requests_create_the_defaults_once(
    client: httpx.AsyncClient,
) -> None:
    account = await signed_up(client)
    answers = await asyncio.gather(
        *[client.get("/api/v1/categories", headers=account.headers) for _ in range(4)]
    )
    assert {response.status_code for response in answers} == {200}
    assert {len(response.json()["items"]) for response in answers} == {DEFAULT_COUNT}


async def test_pages_cover_every_category_once_in_order(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    pages = await all_pages(client, account.headers, limit=4)
    names = [item["name"] for page in pages for item in page]
    assert len(pages) == -(-DEFAULT_COUNT // 4)
    assert all(len(page) == 4 for page in pages[:-1])
    assert names == sorted(names) and len(set(names)) == DEFAULT_COUNT


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 501},
        {"limit": "ten"},
        {"cursor": "not base64 at all!"},
        {"cursor": base64.urlsafe_b64encode(b'{"a": 1}').decode()},
        {"cursor": base64.urlsafe_b64encode(b"[1, 2]").decode()},
        {"cursor": encode_cursor(["Food", "not-a-uuid"], list_name="categories")},
        {"cursor": "x" * 600},
    ],
)
async def test_bad_limits_and_forged_cursors_are_422(
    client: httpx.AsyncClient, params: dict
) -> None:
    account = await signed_up(client)
    response = await client.get("/api/v1/categories", params=params, headers=account.headers)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


NAMED_LISTS = ("categories", "tags", "budgets")


async def test_a_cursor_of_another_list_keyed_alike_is_422(client: httpx.AsyncClient) -> None:
    """Categories, tags and budgets are all keyed by (name, id): each list's own cursor pages
    through it whole, and given to another of them it is refused, where it used to answer a
    page from a meaningless place in that list."""
    account = await signed_up(client)
    await create(client, account, tags=["Alpha", "Beta", "Gamma"])
    for name in ("Alpha", "Beta", "Gamma"):
        budget = {"name": name, "amount": "100", "currency": "EUR"}
        made = await client.post("/api/v1/budgets", json=budget, headers=account.headers)
        assert made.status_code == 201, made.text
    cursors = {}
    for list_name in NAMED_LISTS:
        url = f"/api/v1/{list_name}"
        whole = await client.get(url, params={"limit": 500}, headers=account.headers)
        assert len(whole.json()["items"]) >= 3
        assert await every_item(client, account, url, limit=1) == whole.json()["items"]
        first = await client.get(url, params={"limit": 1}, headers=account.headers)
        cursors[list_name] = first.json()["next_cursor"]
    for list_name, cursor in cursors.items():
        for other in set(NAMED_LISTS) - {list_name}:
            response = await client.get(
                f"/api/v1/{other}", params={"cursor": cursor}, headers=account.headers
            )
            assert response.status_code == 422, (list_name, other, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["errors"] == [
                {"field": "query.cursor", "message": "Not a cursor of this list.", "type": "cursor"}
            ]


async def test_users_see_only_their_own_categories(client: httpx.AsyncClient) -> None:
    ann, bob = await signed_up(client), await signed_up(client)
    ann_ids = {
        c["id"]
        for c in (await client.get("/api/v1/categories", headers=ann.headers)).json()["items"]
    }
    bob_ids = {
        c["id"]
        for c in (await client.get("/api/v1/categories", headers=bob.headers)).json()["items"]
    }
    assert len(ann_ids) == len(bob_ids) == DEFAULT_COUNT
    assert not ann_ids & bob_ids


async def test_names_that_look_the_same_are_the_same_name(client: httpx.AsyncClient) -> None:
    """Categories, tags and budgets are named in composed form, with single spaces and nothing
    invisible: two names that look alike cannot both exist, and a name never hides a character."""
    account = await signed_up(client)

    async def category(name: str) -> httpx.Response:
        return await client.post("/api/v1/categories", json={"name": name}, headers=account.headers)

    created = await category("Cafe\u0301  and\u00a0bar")  # a combining accent, a no-break space
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "Caf\u00e9 and bar"
    assert (await category("caf\u00e9 and bar")).status_code == 409
    for hidden in ("Bar\u200b", "\u202eRab", "\u200dBar", "B\u00adar"):
        refused = await category(hidden)
        assert refused.status_code == 422, hidden
        assert "invisible character" in refused.json()["errors"][0]["message"]
    # A joiner between two characters is part of what shows: an emoji family, a Persian word.
    for joined in (
        "Kids \U0001f468\u200d\U0001f467",
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
    ):
        assert (await category(joined)).status_code == 201, joined
    tagged = await client.post(
        "/api/v1/expenses",
        json={
            "amount": "1.00",
            "currency": "EUR",
            "occurred_on": "2026-03-01",
            "description": "x",
            "tags": ["travel\u200b"],
        },
        headers=account.headers,
    )
    assert tagged.status_code == 422 and tagged.json()["errors"][0]["field"] == "body.tags.0"
    budget = await client.post(
        "/api/v1/budgets",
        json={"name": "Fun\u200e", "amount": "10", "currency": "EUR"},
        headers=account.headers,
    )
    assert budget.status_code == 422 and budget.json()["errors"][0]["field"] == "body.name"
    imported = await upload(
        client, account, HEADER + "2026-03-01,1.00,EUR,x,,,,ok;bad\u200b,\n", dry_run=True
    )
    assert imported.status_code == 422
    assert "invisible character" in imported.text
    # What separates tags (in a CSV cell, in the web's form) is in no tag's name: such a name
    # would come back from an export as two tags.
    for separated in ("rock;roll", "rock,roll"):
        refused = await client.post(
            "/api/v1/expenses/rules",
            json={"pattern": "x", "tags": [separated]},
            headers=account.headers,
        )
        assert refused.status_code == 422 and "separate tags" in refused.text, separated
    imported = await upload(
        client, account, HEADER + '2026-03-01,1,EUR,x,,,,"a,b",\n', dry_run=True
    )
    assert imported.status_code == 422 and "separate tags" in imported.text


ROUNDS = 10


async def new_category(client: httpx.AsyncClient, account: Account, **body: object) -> str:
    response = await client.post(
        "/api/v1/categories", json={"name": uuid.uuid4().hex, **body}, headers=account.headers
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def parents(client: httpx.AsyncClient, account: Account) -> dict[str, str | None]:
    response = await client.get("/api/v1/categories?limit=500", headers=account.headers)
    return {item["id"]: item["parent_id"] for item in response.json()["items"]}


async def test_concurrent_moves_keep_one_level_of_nesting(client: httpx.AsyncClient) -> None:
    # Each move is checked against the others that committed before it: two categories moved
    # under each other at once make no cycle, and a category moved under one that is itself
    # being moved makes no second level. The loser of each race is a 422.
    account = await signed_up(client)

    async def move(category: str, under: str) -> httpx.Response:
        return await client.patch(
            f"/api/v1/categories/{category}", json={"parent_id": under}, headers=account.headers
        )

    for _ in range(ROUNDS):
        a, b, c, d, e = [await new_category(client, account) for _ in range(5)]
        swapped = await asyncio.gather(move(a, b), move(b, a))
        chained = await asyncio.gather(move(c, d), move(e, c))
        assert sorted(r.status_code for r in swapped) == [200, 422]
        assert sorted(r.status_code for r in chained) == [200, 422]
        parent_of = await parents(client, account)
        assert not [child for child, parent in parent_of.items() if parent and parent_of[parent]]
    itself = await move(a, a)
    assert itself.status_code == 422
    assert itself.json()["errors"][0]["message"] == "A category cannot be inside itself."


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/categories", {"name": "sub"}),
        ("/api/v1/expenses/rules", {"pattern": "coffee"}),
        (
            "/api/v1/expenses/recurring",
            {
                "amount": "5",
                "currency": "EUR",
                "description": "gym",
                "frequency": "monthly",
                "starts_on": date.today().isoformat(),
            },
        ),
    ],
    ids=["subcategory", "rule", "recurring"],
)
async def test_creating_under_a_category_being_deleted_is_never_a_500(
    client: httpx.AsyncClient, path: str, body: dict
) -> None:
    # Either the creation comes first (and the deletion then clears its category) or the
    # deletion does (and the creation is a 422): never a foreign-key error.
    account = await signed_up(client)
    field = "parent_id" if path == "/api/v1/categories" else "category_id"
    for round_ in range(ROUNDS):
        category = await new_category(client, account)
        named = {**body, "name": f"sub{round_}"} if "name" in body else body
        created, deleted = await asyncio.gather(
            client.post(path, json={**named, field: category}, headers=account.headers),
            client.delete(f"/api/v1/categories/{category}", headers=account.headers),
        )
        assert deleted.status_code == 204
        assert created.status_code in (201, 422), created.text
        if created.status_code == 422:
            assert created.json()["errors"][0]["field"] == f"body.{field}"


@pytest.mark.parametrize("how", ["named in the file", "set by a rule", "rules applied"])
async def test_bulk_categorising_while_the_category_is_deleted_is_never_a_500(
    client: httpx.AsyncClient, how: str
) -> None:
    # An import or a run of the rules reads the categories first and writes rows referring to
    # them later: a deletion meanwhile must wait for them, or count as done before they began.
    account = await signed_up(client)
    for round_ in range(ROUNDS):
        name = uuid.uuid4().hex
        category = await new_category(client, account, name=name)
        rule = await client.post(
            "/api/v1/expenses/rules",
            json={"pattern": f"shop {round_}", "category_id": category},
            headers=account.headers,
        )
        assert rule.status_code == 201, rule.text
        named = name if how == "named in the file" else ""
        lines = [f"2026-10-01,{n + 1}.00,EUR,shop {round_} {n},{named}" for n in range(200)]
        csv = "\n".join(["occurred_on,amount,currency,description,category", *lines, ""])
        if how == "rules applied":
            await client.delete(
                f"/api/v1/expenses/rules/{rule.json()['id']}", headers=account.headers
            )
            imported = await client.post(
                "/api/v1/expenses/import",
                content=csv.encode(),
                headers={**account.headers, "Content-Type": "text/csv"},
            )
            assert imported.status_code == 201, imported.text
            rule = await client.post(
                "/api/v1/expenses/rules",
                json={"pattern": f"shop {round_}", "category_id": category},
                headers=account.headers,
            )
            bulk = client.post("/api/v1/expenses/rules/apply", headers=account.headers)
        else:
            bulk = client.post(
                "/api/v1/expenses/import",
                content=csv.encode(),
                headers={**account.headers, "Content-Type": "text/csv"},
            )
        done, deleted = await asyncio.gather(
            bulk, client.delete(f"/api/v1/categories/{category}", headers=account.headers)
        )
        assert deleted.status_code == 204
        assert done.status_code in (200, 201, 422), done.text
        await client.delete(f"/api/v1/expenses/rules/{rule.json()['id']}", headers=account.headers)


@pytest.mark.parametrize("thing", ["category", "rule"])
async def test_changing_a_thing_while_it_is_deleted_is_a_404_not_a_500(
    client: httpx.AsyncClient, thing: str
) -> None:
    account = await signed_up(client)
    for round_ in range(ROUNDS):
        if thing == "category":
            path = f"/api/v1/categories/{await new_category(client, account)}"
            change = {"name": f"renamed {round_}"}
        else:
            body = {"pattern": f"p{round_}", "tags": ["t"]}
            created = await client.post(
                "/api/v1/expenses/rules", json=body, headers=account.headers
            )
            path = f"/api/v1/expenses/rules/{created.json()['id']}"
            change = {"pattern": "q"}
        changed, deleted = await asyncio.gather(
            client.patch(path, json=change, headers=account.headers),
            client.delete(path, headers=account.headers),
        )
        assert deleted.status_code == 204
        assert changed.status_code in (200, 404), changed.text


async def test_deleting_a_category_can_move_its_expenses_and_rules_to_another(
    client: httpx.AsyncClient,
) -> None:
    """With `move_to`, its expenses (so their months), recurring expenses and rules go to
    another of the user's categories. Itself, another user's, an unknown or a malformed id is a
    422 that deletes and moves nothing."""
    account, other = await signed_up(client), await signed_up(client)
    headers = account.headers
    old, new = await new_category(client, account), await new_category(client, account)
    theirs = await new_category(client, other)
    spending = {"amount": "12.50", "currency": "EUR", "description": "Lunch", "category_id": old}
    expense = await client.post(
        "/api/v1/expenses", json={**spending, "occurred_on": "2026-03-05"}, headers=headers
    )
    recurring = await client.post(
        "/api/v1/expenses/recurring",
        json={**spending, "frequency": "monthly", "starts_on": "2026-03-05"},
        headers=headers,
    )
    rule = await client.post(
        "/api/v1/expenses/rules",
        json={"field": "any", "match": "contains", "pattern": "lunch", "category_id": old},
        headers=headers,
    )
    assert {expense.status_code, recurring.status_code, rule.status_code} == {201}, rule.text

    async def categories_of_its_things() -> list[str | None]:
        listed = [
            await client.get(f"/api/v1/expenses/{expense.json()['id']}", headers=headers),
            await client.get("/api/v1/expenses/recurring", headers=headers),
            await client.get("/api/v1/expenses/rules", headers=headers),
        ]
        first, *pages = [response.json() for response in listed]
        return [first["category_id"]] + [page["items"][0]["category_id"] for page in pages]

    for move_to in (old, theirs, str(uuid.uuid4()), "not-an-id"):
        refused = await client.delete(
            f"/api/v1/categories/{old}", params={"move_to": move_to}, headers=headers
        )
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert [error["field"] for error in refused.json()["errors"]] == ["query.move_to"]
    assert await categories_of_its_things() == [old] * 3

    moved = await client.delete(
        f"/api/v1/categories/{old}", params={"move_to": new}, headers=headers
    )
    assert moved.status_code == 204, moved.text
    assert await categories_of_its_things() == [new] * 3
    gone = await client.delete(
        f"/api/v1/categories/{old}", params={"move_to": new}, headers=headers
    )
    assert gone.status_code == 404
    theirs_left = await client.get("/api/v1/categories", headers=other.headers)
    assert theirs in [item["id"] for item in theirs_left.json()["items"]]
