"""CSV import (whole or nothing, every bad row reported, idempotent by external id) and
streamed CSV/JSON export; 100,000 rows survive the round trip."""

from __future__ import annotations

import asyncio
import csv
import io
import random
import re
import uuid
from datetime import date, timedelta

import httpx
import pytest

from tests.helpers.apps import counter
from tests.helpers.database import connected
from tests.helpers.expenses import HEADER, expense_count, export, imported, upload
from tests.helpers.processes import Process, clean_env, cli, spawn
from tests.helpers.users import signed_up

pytestmark = pytest.mark.database


async def test_import_then_export_gives_the_same_rows(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    succeeded = counter("expensetracker_imports_total", outcome="succeeded")
    content = HEADER + (
        '2026-01-05,12.50,EUR,"Lunch, with ""Sam""","multi\nline note",Café,Restaurants,'
        "work;Food,ext-1\n"
        "2026-01-06,1500,JPY,Ramen,,,,,\n"
        "2026-01-07,0.125,KWD,Tea,,,Food,,ext-3\n"
    )
    response = await upload(client, account, content)
    assert response.status_code == 201, response.text
    assert response.json() == imported(rows=3, created=3, unchanged=0)
    assert counter("expensetracker_imports_total", outcome="succeeded") == succeeded + 1
    exported = (await export(client, account)).text
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert [row["description"] for row in rows] == ["Tea", "Ramen", 'Lunch, with "Sam"']
    lunch = rows[2]
    assert lunch["notes"] == "multi\nline note"
    assert (lunch["amount"], lunch["currency"], lunch["category"]) == (
        "12.50",
        "EUR",
        "Restaurants",
    )
    assert lunch["tags"] == "Food;work"
    assert rows[0]["amount"] == "0.125"
    listed = (await client.get("/api/v1/expenses", headers=account.headers)).json()["items"]
    assert len(listed) == 3
    assert {uuid.UUID(item["id"]).version for item in listed} == {7}  # time-ordered, as created


async def test_reimporting_the_same_file_creates_nothing(
    client: httpx.AsyncClient, database_url: str
) -> None:
    account = await signed_up(client)
    content = HEADER + "".join(
        f"2026-02-{day:02d},{day}.00,EUR,Day {day},,,,,bank-{day}\n" for day in range(1, 11)
    )
    first = await upload(client, account, content)
    again = await upload(client, account, content)
    assert first.json() == imported(rows=10, created=10, unchanged=0)
    assert again.json() == imported(rows=10, created=0, unchanged=10)
    assert await expense_count(database_url) == 10


async def test_a_file_with_bad_rows_is_refused_whole_with_every_line_reported(
    client: httpx.AsyncClient, database_url: str
) -> None:
    account = await signed_up(client)
    before = counter("expensetracker_import_rows_total", outcome="rejected")
    imports_before = counter("expensetracker_imports_total", outcome="rejected")
    content = HEADER + (
        "2026-01-01,10.00,EUR,Fine,,,,,\n"  # line 2
        "2026-01-02,10.001,EUR,Too precise,,,,,\n"  # line 3
        "2026-13-01,1.00,EUR,Bad date,,,,,\n"  # line 4
        "2026-01-03,1.00,eur,Lower case,,,,,\n"  # line 5
        "2026-01-04,1.00,EUR,,,,,,\n"  # line 6: no description
        "2026-01-05,1.00,EUR,No such category,,,Yachts,,\n"  # line 7
        "2026-01-06,1.00,EUR,Dup,,,,,x\n"  # line 8
        "2026-01-07,1.00,EUR,Dup,,,,,x\n"  # line 9
        "2026-01-08,1.00,EUR,Short row\n"  # line 10
        "2026-01-09,-1.00,EUR,Negative,,,,,\n"  # line 11
    )
    response = await upload(client, account, content)
    assert response.status_code == 422
    body = response.json()
    assert body["rejected_rows"] == 8
    assert sorted({error["line"] for error in body["errors"]}) == [3, 4, 5, 6, 7, 9, 10, 11]
    messages = {(error["line"], error["field"]): error["message"] for error in body["errors"]}
    assert messages[(4, "occurred_on")] == 'must be a real calendar date, such as "2026-03-01"'
    assert body["detail"] == "8 of 10 rows are invalid; nothing was imported."
    assert await expense_count(database_url) == 0  # not even the good row
    assert counter("expensetracker_import_rows_total", outcome="rejected") == before + 8
    assert counter("expensetracker_imports_total", outcome="rejected") == imports_before + 1


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (b"", 422),
        (b"when,how much\n2026-01-01,1\n", 422),  # unknown columns
        (HEADER.encode() + "2026-01-01,1.00,EUR,caf\xe9,,,,,\n".encode("latin-1"), 422),
        (HEADER.encode() + b'2026-01-01,1.00,EUR,"unterminated\n', 422),
    ],
)
async def test_malformed_files_are_refused(
    client: httpx.AsyncClient, content: bytes, status: int
) -> None:
    account = await signed_up(client)
    rejected = counter("expensetracker_imports_total", outcome="rejected")
    response = await upload(client, account, content)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert counter("expensetracker_imports_total", outcome="rejected") == rejected + 1


