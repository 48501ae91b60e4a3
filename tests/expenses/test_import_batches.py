"""The import writes a file in batches while it reads the next one (issue 14). Batches of two
rows here make every file cross their boundaries; the behaviours of one whole file stay: whole
or nothing, every bad row by line, external ids, dry runs, tags, exact monthly totals, and
memory bounded by a constant."""

from __future__ import annotations

import io
import uuid

import httpx
import pytest

from bench.imports import SHAPES, TIME_ORDERED_ID_SQL, csv_rows, server_floor, write_floor
from expensetracker.expenses import transfer
from expensetracker.platform.tables import time_ordered_id
from tests.helpers.database import connected
from tests.helpers.expenses import ACTUAL, EXPECTED, HEADER, expense_count, export, imported, upload
from tests.helpers.users import Account, signed_up


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfer, "BATCH_ROWS", 2)
    monkeypatch.setattr(transfer, "YIELD_ROWS", 1)


async def owner_of(client: httpx.AsyncClient, account: Account) -> uuid.UUID:
    response = await client.get("/api/v1/auth/me", headers=account.headers)
    return uuid.UUID(response.json()["id"])


async def fetch(database_url: str, sql: str, *args: object) -> list[tuple]:
    async with connected(database_url) as connection:
        return [tuple(row) for row in await connection.fetch(sql, *args)]


def lines_of(body: dict) -> list[tuple[int, str]]:
    return [(error["line"], error["field"]) for error in body["errors"]]


@pytest.mark.database
@pytest.mark.usefixtures("small_batches")
async def test_a_file_over_many_batches_is_one_import(
    client: httpx.AsyncClient, database_url: str
) -> None:
    account = await signed_up(client)
    content = HEADER + (
        "2026-01-01,1.00,EUR,One,,,Food,work,a\n"  # batch 1
        "2026-01-02,2.00,EUR,Two,,,,,\n"
        "2026-01-03,3,JPY,Three,,,,TRAVEL;Work,b\n"  # batch 2: TRAVEL is new, Work is work
        "2026-02-04,4.000,KWD,Four,,,Groceries,travel;Travel,\n"
        "2026-02-05,5.00,EUR,Five,,,Food,,c\n"  # batch 3
    )
    response = await upload(client, account, content)
    assert response.status_code == 201, response.text
    assert response.json() == imported(rows=5, created=5, unchanged=0)
    tags = (await client.get("/api/v1/tags", headers=account.headers)).json()["items"]
    assert sorted(tag["name"] for tag in tags) == ["TRAVEL", "work"]  # the first spellings
    rows = (await export(client, account, format="json")).json()
    assert {row["description"]: row["tags"] for row in rows} == {
        "One": ["work"],
        "Two": [],
        "Three": ["TRAVEL", "work"],
        "Four": ["TRAVEL"],
        "Five": [],
    }
    owner = await owner_of(client, account)
    expected = await fetch(database_url, EXPECTED, owner)
    assert len(expected) == 5
    assert await fetch(database_url, ACTUAL, owner) == expected
    again = await upload(client, account, content)  # the rows without an external id are new
    assert again.json() == imported(rows=5, created=2, unchanged=3)
    assert await fetch(database_url, ACTUAL, owner) == await fetch(database_url, EXPECTED, owner)


@pytest.mark.database
@pytest.mark.usefixtures("small_batches")
async def test_a_bad_row_after_written_batches_leaves_nothing(
    client: httpx.AsyncClient, database_url: str
) -> None:
    account = await signed_up(client)
    good = "".join(
        f"2026-03-{day:02d},{day}.00,EUR,Day {day},,,Food,new-tag,d-{day}\n" for day in range(1, 8)
    )
    response = await upload(client, account, HEADER + good + "2026-03-08,8.001,EUR,Bad,,,,,\n")
    assert response.status_code == 422, response.text
    assert response.json()["rejected_rows"] == 1
    assert lines_of(response.json()) == [(9, "amount")]
    assert await expense_count(database_url) == 0
    assert (await client.get("/api/v1/tags", headers=account.headers)).json()["items"] == []
    assert await fetch(database_url, ACTUAL, await owner_of(client, account)) == []
    # Nothing half-done either: the same rows import afterwards as new.
    response = await upload(client, account, HEADER + good)
    assert response.json() == imported(rows=7, created=7, unchanged=0)


