"""Exchange rates and the home currency: the ECB file (and unsafe XML refused), a Frankfurter
source fetched by the background job from a real HTTP server, rates entered by users, the
home currency's default, the charged amount, and the command line."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from expensetracker.expenses import rates
from tests.helpers.apps import AppFactory
from tests.helpers.database import connected
from tests.helpers.expenses import create, every_item
from tests.helpers.paths import ECB_SAMPLE
from tests.helpers.polling import eventually
from tests.helpers.processes import Process, clean_env, cli, spawn
from tests.helpers.users import Account, signed_up

pytestmark = pytest.mark.database


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<Envelope><Cube><Cube time="2026-01-05"><Cube currency="USD" rate="&lol3;"/></Cube></Cube>
</Envelope>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<Envelope xmlns="http://www.ecb.int/vocabulary/2002-08-01/eurofxref"><Cube>
<Cube time="2026-01-05"><Cube currency="USD" rate="&secret;"/></Cube></Cube></Envelope>"""


class Files:
    """A real HTTP server on 127.0.0.1 answering paths with the bodies set, 503 otherwise."""

    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}
        self.requests: list[str] = []
        files = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                files.requests.append(self.path)
                body = files.bodies.get(self.path)
                self.send_response(200 if body is not None else 503)
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def files() -> Iterator[Files]:
    served = Files()
    thread = threading.Thread(target=served.server.serve_forever, daemon=True)
    thread.start()
    yield served
    served.server.shutdown()
    served.server.server_close()


async def stored_rates(database_url: str) -> list[tuple]:
    async with connected(database_url) as connection:
        rows = await connection.fetch(
            "SELECT day, base, quote, rate, source, user_id FROM expenses.rates_v1 "
            "ORDER BY day, quote, source"
        )
    return [tuple(row) for row in rows]


def test_the_ecb_sample_parses_to_exact_decimals() -> None:
    parsed = rates.parse_ecb(ECB_SAMPLE.read_bytes())
    assert len(parsed) == 15
    assert {rate.day for rate in parsed} == {date(2026, 1, 5), date(2026, 1, 8), date(2026, 1, 9)}
    assert rates.Rate(date(2026, 1, 9), "EUR", "GBP", Decimal("0.83195")) in parsed
    assert all(isinstance(rate.rate, Decimal) and rate.base == "EUR" for rate in parsed)


@pytest.mark.parametrize("document", [BILLION_LAUGHS, EXTERNAL_ENTITY, b"<Envelope/>", b"{"])
def test_unsafe_or_foreign_documents_are_refused(document: bytes) -> None:
    with pytest.raises(rates.InvalidRates):
        rates.parse_ecb(document)


@pytest.mark.parametrize(
    "document",
    [
        b'{"base": "EUR", "date": "2026-01-09", "rates": {"USD": -1.2}}',
        b'{"base": "EUR", "date": "2026-13-01", "rates": {"USD": 1.2}}',
        b'{"base": "EUR", "rates": [1]}',
        b'{"base": 1, "date": "2026-01-09", "rates": {}}',
        b"<html>",
    ],
)
def test_malformed_frankfurter_answers_are_refused(document: bytes) -> None:
    with pytest.raises(rates.InvalidRates):
        rates.parse_frankfurter(document)


def test_frankfurter_numbers_are_read_as_decimals() -> None:
    answer = b'{"amount": 1.0, "base": "EUR", "date": "2026-01-09", "rates": {"USD": 1.1}}'
    # As a float, 1.1 is 1.100000000000000088817841970012523...
    assert rates.parse_frankfurter(answer) == [
        rates.Rate(date(2026, 1, 9), "EUR", "USD", Decimal("1.1"))
    ]