async def test_a_column_named_twice_is_named_in_the_refusal(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    header = HEADER.replace("notes,", "notes,Notes,")
    response = await upload(client, account, header + "2026-01-01,1.00,EUR,x,,,,,,\n")
    assert response.status_code == 422, response.text
    assert response.json()["detail"].endswith("missing: none, more than once: notes.")


async def test_a_row_is_filed_under_the_category_it_names(client: httpx.AsyncClient) -> None:
    # Two categories to the database (its unique index compares lower()), one to the import,
    # which compared casefold(): both rows went to the same one.
    account = await signed_up(client)
    ids = {}
    for name in ("Straße", "STRASSE"):
        made = await client.post("/api/v1/categories", json={"name": name}, headers=account.headers)
        assert made.status_code == 201, made.text
        ids[made.json()["id"]] = name
    rows = "2026-01-01,1.00,EUR,one,,,Straße,,\n2026-01-02,1.00,EUR,two,,,strasse,,\n"
    response = await upload(client, account, HEADER + rows)
    assert response.status_code == 201, response.text
    listed = (await client.get("/api/v1/expenses", headers=account.headers)).json()["items"]
    assert {e["description"]: ids[e["category_id"]] for e in listed} == {
        "one": "Straße",
        "two": "STRASSE",
    }


async def test_import_needs_text_csv_and_a_token(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    wrong_type = await client.post(
        "/api/v1/expenses/import",
        content=HEADER,
        headers={**account.headers, "content-type": "application/json"},
    )
    anonymous = await client.post(
        "/api/v1/expenses/import", content=HEADER, headers={"content-type": "text/csv"}
    )
    assert wrong_type.status_code == 415
    assert anonymous.status_code == 401


async def test_export_is_per_user_and_filtered(client: httpx.AsyncClient) -> None:
    ann, bob = await signed_up(client), await signed_up(client)
    await upload(
        client, ann, HEADER + "2026-03-01,5.00,EUR,Ann's,,,,,a-1\n2026-04-01,6.00,EUR,Later,,,,,\n"
    )
    # The same external id in another account is another row: no hint of Ann's.
    bobs = await upload(client, bob, HEADER + "2026-03-01,7.00,EUR,Bob's,,,,,a-1\n")
    assert bobs.json() == imported(rows=1, created=1, unchanged=0)
    ann_json = (await export(client, ann, format="json")).json()
    assert [row["description"] for row in ann_json] == ["Later", "Ann's"]
    march = (await export(client, ann, format="json", to="2026-03-31")).json()
    assert [row["description"] for row in march] == ["Ann's"]
    bob_rows = list(csv.DictReader(io.StringIO((await export(client, bob)).text)))
    assert [row["description"] for row in bob_rows] == ["Bob's"]
    assert (await export(client, await signed_up(client), format="json")).json() == []


@pytest.mark.slow
async def test_100k_rows_round_trip(client: httpx.AsyncClient, database_url: str) -> None:
    account = await signed_up(client)
    rng = random.Random(2026)
    currencies = [("EUR", 2), ("JPY", 0), ("KWD", 3), ("USD", 2)]
    lines = [HEADER]
    for n in range(100_000):
        currency, decimals = rng.choice(currencies)
        minor = rng.randint(1, 10**6)
        amount = (
            str(minor)
            if decimals == 0
            else f"{minor // 10**decimals}.{minor % 10**decimals:0{decimals}d}"
        )
        day = date(2025, 1, 1) + timedelta(days=rng.randint(0, 600))
        tags = ";".join(rng.sample(["a", "b", "c", "d"], rng.randint(0, 2)))
        lines.append(f"{day},{amount},{currency},Item {n},,shop {n % 97},,{tags},row-{n}\n")
    content = "".join(lines)
    response = await upload(client, account, content)
    assert response.status_code == 201, response.text[:500]
    assert response.json()["created"] == 100_000

    exported = (await export(client, account)).text
    original = {row["external_id"]: row for row in csv.DictReader(io.StringIO(content))}
    again = {row["external_id"]: row for row in csv.DictReader(io.StringIO(exported))}
    assert again.keys() == original.keys()
    for key, row in original.items():
        back = again[key]
        assert (back["occurred_on"], back["amount"], back["currency"], back["description"]) == (
            row["occurred_on"],
            row["amount"],
            row["currency"],
            row["description"],
        )
        assert sorted(filter(None, back["tags"].split(";"))) == sorted(
            filter(None, row["tags"].split(";"))
        )
    async with connected(database_url) as connection:
        total = await connection.fetchval("SELECT sum(amount_minor) FROM expenses.expenses")
    expected = sum(int(row["amount"].replace(".", "")) for row in original.values())
    assert total == expected


async def test_import_command(client: httpx.AsyncClient, database_url: str, tmp_path) -> None:
    account = await signed_up(client)
    good = tmp_path / "good.csv"
    good.write_text(
        HEADER + "".join(f"2026-05-{d:02d},{d}.00,EUR,Day {d},,,,,c-{d}\n" for d in range(1, 6))
    )
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "2026-05-01,1.001,EUR,Too precise,,,,,\n")
    env = clean_env(EXPENSETRACKER_DATABASE_URL=database_url)

    async def run(*args: str) -> Process:
        with spawn(cli("expenses", "import", *args), env) as process:
            await asyncio.to_thread(process.wait, 120)
        return process

    previewed = await run(str(good), "--user", account.email, "--dry-run")
    assert previewed.popen.returncode == 0, previewed.output
    assert await expense_count(database_url) == 0
    imported = await run(str(good), "--user", account.email.upper())
    previewed_again = await run(str(good), "--user", account.email, "--dry-run")
    again = await run(str(good), "--user", account.email)
    refused = await run(str(bad), "--user", account.email)
    nobody = await run(str(good), "--user", "nobody@example.org")
    assert imported.popen.returncode == 0, imported.output
    # Its only output, read by a script: no empty line left by the progress bar.
    assert imported.lines == ["5 rows: 5 created, 0 already there"], imported.output
    assert "5 rows: 0 created, 5 already there" in again.output
    # The dry run's table: each row to import with its line, date, amount and description.
    assert re.search(r"2 +. 2026-05-01 +. 1\.00 EUR +. +. Day 1 ", previewed.output)
    assert "5 rows: 5 would be created, 0 already there; dry run" in previewed.output
    assert "already imported, skipped: line 2 (c-1), 3 (c-2)" in previewed_again.output
    assert "5 rows: 0 would be created, 5 already there" in previewed_again.output
    # A file refused is a failed command (docs/operations.md#exit-status), not bad usage.
    assert refused.popen.returncode == 1, refused.output
    assert "line 2: amount: EUR amounts have at most 2 decimals" in refused.output
    assert nobody.popen.returncode == 2
    assert await expense_count(database_url) == 5


async def test_a_dry_run_reports_what_an_import_would_do_and_keeps_nothing(
    client: httpx.AsyncClient, database_url: str
) -> None:
    account = await signed_up(client)
    first = HEADER + "2026-03-01,1.00,EUR,Kept,,,,,bank-1\n"
    assert (await upload(client, account, first)).status_code == 201
    content = HEADER + (
        "2026-03-02,2.00,EUR,New,,,,,bank-2\n"  # line 2
        "2026-03-01,1.00,EUR,Kept,,,,,bank-1\n"  # line 3: imported before
        "2026-03-03,3.00,EUR,New too,,,Groceries,x,\n"  # line 4
    )
    preview = await upload(client, account, content, dry_run=True)
    assert preview.status_code == 200, preview.text
    body = preview.json()
    assert (body["rows"], body["created"], body["unchanged"], body["dry_run"]) == (3, 2, 1, True)
    assert [row["description"] for row in body["preview"]["expenses"]] == ["New", "New too"]
    assert body["preview"]["unchanged"] == [{"position": 3, "external_id": "bank-1"}]
    assert await expense_count(database_url) == 1
    tags = (await client.get("/api/v1/tags", headers=account.headers)).json()["items"]
    assert tags == []
    too_precise = HEADER + "2026-03-02,2.001,EUR,Too precise,,,,,\n"
    rejected = [
        counter("expensetracker_imports_total", outcome="rejected"),
        counter("expensetracker_import_rows_total", outcome="rejected"),
    ]
    invalid = await upload(client, account, too_precise, dry_run=True)
    assert invalid.status_code == 422
    assert [(e["line"], e["field"]) for e in invalid.json()["errors"]] == [(2, "amount")]
    # A preview is no import: the import metrics count neither it nor its bad rows.
    assert rejected == [
        counter("expensetracker_imports_total", outcome="rejected"),
        counter("expensetracker_import_rows_total", outcome="rejected"),
    ]


async def test_an_import_under_an_idempotency_key_happens_once(
    client: httpx.AsyncClient, database_url: str
) -> None:
    # Rows without an external id: only the key tells a resent import from a new one.
    account = await signed_up(client)
    content = HEADER + "2026-03-02,2.00,EUR,Coffee,,,,,\n2026-03-03,3.00,EUR,Tea,,,,,\n"
    succeeded = counter("expensetracker_imports_total", outcome="succeeded")
    previewed = await upload(client, account, content, dry_run=True, key="confirm-1")
    assert previewed.status_code == 200  # a dry run keeps nothing, its key neither
    first = await upload(client, account, content, key="confirm-1")
    again = await upload(client, account, content, key="confirm-1")
    assert (first.status_code, again.status_code) == (201, 201), again.text
    assert again.json() == first.json() == imported(rows=2, created=2, unchanged=0)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert await expense_count(database_url) == 2
    assert counter("expensetracker_imports_total", outcome="succeeded") == succeeded + 1
    other = await upload(client, account, content.replace("Tea", "Milk"), key="confirm-1")
    assert other.status_code == 422
    assert other.json()["errors"][0]["field"] == "header.Idempotency-Key"
    unkeyed = await upload(client, account, content)
    assert unkeyed.json()["created"] == 2  # without a key, a file is imported as often as sent
    assert await expense_count(database_url) == 4


FORMULAS = [
    '=HYPERLINK("http://evil.example/","click")',
    "+1+1",
    "-2+3",
    "@SUM(A1:A2)",
    "\tcmd",
    "\rcmd",
    "'=already quoted",
    "'plain apostrophe",
    "fine = text",
]


async def test_export_neutralises_formulas_and_import_restores_them(
    client: httpx.AsyncClient,
) -> None:
    account = await signed_up(client)
    for n, text in enumerate(FORMULAS):
        response = await client.post(
            "/api/v1/expenses",
            json={
                "amount": "1",
                "currency": "EUR",
                "occurred_on": (date(2026, 1, 1) + timedelta(days=n)).isoformat(),
                "description": text,
                "notes": text,
                "merchant": text,
                # A comma separates tags: the formula with one is a tag without it.
                "tags": [text.strip().replace(",", " ") or "t"],
            },
            headers=account.headers,
        )
        assert response.status_code == 201, response.text
    exported = (await export(client, account)).text
    rows = list(csv.DictReader(io.StringIO(exported, newline="")))
    # No cell a spreadsheet would run as a formula (OWASP's CSV injection rule).
    for row in rows:
        for cell in row.values():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), row
    # Imported into another account, every text comes back exactly.
    other = await signed_up(client)
    response = await upload(client, other, exported)
    assert response.status_code == 201, response.text
    back = (await export(client, other, format="json")).json()
    original = (await export(client, account, format="json")).json()
    assert {row["description"] for row in back} == set(FORMULAS)
    key = lambda row: row["occurred_on"]  # noqa: E731
    fields = ("description", "notes", "merchant", "tags")
    assert [[row[f] for f in fields] for row in sorted(back, key=key)] == [
        [row[f] for f in fields] for row in sorted(original, key=key)
    ]


@pytest.mark.parametrize(
    ("cell", "field"),
    [("bad\x00description", "description"), ("\x00", "notes"), ("a;b\x00", "tags")],
)
async def test_nul_in_a_csv_cell_is_a_422(client: httpx.AsyncClient, cell: str, field: str) -> None:
    account = await signed_up(client)
    values = {"description": "x", "notes": "", "tags": ""} | {field: cell}
    content = HEADER + (
        f'2026-01-05,1,EUR,"{values["description"]}","{values["notes"]}",,,"{values["tags"]}",\n'
    )
    response = await upload(client, account, content)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [error["field"] for error in response.json()["errors"]] == [field]
