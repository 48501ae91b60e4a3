"""Bank statements (OFX/QFX, CAMT.053, MT940, QIF) imported like CSV files (issue 15): the
bank's ids make a second import create nothing, credits are skipped and counted, XML is parsed
without DTDs or entities, and a broken file is refused whole with its bad transactions listed.
The sample files in tests/statements/ are made up, in the shape banks send."""

from __future__ import annotations

import asyncio
import io

import httpx
import pytest

from expensetracker.expenses import statements
from tests.helpers.expenses import expense_count, upload_statement
from tests.helpers.paths import STATEMENTS
from tests.helpers.processes import Process, clean_env, cli, spawn
from tests.helpers.users import Account, signed_up

OFX = (STATEMENTS / "checking.ofx").read_bytes()
CAMT = (STATEMENTS / "statement.camt053.xml").read_bytes()
BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"><BkToCstmrStmt><Stmt>
<Ntry><Amt Ccy="EUR">1.00</Amt><CdtDbtInd>DBIT</CdtDbtInd><BookgDt><Dt>2026-04-02</Dt></BookgDt>
<AddtlNtryInf>&lol3;</AddtlNtryInf></Ntry></Stmt></BkToCstmrStmt></Document>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE Document [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02"><BkToCstmrStmt><Stmt>
<Ntry><Amt Ccy="EUR">1.00</Amt><CdtDbtInd>DBIT</CdtDbtInd><BookgDt><Dt>2026-04-02</Dt></BookgDt>
<AddtlNtryInf>&secret;</AddtlNtryInf></Ntry></Stmt></BkToCstmrStmt></Document>"""
OFX_WITH_ENTITIES = b"""<?xml version="1.0"?>
<!DOCTYPE OFX [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>
<OFX><BANKMSGSRSV1><STMTTRNRS><STMTRS><CURDEF>EUR</CURDEF><BANKTRANLIST><STMTTRN>
<TRNTYPE>DEBIT</TRNTYPE><DTPOSTED>20260302</DTPOSTED><TRNAMT>-1.00</TRNAMT><FITID>1</FITID>
<NAME>&lol2;</NAME></STMTTRN></BANKTRANLIST></STMTRS></STMTTRNRS></BANKMSGSRSV1></OFX>"""


def ofx_statement(*transactions: tuple[str, str, str, str], currency: str = "EUR") -> bytes:
    """An OFX 1.x statement of (date, amount, FITID, name) transactions."""
    entries = "".join(
        f"<STMTTRN>\n<TRNTYPE>DEBIT\n<DTPOSTED>{day}\n<TRNAMT>{amount}\n<FITID>{fitid}\n"
        f"<NAME>{name}\n</STMTTRN>\n"
        for day, amount, fitid, name in transactions
    )
    return (
        "OFXHEADER:100\nDATA:OFXSGML\nVERSION:102\nENCODING:UTF-8\nCHARSET:NONE\n\n<OFX>\n"
        f"<BANKMSGSRSV1><STMTTRNRS><STMTRS>\n<CURDEF>{currency}\n<BANKACCTFROM>\n<ACCTID>42\n"
        f"</BANKACCTFROM>\n<BANKTRANLIST>\n{entries}</BANKTRANLIST>\n</STMTRS></STMTTRNRS>"
        "</BANKMSGSRSV1>\n</OFX>\n"
    ).encode()


async def listed(client: httpx.AsyncClient, account: Account) -> list[tuple[str, ...]]:
    response = await client.get("/api/v1/expenses", headers=account.headers)
    return sorted(
        (e["occurred_on"], e["amount"], e["currency"], e["description"], e["merchant"] or "")
        for e in response.json()["items"]
    )


SAMPLE_EXPENSES = {
    "checking.ofx": (
        "ofx",
        {},
        [
            ("2026-03-02", "12.50", "EUR", "Café Central", "Café Central"),
            ("2026-03-05", "1500", "JPY", "Tokyo Ramen", "Tokyo Ramen"),
            ("2026-03-10", "49.99", "EUR", "City Power Utility", "City Power Utility"),
        ],
    ),
    "card.qfx": (
        "ofx",
        {},
        [
            ("2026-03-12", "64.20", "USD", "Corner Bookshop", "Corner Bookshop"),
            ("2026-03-20", "8.00", "USD", "Bus & Rail", "Bus & Rail"),
        ],
    ),
    "statement.camt053.xml": (
        "camt053",
        {},
        [
            ("2026-04-02", "35.10", "EUR", "Green Grocer GmbH", "Green Grocer GmbH"),
            ("2026-04-09", "80.00", "CHF", "Mountain railway ticket", ""),
        ],
    ),
    "statement.mt940": (
        "mt940",
        {},
        [
            ("2026-05-02", "23.40", "EUR", "BAKERY SUNRISE BREAD AND COFFEE", ""),
            ("2026-05-04", "5.60", "EUR", "BAECKEREI SONNE", "BAECKEREI SONNE"),  # structured
            ("2026-05-04", "9.99", "EUR", "STREAMING SERVICE MONTHLY", ""),
        ],
    ),
    # Two identical purchases on two days, and each is one expense; 26/05 proves day first.
    "shop.qif": (
        "qif",
        {"currency": "EUR"},
        [
            ("2026-05-25", "18.75", "EUR", "Farm Shop", "Farm Shop"),
            ("2026-05-26", "18.75", "EUR", "Farm Shop", "Farm Shop"),
            ("2026-05-28", "4.20", "EUR", "Bakery", "Bakery"),
        ],
    ),
}


@pytest.mark.database
async def test_mt940_signs_by_the_money_leaving_the_account(client: httpx.AsyncClient) -> None:
    """A reversal of a credit (RC) takes money out like a debit, a reversal of a debit (RD) puts
    it back like a credit, and a mark in lower case is the same mark: the closing balance, 1500
    - 23.40 - 100.00 + 9.99, says so. RC and d were skipped as credits."""
    account = await signed_up(client)
    statement = (
        b":20:STMT20260501\n:25:DE89370400440532013000\n:28C:00042/001\n"
        b":60F:C260430EUR1500,00\n"
        b":61:2605020502d23,40NMSCNONREF//BREF-7101\n:86:BAKERY\n"
        b":61:2605030503RC100,00NTRFNONREF//BREF-7102\n:86:REFUND TAKEN BACK\n"
        b":61:2605040504RD9,99NDDTNONREF//BREF-7103\n:86:DIRECT DEBIT RETURNED\n"
        b":62F:C260504EUR1386,59\n-\n"
    )
    response = await upload_statement(client, account, statement)
    assert response.status_code == 201, response.text
    assert (response.json()["created"], response.json()["skipped"]) == (2, 1)
    assert await listed(client, account) == [
        ("2026-05-02", "23.40", "EUR", "BAKERY", ""),
        ("2026-05-03", "100.00", "EUR", "REFUND TAKEN BACK", ""),
    ]


@pytest.mark.database
@pytest.mark.parametrize("name", list(SAMPLE_EXPENSES))
async def test_a_statement_imports_its_spending_once(
    client: httpx.AsyncClient, database_url: str, name: str
) -> None:
    account = await signed_up(client)
    format, params, expected = SAMPLE_EXPENSES[name]
    content = (STATEMENTS / name).read_bytes()
    first = await upload_statement(client, account, content, **params)
    assert first.status_code == 201, first.text
    body = first.json()
    assert (body["format"], body["rows"], body["created"], body["skipped"]) == (
        format,
        len(expected),
        len(expected),
        1,  # each sample has one credit
    )
    assert await listed(client, account) == expected
    again = await upload_statement(client, account, content, **params)
    assert (again.json()["created"], again.json()["unchanged"]) == (0, len(expected))
    assert await expense_count(database_url) == len(expected)


@pytest.mark.database
async def test_payee_and_memo_make_the_description_notes_and_merchant(
    client: httpx.AsyncClient,
) -> None:
    account = await signed_up(client)
    assert (await upload_statement(client, account, OFX)).status_code == 201
    exported = await client.get(
        "/api/v1/expenses/export", params={"format": "json"}, headers=account.headers
    )
    lunch = next(row for row in exported.json() if row["occurred_on"] == "2026-03-02")
    assert (lunch["description"], lunch["notes"], lunch["merchant"]) == (
        "Café Central",  # from a CP1252 file, as its header says
        "Lunch with Sam & Kim",
        "Café Central",
    )
    assert lunch["external_id"] == "ofx:0012345678:202603020001"


@pytest.mark.database
async def test_the_format_comes_from_the_content_type_or_the_override(
    client: httpx.AsyncClient,
) -> None:
    account = await signed_up(client)
    named = await upload_statement(
        client, account, OFX, content_type="application/x-ofx", dry_run="true"
    )
    qfx = (STATEMENTS / "card.qfx").read_bytes()
    as_csv = await upload_statement(client, account, qfx, content_type="text/csv")
    overridden = await upload_statement(client, account, OFX, content_type="text/csv", format="ofx")
    mt940_as_ofx = await upload_statement(
        client, account, (STATEMENTS / "statement.mt940").read_bytes(), format="ofx"
    )
    unknown = await upload_statement(client, account, OFX, content_type="application/json")
    assert named.status_code == 200 and named.json()["format"] == "ofx"
    assert as_csv.status_code == 422  # text/csv says CSV: its header is refused
    assert "Header must name columns" in as_csv.json()["detail"]
    assert "unknown: <?xml version" in as_csv.json()["detail"]  # named, not as a Python list
    assert overridden.status_code == 201 and overridden.json()["created"] == 3
    assert mt940_as_ofx.status_code == 422
    assert "no <OFX> element" in mt940_as_ofx.json()["detail"]
    assert unknown.status_code == 415


@pytest.mark.database
@pytest.mark.parametrize(
    ("content", "format"),
    [(BILLION_LAUGHS, None), (EXTERNAL_ENTITY, None), (OFX_WITH_ENTITIES, "ofx")],
)
async def test_xml_with_entities_is_refused(
    client: httpx.AsyncClient, database_url: str, content: bytes, format: str | None
) -> None:
    account = await signed_up(client)
    params = {"format": format} if format else {}
    response = await upload_statement(
        client, account, content, content_type="application/xml", **params
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "DTD or entities" in response.json()["detail"]
    assert await expense_count(database_url) == 0


BROKEN = {
    "truncated OFX": (OFX[: OFX.index(b"</BANKTRANLIST>")], {}, "truncated"),
    "truncated CAMT": (CAMT[:-80], {}, "not well-formed XML"),
    "truncated MT940": (
        (STATEMENTS / "statement.mt940").read_bytes().split(b":62F:")[0],
        {},
        "truncated",
    ),
    "truncated QIF": (
        (STATEMENTS / "shop.qif").read_bytes()[:-3],
        {"currency": "EUR"},
        "truncated",
    ),
    "latin-1 OFX said to be UTF-8": (
        ofx_statement(("20260301", "-1.00", "a", "Caf\xe9")).replace(b"Caf\xc3\xa9", b"Caf\xe9"),
        {},
        "not UTF-8",
    ),
    "latin-1 CAMT said to be UTF-8": (CAMT.replace(b"Grocer", b"Gr\xf6cer"), {}, "not well-formed"),
    "latin-1 QIF": (
        (STATEMENTS / "shop.qif").read_bytes() + b"D29/05/2026\nT-1.00\nPCaf\xe9\n^\n",
        {"currency": "EUR"},
        "not UTF-8",
    ),
    "QIF without a currency": ((STATEMENTS / "shop.qif").read_bytes(), {}, "currency option"),
    # The packages' own words named Python objects: "[<class 'decimal.ConversionSyntax'>]", a
    # tag's repr with its memory address.
    "MT940 balance not a number": (
        (STATEMENTS / "statement.mt940").read_bytes().replace(b"EUR1500,00", b"EUR1,500,00"),
        {},
        "(an amount is not a number)",
    ),
    "MT940 entry unreadable": (
        (STATEMENTS / "statement.mt940").read_bytes().replace(b"D23,40N", b"DXN"),
        {},
        "(its :61: field cannot be read)",
    ),
    "QIF amount not a number": (
        (STATEMENTS / "shop.qif").read_bytes() + b"D29/05/2026\nT-1.0.0\nPCafe\n^\n",
        {"currency": "EUR"},
        "(an amount is not a number)",
    ),
}


@pytest.mark.database
@pytest.mark.parametrize("case", list(BROKEN))
async def test_a_broken_statement_is_refused_whole(
    client: httpx.AsyncClient, database_url: str, case: str
) -> None:
    account = await signed_up(client)
    content, params, detail = BROKEN[case]
    response = await upload_statement(client, account, content, **params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert detail in response.json()["detail"]
    assert await expense_count(database_url) == 0


@pytest.mark.database
async def test_every_bad_transaction_is_reported_by_its_number(
    client: httpx.AsyncClient, database_url: str
) -> None:
    account = await signed_up(client)
    content = ofx_statement(
        ("20260301", "-1.00", "a", "Fine"),  # 1
        ("20260302", "-2.00", "b", "Fine too"),  # 2
        ("20260303", "-3.00", "a", "Same FITID as the first"),  # 3
        ("2026-03", "-4.00", "c", "Bad date"),  # 4
        ("20260305", "-5.001", "d", "Too precise"),  # 5
        ("20260306", "-x", "e", "Not a number"),  # 6
        ("20260307", "-1E+999999", "g", "An exponent: never expanded"),  # 7
        ("20260307", "100.00", "f", "A credit: skipped, counted as a position"),  # 8
        ("20260308", "-8.00", "a", "Same FITID again"),  # 9
    )
    response = await upload_statement(client, account, content)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["rejected_rows"] == 6
    assert body["detail"].startswith("6 of 8 transactions are invalid")
    assert [(error["transaction"], error["field"]) for error in body["errors"]] == [
        (3, "external_id"),
        (4, "occurred_on"),
        (5, "amount"),
        (6, "amount"),
        (7, "amount"),
        (9, "external_id"),
    ]
    unknown_currency = await upload_statement(
        client, account, ofx_statement(("20260301", "-1.00", "a", "x"), currency="XYZ")
    )
    assert unknown_currency.status_code == 422
    assert [(e["transaction"], e["field"]) for e in unknown_currency.json()["errors"]] == [
        (1, "currency")
    ]
    assert "ISO 4217" in unknown_currency.json()["errors"][0]["message"]
    assert await expense_count(database_url) == 0


@pytest.mark.database
async def test_a_dry_run_of_a_statement_reports_and_keeps_nothing(
    client: httpx.AsyncClient, database_url: str
) -> None:
    account = await signed_up(client)
    preview = await upload_statement(client, account, CAMT, dry_run="true")
    assert preview.status_code == 200, preview.text
    body = preview.json()
    assert (body["format"], body["rows"], body["created"], body["skipped"]) == ("camt053", 2, 2, 1)
    assert body["dry_run"] is True
    assert [row["position"] for row in body["preview"]["expenses"]] == [1, 3]
    assert await expense_count(database_url) == 0


QIF_DATES = "!Type:Bank\nD{date}\nT-10.00\nPNewsagent\n^\n"


@pytest.mark.database
async def test_qif_dates_are_ordered_by_the_file_or_the_option(client: httpx.AsyncClient) -> None:
    account = await signed_up(client)
    ambiguous = (STATEMENTS / "ambiguous.qif").read_bytes()
    unsaid = await upload_statement(client, account, ambiguous, currency="EUR")
    day_first = await upload_statement(client, account, ambiguous, currency="EUR", date_order="dmy")
    month_first = QIF_DATES.format(date="06/25/2026").encode()
    contradicted = await upload_statement(
        client, account, month_first, currency="EUR", date_order="dmy"
    )
    proved = await upload_statement(client, account, month_first, currency="GBP")
    assert unsaid.status_code == 422 and "date_order" in unsaid.json()["detail"]
    assert day_first.status_code == 201, day_first.text
    assert contradicted.status_code == 422 and "mdy, not dmy" in contradicted.json()["detail"]
    assert proved.status_code == 201, proved.text
    dates = [(e[0], e[2]) for e in await listed(client, account)]
    assert dates == [("2026-06-05", "EUR"), ("2026-06-25", "GBP")]


def test_qif_files_proving_both_orders_are_refused() -> None:
    both = QIF_DATES.format(date="25/05/2026") + QIF_DATES.format(date="05/25/2026")
    with pytest.raises(statements.InvalidImport, match="mix"):
        statements.qif_day_first(both, "dmy")


def test_ofx_tags_cut_by_the_reading_chunks_are_read_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OFX is read in chunks (bounded memory): a chunk boundary anywhere, even inside a tag or
    an escape, changes nothing."""
    whole = list(statements.Statement("ofx").rows(io.BytesIO(OFX)))
    monkeypatch.setattr(statements, "READ_CHARS", 7)
    assert list(statements.Statement("ofx").rows(io.BytesIO(OFX))) == whole
    assert len(whole) == 3


@pytest.mark.parametrize(
    ("name", "format"),
    [
        ("checking.ofx", "ofx"),
        ("card.qfx", "ofx"),
        ("statement.camt053.xml", "camt053"),
        ("statement.mt940", "mt940"),
        ("shop.qif", "qif"),
        ("ambiguous.qif", "qif"),
    ],
)
def test_the_format_is_detected_from_the_content(name: str, format: str) -> None:
    assert statements.detect((STATEMENTS / name).read_bytes()[:4096]) == format


def test_a_csv_file_is_detected_as_csv() -> None:
    assert statements.detect(b"occurred_on,amount,currency,description\n") == "csv"


@pytest.mark.database
async def test_the_import_command_reads_statements(
    client: httpx.AsyncClient, database_url: str
) -> None:
    account = await signed_up(client)
    env = clean_env(EXPENSETRACKER_DATABASE_URL=database_url)

    async def run(*args: str) -> Process:
        with spawn(cli("expenses", "import", *args, "--user", account.email), env) as process:
            await asyncio.to_thread(process.wait, 120)
        return process

    ofx = await run(str(STATEMENTS / "checking.ofx"))
    qif = await run(str(STATEMENTS / "ambiguous.qif"), "--currency", "EUR", "--date-order", "mdy")
    unsaid = await run(str(STATEMENTS / "ambiguous.qif"), "--currency", "EUR")
    no_currency = await run(str(STATEMENTS / "shop.qif"))
    assert ofx.popen.returncode == 0, ofx.output
    assert "3 rows: 3 created, 0 already there, 1 credits skipped" in ofx.output
    assert qif.popen.returncode == 0, qif.output
    assert unsaid.popen.returncode == 2
    # The command's options by their names, not the API's query parameters.
    assert "give --date-order (dmy or mdy)." in unsaid.output
    assert no_currency.popen.returncode == 2
    assert "A QIF file names no currency: give --currency." in no_currency.output
    assert await listed(client, account) == [
        *SAMPLE_EXPENSES["checking.ofx"][2],
        ("2026-05-06", "10.00", "EUR", "Newsagent", "Newsagent"),  # mdy
    ]


@pytest.mark.database
async def test_a_statement_has_the_csv_size_limit(
    client: httpx.AsyncClient, database_url: str
) -> None:
    account = await signed_up(client)
    oversized = OFX + b" " * (10 * 2**20)
    response = await upload_statement(client, account, oversized, content_type="application/x-ofx")
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert await expense_count(database_url) == 0