async def test_rates_load_command_from_a_file_and_a_url(
    database_url: str, files: Files, tmp_path: Path
) -> None:
    env = clean_env(EXPENSETRACKER_DATABASE_URL=database_url)
    files.bodies["/eurofxref-daily.xml"] = ECB_SAMPLE.read_bytes()
    unsafe = tmp_path / "laughs.xml"
    unsafe.write_bytes(BILLION_LAUGHS)

    async def run(*args: str) -> Process:
        with spawn(cli("rates", "load", *args), env) as process:
            await asyncio.to_thread(process.wait, 120)
        return process

    from_file = await run(str(ECB_SAMPLE))
    assert from_file.popen.returncode == 0, from_file.output
    assert "rates kept: 15" in from_file.output
    first = await stored_rates(database_url)
    from_url = await run(f"{files.url}/eurofxref-daily.xml")
    assert from_url.popen.returncode == 0, from_url.output
    # The same days again replace, never duplicate.
    assert await stored_rates(database_url) == first
    assert (date(2026, 1, 9), "EUR", "GBP", Decimal("0.83195"), "ecb", None) in first
    refused = await run(str(unsafe))
    # A URL's user and password are never repeated; the server's answer is one line.
    down = await run(files.url.replace("://", "://reader:pw-in-url@") + "/missing.xml")
    other_scheme = await run("ftp://127.0.0.1/eurofxref-daily.xml")
    assert (refused.popen.returncode, down.popen.returncode) == (1, 1)
    assert "Not a rate file" in refused.output
    assert down.output.strip().endswith("/missing.xml: answered 503 Service Unavailable")
    assert "pw-in-url" not in down.output and "reader" not in down.output
    assert other_scheme.popen.returncode == 1
    assert "Only http:// and https:// URLs are fetched" in other_scheme.output
    assert len(await stored_rates(database_url)) == 15


async def test_the_background_job_fetches_frankfurter_and_a_provider_down_fails_no_write(
    serve_app: AppFactory, database_url: str, files: Files
) -> None:
    files.bodies["/v1/latest"] = json.dumps(
        {"amount": 1.0, "base": "EUR", "date": "2026-01-09", "rates": {"USD": 1.0415, "XAU": 2}}
    ).encode()
    async with serve_app(
        rates_frankfurter_url=f"{files.url}/v1/",
        rates_ecb_url="http://127.0.0.1:9/eurofxref-daily.xml",  # nothing listens: down
        rates_fetch_interval_seconds=3600,
    ) as client:
        await eventually("the first fetch stored", lambda: stored_rates(database_url), within=10)
        account = await signed_up(client)
        await create(client, account, currency="USD", occurred_on="2026-01-09")
        listed = await client.get(
            "/api/v1/expenses/rates", params={"quote": "USD"}, headers=account.headers
        )
    assert files.requests == ["/v1/latest"]
    # XAU (gold) has no minor unit: no expense is in it, it is left out.
    assert await stored_rates(database_url) == [
        (date(2026, 1, 9), "EUR", "USD", Decimal("1.0415"), "frankfurter", None)
    ]
    assert listed.json()["items"] == [
        {
            "day": "2026-01-09",
            "base": "EUR",
            "quote": "USD",
            "rate": "1.0415",
            "source": "frankfurter",
        }
    ]


async def home(client: httpx.AsyncClient, account: Account) -> str | None:
    response = await client.get("/api/v1/expenses/home-currency", headers=account.headers)
    assert response.status_code == 200, response.text
    return response.json()["currency"]


async def test_the_home_currency_defaults_from_the_first_expense_and_can_be_set(
    client: httpx.AsyncClient,
) -> None:
    account, other = await signed_up(client), await signed_up(client)
    assert await home(client, account) is None
    await create(client, account, currency="JPY", amount="1200")
    await create(client, account, currency="EUR")
    assert await home(client, account) == "JPY"
    assert await home(client, other) is None
    path = "/api/v1/expenses/home-currency"
    changed = await client.put(path, json={"currency": "EUR"}, headers=account.headers)
    assert changed.json() == {"currency": "EUR"}
    await create(client, other, currency="CHF")
    assert (await home(client, account), await home(client, other)) == ("EUR", "CHF")
    for bad in ({"currency": "eur"}, {"currency": "XAU"}, {}, {"currency": "EUR", "x": 1}):
        response = await client.put(path, json=bad, headers=account.headers)
        assert response.status_code == 422, bad
        assert response.headers["content-type"] == "application/problem+json"
    assert await home(client, account) == "EUR"