@pytest.mark.database
@pytest.mark.usefixtures("small_batches")
async def test_external_ids_repeated_anywhere_in_the_file_are_reported(
    client: httpx.AsyncClient, database_url: str
) -> None:
    account = await signed_up(client)
    content = HEADER + (
        "2026-01-01,1.00,EUR,First x,,,,,x\n"  # line 2, batch 1
        "2026-01-02,1.00,EUR,First y,,,,,y\n"  # line 3
        "2026-01-03,1.00,EUR,Again y,,,,,y\n"  # line 4, batch 2: y again
        "2026-01-04,1.00,EUR,Fine,,,,,\n"  # line 5
        "2026-01-05,1.00,EUR,Again x,,,,,x\n"  # line 6, batch 3: x again
    )
    response = await upload(client, account, content)
    assert response.status_code == 422, response.text
    assert response.json()["rejected_rows"] == 2
    assert lines_of(response.json()) == [(4, "external_id"), (6, "external_id")]
    assert await expense_count(database_url) == 0


@pytest.mark.database
@pytest.mark.usefixtures("small_batches")
async def test_repeats_are_still_found_once_nothing_is_written(
    client: httpx.AsyncClient, database_url: str
) -> None:
    """After the first bad row only external ids are checked; a row with another error and a
    repeated external id is one rejected row with both errors, in the order of the columns."""
    account = await signed_up(client)
    content = HEADER + (
        "2026-01-01,1.001,EUR,Bad amount,,,,,\n"  # line 2
        "2026-01-02,1.00,EUR,First z,,,,,z\n"  # line 3
        "2026-01-03,1.00,EUR,Fine,,,,,\n"  # line 4
        "2026-13-04,1.00,EUR,Bad date and z again,,,,,z\n"  # line 5
        "2026-01-05,1.00,EUR,Bad category,,,Yachts,,w\n"  # line 6: w is taken first here
        "2026-01-06,1.00,EUR,w again,,,,,w\n"  # line 7
        "2026-01-07,1.00,eur,Currency in lower case,,,,,\n"  # line 8: the currency's fault
    )
    response = await upload(client, account, content)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["rejected_rows"] == 5
    assert lines_of(body) == [
        (2, "amount"),
        (5, "occurred_on"),
        (5, "external_id"),
        (6, "category"),
        (7, "external_id"),
        (8, "currency"),
    ]
    assert await expense_count(database_url) == 0


