"""Malformed input is a 4xx problem, never a 500 (issue 13, findings 3 and 8): NUL characters
and lone surrogates anywhere text goes, dates and months outside what arithmetic on them can
represent, tags that Python and PostgreSQL case-fold differently, and digits that are not
ASCII."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from expensetracker.platform.pagination import encode_cursor
from tests.helpers.users import Account, signed_up

pytestmark = pytest.mark.database

EXPENSE = {"amount": "12.34", "currency": "EUR", "occurred_on": "2026-01-05", "description": "x"}
BUDGET = {"name": "food", "amount": "100", "currency": "EUR"}


def cursor(list_name: str, key: list) -> str:
    # json.dumps escapes a lone surrogate as \udxxx, which json.loads turns back into one.
    return encode_cursor(key, list_name=list_name)


async def post_raw(client: httpx.AsyncClient, account: Account, path: str, body: dict):
    # ASCII JSON: a lone surrogate travels as the escape "\ud800", as a client would send it.
    return await client.post(
        path,
        content=json.dumps(body, ensure_ascii=True).encode(),
        headers={**account.headers, "Content-Type": "application/json"},
    )


def assert_problem(response: httpx.Response, status: int = 422) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("bad", ["\x00", "\ud800", "a\udfffb"])
async def test_nul_and_lone_surrogates_in_bodies(client: httpx.AsyncClient, bad: str) -> None:
    account = await signed_up(client)
    for path, body in [
        ("/api/v1/expenses", {**EXPENSE, "description": f"x{bad}"}),
        ("/api/v1/expenses", {**EXPENSE, "notes": bad}),
        ("/api/v1/expenses", {**EXPENSE, "merchant": f"shop{bad}"}),
        ("/api/v1/expenses", {**EXPENSE, "tags": [f"t{bad}"]}),
        ("/api/v1/expenses", {**EXPENSE, "amount": f"1{bad}"}),
        ("/api/v1/categories", {"name": f"c{bad}"}),
        ("/api/v1/budgets", {**BUDGET, "name": f"b{bad}"}),
        ("/api/v1/auth/login", {"email": "a@example.org", "password": f"p{bad}"}),
        ("/api/v1/auth/refresh", {"refresh_token": f"r{bad}"}),
    ]:
        assert_problem(await post_raw(client, account, path, body))
    listed = await client.get("/api/v1/expenses", headers=account.headers)
    assert listed.json()["items"] == []


@pytest.mark.parametrize(
    "params",
    [
        {"q": "a\x00b"},
        {"tag": "\x00"},
        {"min_amount": "1\x00"},
        {"cursor": "\x00"},
        {"cursor": cursor("expenses", ["2026-01-01\x00", str(uuid.uuid4())])},
        {"cursor": cursor("expenses", ["2026-01-01", "\ud800"])},
    ],
)
async def test_nul_and_lone_surrogates_in_query_parameters(
    client: httpx.AsyncClient, params: dict
) -> None:
    account = await signed_up(client)
    assert_problem(await client.get("/api/v1/expenses", params=params, headers=account.headers))


@pytest.mark.parametrize(
    "key", [["\x00", str(uuid.uuid4())], ["\ud800", str(uuid.uuid4())], ["a\udc00", "x"]]
)
@pytest.mark.parametrize("list_name", ["categories", "tags", "budgets"])
async def test_nul_and_lone_surrogates_in_text_cursors(
    client: httpx.AsyncClient, key: list, list_name: str
) -> None:
    account = await signed_up(client)
    response = await client.get(
        f"/api/v1/{list_name}",
        params={"cursor": cursor(list_name, key)},
        headers=account.headers,
    )
    assert_problem(response)


@pytest.mark.parametrize("year", ["0000", "0001", "9999"])
async def test_reports_and_budgets_in_far_years(client: httpx.AsyncClient, year: str) -> None:
    account = await signed_up(client)
    await client.post("/api/v1/budgets", json=BUDGET, headers=account.headers)
    month = f"{year}-12"
    for path, params in [
        ("/api/v1/reports/summary", {"from": "2026-01-01", "to": f"{year}-12-31"}),
        ("/api/v1/reports/summary", {"from": f"{year}-01-01", "to": "2026-01-01"}),
        ("/api/v1/reports/summary", {"from": f"{year}-01-01", "to": f"{year}-12-31"}),
        ("/api/v1/reports/merchants", {"from": f"{year}-01-01", "to": f"{year}-12-31"}),
        ("/api/v1/reports/trends", {"month": month}),
        ("/api/v1/reports/trends", {"month": f"{year}-01"}),
        ("/api/v1/reports/budgets", {"month": month}),
        ("/api/v1/reports/budgets", {"month": f"{year}-01"}),
        ("/api/v1/reports/overview", {"month": month}),
        ("/api/v1/reports/overview", {"month": f"{year}-01", "months": 2}),
        ("/api/v1/expenses", {"from": f"{year}-01-01"}),
        ("/api/v1/expenses", {"to": f"{year}-12-31"}),
    ]:
        response = await client.get(path, params=params, headers=account.headers)
        assert_problem(response)
    for starts in (month, f"{year}-01"):
        body = {**BUDGET, "starts": starts}
        assert_problem(await client.post("/api/v1/budgets", json=body, headers=account.headers))


async def test_bounds_of_report_dates_still_work(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    body = {**BUDGET, "starts": "2999-12"}
    assert (await client.post("/api/v1/budgets", json=body, headers=account.headers)).is_success
    for path, params in [
        ("/api/v1/reports/summary", {"from": "2990-01-01", "to": "2999-12-31"}),
        ("/api/v1/reports/summary", {"from": "1900-01-01", "to": "1909-12-31"}),
        ("/api/v1/reports/trends", {"month": "2999-12", "months": 24}),
        ("/api/v1/reports/trends", {"month": "1901-12", "months": 24}),
        ("/api/v1/reports/budgets", {"month": "2999-12"}),
        ("/api/v1/reports/overview", {"month": "2999-12", "months": 24}),
        ("/api/v1/reports/overview", {"month": "1901-12", "months": 24}),
    ]:
        response = await client.get(path, params=params, headers=account.headers)
        assert response.status_code == 200, (path, params, response.text)


async def test_tags_are_case_folded_by_postgresql_alone(client: httpx.AsyncClient) -> None:
    # Python lower-cases "İ" to "i̇" (two code points); PostgreSQL may not. One rule (the
    # database's) decides which names are one tag, so this neither fails nor links nothing.
    account = await signed_up(client)
    first = await client.post(
        "/api/v1/expenses",
        json={**EXPENSE, "tags": ["İstanbul", "ISTANBUL", "Straße", "STRASSE"]},
        headers=account.headers,
    )
    assert first.status_code == 201, first.text
    second = await client.post(
        "/api/v1/expenses",
        json={**EXPENSE, "tags": ["İSTANBUL", "i̇stanbul"]},
        headers=account.headers,
    )
    assert second.status_code == 201, second.text
    tags = (await client.get("/api/v1/tags", headers=account.headers)).json()["items"]
    names = {tag["name"] for tag in tags}
    assert "İstanbul" in names
    # What the expenses say they carry is what the tags list holds: nothing unlinked.
    for created in (first.json(), second.json()):
        assert created["tags"], created
        assert set(created["tags"]) <= names
        fetched = await client.get(f"/api/v1/expenses/{created['id']}", headers=account.headers)
        assert fetched.json()["tags"] == created["tags"]
    listed = await client.get(
        "/api/v1/expenses", params={"tag": "İstanbul"}, headers=account.headers
    )
    assert first.json()["id"] in {item["id"] for item in listed.json()["items"]}
    patched = await client.patch(
        f"/api/v1/expenses/{first.json()['id']}",
        json={"tags": ["İSTANBUL"]},
        headers=account.headers,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["tags"]


@pytest.mark.parametrize(
    "amount",
    # Arabic-Indic and full-width digits, a trailing newline, spaces, Python's int() syntax.
    [
        "12.34\n",
        "12\n",
        "\u0661\u0662.\u0663\u0664",
        "\uff11\uff12.\uff13\uff14",
        "12.3\u0664",
        " 12.34",
        "12.34 ",
        "1_000",
        "+12",
        "12.",
    ],
)
async def test_amounts_take_ascii_digits_and_nothing_else(
    client: httpx.AsyncClient, amount: str
) -> None:
    account = await signed_up(client)
    response = await client.post(
        "/api/v1/expenses", json={**EXPENSE, "amount": amount}, headers=account.headers
    )
    assert_problem(response)
    budget = await client.post(
        "/api/v1/budgets", json={**BUDGET, "amount": amount}, headers=account.headers
    )
    assert_problem(budget)
    listed = await client.get(
        "/api/v1/expenses", params={"min_amount": amount}, headers=account.headers
    )
    assert_problem(listed)


@pytest.mark.parametrize(
    "month",
    [
        "2026-01\n",
        "\u0662\u0660\u0662\u0666-\u0660\u0661",
        "\uff12\uff10\uff12\uff16-\uff10\uff11",
        "2026-1",
        "2026-01-01",
    ],
)
async def test_months_take_ascii_digits_and_nothing_else(
    client: httpx.AsyncClient, month: str
) -> None:
    account = await signed_up(client)
    for path in ("/api/v1/reports/budgets", "/api/v1/reports/trends"):
        response = await client.get(path, params={"month": month}, headers=account.headers)
        assert_problem(response)
    response = await client.post(
        "/api/v1/budgets", json={**BUDGET, "starts": month}, headers=account.headers
    )
    assert_problem(response)


@pytest.mark.parametrize(
    ("content", "content_type", "field", "message"),
    [
        (
            json.dumps(EXPENSE),
            None,
            "body",
            "must be sent as JSON, with Content-Type: application/json",
        ),
        (
            json.dumps(EXPENSE),
            "text/plain",
            "body",
            "must be sent as JSON, with Content-Type: application/json",
        ),
        (
            "amount=1",
            "application/x-www-form-urlencoded",
            "body",
            "must be sent as JSON, with Content-Type: application/json",
        ),
        (json.dumps([EXPENSE]), "application/json", "body", "must be a JSON object"),
        ("null", "application/json", "body", "must be a JSON object"),
        ('"x"', "application/json", "body", "must be a JSON object"),
        ('{"amount": ', "application/json", "body", "is not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "application/json", "body", "is not JSON this API"),
        ('{"amount": 1' + "0" * 5_000 + "}", "application/json", "body", "is not JSON this API"),
        (b'{"description": "caf\xe9"}', "application/json", "body", "is not valid JSON"),
        (
            json.dumps({**EXPENSE, "currency": 978}),
            "application/json",
            "body.currency",
            "must be a string, in quotes",
        ),
    ],
)
async def test_a_body_that_is_no_json_object_is_said_so_by_field(
    client: httpx.AsyncClient,
    content: str | bytes,
    content_type: str | None,
    field: str,
    message: str,
) -> None:
    """Not JSON (nor JSON the parser can read: nested too deeply, a number of more digits than
    Python converts, not UTF-8), not sent as JSON, or not an object: a 422 naming the body in
    plain words, not the library's sentence or a character position as a field, and nothing is
    created."""
    account = await signed_up(client)
    headers = {**account.headers, **({"Content-Type": content_type} if content_type else {})}
    body = content if isinstance(content, bytes) else content.encode()
    response = await client.post("/api/v1/expenses", content=body, headers=headers)
    assert_problem(response)
    [error] = response.json()["errors"]
    assert error["field"] == field
    assert error["message"].startswith(message), error
    listed = await client.get("/api/v1/expenses", headers=account.headers)
    assert listed.json()["items"] == []


@pytest.mark.parametrize(
    ("path", "query", "name"),
    [
        ("/api/v1/expenses", "currency=EUR&currency=JPY", "currency"),
        ("/api/v1/expenses/export", "from=2026-01-01&to=2026-01-31&from=2026-01-02", "from"),
        ("/api/v1/expenses", "limit=1&limit=500", "limit"),
        (
            "/api/v1/reports/summary",
            "from=2026-01-01&to=2026-12-31&group_by=tag&group_by=month",
            "group_by",
        ),
    ],
)
async def test_a_query_parameter_given_twice_is_refused_by_name(
    client: httpx.AsyncClient, path: str, query: str, name: str
) -> None:
    """The framework keeps the last of two values: a list filtered by one of two currencies
    looked filtered by both. A parameter given twice is a 422 naming it; once, it is taken."""
    account = await signed_up(client)
    await client.post("/api/v1/expenses", json=EXPENSE, headers=account.headers)
    response = await client.get(f"{path}?{query}", headers=account.headers)
    assert_problem(response)
    assert response.json()["errors"] == [
        {"field": f"query.{name}", "message": "must be given once", "type": "repeated"}
    ]
    once = await client.get(f"{path}?{query.rsplit('&', 1)[0]}", headers=account.headers)
    assert once.status_code == 200, once.text