async def test_user_rates_are_theirs_alone(client: httpx.AsyncClient) -> None:
    account, other = await signed_up(client), await signed_up(client)
    path = "/api/v1/expenses/rates/2026-01-09/USD/EUR"
    made = await client.put(path, json={"rate": "0.9612"}, headers=account.headers)
    assert made.status_code == 200, made.text
    assert made.json() == {
        "day": "2026-01-09",
        "base": "USD",
        "quote": "EUR",
        "rate": "0.9612",
        "source": "user",
    }
    tiny = await client.put(path, json={"rate": "0.000000000001"}, headers=account.headers)
    assert tiny.json()["rate"] == "0.000000000001"  # a decimal string, never "1E-12"
    again = await client.put(path, json={"rate": "0.9650"}, headers=account.headers)
    assert again.status_code == 200
    mine = await client.get("/api/v1/expenses/rates", headers=account.headers)
    theirs = await client.get("/api/v1/expenses/rates", headers=other.headers)
    assert [item["rate"] for item in mine.json()["items"]] == ["0.9650"]
    assert theirs.json()["items"] == []
    # Another user's rate is missing for them, as one never made.
    assert (await client.delete(path, headers=other.headers)).status_code == 404
    for bad_path, body in (
        (path, {"rate": "0"}),
        (path, {"rate": "1e3"}),
        (path, {"rate": "-1"}),
        (path, {"rate": 1.5}),
        (path, {"rate": "1", "source": "ecb"}),
        ("/api/v1/expenses/rates/2026-01-09/EUR/EUR", {"rate": "1"}),
        ("/api/v1/expenses/rates/2026-02-30/USD/EUR", {"rate": "1"}),
        ("/api/v1/expenses/rates/2026-01-09/usd/EUR", {"rate": "1"}),
    ):
        response = await client.put(bad_path, json=body, headers=account.headers)
        assert response.status_code == 422, (bad_path, body)
        if body["rate"] in ("0", "-1"):  # said as such, not as a malformed number
            assert response.json()["errors"][0]["message"] == "rate must be greater than zero"
    assert (await client.delete(path, headers=account.headers)).status_code == 204
    assert (await client.delete(path, headers=account.headers)).status_code == 404


async def test_rates_are_listed_newest_first_a_page_at_a_time(
    client: httpx.AsyncClient, database_url: str
) -> None:
    account = await signed_up(client)
    async with connected(database_url) as connection:
        await rates.store(connection, rates.parse_ecb(ECB_SAMPLE.read_bytes()), source="ecb")
    await client.put(
        "/api/v1/expenses/rates/2026-01-09/EUR/GBP", json={"rate": "0.84"}, headers=account.headers
    )
    listed = await every_item(client, account, "/api/v1/expenses/rates", limit=4)
    seen = [(item["day"], item["quote"], item["source"]) for item in listed]
    assert len(seen) == 16 and len(set(seen)) == 16
    assert seen[:3] == [
        ("2026-01-09", "CHF", "ecb"),
        ("2026-01-09", "GBP", "user"),
        ("2026-01-09", "GBP", "ecb"),
    ]
    assert [day for day, *_ in seen] == sorted((day for day, *_ in seen), reverse=True)


