"""Benchmark of the 100,000-row CSV import (issue 14) and of a 100,000-transaction OFX
statement (issue 15), through the command line and the API.

    .venv/bin/python bench/imports.py

`measure_imports` is the part `bench/expenses.py` runs once its servers are up: it writes a
generated CSV file and a generated OFX statement (the same rows every time; only the external
ids' prefix is new on each call, so that nothing is "unchanged"), imports each once with
`expensetracker expenses import` and once with `POST /api/v1/expenses/import` (the file
streamed, with the user's token), and
gives each one's wall time and the peak RSS of the process that did the work: the command's
own process, and the serving process for the API (its high-water mark is reset just before
the upload where the kernel allows it). The command's time is all of it, Python's start
included; a first run on a one-row bad file (which writes nothing) leaves the modules' bytecode
compiled, as the image has it. Just before each import, its baseline: the server's floor, the
same number of rows of the file's shape made by PostgreSQL itself in the import's batches of
INSERT ... SELECT (`server_floor`, rolled back), so that each import's time is also given as a
multiple of the least the database must do for it in the same run.

Alone, `main()` makes that setting itself: a migrated database (the embedded PostgreSQL in a
temporary folder, or the server in EXPENSETRACKER_BENCH_DATABASE_URL) holding 1,000,000
expenses over 1,000 users, the importing user among them, then `serve --target auth` and
`serve --target expenses`, and prints a table. A server database that an earlier run filled is
used as it is (with the rows that run imported). Targets: <= 5 s by the command line and
<= 8 s by the API, in memory bounded by a constant. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.setup import bench_env, log, migrated_database, register, serve, settle  # noqa: E402
from expensetracker.expenses.transfer import BATCH_ROWS  # noqa: E402
from tests.helpers.processes import cli  # noqa: E402

ROWS = 100_000
USERS = 1_000
PER_USER = 1_000
CATEGORIES_PER_USER = 12
EMAIL = "imports@bench.example"
SEED = 14
TIMEOUT_SECONDS = 300
# 100,000 OFX transactions are 11 MiB, over the API's default limit of 10 MiB (about 90,000 of
# them fit): the serving processes of the benchmarks take up to 16 MiB.
IMPORT_SETTINGS = {"EXPENSETRACKER_MAX_IMPORT_BODY_BYTES": str(16 * 2**20)}
TARGET_SECONDS = {"command line": 5.0, "API": 8.0}
HEADER = "occurred_on,amount,currency,description,notes,merchant,category,tags,external_id\n"
# Mostly EUR, as a real account's file would be; (code, decimals, share in percent).
CURRENCIES = [("EUR", 2, 90), ("USD", 2, 6), ("JPY", 0, 3), ("KWD", 3, 1)]
TAGS = ["work", "Travel", "family", "weekly", "gift", "refund", "cash", "card", "shared", "tax"]
MERCHANTS = ["Lidl", "Rewe", "Aldi", "Shell", "Deutsche Bahn", "Café Central", "Amazon", "IKEA"]
WORDS = ["lunch", "groceries", "ticket", "coffee", "dinner", "fuel", "books", "rent", "gift"]


def _amount(minor: int, decimals: int) -> str:
    if decimals == 0:
        return str(minor)
    return f"{minor // 10**decimals}.{minor % 10**decimals:0{decimals}d}"


def csv_rows(*, rows: int, categories: list[str], id_prefix: str) -> Iterator[str]:
    """The file's lines: always the same for the same arguments (a fixed seed). Every row has a
    date in 2025-2026, an amount, a description; some have notes (20%), a merchant (60%), a
    category of the user's (80%), one to three tags (30%, in mixed case), and every other row
    an external id ``{id_prefix}-{n}``."""
    rng = random.Random(SEED)
    currencies = [(code, decimals) for code, decimals, share in CURRENCIES for _ in range(share)]
    first_day = date(2025, 1, 1)
    yield HEADER
    for n in range(rows):
        currency, decimals = rng.choice(currencies)
        amount = _amount(rng.randint(1, 500 * 10**decimals), decimals)
        day = first_day + timedelta(days=rng.randrange(700))
        word = rng.choice(WORDS)
        description = f"{word.capitalize()} {n}"
        notes = f'"paid for {word}, split with ""Sam"""' if rng.random() < 0.2 else ""
        merchant = rng.choice(MERCHANTS) if rng.random() < 0.6 else ""
        category = rng.choice(categories) if categories and rng.random() < 0.8 else ""
        tags = ""
        if rng.random() < 0.3:
            chosen = rng.sample(TAGS, rng.randint(1, 3))
            tags = ";".join(tag.upper() if rng.random() < 0.1 else tag for tag in chosen)
        external_id = f"{id_prefix}-{n}" if n % 2 == 0 else ""
        yield (
            f"{day},{amount},{currency},{description},{notes},{merchant},{category},{tags},"
            f"{external_id}\n"
        )


