"""Budgets and reports: sums checked against Python over generated data, month boundaries,
rollover chains, category trees, alerts, isolation."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from expensetracker.platform.money import format_amount
from expensetracker.platform.pagination import encode_cursor
from expensetracker.platform.state import app_state
from expensetracker.reports.summaries import percent
from tests.helpers.apps import AppFactory, app_of, counter
from tests.helpers.database import connected, until_waiting_on_locks
from tests.helpers.expenses import categories, create
from tests.helpers.reports import budget, status_of
from tests.helpers.users import PASSWORD, Account, signed_up

pytestmark = pytest.mark.database


async def test_budget_crud_and_validation(client: httpx.AsyncClient) -> None:
    account, other = await signed_up(client), await signed_up(client)
    made = await budget(client, account, thresholds=[100, 50, 50])
    assert made["thresholds"] == [50, 100]
    path = f"/api/v1/budgets/{made['id']}"
    replaced = await client.put(
        path,
        json={"name": "Renamed", "amount": "5000", "currency": "JPY", "starts": "2026-02"},
        headers=account.headers,
    )
    assert replaced.status_code == 200
    assert (replaced.json()["amount"], replaced.json()["starts"]) == ("5000", "2026-02")
    for bad in (
        {"amount": "1.001"},
        {"currency": "eur"},
        {"amount": "0"},
        {"thresholds": [0]},
        {"thresholds": []},
        {"thresholds": ["80"]},  # JSON's own types: a number, not a string of one
        {"rollover": "yes"},
        {"converted": 1},
        {"starts": "2026-13"},
        {"category_id": str(uuid.uuid4())},
        {"owner": "me"},
    ):
        body = {"name": "x", "amount": "1.00", "currency": "EUR", **bad}
        response = await client.post("/api/v1/budgets", json=body, headers=account.headers)
        assert response.status_code == 422, bad
    # Another user: 404 as for a missing budget, and nothing listed.
    missing = await client.get(f"/api/v1/budgets/{uuid.uuid4()}", headers=other.headers)
    for response in (
        await client.get(path, headers=other.headers),
        await client.put(
            path, json={"name": "x", "amount": "1.00", "currency": "EUR"}, headers=other.headers
        ),
        await client.delete(path, headers=other.headers),
    ):
        assert response.status_code == 404
        assert response.json() == missing.json()
    assert (await client.get("/api/v1/budgets", headers=other.headers)).json()["items"] == []
    assert (await status_of(client, other, "2026-02")) == {}
    assert (await client.delete(path, headers=account.headers)).status_code == 204


async def test_month_boundaries_and_currencies(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    await budget(client, account, starts="2025-12")
    for day, amount, currency in [
        ("2025-12-31", "1.00", "EUR"),  # December's last day
        ("2026-01-01", "2.00", "EUR"),  # January's first day
        ("2026-01-31", "4.00", "EUR"),
        ("2026-02-01", "8.00", "EUR"),
        ("2026-01-15", "500", "JPY"),  # another currency: never added to EUR
    ]:
        await create(client, account, occurred_on=day, amount=amount, currency=currency)
    assert (await status_of(client, account, "2025-12"))["Everything"]["spent"] == "1.00"
    january = (await status_of(client, account, "2026-01"))["Everything"]
    assert (january["spent"], january["remaining"], january["state"]) == ("6.00", "94.00", "ok")
    assert (await status_of(client, account, "2026-02"))["Everything"]["spent"] == "8.00"
    empty = (await status_of(client, account, "2026-03"))["Everything"]
    assert (empty["spent"], empty["percent_used"], empty["state"]) == ("0.00", 0.0, "ok")
    assert await status_of(client, account, "2025-11") == {}  # before the budget starts


async def test_leap_day(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    await budget(client, account, starts="2024-02", amount="10.00")
    await create(client, account, occurred_on="2024-02-29", amount="3.00")
    await create(client, account, occurred_on="2024-03-01", amount="5.00")
    assert (await status_of(client, account, "2024-02"))["Everything"]["spent"] == "3.00"


async def test_rollover_chain(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    await budget(client, account, rollover=True, name="Carry")
    await budget(client, account, rollover=False, name="Plain")
    await create(client, account, occurred_on="2026-01-10", amount="80.00")
    await create(client, account, occurred_on="2026-02-10", amount="130.00")
    january, february, march = [
        await status_of(client, account, month) for month in ("2026-01", "2026-02", "2026-03")
    ]
    assert january["Carry"]["rollover_in"] == "0.00"
    assert (february["Carry"]["rollover_in"], february["Carry"]["available"]) == ("20.00", "120.00")
    assert (february["Carry"]["remaining"], february["Carry"]["state"]) == ("-10.00", "over")
    assert (march["Carry"]["rollover_in"], march["Carry"]["available"]) == ("-10.00", "90.00")
    assert march["Carry"]["state"] == "ok"
    assert (february["Plain"]["rollover_in"], february["Plain"]["remaining"]) == ("0.00", "-30.00")


async def test_category_budgets_include_subcategories(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    names = await categories(client, account)
    await budget(client, account, name="Food", category_id=names["Food"], amount="50.00")
    await budget(client, account, name="Rent", category_id=names["Rent"], amount="900.00")
    await create(
        client, account, occurred_on="2026-01-02", amount="20.00", category_id=names["Groceries"]
    )
    await create(
        client, account, occurred_on="2026-01-03", amount="25.00", category_id=names["Restaurants"]
    )
    await create(
        client, account, occurred_on="2026-01-04", amount="7.00", category_id=names["Food"]
    )
    await create(
        client, account, occurred_on="2026-01-05", amount="950.00", category_id=names["Rent"]
    )
    report = await status_of(client, account, "2026-01")
    assert (report["Food"]["spent"], report["Food"]["state"]) == ("52.00", "over")
    assert (report["Rent"]["spent"], report["Rent"]["percent_used"]) == ("950.00", 105.6)


async def test_a_budget_whose_category_is_deleted_says_so(client: httpx.AsyncClient) -> None:
    # The category's expenses become uncategorised, so the budget counts nothing: its status
    # says why, until a PUT gives it another category.
    account = await signed_up(client)
    names = await categories(client, account)
    snacks = await budget(client, account, name="Health", category_id=names["Health"])
    await budget(client, account, name="Everything")
    await create(client, account, occurred_on="2026-01-02", category_id=names["Health"])
    before = await status_of(client, account, "2026-01")
    assert [before[name]["category_deleted"] for name in ("Health", "Everything")] == [False] * 2
    assert before["Health"]["spent"] == "12.34"

    response = await client.delete(f"/api/v1/categories/{names['Health']}", headers=account.headers)
    assert response.status_code == 204
    after = await status_of(client, account, "2026-01")
    assert (after["Health"]["category_deleted"], after["Health"]["spent"]) == (True, "0.00")
    assert (after["Everything"]["category_deleted"], after["Everything"]["spent"]) == (
        False,
        "12.34",
    )

    body = {"name": "Health", "amount": "100.00", "currency": "EUR", "starts": "2026-01"}
    response = await client.put(
        f"/api/v1/budgets/{snacks['id']}",
        json={**body, "category_id": names["Other"]},
        headers=account.headers,
    )
    assert response.status_code == 200, response.text
    assert (await status_of(client, account, "2026-01"))["Health"]["category_deleted"] is False


async def test_replacing_a_budget_while_it_is_deleted_is_a_404_not_a_500(
    client: httpx.AsyncClient,
) -> None:
    account = await signed_up(client)
    for _ in range(10):
        path = f"/api/v1/budgets/{(await budget(client, account))['id']}"
        body = {"name": "Everything", "amount": "20.00", "currency": "EUR"}
        replaced, deleted = await asyncio.gather(
            client.put(path, json=body, headers=account.headers),
            client.delete(path, headers=account.headers),
        )
        assert deleted.status_code == 204
        assert replaced.status_code in (200, 404), replaced.text


@pytest.mark.parametrize(
    "moment",
    ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-03-05T12:00:00"],
)
async def test_alerts_page_on_and_refuse_a_forged_moment(
    client: httpx.AsyncClient, moment: str
) -> None:
    """The alerts' cursor holds a timestamp: pages follow one another, and a forged one that UTC
    cannot hold, or without an offset, is a 422 naming the cursor, not a 500."""
    account = await signed_up(client)
    await budget(client, account, thresholds=[50, 80], starts="2026-03")
    await create(client, account, occurred_on="2026-03-05", amount="85.00")
    await status_of(client, account, "2026-03")
    first = await client.get("/api/v1/reports/alerts", params={"limit": 1}, headers=account.headers)
    cursor = first.json()["next_cursor"]
    second = await client.get(
        "/api/v1/reports/alerts", params={"limit": 1, "cursor": cursor}, headers=account.headers
    )
    thresholds = [page.json()["items"][0]["threshold"] for page in (first, second)]
    assert sorted(thresholds) == [50, 80] and second.json()["next_cursor"] is None
    forged = encode_cursor([moment, str(uuid.uuid4())], list_name="alerts")
    response = await client.get(
        "/api/v1/reports/alerts", params={"cursor": forged}, headers=account.headers
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == "query.cursor"


async def test_thresholds_are_recorded_once(client: httpx.AsyncClient) -> None:
    account, other = await signed_up(client), await signed_up(client)
    made = await budget(client, account, thresholds=[50, 80, 100], starts="2026-03")
    before = counter("expensetracker_budgets_exceeded_total")
    await create(client, account, occurred_on="2026-03-05", amount="85.00")
    for _ in range(3):
        report = await status_of(client, account, "2026-03")
    assert report["Everything"]["state"] == "warning"
    alerts = (await client.get("/api/v1/reports/alerts", headers=account.headers)).json()["items"]
    assert sorted(alert["threshold"] for alert in alerts) == [50, 80]
    assert {alert["budget_id"] for alert in alerts} == {made["id"]}
    assert alerts[0]["spent"] == "85.00" and alerts[0]["month"] == "2026-03"
    await create(client, account, occurred_on="2026-03-06", amount="20.00")
    await status_of(client, account, "2026-03")
    alerts = (await client.get("/api/v1/reports/alerts", headers=account.headers)).json()["items"]
    assert sorted(alert["threshold"] for alert in alerts) == [50, 80, 100]
    assert counter("expensetracker_budgets_exceeded_total") == before + 3
    assert (await client.get("/api/v1/reports/alerts", headers=other.headers)).json()["items"] == []
    # The budget's currency changes: its past alerts keep the one their amounts were in.
    replaced = await client.put(
        f"/api/v1/budgets/{made['id']}",
        json={"name": "Everything", "amount": "100", "currency": "JPY", "starts": "2026-03"},
        headers=account.headers,
    )
    assert replaced.status_code == 200, replaced.text
    alerts = (await client.get("/api/v1/reports/alerts", headers=account.headers)).json()["items"]
    spent = {(alert["currency"], alert["spent"]) for alert in alerts}
    assert spent == {("EUR", "85.00"), ("EUR", "105.00")}


async def test_a_crossing_of_a_budget_being_deleted_is_not_recorded(
    client: httpx.AsyncClient, database_url: str
) -> None:
    """The status reads the budgets, then records the thresholds newly crossed; a budget deleted
    in between is left out of the record, not a foreign-key error (a 500, or a failed run of
    the alerts job)."""
    account = await signed_up(client)
    made = await budget(client, account, starts="2026-03")
    await create(client, account, occurred_on="2026-03-05", amount="85.00")
    async with connected(database_url) as owner:
        deletion = owner.transaction()
        await deletion.start()
        await owner.execute("DELETE FROM reports.budgets WHERE id = $1", uuid.UUID(made["id"]))
        reading = asyncio.create_task(
            client.get(
                "/api/v1/reports/budgets", params={"month": "2026-03"}, headers=account.headers
            )
        )
        await until_waiting_on_locks(database_url, 1)
        await deletion.commit()
        report = await reading
    assert report.status_code == 200, report.text
    # Read before the deletion committed, it still shows the budget, crossed; nothing is kept.
    assert [item["state"] for item in report.json()["budgets"]] == ["warning"]
    alerts = await client.get("/api/v1/reports/alerts", headers=account.headers)
    assert alerts.json()["items"] == []


async def test_trends_and_merchants(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    names = await categories(client, account)
    for day, amount, merchant in [
        ("2026-01-10", "10.00", "Bakery"),
        ("2026-02-10", "15.00", "Bakery"),
        ("2026-02-11", "40.00", "Market"),
    ]:
        await create(
            client,
            account,
            occurred_on=day,
            amount=amount,
            merchant=merchant,
            category_id=names["Groceries"],
        )
    trends = (
        await client.get(
            "/api/v1/reports/trends",
            params={"month": "2026-02", "months": 3},
            headers=account.headers,
        )
    ).json()
    assert trends.get("months") == ["2025-12", "2026-01", "2026-02"], trends
    [groceries] = trends["categories"]
    assert groceries["totals"] == ["0.00", "10.00", "55.00"]
    assert (groceries["change"], groceries["change_percent"]) == ("45.00", 450.0)
    merchants = (
        await client.get(
            "/api/v1/reports/merchants",
            params={"from": "2026-01-01", "to": "2026-12-31", "limit": 1},
            headers=account.headers,
        )
    ).json()
    assert merchants == [{"merchant": "Market", "currency": "EUR", "amount": "40.00", "count": 1}]


async def test_percentages_are_rounded_from_the_exact_quotient(
    client: httpx.AsyncClient,
) -> None:
    """0.23 of 20.00 is 1.15 %: 1.2 to one decimal (half-even, and half up alike). Divided as
    floats it was 1.1499…, shown as 1.1, in a budget's percent used and a trend's change."""
    account = await signed_up(client)
    await budget(client, account, amount="20.00", starts="2026-02")
    await create(client, account, occurred_on="2026-01-10", amount="20.00")
    await create(client, account, occurred_on="2026-02-10", amount="0.23")
    await create(client, account, occurred_on="2026-02-11", amount="20.00")
    await create(client, account, occurred_on="2026-03-10", amount="0.23")
    assert (await status_of(client, account, "2026-03"))["Everything"]["percent_used"] == 1.2
    for converted in ({}, {"in": "home"}):
        response = await client.get(
            "/api/v1/reports/trends",
            params={"month": "2026-02", "months": 2, **converted},
            headers=account.headers,
        )
        [line] = response.json()["categories"]
        assert (line["change"], line["change_percent"]) == ("0.23", 1.2), converted
    march = await client.get(
        "/api/v1/reports/trends", params={"month": "2026-03", "months": 2}, headers=account.headers
    )
    # -98.86…%: a fall rounds the same way.
    assert march.json()["categories"][0]["change_percent"] == -98.9


@given(part=st.integers(-(10**20), 10**20), whole=st.integers(1, 10**20))
def test_a_percentage_is_the_exact_one_rounded_half_even(part: int, whole: int) -> None:
    with localcontext(prec=100, rounding=ROUND_HALF_EVEN):  # exact for these sizes
        exact = (Decimal(part) * 100 / Decimal(whole)).quantize(Decimal("0.1"))
    assert percent(part, whole) == float(exact)


async def test_a_summary_by_category_lists_them_by_name(client: httpx.AsyncClient) -> None:
    """Both summaries and both trends, each currency apart and converted (all of it in the
    home currency here): the categories by name, case aside; spending without one last."""
    account = await signed_up(client)
    # A name in lower case: by the code points alone it would come after every capital.
    await client.post("/api/v1/categories", json={"name": "music"}, headers=account.headers)
    names = await categories(client, account)
    for category_id in [*names.values(), None]:
        await create(client, account, occurred_on="2026-03-02", category_id=category_id)
    by_name = [*sorted(names, key=str.casefold), None]
    for converted in ({}, {"in": "home"}):
        summary = await client.get(
            "/api/v1/reports/summary",
            params={"from": "2026-03-01", "to": "2026-03-31", **converted},
            headers=account.headers,
        )
        assert [group["name"] for group in summary.json()["groups"]] == by_name, converted
        trends = await client.get(
            "/api/v1/reports/trends",
            params={"month": "2026-03", "months": 2, **converted},
            headers=account.headers,
        )
        lines = [line["name"] for line in trends.json()["categories"]]
        assert list(dict.fromkeys(lines)) == by_name, converted


async def test_more_concurrent_requests_than_pool_connections(serve_app: AppFactory) -> None:
    """Every request waits its turn for the one connection, none is starved or deadlocked,
    and the alert crossed by all of them at once is recorded once."""
    async with serve_app(db_pool_size=1, db_max_overflow=0) as client:
        account = await signed_up(client)
        await budget(client, account, amount="10.00", thresholds=[100], starts="2026-04")
        await create(client, account, occurred_on="2026-04-02", amount="12.00")
        before = counter("expensetracker_budgets_exceeded_total")
        summary = client.get(
            "/api/v1/reports/summary",
            params={"from": "2026-04-01", "to": "2026-04-30"},
            headers=account.headers,
        )
        requests = [summary] + [
            client.get(path, params={"month": "2026-04"}, headers=account.headers)
            for path in ["/api/v1/reports/budgets"] * 10 + ["/api/v1/budgets"] * 10
        ]
        responses = await asyncio.gather(*requests)
        assert [r.status_code for r in responses] == [200] * len(requests)
        assert responses[0].json()["groups"][0]["totals"][0]["amount"] == "12.00"
        assert counter("expensetracker_budgets_exceeded_total") == before + 1
        alerts = await client.get("/api/v1/reports/alerts", headers=account.headers)
        assert [alert["threshold"] for alert in alerts.json()["items"]] == [100]


async def test_a_reversed_range_is_one_problem_in_every_service(
    client: httpx.AsyncClient,
) -> None:
    """A range whose last day comes before its first is refused by name, in the same words,
    by the expenses' list and export and by every report that takes a range (the web shows
    them as they are)."""
    account = await signed_up(client)
    await client.put(
        "/api/v1/expenses/home-currency", json={"currency": "EUR"}, headers=account.headers
    )
    backwards = {"from": "2026-02-01", "to": "2026-01-31"}
    for path, params in [
        ("/api/v1/expenses", backwards),
        ("/api/v1/expenses/export", backwards),
        ("/api/v1/reports/summary", backwards),
        ("/api/v1/reports/summary", {**backwards, "in": "home"}),
        ("/api/v1/reports/merchants", backwards),
    ]:
        response = await client.get(path, params=params, headers=account.headers)
        assert response.status_code == 422, (path, params, response.text)
        assert response.json()["errors"] == [
            {"field": "query.to", "message": "Must not be before the first day.", "type": "range"}
        ], (path, params)


async def test_bad_report_queries_are_422(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    for path, params in [
        ("/api/v1/reports/summary", {"from": "2026-02-01", "to": "2026-01-01"}),
        ("/api/v1/reports/summary", {"from": "2000-01-01", "to": "2026-01-01"}),
        # 3,661 days, both ends counted: one more than a report spans.
        ("/api/v1/reports/summary", {"from": "2016-01-01", "to": "2026-01-08"}),
        ("/api/v1/reports/merchants", {"from": "2016-01-01", "to": "2026-01-08"}),
        ("/api/v1/reports/summary", {"from": "2026-01-01", "to": "2026-02-01", "group_by": "x"}),
        ("/api/v1/reports/budgets", {"month": "2026-1"}),
        ("/api/v1/reports/trends", {"months": 1}),
        ("/api/v1/reports/trends", {"month": "1900-05", "months": 6}),
        ("/api/v1/reports/trends", {"month": "1900-05", "months": 6, "in": "home"}),
    ]:
        response = await client.get(path, params=params, headers=account.headers)
        assert response.status_code == 422, (path, params)
    for path in ("/api/v1/reports/summary", "/api/v1/reports/merchants"):
        longest = {"from": "2016-01-01", "to": "2026-01-07"}  # 3,660 days
        response = await client.get(path, params=longest, headers=account.headers)
        assert response.status_code == 200, (path, response.text)
    # Trends may begin in the earliest month a request may name, not before it.
    home = {"currency": "EUR"}
    await client.put("/api/v1/expenses/home-currency", json=home, headers=account.headers)
    for in_home in ({}, {"in": "home"}):
        params = {"month": "1900-06", "months": "6", **in_home}
        earliest = await client.get(
            "/api/v1/reports/trends", params=params, headers=account.headers
        )
        assert earliest.status_code == 200, earliest.text
        assert earliest.json()["months"][0] == "1900-01"
        params["month"] = "1900-05"
        before = await client.get("/api/v1/reports/trends", params=params, headers=account.headers)
        assert before.json()["errors"][0]["field"] == "query.months", before.text


async def test_the_overview_answers_as_the_three_reports_do(client: httpx.AsyncClient) -> None:
    account, other = await signed_up(client), await signed_up(client)
    names = await categories(client, account)
    await budget(client, account, amount="50.00", starts="2026-01")
    for day, amount, currency, category in [
        ("2025-05-31", "1.00", "EUR", None),  # before the trend's first month
        ("2025-06-01", "2.00", "EUR", "Groceries"),
        ("2026-05-31", "60.00", "EUR", "Groceries"),  # the budget over its limit
        ("2026-05-02", "700", "JPY", None),
    ]:
        await create(
            client,
            account,
            occurred_on=day,
            amount=amount,
            currency=currency,
            category_id=names[category] if category else None,
        )
    await create(client, other, occurred_on="2026-05-10", amount="9.00")
    await client.put(
        "/api/v1/expenses/home-currency", json={"currency": "EUR"}, headers=account.headers
    )
    await client.put(
        "/api/v1/expenses/rates/2026-05-01/JPY/EUR",
        json={"rate": "0.0060"},
        headers=account.headers,
    )

    async def report(name: str, **params: str) -> dict:
        response = await client.get(
            f"/api/v1/reports/{name}", params=params, headers=account.headers
        )
        assert response.status_code == 200, response.text
        return response.json()

    for in_home in ({}, {"in": "home"}):
        overview = await report("overview", month="2026-05", **in_home)
        assert overview == {
            "month": "2026-05",
            "by_category": await report(
                "summary", **{"from": "2026-05-01", "to": "2026-05-31"}, **in_home
            ),
            "by_month": await report(
                "summary",
                **{"from": "2025-06-01", "to": "2026-05-31", "group_by": "month"},
                **in_home,
            ),
            "budgets": (await report("budgets", month="2026-05"))["budgets"],
        }, in_home
    assert [group["key"] for group in overview["by_month"]["groups"]] == ["2025-06", "2026-05"]
    assert overview["by_month"]["total"]["amount"] == "66.20"  # 700 JPY at 0.0060
    [status] = overview["budgets"]
    assert (status["spent"], status["state"]) == ("60.00", "over")
    short = await report("overview", month="2026-05", months="2")
    assert [group["key"] for group in short["by_month"]["groups"]] == ["2026-05"]
    # Another user's spending is in no part of it.
    theirs = (
        await client.get(
            "/api/v1/reports/overview", params={"month": "2026-05"}, headers=other.headers
        )
    ).json()
    assert theirs["budgets"] == [] and theirs["by_month"]["groups"][0]["totals"] == [
        {"currency": "EUR", "amount": "9.00", "count": 1}
    ]


async def test_a_bad_overview_query_is_422(client: httpx.AsyncClient) -> None:
    account, newcomer = await signed_up(client), await signed_up(client)
    await create(client, account, occurred_on="2026-03-03", amount="5.00")
    for who, params in (
        (account, {"months": "1"}),
        (account, {"months": "25"}),
        (account, {"month": "2026-13"}),
        (account, {"month": "1900-05", "months": "6"}),
        (account, {"in": "away"}),
        (newcomer, {"in": "home"}),  # no expense, no home currency set: nothing to convert to
    ):
        response = await client.get("/api/v1/reports/overview", params=params, headers=who.headers)
        assert response.status_code == 422, (params, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    home = await client.get(
        "/api/v1/reports/overview", params={"in": "home"}, headers=account.headers
    )
    assert home.status_code == 200 and home.json()["by_month"]["currency"] == "EUR", home.text


async def test_deleted_users_budgets_go(client: httpx.AsyncClient, database_url: str) -> None:
    gone, kept = await signed_up(client), await signed_up(client)
    await budget(client, gone)
    await budget(client, kept)
    await client.request(
        "DELETE", "/api/v1/auth/me", json={"password": PASSWORD}, headers=gone.headers
    )
    await app_state(app_of(client)).user_events["reports"].run_once()
    async with connected(database_url) as connection:
        remaining = await connection.fetchval("SELECT count(*) FROM reports.budgets")
    assert remaining == 1


# --- summaries against an independent computation ----------------------------------------------

CURRENCIES = [("EUR", 2), ("JPY", 0), ("KWD", 3)]
expense = st.tuples(
    st.dates(date(2025, 11, 1), date(2026, 4, 30)),
    st.integers(1, 10**6),
    st.sampled_from(CURRENCIES),
    st.integers(0, 3),  # category index; 0 = none
    st.sets(st.sampled_from(["a", "b", "c"]), max_size=2),
)


@pytest.fixture
async def summary_account(client: httpx.AsyncClient) -> Account:
    return await signed_up(client)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    expenses=st.lists(expense, max_size=40),
    start=st.dates(date(2025, 10, 15), date(2026, 5, 15)),
    length=st.integers(0, 200),
    group_by=st.sampled_from(["category", "month", "tag"]),
)
async def test_summary_matches_python(
    client: httpx.AsyncClient,
    database_url: str,
    summary_account: Account,
    expenses: list,
    start: date,
    length: int,
    group_by: str,
) -> None:
    end = start + timedelta(days=length)
    user_id = (await client.get("/api/v1/auth/me", headers=summary_account.headers)).json()["id"]
    await client.get("/api/v1/categories", headers=summary_account.headers)  # owner + defaults
    async with connected(database_url) as connection:
        await connection.execute(
            "DELETE FROM expenses.expenses WHERE user_id = $1", uuid.UUID(user_id)
        )
        category_ids = [None] + [
            r[0]
            for r in await connection.fetch(
                "SELECT id FROM expenses.categories WHERE user_id = $1 ORDER BY name LIMIT 3",
                uuid.UUID(user_id),
            )
        ]
        expected: dict = defaultdict(lambda: defaultdict(lambda: [0, 0]))
        for day, minor, (currency, exponent), category, tags in expenses:
            expense_id = uuid.uuid4()
            await connection.execute(
                "INSERT INTO expenses.expenses (user_id, id, amount_minor, currency, "
                "currency_exponent, occurred_on, description, category_id) "
                "VALUES ($1, $2, $3, $4, $5, $6, 'x', $7)",
                uuid.UUID(user_id),
                expense_id,
                minor,
                currency,
                exponent,
                day,
                category_ids[category],
            )
            for tag in tags:
                tag_id = await connection.fetchval(
                    "INSERT INTO expenses.tags (user_id, id, name) "
                    "VALUES ($1, gen_random_uuid(), $2) ON CONFLICT (user_id, lower(name)) "
                    "DO UPDATE SET name = excluded.name RETURNING id",
                    uuid.UUID(user_id),
                    tag,
                )
                await connection.execute(
                    "INSERT INTO expenses.expense_tags VALUES ($1, $2, $3)",
                    uuid.UUID(user_id),
                    expense_id,
                    tag_id,
                )
            if not start <= day <= end:
                continue
            keys = {
                "category": [str(category_ids[category]) if category_ids[category] else None],
                "month": [f"{day.year:04d}-{day.month:02d}"],
                "tag": sorted(tags) or [None],  # the untagged: the group without a key
            }[group_by]
            for key in keys:
                expected[key][currency][0] += minor
                expected[key][currency][1] += 1
    response = await client.get(
        "/api/v1/reports/summary",
        params={"from": start.isoformat(), "to": end.isoformat(), "group_by": group_by},
        headers=summary_account.headers,
    )
    assert response.status_code == 200, response.text
    actual = {
        group["key"]: {t["currency"]: [t["amount"], t["count"]] for t in group["totals"]}
        for group in response.json()["groups"]
    }
    assert actual == {
        key: {c: [format_amount(a, c), n] for c, (a, n) in per.items()}
        for key, per in expected.items()
    }
