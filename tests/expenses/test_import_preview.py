"""An import's dry run shows the rows (issue 15, "Preview"): the first rows it would create as
the import would make them (the rules' categories and tags), the rows imported before, a
statement's credits by their number, at most PREVIEW_ROWS of each; and it keeps nothing."""

from __future__ import annotations

import httpx
import pytest

from expensetracker.expenses import transfer
from expensetracker.expenses.schemas import PREVIEW_ROWS
from tests.helpers.database import connected
from tests.helpers.expenses import HEADER, categories, upload, upload_statement
from tests.helpers.paths import STATEMENTS
from tests.helpers.users import Account, signed_up

pytestmark = pytest.mark.database

CHARGED_HEADER = HEADER.rstrip("\n") + ",charged_amount,charged_currency\n"


async def rule(client: httpx.AsyncClient, account: Account, **body: object) -> None:
    response = await client.post("/api/v1/expenses/rules", json=body, headers=account.headers)
    assert response.status_code == 201, response.text


STORED = (
    "SELECT id, user_id, description FROM expenses.expenses ORDER BY id",
    "SELECT id, name FROM expenses.tags ORDER BY id",
    "SELECT expense_id, tag_id FROM expenses.expense_tags ORDER BY 1, 2",
    "SELECT * FROM expenses.monthly_spending_v1 ORDER BY 1, 2, 3, 4",
)


async def stored(database_url: str) -> list[list[tuple]]:
    """Everything an import writes: expenses, tags and their links, the monthly totals."""
    async with connected(database_url) as connection:
        return [[tuple(row) for row in await connection.fetch(sql)] for sql in STORED]


async def test_the_preview_lists_the_rows_as_the_import_would_make_them(
    client: httpx.AsyncClient, database_url: str
) -> None:
    account = await signed_up(client)
    ids = await categories(client, account)
    await rule(
        client, account, pattern="coffee", category_id=ids["Restaurants"], tags=["Warm drinks"]
    )
    # A tag the account already has, spelled otherwise: the expense gets the existing spelling.
    kept = HEADER + "2026-02-01,9.00,EUR,Earlier,,,,Work,bank-0\n"
    assert (await upload(client, account, kept)).status_code == 201
    before = await stored(database_url)
    content = CHARGED_HEADER + (
        "2026-03-01,3.50,EUR,Coffee at the station,,Station Café,,work,bank-1,,\n"  # line 2
        "2026-03-02,1500,JPY,Ramen,,,Groceries,,,10.20,EUR\n"  # line 3: its own category wins
        "2026-03-03,4.00,EUR,Coffee beans,,,Groceries,,,,\n"  # line 4: a rule never overrides
        "2026-02-01,9.00,EUR,Earlier,,,,Work,bank-0,,\n"  # line 5: imported before
    )
    response = await upload(client, account, content, dry_run=True)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["rows"], body["created"], body["unchanged"], body["dry_run"]) == (4, 3, 1, True)
    assert body["preview"] == {
        "limit": PREVIEW_ROWS,
        "expenses": [
            {
                "position": 2,
                "occurred_on": "2026-03-01",
                "amount": "3.50",
                "currency": "EUR",
                "charged_amount": None,
                "charged_currency": None,
                "description": "Coffee at the station",
                "merchant": "Station Café",
                "category_id": ids["Restaurants"],
                "category": "Restaurants",
                "tags": ["Warm drinks", "Work"],
                "external_id": "bank-1",
            },
            {
                "position": 3,
                "occurred_on": "2026-03-02",
                "amount": "1500",
                "currency": "JPY",
                "charged_amount": "10.20",
                "charged_currency": "EUR",
                "description": "Ramen",
                "merchant": None,
                "category_id": ids["Groceries"],
                "category": "Groceries",
                "tags": [],
                "external_id": None,
            },
            {
                "position": 4,
                "occurred_on": "2026-03-03",
                "amount": "4.00",
                "currency": "EUR",
                "charged_amount": None,
                "charged_currency": None,
                "description": "Coffee beans",
                "merchant": None,
                "category_id": ids["Groceries"],
                "category": "Groceries",
                "tags": [],
                "external_id": None,
            },
        ],
        "more_expenses": False,
        "unchanged": [{"position": 5, "external_id": "bank-0"}],
        "more_unchanged": False,
        "skipped": [],
        "more_skipped": False,
    }
    assert await stored(database_url) == before  # nothing written, no monthly total moved
    # The import makes what the preview showed.
    imported = await upload(client, account, content)
    assert imported.status_code == 201, imported.text
    assert imported.json()["preview"] is None
    listed = await client.get("/api/v1/expenses", headers=account.headers)
    made = {e["description"]: (e["category_id"], e["tags"]) for e in listed.json()["items"]}
    assert {
        row["description"]: (row["category_id"], row["tags"]) for row in body["preview"]["expenses"]
    }.items() <= made.items()