def ofx_lines(*, rows: int, id_prefix: str) -> Iterator[str]:
    """An OFX 1.x bank statement of ``rows`` debits (a fixed seed), one transaction a line as
    many banks write them (11 MiB for 100,000: see IMPORT_SETTINGS): EUR, 6% charged in USD,
    each with a FITID ``{id_prefix}-{n}`` and a payee, 40% with a memo."""
    rng = random.Random(SEED)
    first_day = date(2025, 1, 1)
    yield (
        "OFXHEADER:100\nDATA:OFXSGML\nVERSION:102\nENCODING:UTF-8\nCHARSET:NONE\n\n<OFX>\n"
        "<BANKMSGSRSV1><STMTTRNRS><TRNUID>1<STMTRS>\n<CURDEF>EUR\n<BANKACCTFROM>"
        "<BANKID>99990000<ACCTID>0012345678<ACCTTYPE>CHECKING</BANKACCTFROM>\n<BANKTRANLIST>\n"
    )
    for n in range(rows):
        day = first_day + timedelta(days=rng.randrange(700))
        amount = _amount(rng.randint(1, 50_000), 2)
        currency = "<CURRENCY><CURRATE>1.08<CURSYM>USD</CURRENCY>" if rng.random() < 0.06 else ""
        memo = f"<MEMO>{rng.choice(WORDS)} {n}" if rng.random() < 0.4 else ""
        yield (
            f"<STMTTRN><TRNTYPE>POS<DTPOSTED>{day:%Y%m%d}<TRNAMT>-{amount}"
            f"<FITID>{id_prefix}-{n}<NAME>{rng.choice(MERCHANTS)}{memo}{currency}</STMTTRN>\n"
        )
    yield "</BANKTRANLIST>\n</STMTRS></STMTTRNRS></BANKMSGSRSV1>\n</OFX>\n"


def write_ofx(path: Path, *, rows: int, id_prefix: str) -> int:
    """Writes the statement; its size in bytes."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.writelines(ofx_lines(rows=rows, id_prefix=id_prefix))
    return path.stat().st_size


def write_csv(path: Path, *, rows: int, categories: list[str], id_prefix: str) -> int:
    """Writes the file; its size in bytes."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        for line in csv_rows(rows=rows, categories=categories, id_prefix=id_prefix):
            handle.write(line)
    return path.stat().st_size