@pytest.mark.database
@pytest.mark.usefixtures("small_batches")
async def test_only_the_first_errors_by_line_are_reported(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Repeated external ids are found a batch later than other errors; the report still holds
    the first ones by line, and counts every bad row."""
    monkeypatch.setattr(transfer, "MAX_REPORTED_ERRORS", 3)
    account = await signed_up(client)
    rows = ["2026-01-01,1.00,EUR,First,,,,,r\n", "2026-01-02,1.00,EUR,Again,,,,,r\n"]  # 2, 3
    rows += [f"2026-01-03,{n}.001,EUR,Bad {n},,,,,\n" for n in range(4, 14)]  # lines 4-13
    response = await upload(client, account, HEADER + "".join(rows))
    assert response.status_code == 422, response.text
    assert response.json()["rejected_rows"] == 11
    assert lines_of(response.json()) == [(3, "external_id"), (4, "amount"), (5, "amount")]


@pytest.mark.database
@pytest.mark.usefixtures("small_batches")
async def test_a_dry_run_lists_the_rows_of_every_batch(
    client: httpx.AsyncClient, database_url: str
) -> None:
    account = await signed_up(client)
    first = HEADER + "".join(f"2026-04-0{n},{n}.00,EUR,Row {n},,,,,e-{n}\n" for n in (1, 2, 3))
    assert (await upload(client, account, first)).status_code == 201
    content = HEADER + (
        "2026-04-04,4.00,EUR,New,,,,,e-4\n"  # line 2
        "2026-04-01,1.00,EUR,Row 1,,,,,e-1\n"  # line 3: imported before
        "2026-04-05,5.00,EUR,New too,,,,t,\n"  # line 4
        "2026-04-06,6.00,EUR,New three,,,,,e-6\n"  # line 5
        "2026-04-02,2.00,EUR,Row 2,,,,,e-2\n"  # line 6: imported before
        "2026-04-03,3.00,EUR,Row 3,,,,,e-3\n"  # line 7: imported before
    )
    preview = await upload(client, account, content, dry_run=True)
    assert preview.status_code == 200, preview.text
    body = preview.json()
    assert (body["rows"], body["created"], body["unchanged"], body["dry_run"]) == (6, 3, 3, True)
    assert [row["position"] for row in body["preview"]["expenses"]] == [2, 4, 5]
    assert body["preview"]["unchanged"] == [
        {"position": line, "external_id": f"e-{n}"} for line, n in ((3, 1), (6, 2), (7, 3))
    ]
    assert await expense_count(database_url) == 3
    assert (await client.get("/api/v1/tags", headers=account.headers)).json()["items"] == []


def test_the_errors_kept_while_reading_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """However many rows are bad, at most twice the reported number of errors is held."""
    monkeypatch.setattr(transfer, "MAX_REPORTED_ERRORS", 10)
    batches = transfer._Batches(connection=None, user_id=uuid.uuid4())
    for line in range(10_000, 0, -1):  # latest first: every new error sorts before the kept ones
        batches.reject(line, [("amount", "bad"), ("tags", "bad")])
        assert len(batches.errors) <= 20
    assert batches.rejected == 10_000
    assert [error["line"] for error in batches.reported_errors()] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_the_benchmark_file_is_valid_and_the_same_every_time() -> None:
    categories = ["Food", "Rent"]
    lines = list(csv_rows(rows=2_000, categories=categories, id_prefix="p"))
    assert lines == list(csv_rows(rows=2_000, categories=categories, id_prefix="p"))
    header, reader = transfer._open(io.BytesIO("".join(lines).encode()))
    validator = transfer._Validator(header, {name.casefold(): uuid.uuid4() for name in categories})
    expenses = []
    for line, values in reader:
        expense, errors, _ = validator.row(line, values)
        assert errors == [], (line, values)
        expenses.append(expense)
    assert len(expenses) == 2_000
    # A row ends with its external id and its tags, as _Batches._write reads them.
    assert sum(expense[-2] is not None for expense in expenses) == 1_000  # external ids
    assert sum(expense[4] == "EUR" for expense in expenses) > 1_600  # (line, id, day, amount, ...
    assert sum(expense[-1] is not None for expense in expenses) > 400  # tags


@pytest.mark.database
async def test_a_batchs_new_tags_are_checked_against_earlier_imports_row_by_row(
    client: httpx.AsyncClient, database_url: str
) -> None:
    """A batch names new tags only for rows not imported before, each found by the unique index
    of external ids. Planned for a user of the statistics' average size, that test read every
    expense of a user who had grown far past it, as a big importer does after a few batches:
    once per batch."""
    account = await signed_up(client)
    await client.get("/api/v1/categories", headers=account.headers)  # makes the owner's row
    owner = await owner_of(client, account)
    header = ["occurred_on", "amount", "currency", "description", "tags", "external_id"]
    validator = transfer._Validator(header, categories={})
    rows = [
        validator.row(n, ["2026-01-01", "1.00", "EUR", f"Row {n}", tag, f"{tag}-{n}"])[0]
        for n, tag in enumerate(2000 * ["new"] + 50 * ["old"], 1)
    ]
    index = "'expenses.uq_expenses_user_external_id'::regclass"
    async with connected(database_url) as connection, connection.transaction():
        # The statistics taken while 100 users had 200 expenses each and this one none; then
        # this one has 5,000, 50 of them in the batch.
        await connection.execute(
            "WITH others AS (INSERT INTO expenses.owners (user_id) "
            "  SELECT gen_random_uuid() FROM generate_series(1, 100) RETURNING user_id) "
            "INSERT INTO expenses.expenses (user_id, id, amount_minor, currency, "
            "currency_exponent, occurred_on, description) "
            "SELECT user_id, gen_random_uuid(), 100, 'EUR', 2, '2026-01-01', 'Other' "
            "FROM others CROSS JOIN generate_series(1, 200)"
        )
        await connection.execute("ANALYZE expenses.expenses")
        await connection.execute(
            "INSERT INTO expenses.expenses (user_id, id, amount_minor, currency, "
            "currency_exponent, occurred_on, description, external_id) "
            "SELECT $1, gen_random_uuid(), 100, 'EUR', 2, '2026-01-01', 'Earlier', 'old-' || n "
            "FROM generate_series(2001, 7000) AS n",
            owner,
        )
        await connection.execute(transfer._CREATE_STAGING)
        await connection.copy_records_to_table("import_rows", records=rows, schema_name="pg_temp")
        read_before = await connection.fetchval(f"SELECT pg_stat_get_xact_tuples_returned({index})")
        await connection.execute(transfer._INSERT_TAGS, owner)
        read = await connection.fetchval(f"SELECT pg_stat_get_xact_tuples_returned({index})")
        tags = await connection.fetch("SELECT name FROM expenses.tags WHERE user_id = $1", owner)
    assert read - read_before <= len(rows)  # it read 5,000, the user's every external id
    assert [tag["name"] for tag in tags] == ["new"]


@pytest.mark.database
async def test_the_benchmarks_floor_writes_each_files_shape_and_keeps_nothing(
    client: httpx.AsyncClient, database_url: str
) -> None:
    """The imports' baseline in bench/imports.py writes as many rows as a file of its kind has
    categories, external ids and tags, through the tables' every index, key and trigger."""
    account = await signed_up(client)
    await client.get("/api/v1/categories", headers=account.headers)  # the owner's row
    owner = await owner_of(client, account)
    shares = (
        "SELECT count(category_id), count(external_id), "
        "  (SELECT count(*) FROM expenses.expense_tags WHERE user_id = $1), "
        "  (SELECT sum(expense_count) FROM expenses.monthly_totals WHERE user_id = $1) "
        "FROM expenses.expenses WHERE user_id = $1"
    )
    async with connected(database_url) as connection:
        for kind, shape in SHAPES.items():
            transaction = connection.transaction()
            await transaction.start()
            try:
                seconds = await write_floor(connection, user_id=owner, shape=shape, rows=1_000)
                categorised, identified, links, counted = await connection.fetchrow(shares, owner)
            finally:
                await transaction.rollback()
            assert seconds > 0
            assert (categorised, identified, counted) == (
                10 * shape.categorised,
                10 * shape.identified,
                1_000,
            ), kind
            assert abs(links - 2 * 10 * shape.tagged) <= 2 * 30, (kind, links)
    assert await server_floor(database_url, user_id=str(owner), shape=SHAPES["CSV"], rows=10) > 0
    assert await fetch(database_url, ACTUAL, owner) == []


@pytest.mark.database
async def test_the_floor_makes_time_ordered_ids_as_the_import_does(database_url: str) -> None:
    before = time_ordered_id()
    async with connected(database_url) as connection:
        made = await connection.fetchval(f"SELECT {TIME_ORDERED_ID_SQL}")
    after = time_ordered_id()
    assert (before.version, made.version, after.version) == (7, 7, 7)
    assert before.variant == made.variant == uuid.RFC_4122
    assert before.int >> 80 <= made.int >> 80 <= after.int >> 80  # the same clock, in ms