async def test_a_second_dry_run_after_the_import_lists_the_rows_as_unchanged(
    client: httpx.AsyncClient,
) -> None:
    account = await signed_up(client)
    content = HEADER + "".join(f"2026-04-0{n},{n}.00,EUR,Row {n},,,,,e-{n}\n" for n in (1, 2, 3))
    content += "2026-04-04,4.00,EUR,No bank id,,,,,\n"
    first = await upload(client, account, content, dry_run=True)
    assert [row["position"] for row in first.json()["preview"]["expenses"]] == [2, 3, 4, 5]
    assert (await upload(client, account, content)).status_code == 201
    again = await upload(client, account, content, dry_run=True)
    assert again.status_code == 200, again.text
    preview = again.json()["preview"]
    assert preview["unchanged"] == [
        {"position": line, "external_id": f"e-{n}"} for line, n in ((2, 1), (3, 2), (4, 3))
    ]
    # A row without an external id is created again by every import: the preview says so.
    assert [row["description"] for row in preview["expenses"]] == ["No bank id"]


async def test_a_statements_credits_are_listed_as_skipped_by_their_number(
    client: httpx.AsyncClient,
) -> None:
    account = await signed_up(client)
    ofx = (STATEMENTS / "checking.ofx").read_bytes()
    response = await upload_statement(client, account, ofx, dry_run="true")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["format"], body["rows"], body["created"], body["skipped"]) == ("ofx", 3, 3, 1)
    preview = body["preview"]
    # The credit is the statement's second transaction: positions count it.
    assert preview["skipped"] == [{"position": 2, "reason": "credit"}]
    assert [
        (row["position"], row["description"], row["amount"], row["currency"])
        for row in preview["expenses"]
    ] == [
        (1, "Café Central", "12.50", "EUR"),
        (3, "Tokyo Ramen", "1500", "JPY"),
        (4, "City Power Utility", "49.99", "EUR"),
    ]
    assert preview["expenses"][0]["external_id"] == "ofx:0012345678:202603020001"
    camt = await upload_statement(
        client, account, (STATEMENTS / "statement.camt053.xml").read_bytes(), dry_run="true"
    )
    assert camt.json()["preview"]["skipped"] == [{"position": 2, "reason": "credit"}]


def ofx_of(amounts: list[str]) -> bytes:
    entries = "".join(
        f"<STMTTRN>\n<TRNTYPE>DEBIT\n<DTPOSTED>20260301\n<TRNAMT>{amount}\n<FITID>{n}\n"
        f"<NAME>Shop {n}\n</STMTTRN>\n"
        for n, amount in enumerate(amounts, start=1)
    )
    return (
        "OFXHEADER:100\nDATA:OFXSGML\nVERSION:102\n\n<OFX>\n<BANKMSGSRSV1><STMTTRNRS><STMTRS>\n"
        "<CURDEF>EUR\n<BANKACCTFROM>\n<ACCTID>7\n</BANKACCTFROM>\n<BANKTRANLIST>\n"
        f"{entries}</BANKTRANLIST>\n</STMTRS></STMTTRNRS></BANKMSGSRSV1>\n</OFX>\n"
    ).encode()


