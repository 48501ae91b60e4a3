"""Categorisation rules (issue 15): per user, in order, the first match sets the category and
adds tags, on import (API and command line) and on demand with a preview; patterns bounded and
matched in linear time."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid

import httpx
import pytest

from expensetracker.expenses import rules
from expensetracker.platform.pagination import encode_cursor
from tests.helpers.database import connected, until_waiting_on_locks
from tests.helpers.expenses import HEADER, create, upload_statement
from tests.helpers.paths import STATEMENTS
from tests.helpers.processes import REPO, clean_env, cli, spawn
from tests.helpers.users import Account, signed_up

pytestmark = pytest.mark.database


async def category_ids(client: httpx.AsyncClient, account: Account) -> dict[str, str]:
    response = await client.get(
        "/api/v1/categories", params={"limit": 500}, headers=account.headers
    )
    return {item["name"]: item["id"] for item in response.json()["items"]}


async def new_rule(client: httpx.AsyncClient, account: Account, **body: object) -> httpx.Response:
    return await client.post("/api/v1/expenses/rules", json=body, headers=account.headers)


async def expenses_by_description(
    client: httpx.AsyncClient, account: Account
) -> dict[str, tuple[str | None, list[str]]]:
    response = await client.get("/api/v1/expenses", headers=account.headers)
    return {e["description"]: (e["category_id"], e["tags"]) for e in response.json()["items"]}


async def test_rules_categorise_a_statement_on_import_first_match_wins(
    client: httpx.AsyncClient,
) -> None:
    account = await signed_up(client)
    ids = await category_ids(client, account)
    restaurants, utilities = ids["Restaurants"], ids["Utilities"]
    first = await new_rule(
        client, account, pattern="café", category_id=restaurants, tags=["eating out"]
    )
    # Would match the café too, but comes second.
    second = await new_rule(
        client, account, match="regex", pattern=r"^(city|café)\b", category_id=utilities
    )
    # Only EUR amounts from 40 to 60: the 49.99 power bill, not the JPY ramen.
    ranged = await new_rule(
        client,
        account,
        field="merchant",
        pattern="o",
        currency="EUR",
        min_amount="40",
        max_amount="60.00",
        tags=["bills"],
        position=10,
    )
    assert [r.status_code for r in (first, second, ranged)] == [201, 201, 201], ranged.text
    assert (first.json()["position"], second.json()["position"]) == (1, 2)
    assert (ranged.json()["min_amount"], ranged.json()["max_amount"]) == ("40.00", "60.00")
    preview = await upload_statement(
        client, account, (STATEMENTS / "checking.ofx").read_bytes(), dry_run="true"
    )
    assert preview.status_code == 200
    response = await upload_statement(client, account, (STATEMENTS / "checking.ofx").read_bytes())
    assert response.status_code == 201, response.text
    assert await expenses_by_description(client, account) == {
        "Café Central": (restaurants, ["eating out"]),
        "City Power Utility": (utilities, []),
        "Tokyo Ramen": (None, []),
    }


async def test_a_csv_rows_own_category_beats_the_rules_and_tags_add_up(
    client: httpx.AsyncClient,
) -> None:
    account = await signed_up(client)
    ids = await category_ids(client, account)
    await new_rule(client, account, pattern="lunch", category_id=ids["Restaurants"], tags=["Work"])
    content = HEADER + (
        "2026-01-05,12.50,EUR,Lunch,,,Groceries,mine,\n"
        "2026-01-06,8.00,EUR,Team lunch,,,,work;own,\n"
        "2026-01-07,3.00,EUR,Coffee,,,,,\n"
    )
    response = await client.post(
        "/api/v1/expenses/import",
        content=content,
        headers={**account.headers, "content-type": "text/csv"},
    )
    assert response.status_code == 201, response.text
    assert await expenses_by_description(client, account) == {
        "Lunch": (ids["Groceries"], ["mine"]),
        "Team lunch": (ids["Restaurants"], ["own", "work"]),  # one tag "work", as first spelled
        "Coffee": (None, []),
    }


async def test_rules_apply_on_demand_to_uncategorised_expenses_with_a_preview(
    client: httpx.AsyncClient,
) -> None:
    account = await signed_up(client)
    ids = await category_ids(client, account)
    for description, category in (("Rent March", "Rent"), ("Rent April", None), ("Bus", None)):
        await client.post(
            "/api/v1/expenses",
            json={
                "amount": "700",
                "currency": "EUR",
                "occurred_on": "2026-03-01",
                "description": description,
                "category_id": category and ids[category],
            },
            headers=account.headers,
        )
    rule = (
        await new_rule(client, account, pattern="RENT", category_id=ids["Housing"], tags=["home"])
    ).json()
    preview = await client.post(
        "/api/v1/expenses/rules/apply", params={"dry_run": "true"}, headers=account.headers
    )
    assert preview.status_code == 200, preview.text
    assert preview.json()["matched"] == 1  # Rent March keeps the category it was given
    [change] = preview.json()["changes"]
    assert (change["description"], change["rule_id"], change["tags"]) == (
        "Rent April",
        rule["id"],
        ["home"],
    )
    before = await expenses_by_description(client, account)
    assert before["Rent April"] == (None, [])
    applied = await client.post("/api/v1/expenses/rules/apply", headers=account.headers)
    assert applied.json()["matched"] == 1 and applied.json()["dry_run"] is False
    after = await expenses_by_description(client, account)
    assert after["Rent April"] == (ids["Housing"], ["home"])
    assert after["Rent March"] == (ids["Rent"], [])
    assert after["Bus"] == (None, [])
    again = await client.post("/api/v1/expenses/rules/apply", headers=account.headers)
    assert again.json()["matched"] == 0


async def test_rules_apply_leaves_alone_what_a_tags_only_rule_would_not_change(
    client: httpx.AsyncClient,
) -> None:
    # Such a rule leaves an expense uncategorised, so every run read it again: it was reported
    # as changed and written (updated_at, and its month's totals revision) run after run.
    account = await signed_up(client)
    tagged = await create(client, account, description="Netflix March", tags=["TV"])
    untagged = await create(client, account, description="Netflix April")
    rule = (await new_rule(client, account, pattern="netflix", tags=["tv"])).json()
    applied = await client.post("/api/v1/expenses/rules/apply", headers=account.headers)
    assert applied.status_code == 200, applied.text
    assert applied.json()["matched"] == 1
    assert [(c["expense_id"], c["rule_id"]) for c in applied.json()["changes"]] == [
        (untagged["id"], rule["id"])
    ]
    again = await client.post("/api/v1/expenses/rules/apply", headers=account.headers)
    assert (again.json()["matched"], again.json()["changes"]) == (0, [])
    listed = (await client.get("/api/v1/expenses", headers=account.headers)).json()["items"]
    now = {e["id"]: (e["tags"], e["updated_at"]) for e in listed}
    assert now[tagged["id"]] == (["TV"], tagged["updated_at"])
    assert now[untagged["id"]][0] == ["TV"]  # the tag as already spelt
    # A rule adding a tag the expense lacks still changes it.
    await client.patch(
        f"/api/v1/expenses/rules/{rule['id']}",
        json={"tags": ["tv", "films"]},
        headers=account.headers,
    )
    third = await client.post("/api/v1/expenses/rules/apply", headers=account.headers)
    assert third.json()["matched"] == 2


async def test_a_rule_left_with_nothing_to_do_lets_the_next_one_apply(
    client: httpx.AsyncClient,
) -> None:
    # Its category deleted, a rule without tags still matched first and so kept the rules
    # after it from applying, on demand and on import.
    account = await signed_up(client)
    gone = (
        await client.post("/api/v1/categories", json={"name": "Gone"}, headers=account.headers)
    ).json()
    emptied = (await new_rule(client, account, pattern="coffee", category_id=gone["id"])).json()
    tagging = (await new_rule(client, account, pattern="coffee", tags=["drinks"])).json()
    deleted = await client.delete(f"/api/v1/categories/{gone['id']}", headers=account.headers)
    assert deleted.status_code == 204
    kept = await client.get(f"/api/v1/expenses/rules/{emptied['id']}", headers=account.headers)
    assert (kept.json()["category_id"], kept.json()["tags"]) == (None, [])
    expense = await create(client, account, description="Coffee")
    applied = await client.post("/api/v1/expenses/rules/apply", headers=account.headers)
    assert [(c["expense_id"], c["rule_id"]) for c in applied.json()["changes"]] == [
        (expense["id"], tagging["id"])
    ]
    response = await client.post(
        "/api/v1/expenses/import",
        content=HEADER + "2026-03-02,2.50,EUR,Coffee to go,,,,,\n",
        headers={**account.headers, "content-type": "text/csv"},
    )
    assert response.status_code == 201, response.text
    assert (await expenses_by_description(client, account))["Coffee to go"] == (None, ["drinks"])


async def test_a_rules_tags_never_take_an_expense_past_20_tags(
    client: httpx.AsyncClient,
) -> None:
    # An expense took every tag of the rule on top of its own (up to 40): its export could not
    # be imported again, which refuses more than 20 tags on a row.
    account = await signed_up(client)
    ids = await category_ids(client, account)
    own = [f"t{i}" for i in range(20)]
    full = await create(client, account, description="Full taxi", tags=own)
    spare = await create(client, account, description="Spare taxi", tags=own[:19])
    rule = (
        await new_rule(client, account, pattern="taxi", category_id=ids["Transport"], tags=["ride"])
    ).json()
    rows = (
        f"2026-03-02,9.00,EUR,Airport taxi,,,,{';'.join(own)},\n"
        f"2026-03-03,9.00,EUR,Bus,,,,{';'.join(own)},\n"
    )
    refused = await client.post(
        "/api/v1/expenses/import",
        content=HEADER + rows,
        headers={**account.headers, "content-type": "text/csv"},
    )
    assert refused.status_code == 422, refused.text
    assert [(e["line"], e["field"]) for e in refused.json()["errors"]] == [(2, "tags")]
    applied = await client.post("/api/v1/expenses/rules/apply", headers=account.headers)
    assert [c["expense_id"] for c in applied.json()["changes"]] == [spare["id"]]
    after = await expenses_by_description(client, account)
    assert after["Full taxi"] == (None, full["tags"])
    assert after["Spare taxi"][0] == ids["Transport"]
    assert set(after["Spare taxi"][1]) == {*own[:19], "ride"}
    # A tag the expense has already, spelt otherwise, is no new one.
    await client.patch(
        f"/api/v1/expenses/rules/{rule['id']}", json={"tags": ["T0"]}, headers=account.headers
    )
    again = await client.post("/api/v1/expenses/rules/apply", headers=account.headers)
    assert [c["expense_id"] for c in again.json()["changes"]] == [full["id"]]
    exported = await client.get(
        "/api/v1/expenses/export", params={"format": "csv"}, headers=account.headers
    )
    other = await signed_up(client)
    reimported = await client.post(
        "/api/v1/expenses/import",
        content=exported.content,
        headers={**other.headers, "content-type": "text/csv"},
    )
    assert reimported.status_code == 201, reimported.text


async def test_a_category_chosen_while_the_rules_run_is_kept(
    client: httpx.AsyncClient, database_url: str
) -> None:
    account = await signed_up(client)
    ids = await category_ids(client, account)
    created = await create(client, account, description="Rent May")
    await new_rule(client, account, pattern="RENT", category_id=ids["Housing"], tags=["home"])
    async with connected(database_url) as person:
        # The person chooses a category after the run has read the expense as uncategorised:
        # the run's write waits for theirs, then must leave it, tags included.
        choice = person.transaction()
        await choice.start()
        await person.execute(
            "UPDATE expenses.expenses SET category_id = $1 WHERE id = $2",
            uuid.UUID(ids["Rent"]),
            uuid.UUID(created["id"]),
        )
        applying = asyncio.create_task(
            client.post("/api/v1/expenses/rules/apply", headers=account.headers)
        )
        await until_waiting_on_locks(database_url, 1)
        await choice.commit()
        applied = await applying
    assert applied.status_code == 200, applied.text
    assert (await expenses_by_description(client, account))["Rent May"] == (ids["Rent"], [])


async def test_rules_are_per_user_and_editable_in_order(client: httpx.AsyncClient) -> None:
    ann, bob = await signed_up(client), await signed_up(client)
    ids = await category_ids(client, ann)
    # Two spellings of one tag are one tag, as on an expense: the first spelling stays.
    one = (await new_rule(client, ann, pattern="a", tags=["x", "hotel", "X"])).json()
    two = (await new_rule(client, ann, pattern="b", tags=["y"])).json()
    assert one["tags"] == ["x", "hotel"]
    moved = await client.patch(
        f"/api/v1/expenses/rules/{one['id']}",
        json={"position": 5, "category_id": ids["Travel"], "tags": ["Trip", "TRIP", "x"]},
        headers=ann.headers,
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["tags"] == ["Trip", "x"]
    listed = (await client.get("/api/v1/expenses/rules", headers=ann.headers)).json()["items"]
    assert [rule["id"] for rule in listed] == [two["id"], one["id"]]
    taken = await client.patch(
        f"/api/v1/expenses/rules/{two['id']}", json={"position": 5}, headers=ann.headers
    )
    assert taken.status_code == 409
    for method in ("GET", "PATCH", "DELETE"):
        foreign = await client.request(
            method,
            f"/api/v1/expenses/rules/{one['id']}",
            json={"pattern": "z"},
            headers=bob.headers,
        )
        missing = await client.request(
            method,
            f"/api/v1/expenses/rules/{uuid.uuid4()}",
            json={"pattern": "z"},
            headers=ann.headers,
        )
        assert (foreign.status_code, missing.status_code) == (404, 404)
        assert foreign.json()["detail"] == missing.json()["detail"]
    assert (await client.get("/api/v1/expenses/rules", headers=bob.headers)).json()["items"] == []
    bobs_category = await new_rule(client, bob, pattern="a", category_id=ids["Travel"])
    assert bobs_category.status_code == 422
    deleted = await client.delete(f"/api/v1/expenses/rules/{one['id']}", headers=ann.headers)
    assert deleted.status_code == 204
    assert (
        await client.get(f"/api/v1/expenses/rules/{one['id']}", headers=ann.headers)
    ).status_code == 404


async def test_a_new_currency_alone_keeps_the_bounds_amounts_or_is_refused(
    client: httpx.AsyncClient,
) -> None:
    account = await signed_up(client)
    rule = (
        await new_rule(client, account, pattern="x", currency="EUR", min_amount="5.00", tags=["t"])
    ).json()
    path = f"/api/v1/expenses/rules/{rule['id']}"
    # 5.00 EUR is 5 JPY and 5.000 KWD: the amount stays, its minor units do not.
    for currency, bound in (("JPY", "5"), ("KWD", "5.000"), ("EUR", "5.00")):
        changed = await client.patch(path, json={"currency": currency}, headers=account.headers)
        assert changed.status_code == 200, changed.text
        assert (changed.json()["currency"], changed.json()["min_amount"]) == (currency, bound)
    await client.patch(path, json={"max_amount": "7.50"}, headers=account.headers)
    # 7.50 has no JPY spelling: the problem is the currency sent, the rule stays as it was.
    refused = await client.patch(path, json={"currency": "JPY"}, headers=account.headers)
    assert refused.status_code == 422, refused.text
    [error] = refused.json()["errors"]
    assert error["field"] == "body.currency"
    assert "max_amount 7.50 EUR" in error["message"]
    assert "JPY amounts have no decimals" in error["message"]
    kept = (await client.get(path, headers=account.headers)).json()
    assert (kept["currency"], kept["min_amount"], kept["max_amount"]) == ("EUR", "5.00", "7.50")
    both = await client.patch(
        path, json={"currency": "JPY", "max_amount": "8"}, headers=account.headers
    )
    assert (both.json()["min_amount"], both.json()["max_amount"]) == ("5", "8")


async def test_a_bound_past_the_stored_one_names_the_bound_sent(
    client: httpx.AsyncClient,
) -> None:
    account = await signed_up(client)
    rule = (
        await new_rule(
            client,
            account,
            pattern="x",
            currency="EUR",
            min_amount="5",
            max_amount="6",
            tags=["t"],
        )
    ).json()
    path = f"/api/v1/expenses/rules/{rule['id']}"
    for sent, field in (
        ({"min_amount": "10"}, "body.min_amount"),
        ({"max_amount": "4"}, "body.max_amount"),
        ({"min_amount": "10", "max_amount": "9"}, "body.max_amount"),
    ):
        response = await client.patch(path, json=sent, headers=account.headers)
        assert response.status_code == 422, response.text
        assert [error["field"] for error in response.json()["errors"]] == [field], sent
    kept = (await client.get(path, headers=account.headers)).json()
    assert (kept["min_amount"], kept["max_amount"]) == ("5.00", "6.00")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"pattern": "x" * 201, "tags": ["t"]}, "pattern"),
        ({"pattern": "", "tags": ["t"]}, "pattern"),
        ({"pattern": "   ", "tags": ["t"]}, "pattern"),  # would match any text with a space
        ({"match": "regex", "pattern": "(unclosed", "tags": ["t"]}, "pattern"),
        ({"match": "regex", "pattern": r"(a)\1", "tags": ["t"]}, "pattern"),  # backreference
        ({"match": "regex", "pattern": "(?=look)ahead", "tags": ["t"]}, "pattern"),
        ({"pattern": "x"}, "category_id"),  # nothing to do
        ({"pattern": "x", "min_amount": "5", "tags": ["t"]}, "currency"),
        ({"pattern": "x", "currency": "JPY", "min_amount": "5.5", "tags": ["t"]}, "min_amount"),
        (
            {
                "pattern": "x",
                "currency": "EUR",
                "min_amount": "9",
                "max_amount": "5",
                "tags": ["t"],
            },
            "max_amount",
        ),
        ({"pattern": "x", "field": "notes", "tags": ["t"]}, "field"),
    ],
)
async def test_bad_rules_are_422(client: httpx.AsyncClient, body: dict, field: str) -> None:
    account = await signed_up(client)
    response = await new_rule(client, account, **body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert any(field in error["field"] for error in response.json()["errors"]), response.json()


async def test_a_user_has_at_most_100_rules(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rules, "MAX_RULES", 3)
    account = await signed_up(client)
    statuses = [
        (await new_rule(client, account, pattern=str(n), tags=["t"])).status_code for n in range(4)
    ]
    assert statuses == [201, 201, 201, 409]


async def test_rules_added_at_once_each_take_the_next_position(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Concurrent creations of one user take turns: none meets another on the position the
    # server chose (a 409 the client never asked for), and together they stay within the limit.
    monkeypatch.setattr(rules, "MAX_RULES", 6)
    account = await signed_up(client)
    responses = await asyncio.gather(
        *(new_rule(client, account, pattern=f"p{n}", tags=["t"]) for n in range(8))
    )
    assert sorted(r.status_code for r in responses) == [201] * 6 + [409] * 2
    created = sorted(r.json()["position"] for r in responses if r.status_code == 201)
    assert created == [1, 2, 3, 4, 5, 6]


async def test_a_rule_after_one_at_the_highest_position_needs_a_position(
    client: httpx.AsyncClient,
) -> None:
    # It was given 1,000,001, a position no request may give: sent back in a PATCH, a 422.
    account = await signed_up(client)
    await new_rule(client, account, pattern="a", tags=["t"], position=1_000_000)
    refused = await new_rule(client, account, pattern="b", tags=["t"])
    assert refused.status_code == 409, refused.text
    assert [e["field"] for e in refused.json()["errors"]] == ["body.position"]
    placed = await new_rule(client, account, pattern="b", tags=["t"], position=2)
    assert placed.status_code == 201, placed.text
    listed = (await client.get("/api/v1/expenses/rules", headers=account.headers)).json()
    assert [rule["position"] for rule in listed["items"]] == [2, 1_000_000]


async def test_the_rules_list_pages_in_their_order(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    for n in range(5):
        assert (await new_rule(client, account, pattern=f"p{n}", tags=["t"])).status_code == 201
    patterns: list[str] = []
    params: dict[str, str] = {"limit": "2"}
    while True:
        page = await client.get("/api/v1/expenses/rules", params=params, headers=account.headers)
        assert page.status_code == 200, page.text
        assert len(page.json()["items"]) <= 2
        patterns += [rule["pattern"] for rule in page.json()["items"]]
        if not page.json()["next_cursor"]:
            break
        params["cursor"] = page.json()["next_cursor"]
    assert patterns == [f"p{n}" for n in range(5)]
    forged = await client.get(
        "/api/v1/expenses/rules", params={"cursor": "bm90LWpzb24"}, headers=account.headers
    )
    assert forged.status_code == 422
    assert forged.json()["errors"][0]["field"] == "query.cursor"


@pytest.mark.parametrize("position", [2**63, -(2**63) - 1, 10**30])
async def test_a_forged_cursor_beyond_a_bigint_is_a_422(
    client: httpx.AsyncClient, position: int
) -> None:
    """The rules' cursor holds a number: one no BIGINT holds is refused, not a 500."""
    account = await signed_up(client)
    assert (await new_rule(client, account, pattern="p", tags=["t"])).status_code == 201
    forged = encode_cursor([position], list_name="rules")
    response = await client.get(
        "/api/v1/expenses/rules", params={"cursor": forged}, headers=account.headers
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == "query.cursor"
    last = encode_cursor([2**63 - 1], list_name="rules")
    beyond = await client.get(
        "/api/v1/expenses/rules", params={"cursor": last}, headers=account.headers
    )
    assert beyond.json() == {"items": [], "next_cursor": None}


def test_a_regex_cannot_backtrack_catastrophically() -> None:
    """The classic (a+)+$ on 100,000 a's then a b: exponential for a backtracking engine, linear
    for RE2."""
    rule = rules.Rule(
        id=uuid.uuid4(),
        field="description",
        contains=None,
        regex=rules._regex("(a+)+$"),
        currency=None,
        min_minor=None,
        max_minor=None,
        category_id=None,
        tags=("t",),
    )
    started = time.perf_counter()
    matched = rule.matches(
        description="a" * 100_000 + "b", merchant=None, amount_minor=1, currency="EUR"
    )
    assert not matched
    assert time.perf_counter() - started < 0.5


async def test_the_import_command_runs_the_rules(
    client: httpx.AsyncClient, database_url: str
) -> None:
    account = await signed_up(client)
    ids = await category_ids(client, account)
    await new_rule(client, account, pattern="bakery", category_id=ids["Groceries"])
    env = clean_env(EXPENSETRACKER_DATABASE_URL=database_url)
    command = cli(
        "expenses", "import", str(STATEMENTS / "statement.mt940"), "--user", account.email
    )
    with spawn(command, env) as process:
        await asyncio.to_thread(process.wait, 120)
    assert process.popen.returncode == 0, process.output
    assert await expenses_by_description(client, account) == {
        "BAKERY SUNRISE BREAD AND COFFEE": (ids["Groceries"], []),
        "STREAMING SERVICE MONTHLY": (None, []),
        "BAECKEREI SONNE": (None, []),
    }


async def test_the_rules_apply_command_previews_then_changes(
    client: httpx.AsyncClient, database_url: str
) -> None:
    account = await signed_up(client)
    ids = await category_ids(client, account)
    for description in ("Rent April", "Bus"):
        await client.post(
            "/api/v1/expenses",
            json={
                "amount": "700",
                "currency": "EUR",
                "occurred_on": "2026-04-01",
                "description": description,
            },
            headers=account.headers,
        )
    rule = (
        await new_rule(client, account, pattern="RENT", category_id=ids["Housing"], tags=["home"])
    ).json()
    env = clean_env(EXPENSETRACKER_DATABASE_URL=database_url)

    async def apply(*options: str) -> subprocess.CompletedProcess[str]:
        command = cli("expenses", "rules", "apply", *options)
        return await asyncio.to_thread(
            subprocess.run, command, env=env, cwd=REPO, capture_output=True, text=True, timeout=120
        )

    preview = await apply("--email", account.email, "--dry-run")
    assert preview.returncode == 0, preview.stderr
    [change, summary] = preview.stdout.splitlines()
    assert "'Rent April'" in change and ids["Housing"] in change and rule["id"] in change
    assert "+home" in change
    assert summary == "1 uncategorised expense(s) would change"
    assert (await expenses_by_description(client, account))["Rent April"] == (None, [])

    applied = await apply("--email", account.email.upper())
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines()[-1] == "1 uncategorised expense(s) changed"
    after = await expenses_by_description(client, account)
    assert after == {"Rent April": (ids["Housing"], ["home"]), "Bus": (None, [])}

    unknown = await apply("--email", "nobody@example.org")
    assert unknown.returncode == 2
    assert "no account with the email address nobody@example.org" in unknown.stderr