def _category_names(api_url: str, token: str) -> list[str]:
    """The user's category names, from the API (which also makes a new user's defaults)."""
    response = httpx.get(
        f"{api_url}/api/v1/categories",
        params={"limit": 500},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    response.raise_for_status()
    return sorted(item["name"] for item in response.json()["items"])


def _email(database_url: str, user_id: str) -> str:
    async def fetch() -> str:
        connection = await asyncpg.connect(database_url)
        try:
            email = await connection.fetchval(
                "SELECT email FROM auth.accounts_v1 WHERE user_id = $1", uuid.UUID(user_id)
            )
        finally:
            await connection.close()
        assert email is not None, f"no account {user_id}"
        return email

    return asyncio.run(fetch())


def _peak_rss_mb(pid: int) -> float:
    """The process's high-water mark of resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def _reset_peak_rss(pid: int) -> bool:
    """Restarts the process's VmHWM from its current RSS (Linux >= 4.0: clear_refs 5), where
    this user may; otherwise the peak covers the process's life so far."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _serving_pid(api_url: str) -> int:
    """The process listening on the API URL's port on this machine."""
    port = urlsplit(api_url).port
    for connection in psutil.net_connections(kind="tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port:
            assert connection.pid is not None
            return connection.pid
    raise AssertionError(f"nothing listens on port {port}")


def _warm_up(folder: Path, *, email: str, env: dict[str, str]) -> None:
    """Runs the command once on a file with one bad row (so it writes nothing), letting Python
    write the bytecode of every module the command imports, as an installed image has it
    (compiled at build time): the measured run then starts as it would there, even where the
    environment says PYTHONDONTWRITEBYTECODE."""
    bad = folder / "warm-up.csv"
    bad.write_text(HEADER + "2026-01-01,1.001,EUR,Too precise,,,,,\n")
    compiling = {name: value for name, value in env.items() if name != "PYTHONDONTWRITEBYTECODE"}
    done = subprocess.run(
        cli("expenses", "import", str(bad), "--user", email),
        env=compiling,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
    )
    assert done.returncode == 1 and "line 2: amount" in done.stderr, done.stdout + done.stderr


def import_by_command(csv_file: Path, *, email: str, env: dict[str, str]) -> dict[str, float]:
    """`expensetracker expenses import`: wall time from start to exit, and the command's peak
    RSS: its VmHWM, read every 5 ms until it exits. (wait4's ru_maxrss would not do: it keeps
    the largest RSS the child had before exec too, which is this process's own, copied by the
    fork.)"""
    with tempfile.TemporaryFile(mode="w+") as output:
        started = time.perf_counter()
        popen = subprocess.Popen(
            cli("expenses", "import", str(csv_file), "--user", email),
            env=env,
            cwd=REPO,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
        peak_mb = 0.0
        try:
            while popen.poll() is None:
                if time.perf_counter() - started > TIMEOUT_SECONDS:
                    raise AssertionError(f"the import took over {TIMEOUT_SECONDS} s")
                with contextlib.suppress(OSError, AssertionError):  # exiting meanwhile
                    peak_mb = max(peak_mb, _peak_rss_mb(popen.pid))
                time.sleep(0.005)
        except BaseException:
            popen.kill()
            popen.wait()
            raise
        seconds = time.perf_counter() - started
        output.seek(0)
        text = output.read()
    assert popen.returncode == 0, text
    assert "created, 0 already there" in text, text
    return {"seconds": seconds, "peak_rss_mb": peak_mb}


def import_by_api(
    csv_file: Path, *, api_url: str, token: str, rows: int, serving_pid: int, content_type: str
) -> dict[str, float]:
    """`POST /api/v1/expenses/import`, the file streamed in 64 KiB chunks: wall time from the
    first byte sent to the answer, and the serving process's peak RSS meanwhile."""

    def chunks() -> Iterator[bytes]:
        with csv_file.open("rb") as handle:
            while chunk := handle.read(64 * 1024):
                yield chunk

    _reset_peak_rss(serving_pid)
    started = time.perf_counter()
    response = httpx.post(
        f"{api_url}/api/v1/expenses/import",
        content=chunks(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
        timeout=TIMEOUT_SECONDS,
    )
    seconds = time.perf_counter() - started
    assert response.status_code == 201, response.text[:2000]
    body = response.json()
    assert (body["rows"], body["created"], body["unchanged"]) == (rows, rows, 0), body
    return {"seconds": seconds, "peak_rss_mb": _peak_rss_mb(serving_pid)}


def measure_imports(
    *,
    stack: ExitStack,
    database_url: str,
    api_url: str,
    env: dict[str, str],
    token: str,
    user_id: str,
    rows: int = ROWS,
) -> list[tuple[str, dict[str, float]]]:
    """The same ``rows``-row file imported by the command line (with ``env``, which names the
    database), then by the API at ``api_url`` (as the user of ``token``, which must stay valid
    for about a minute more: access tokens live 15 minutes, so a long benchmark passes a fresh
    one): seconds, peak RSS in MiB and rows per second of each. Each import creates every row.
    Synchronous: call it from outside an event loop."""
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-imports-")))
    categories = _category_names(api_url, token)
    email = _email(database_url, user_id)
    run = uuid.uuid4().hex[:8]
    _warm_up(folder, email=email, env=env)
    results = []
    for kind, content_type in (("CSV", "text/csv"), ("OFX", "application/x-ofx")):
        for how, slug in (("command line", "cli"), ("API", "api")):
            path = folder / f"{slug}.{kind.lower()}"
            prefix = f"{run}-{kind}-{slug}"
            if kind == "CSV":
                size = write_csv(path, rows=rows, categories=categories, id_prefix=prefix)
            else:
                size = write_ofx(path, rows=rows, id_prefix=prefix)
            log(f"the server's floor for {rows:,} {kind} rows")
            floor = asyncio.run(
                server_floor(database_url, user_id=user_id, shape=SHAPES[kind], rows=rows)
            )
            log(f"importing {rows:,} {kind} rows ({size / 2**20:.1f} MiB) by the {how}")
            if how == "command line":
                result = import_by_command(path, email=email, env=env)
            else:
                pid = _serving_pid(api_url)
                result = import_by_api(
                    path,
                    api_url=api_url,
                    token=token,
                    rows=rows,
                    serving_pid=pid,
                    content_type=content_type,
                )
            result["rows_per_s"] = rows / result["seconds"]
            result["floor_seconds"] = floor
            result["x_floor"] = result["seconds"] / floor
            log(
                f"{result['seconds']:.2f} s ({result['x_floor']:.2f}x the floor's {floor:.2f} s), "
                f"peak RSS {result['peak_rss_mb']:.0f} MiB"
            )
            results.append((f"import {rows:,} {kind} rows, {how}", result))
            path.unlink()
    return results


@dataclass(frozen=True)
class Shape:
    """What share of a file's rows (in percent) has a category, tags (two), an external id."""

    categorised: int
    tagged: int
    identified: int


# As csv_rows and ofx_lines make them (a tagged CSV row has one to three tags, two on average).
SHAPES = {"CSV": Shape(categorised=80, tagged=30, identified=50), "OFX": Shape(0, 0, 100)}

# platform.tables.time_ordered_id in SQL, for the rows the floor makes in the server (an import
# makes its ids in the client): gen_random_uuid()'s version 4 turned into 7 (bits 52 and 53),
# its first six bytes replaced by the time in milliseconds (PostgreSQL 18 has uuidv7()).
TIME_ORDERED_ID_SQL = (
    "encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) placing "
    "substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3) "
    "FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid"
)

# The database's least work for a batch of a file's rows, in one statement as the import's is:
# the rows made by the server itself (with the import's ids) into the importing user's account,
# under every index, foreign key and trigger an import meets.
_FLOOR_TAGS = """
    INSERT INTO expenses.tags (user_id, id, name)
    SELECT $1::uuid, gen_random_uuid(), 'floor ' || $2::text || ' ' || n
    FROM generate_series(1, 10) AS n
    RETURNING id
"""
_FLOOR = f"""
    WITH inserted AS (
      INSERT INTO expenses.expenses (user_id, id, amount_minor, currency, currency_exponent,
        occurred_on, description, notes, merchant, category_id, external_id)
      SELECT $1::uuid, {TIME_ORDERED_ID_SQL}, 1 + (n * 7919) % 50000, 'EUR', 2,
             DATE '2025-01-01' + (n * 31) % 700,
             (ARRAY['Lunch', 'Fuel', 'Books'])[1 + n % 3] || ' ' || n,
             CASE WHEN n % 5 = 0 THEN 'paid for lunch, split with "Sam"' END,
             CASE WHEN n % 5 < 3 THEN 'Shop ' || n % 8 END,
             CASE WHEN n % 100 < $7 THEN ($3::uuid[])[1 + n % cardinality($3::uuid[])] END,
             CASE WHEN (n * 37) % 100 < $8 THEN $2::text || '-' || n END
      FROM generate_series($4::int, $5::int) AS n
      RETURNING id, amount_minor
    )
    INSERT INTO expenses.expense_tags (user_id, expense_id, tag_id)
    SELECT $1::uuid, i.id, ($6::uuid[])[1 + (i.amount_minor + k) % 10]
    FROM inserted i, generate_series(0, 1) AS k
    WHERE i.amount_minor % 100 < $9
"""


async def write_floor(
    connection: asyncpg.Connection, *, user_id: uuid.UUID, shape: Shape, rows: int
) -> float:
    """Writes ``rows`` rows of ``shape`` for the user, in the import's batches (_FLOOR), and
    answers the seconds it took; the caller's transaction keeps or drops them."""
    prefix = uuid.uuid4().hex[:8]
    categories = await connection.fetchval(
        "SELECT array_agg(id) FROM expenses.categories WHERE user_id = $1", user_id
    )
    tags = [row["id"] for row in await connection.fetch(_FLOOR_TAGS, user_id, prefix)]
    shares = (shape.categorised, shape.identified, shape.tagged)
    started = time.perf_counter()
    for first in range(0, rows, BATCH_ROWS):
        last = min(first + BATCH_ROWS, rows) - 1
        await connection.execute(_FLOOR, user_id, prefix, categories, first, last, tags, *shares)
    return time.perf_counter() - started


async def server_floor(database_url: str, *, user_id: str, shape: Shape, rows: int = ROWS) -> float:
    """Seconds the server takes to write ``rows`` rows of ``shape`` (write_floor), with no file
    read, parsed or sent, in a transaction then rolled back: no import of such a file is faster
    on this machine. The rows taken back are vacuumed away, so that the import measured next
    does not step over them in the user's part of every index: no real import follows such a
    transaction (docs/performance.md)."""
    connection = await asyncpg.connect(database_url)
    try:
        transaction = connection.transaction()
        await transaction.start()
        try:
            return await write_floor(connection, user_id=uuid.UUID(user_id), shape=shape, rows=rows)
        finally:
            await transaction.rollback()
            await connection.execute(
                "VACUUM expenses.expenses, expenses.expense_tags, expenses.tags, "
                "expenses.monthly_totals"
            )
    finally:
        await connection.close()


# --- standalone ---------------------------------------------------------------------------------


async def load_data(url: str, user: uuid.UUID) -> float:
    """1,000,000 expenses over 1,000 users (1,000 each over 12 categories, 90% EUR), the
    importing user (whose owner row and default categories exist) among them."""
    started = time.perf_counter()
    connection = await asyncpg.connect(url)
    try:
        others = [uuid.uuid4() for _ in range(USERS - 1)]
        await connection.execute(
            "INSERT INTO expenses.owners (user_id) SELECT unnest($1::uuid[])", others
        )
        await connection.execute(
            "INSERT INTO expenses.categories (user_id, id, name) "
            "SELECT u, gen_random_uuid(), 'Category ' || i "
            "FROM unnest($1::uuid[]) AS u, generate_series(1, $2::int) AS i",
            others,
            CATEGORIES_PER_USER,
        )
        own = await connection.fetch(
            "SELECT id FROM expenses.categories WHERE user_id = $1 ORDER BY name LIMIT $2",
            user,
            CATEGORIES_PER_USER,
        )
        assert len(own) == CATEGORIES_PER_USER, own
        # Each user's categories in the users' order, CATEGORIES_PER_USER each.
        rows = await connection.fetch(
            "SELECT c.id FROM unnest($1::uuid[]) WITH ORDINALITY AS u(id, n) "
            "JOIN expenses.categories c ON c.user_id = u.id ORDER BY u.n, c.name",
            others,
        )
        users = [user, *others]
        categories = [row["id"] for row in [*own, *rows]]
        assert len(categories) == USERS * CATEGORIES_PER_USER
        await connection.execute(
            """
            INSERT INTO expenses.expenses (user_id, id, amount_minor, currency,
                currency_exponent, occurred_on, description, notes, merchant, category_id)
            SELECT ($1::uuid[])[(1 + n % $3::int)::int], gen_random_uuid(),
                   100 + (n * 7919) % 20000, CASE WHEN n % 10 = 0 THEN 'USD' ELSE 'EUR' END, 2,
                   DATE '2025-01-01' + ((n * 31) % 600)::int, 'expense ' || n,
                   CASE WHEN n % 5 = 0 THEN 'note ' || n END, 'shop ' || n % 50,
                   ($2::uuid[])[(1 + (n % $3::int) * $4::int + (n / $3::int) % $4::int)::int]
            FROM generate_series(0::bigint, ($3::int * $5::int - 1)::bigint) AS n
            """,
            users,
            categories,
            USERS,
            CATEGORIES_PER_USER,
            PER_USER,
        )
        await settle(connection)
        count = await connection.fetchval("SELECT count(*) FROM expenses.expenses")
        assert count >= USERS * PER_USER, count
    finally:
        await connection.close()
    return time.perf_counter() - started


async def _loaded(url: str) -> bool:
    """Whether a server database of an earlier run already holds the users and expenses."""
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetchval("SELECT count(*) FROM expenses.owners") >= USERS
    finally:
        await connection.close()


def main() -> int:
    with ExitStack() as stack:
        url = migrated_database(stack, prefix="bench-imports-")
        env = bench_env(url)
        auth_url = serve(stack, "auth", env)[0]
        user_id, token = asyncio.run(register(auth_url, EMAIL))
        api_env = {**env, **IMPORT_SETTINGS, "EXPENSETRACKER_AUTH_URL": auth_url}
        api_url = serve(stack, "expenses", api_env)[0]
        _category_names(api_url, token)  # the owner row and default categories
        if asyncio.run(_loaded(url)):
            log("the database holds the expenses of an earlier run")
        else:
            log(f"loading {USERS * PER_USER:,} expenses over {USERS:,} users")
            log(f"loaded in {asyncio.run(load_data(url, uuid.UUID(user_id))):.0f} s")
        results = measure_imports(
            stack=stack,
            database_url=url,
            api_url=api_url,
            env=env,
            token=token,
            user_id=user_id,
        )
        print(f"\n{USERS * PER_USER:,} expenses over {USERS:,} users, {os.cpu_count()} cores\n")
        print(f"| {'what':<40} | seconds | rows/s | peak RSS MiB | floor s | x floor | target |")
        print(f"|{'-' * 42}|---------|--------|--------------|---------|---------|--------|")
        for label, result in results:
            how = label.rsplit(", ", 1)[1]
            met = "met" if result["seconds"] <= TARGET_SECONDS[how] else "MISSED"
            print(
                f"| {label:<40} | {result['seconds']:>7.2f} | {result['rows_per_s']:>6,.0f} | "
                f"{result['peak_rss_mb']:>12.0f} | {result['floor_seconds']:>7.2f} | "
                f"{result['x_floor']:>7.2f} | {met:<6} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