async def test_each_list_holds_the_first_rows_and_says_that_more_exist(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small batches: the lists fill up across many batches' answers, and stay full.
    monkeypatch.setattr(transfer, "BATCH_ROWS", 7)
    account = await signed_up(client)
    total = PREVIEW_ROWS + 20
    old = HEADER + "".join(f"2026-01-01,1.00,EUR,Old {n},,,,,old-{n}\n" for n in range(total))
    assert (await upload(client, account, old)).status_code == 201
    new = "".join(f"2026-01-02,2.00,EUR,New {n},,,,,new-{n}\n" for n in range(total))
    response = await upload(client, account, old + new, dry_run=True)
    assert response.status_code == 200, response.text
    body = response.json()
    preview = body["preview"]
    assert (body["created"], body["unchanged"]) == (total, total)
    assert (len(preview["expenses"]), preview["more_expenses"]) == (PREVIEW_ROWS, True)
    assert (len(preview["unchanged"]), preview["more_unchanged"]) == (PREVIEW_ROWS, True)
    # The first ones in the file: the old rows are lines 2 to total + 1, the new ones follow.
    assert preview["unchanged"][0] == {"position": 2, "external_id": "old-0"}
    assert [row["position"] for row in preview["expenses"]] == list(
        range(total + 2, total + 2 + PREVIEW_ROWS)
    )
    credits = [f"{n}.00" for n in range(1, total + 1)] + ["0.00", "-5.00"]
    statement = await upload_statement(client, account, ofx_of(credits), dry_run="true")
    listed = statement.json()["preview"]
    assert statement.json()["skipped"] == total + 1
    assert (len(listed["skipped"]), listed["more_skipped"]) == (PREVIEW_ROWS, True)
    assert listed["skipped"][0] == {"position": 1, "reason": "credit"}
    assert [(row["position"], row["amount"]) for row in listed["expenses"]] == [(total + 2, "5.00")]
    zero = await upload_statement(client, account, ofx_of(["0.00", "-1.00"]), dry_run="true")
    assert zero.json()["preview"]["skipped"] == [{"position": 1, "reason": "zero"}]


async def test_another_users_rules_and_imports_do_not_shape_the_preview(
    client: httpx.AsyncClient,
) -> None:
    ann, bob = await signed_up(client), await signed_up(client)
    bobs = await categories(client, bob)
    await rule(client, bob, pattern="coffee", category_id=bobs["Restaurants"], tags=["bob"])
    content = HEADER + "2026-03-01,3.50,EUR,Coffee,,,,,bank-1\n"
    assert (await upload(client, bob, content)).status_code == 201
    response = await upload(client, ann, content, dry_run=True)
    assert response.status_code == 200, response.text
    preview = response.json()["preview"]
    assert preview["unchanged"] == []  # bob's bank-1 is not ann's
    [row] = preview["expenses"]
    assert (row["category_id"], row["category"], row["tags"]) == (None, None, [])
    # Bob's own preview of it, after his import: unchanged, with his tag still his own.
    again = await upload(client, bob, content, dry_run=True)
    assert again.json()["preview"]["unchanged"] == [{"position": 2, "external_id": "bank-1"}]
    tags = await client.get("/api/v1/tags", headers=ann.headers)
    assert tags.json()["items"] == []


async def test_a_file_with_a_bad_row_is_refused_by_the_dry_run_with_its_errors(
    client: httpx.AsyncClient,
) -> None:
    account = await signed_up(client)
    content = HEADER + "2026-03-01,3.50,EUR,Fine,,,,,\n2026-03-02,2.001,EUR,Too precise,,,,,\n"
    response = await upload(client, account, content, dry_run=True)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert [(e["line"], e["field"]) for e in response.json()["errors"]] == [(3, "amount")]
    assert "preview" not in response.json()
    # A charged currency there is none of: that column's fault, not the amount's.
    charged = CHARGED_HEADER + "2026-03-01,3.50,USD,Abroad,,,,,,3.20,EU\n"
    refused = await upload(client, account, charged, dry_run=True)
    assert [(e["line"], e["field"]) for e in refused.json()["errors"]] == [(2, "charged_currency")]