async def test_an_expense_carries_the_amount_charged(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    made = await create(
        client,
        account,
        currency="USD",
        amount="20.00",
        charged_amount="18.41",
        charged_currency="EUR",
    )
    assert (made["charged_amount"], made["charged_currency"]) == ("18.41", "EUR")
    path = f"/api/v1/expenses/{made['id']}"
    kept = await client.patch(path, json={"description": "Taxi"}, headers=account.headers)
    assert kept.json()["charged_amount"] == "18.41"
    for bad in (
        {"charged_amount": "18.41"},
        {"charged_currency": "EUR"},
        {"charged_amount": "18.411", "charged_currency": "EUR"},
        {"charged_amount": "0", "charged_currency": "EUR"},
        {"charged_amount": "1", "charged_currency": "eur"},
    ):
        created = await client.post(
            "/api/v1/expenses",
            json={
                "amount": "1",
                "currency": "USD",
                "occurred_on": "2026-01-09",
                "description": "x",
                **bad,
            },
            headers=account.headers,
        )
        patched = await client.patch(path, json=bad, headers=account.headers)
        assert (created.status_code, patched.status_code) == (422, 422), bad
    changed = await client.patch(
        path, json={"charged_amount": "2500", "charged_currency": "JPY"}, headers=account.headers
    )
    assert (changed.json()["charged_amount"], changed.json()["charged_currency"]) == ("2500", "JPY")
    cleared = await client.patch(
        path, json={"charged_amount": None, "charged_currency": None}, headers=account.headers
    )
    assert (cleared.json()["charged_amount"], cleared.json()["charged_currency"]) == (None, None)
    assert (await client.get(path, headers=account.headers)).json() == cleared.json()


async def test_home_currency_command(client: httpx.AsyncClient, database_url: str) -> None:
    account = await signed_up(client)
    env = clean_env(EXPENSETRACKER_DATABASE_URL=database_url)

    async def run(*args: str) -> Process:
        with spawn(cli("expenses", "home-currency", *args), env) as process:
            await asyncio.to_thread(process.wait, 120)
        return process

    done = await run("GBP", "--user", account.email)
    assert done.popen.returncode == 0, done.output
    assert await home(client, account) == "GBP"
    for refused in (await run("gbp", "--user", account.email), await run("GBP", "--user", "x@y.z")):
        assert refused.popen.returncode == 2, refused.output
    assert await home(client, account) == "GBP"


async def test_the_charged_amount_is_imported_and_exported(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    header = "occurred_on,amount,currency,description,charged_amount,charged_currency\n"
    good = header + "2026-01-09,20.00,USD,Taxi,18.41,EUR\n2026-01-09,5.00,USD,Bus,,\n"
    response = await client.post(
        "/api/v1/expenses/import",
        content=good.encode(),
        headers={**account.headers, "Content-Type": "text/csv"},
    )
    assert response.status_code == 201, response.text
    exported = await client.get("/api/v1/expenses/export?format=json", headers=account.headers)
    charged = {
        row["description"]: (row["charged_amount"], row["charged_currency"])
        for row in exported.json()
    }
    assert charged == {"Taxi": ("18.41", "EUR"), "Bus": (None, None)}
    as_csv = await client.get("/api/v1/expenses/export", headers=account.headers)
    assert as_csv.text.splitlines()[0].endswith(",charged_amount,charged_currency")
    assert ",18.41,EUR" in as_csv.text
    bad = header + (
        "2026-01-09,1.00,USD,Half,18.41,\n"  # line 2
        "2026-01-09,1.00,USD,Too precise,1.001,EUR\n"  # line 3
        "2026-01-09,1.00,USD,Unknown,1.00,XXX\n"  # line 4
    )
    refused = await client.post(
        "/api/v1/expenses/import",
        content=bad.encode(),
        headers={**account.headers, "Content-Type": "text/csv"},
    )
    assert refused.status_code == 422
    assert [(e["line"], e["field"]) for e in refused.json()["errors"]] == [
        (2, "charged_amount"),
        (3, "charged_amount"),
        (4, "charged_currency"),  # the currency's fault, not the amount's
    ]
    assert len((await client.get("/api/v1/expenses", headers=account.headers)).json()["items"]) == 2


async def test_migrations_0011_and_0004_backfill_and_go_down_and_up_again(
    empty_database_url: str,
) -> None:
    from alembic import command

    from expensetracker.platform.migrations import alembic_config, upgrade
    from expensetracker.targets import SERVICES

    expenses, reports = SERVICES["expenses"], SERVICES["reports"]
    await asyncio.to_thread(upgrade, expenses, empty_database_url, "0010")
    user = "00000000-0000-0000-0000-000000000015"
    async with connected(empty_database_url) as connection:
        await connection.execute("INSERT INTO expenses.owners (user_id) VALUES ($1)", user)
        for day, currency in (("2026-01-02", "GBP"), ("2026-01-01", "USD")):
            await connection.execute(
                "INSERT INTO expenses.expenses (user_id, id, amount_minor, currency, "
                "currency_exponent, occurred_on, description) "
                "VALUES ($1, gen_random_uuid(), 100, $2, 2, $3::date, 'x')",
                user,
                currency,
                date.fromisoformat(day),
            )
        await asyncio.to_thread(upgrade, expenses, empty_database_url)
        await asyncio.to_thread(upgrade, reports, empty_database_url)
        # The earliest recorded expense names an existing user's home currency.
        backfilled = await connection.fetchval(
            "SELECT home_currency FROM expenses.home_currencies_v1 WHERE user_id = $1", user
        )
        for spec, previous in ((expenses, "0010"), (reports, "0003")):
            await asyncio.to_thread(
                command.downgrade, alembic_config(spec, empty_database_url), previous
            )
        columns = await connection.fetchval(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'expenses' "
            "AND table_name = 'spending_v1'"
        )
        gone = await connection.fetchval("SELECT to_regclass('expenses.rates') IS NULL")
        for spec in (expenses, reports):
            await asyncio.to_thread(upgrade, spec, empty_database_url)
        again = await connection.fetchval(
            "SELECT home_currency FROM expenses.home_currencies_v1 WHERE user_id = $1", user
        )
    assert backfilled == "GBP"
    assert (columns, gone, again) == (9, True, "GBP")


async def test_a_first_import_sets_its_most_common_currency_as_home(
    client: httpx.AsyncClient,
) -> None:
    account = await signed_up(client)
    rows = "".join(
        f"2026-01-{day:02d},1.00,{'USD' if day % 4 == 0 else 'GBP'},Day {day}\n"
        for day in range(1, 13)
    )
    response = await client.post(
        "/api/v1/expenses/import",
        content=("occurred_on,amount,currency,description\n" + rows).encode(),
        headers={**account.headers, "Content-Type": "text/csv"},
    )
    assert response.status_code == 201, response.text
    assert await home(client, account) == "GBP"
