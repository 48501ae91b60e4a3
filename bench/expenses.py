"""Benchmark of the expenses service on 1,000,000 expenses over 1,000 users.

    .venv/bin/python bench/expenses.py        (or: make bench-expenses)

Our side is the production shape: two `serve --target expenses` processes with two pooled
connections each, a JWT on every request (from `serve --target auth`). The ceiling, in the same
run: bench/bare_app.py, FastAPI and asyncpg alone sending the same statements (two processes,
two connections each, no authentication, no middleware), and pgbench sending the create and
first-page statements straight to PostgreSQL. wrk drives 16 connections (127.0.0.1 only,
BENCH_SECONDS per line, 10 by default), rotating over 16 users with 12,000 expenses each.

Lines: create (plain, with an Idempotency-Key, with tags), the first page, a page past 10,000
rows by cursor, a filtered page (a category with its subcategories, half a year), a text search
(a word in some of the rows, and one in none), PATCH and DELETE; then the 100,000-row import
through the command line and the API.
Targets (issue 14): create and first page >= 0.6x the bare app with p99 <= 25 ms; the other
lines p99 <= 50 ms; the import <= 5 s (command line) and <= 8 s (API).
Options (environment): BENCH_SECONDS; BENCH_PROFILE=<folder>, py-spy records the first process
of each side (ours, the bare app's) during each measured line (bench/wrk.py: profiled).
Needs wrk (Debian package `wrk`). Uses the embedded PostgreSQL in a temporary folder, or the
server in EXPENSETRACKER_BENCH_DATABASE_URL.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
import uuid
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.imports import IMPORT_SETTINGS, measure_imports  # noqa: E402
from bench.pgbench import pgbench_sql, run_pgbench  # noqa: E402
from bench.setup import bench_env, log, migrated_database, register, serve, settle  # noqa: E402
from bench.wrk import Call, lua_script, postgres_pids, profiled, run_wrk  # noqa: E402
from expensetracker.expenses import service, shared  # noqa: E402
from expensetracker.platform.embedded import pg_bin  # noqa: E402
from expensetracker.platform.pagination import encode_cursor  # noqa: E402
from tests.helpers.processes import Process, free_port  # noqa: E402

USERS = 1_000
EXPENSES = 1_000_000
BENCH_USERS = 16  # the users the requests rotate over, 12,000 expenses each
PER_BENCH_USER = 12_000
CATEGORIES_PER_USER = 12  # 4 top-level, each with 2 subcategories
DEEP_ROWS = 10_000
DURATION_SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
CONNECTIONS = 16
PROCESSES = 2
JSON = {"Content-Type": "application/json"}
IMPORT_TARGET_SECONDS = {"command line": 5, "API": 8}


LOAD_EXPENSES = """
INSERT INTO expenses.expenses (user_id, id, amount_minor, currency, currency_exponent,
    occurred_on, description, merchant, category_id)
SELECT u.user_id, gen_random_uuid(), 100 + (n * 7919) % 20000, 'EUR', 2,
       DATE '2024-01-01' + ((n * 31) % 730)::int, 'expense ' || n, 'shop ' || n % 50,
       ($2::uuid[])[u.position * $3 + 1 + (n / $1) % $3]
FROM generate_series(0::bigint, $4::bigint - 1) AS n
CROSS JOIN LATERAL (
    SELECT CASE WHEN n < $5 THEN n % $6 ELSE $6 + (n - $5) % ($1 - $6) END AS position
) p
CROSS JOIN LATERAL (SELECT ($7::uuid[])[p.position + 1] AS user_id, p.position) u
"""
# A fifth of the benchmark users' expenses carry one of five tags.
LOAD_TAGS = """
INSERT INTO expenses.tags (user_id, id, name)
SELECT u, gen_random_uuid(), 'tag ' || t FROM unnest($1::uuid[]) AS u, generate_series(0, 4) AS t;
INSERT INTO expenses.expense_tags (user_id, expense_id, tag_id)
SELECT e.user_id, e.id, t.id
FROM expenses.expenses e
JOIN expenses.tags t ON t.user_id = e.user_id AND t.name = 'tag ' || abs(hashtext(e.id::text)) % 5
WHERE e.user_id = ANY($1::uuid[]) AND abs(hashtext(e.id::text)) % 25 < 5
"""


@dataclass(eq=False)  # a key of the per-user query dicts, by identity
class BenchUser:
    id: str
    token: str
    category: str  # a top-level category, with two subcategories
    deep_cursor: str  # past the first 10,000 expenses
    patched: list[str]  # expenses changed by the PATCH lines
    deleted: list[str]  # expenses for the DELETE lines: ours first half, the bare app's second


async def load_data(url: str, bench_users: list[tuple[str, str]]) -> list[BenchUser]:
    ids = [uuid.UUID(user_id) for user_id, _ in bench_users]
    ids += [uuid.uuid4() for _ in range(USERS - BENCH_USERS)]
    categories = [uuid.uuid4() for _ in range(USERS * CATEGORIES_PER_USER)]
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(
            "INSERT INTO expenses.owners (user_id) SELECT unnest($1::uuid[])", ids
        )
        # Per user: 4 top-level categories (0-3), then 2 subcategories of each (4-11).
        await connection.execute(
            """
            INSERT INTO expenses.categories (user_id, id, name, parent_id)
            SELECT ($1::uuid[])[1 + (i - 1) / $3], ($2::uuid[])[i], 'Category ' || i,
                   CASE WHEN (i - 1) % $3 >= 4
                        THEN ($2::uuid[])[i - (i - 1) % $3 + ((i - 1) % $3 - 4) / 2] END
            FROM generate_series(1, array_length($2::uuid[], 1)) AS i
            ORDER BY (i - 1) % $3 >= 4, i
            """,
            ids,
            categories,
            CATEGORIES_PER_USER,
        )
        await connection.execute(
            LOAD_EXPENSES,
            USERS,
            categories,
            CATEGORIES_PER_USER,
            EXPENSES,
            BENCH_USERS * PER_BENCH_USER,
            BENCH_USERS,
            ids,
        )
        bench_ids = ids[:BENCH_USERS]
        for statement in LOAD_TAGS.split(";"):
            await connection.execute(statement, bench_ids)
        await settle(connection)
        count = await connection.fetchval("SELECT count(*) FROM expenses.expenses")
        assert count == EXPENSES, count
        users = []
        for n, (user_id, token) in enumerate(bench_users):
            newest = await connection.fetch(
                "SELECT occurred_on, id FROM expenses.expenses WHERE user_id = $1 "
                "ORDER BY occurred_on DESC, id DESC",
                ids[n],
            )
            deep = newest[DEEP_ROWS - 1]
            users.append(
                BenchUser(
                    id=user_id,
                    token=token,
                    category=str(categories[n * CATEGORIES_PER_USER]),
                    deep_cursor=encode_cursor(
                        [deep[0].isoformat(), str(deep[1])], list_name="expenses"
                    ),
                    patched=[str(row[1]) for row in newest[:50]],
                    # The oldest: no page of the other lines shows them.
                    deleted=[str(row[1]) for row in newest[-3000:]],
                )
            )
    finally:
        await connection.close()
    return users


def start_bare_app(stack: ExitStack, database_url: str) -> tuple[str, Process]:
    port = free_port()
    env = {**os.environ, "BARE_DATABASE_URL": database_url, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--no-access-log", "--log-level", "warning"]
    process = Process(command, env)
    stack.callback(process.stop)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/openapi.json", timeout=1)
            return url, process
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"the bare app did not start:\n{process.output}")


@dataclass
class Line:
    name: str
    ours: list[list[Call]]  # the calls of each process: one list for all, or one per process
    bare: list[list[Call]]
    expected: int = 200
    unique_header: str | None = None
    target_p99_ms: float = 50
    target_ratio: float | None = None


def lines(users: list[BenchUser]) -> list[Line]:
    def ours(user: BenchUser, json_body: bool = False) -> dict[str, str]:
        return {"Authorization": f"Bearer {user.token}", **(JSON if json_body else {})}

    def bare(user: BenchUser, json_body: bool = False) -> dict[str, str]:
        return {"X-User": user.id, **(JSON if json_body else {})}

    def create(tags: list[str]) -> tuple[list[list[Call]], list[list[Call]]]:
        def body(user: BenchUser) -> str:
            expense = {
                "amount": "12.34",
                "currency": "EUR",
                "occurred_on": "2025-06-15",
                "description": "bench create",
                "category_id": user.category,
            }
            return json.dumps(expense | ({"tags": tags} if tags else {}))

        return (
            [[Call("/api/v1/expenses", ours(u, True), "POST", body(u)) for u in users]],
            [[Call("/expenses", bare(u, True), "POST", body(u)) for u in users]],
        )

    def get(query: dict[BenchUser, str] | str) -> tuple[list[list[Call]], list[list[Call]]]:
        def of(user: BenchUser) -> str:
            return query if isinstance(query, str) else query[user]

        return (
            [[Call("/api/v1/expenses" + of(u), ours(u)) for u in users]],
            [[Call("/expenses" + of(u), bare(u)) for u in users]],
        )

    change = json.dumps({"amount": "23.45", "description": "changed"})
    half = len(users[0].deleted) // 2

    def deletions(prefix: str, headers, ids: slice) -> list[list[Call]]:
        calls = [
            Call(f"{prefix}/{expense}", headers(user), "DELETE")
            for user in users
            for expense in user.deleted[ids]
        ]
        return [calls[process::PROCESSES] for process in range(PROCESSES)]

    fast = {"target_p99_ms": 25, "target_ratio": 0.6}
    return [
        Line("create", *create([]), expected=201, **fast),
        Line("create, Idempotency-Key", *create([]), 201, "Idempotency-Key", **fast),
        Line("create, 2 tags", *create(["tag 1", "weekly"]), expected=201, **fast),
        Line("first page (50)", *get(""), **fast),
        Line("page past 10,000 rows", *get({u: f"?cursor={u.deep_cursor}" for u in users})),
        Line(
            "category + date range",
            *get({u: f"?category_id={u.category}&from=2025-01-01&to=2025-06-30" for u in users}),
        ),
        Line("text search q=shop 7", *get("?q=shop%207")),
        Line("text search, a word in no row q=zebra", *get("?q=zebra")),
        Line(
            "PATCH amount + description",
            [
                [
                    Call(f"/api/v1/expenses/{e}", ours(u, True), "PATCH", change)
                    for u in users
                    for e in u.patched
                ]
            ],
            [
                [
                    Call(f"/expenses/{e}", bare(u, True), "PATCH", change)
                    for u in users
                    for e in u.patched
                ]
            ],
        ),
        Line(
            "DELETE",
            deletions("/api/v1/expenses", ours, slice(None, half)),
            deletions("/expenses", bare, slice(half, None)),
            expected=204,
        ),
    ]


def measure(
    servers: list[tuple[str, Process]],
    calls: list[list[Call]],
    line: Line,
    seconds: int,
    *,
    database_url: str,
    side: str | None = None,
) -> dict[str, float]:
    """wrk's figures, and the CPU milliseconds per request of the serving processes and of
    PostgreSQL; with ``side`` (its name in the file), profiled under BENCH_PROFILE."""
    urls = [url for url, _ in servers]
    scripts = [
        lua_script(process_calls, expected=line.expected, unique_header=line.unique_header)
        for process_calls in (calls if len(calls) == len(urls) else calls * len(urls))
    ]
    cpu_of = {"app": [p.popen.pid for _, p in servers], "database": postgres_pids(database_url)}
    pid = servers[0][1].popen.pid
    with profiled({side: pid}, line.name, seconds=seconds) if side else nullcontext():
        return run_wrk(
            urls, "/", script=scripts, seconds=seconds, connections=CONNECTIONS, cpu_of=cpu_of
        )


def pgbench_lines(pgbench: str, url: str, users: list[BenchUser]) -> list[tuple[str, dict]]:
    """The create and first-page statements straight to PostgreSQL, a user per client."""
    user = "('{" + ",".join(u.id for u in users) + "}'::uuid[])[:client_id % 16 + 1]"
    category = "('{" + ",".join(u.category for u in users) + "}'::uuid[])[:client_id % 16 + 1]"
    create = pgbench_sql(
        service.CREATE_STATEMENTS[False, None],
        [
            user,
            "gen_random_uuid()",
            "1234",
            "'EUR'",
            "2",
            "'2025-06-15'::date",
            "'pgbench create'",
            "NULL",
            "NULL",
            category,
            *("NULL", "NULL", "NULL"),  # no charged amount
        ],
    )
    sql, _ = service.page_statement(
        user_id=uuid.UUID(int=0), filters=shared.ExpenseFilter(), after=None, limit=50
    )
    first_page = pgbench_sql(sql, [user, "51"])
    options = {"clients": CONNECTIONS}
    return [
        ("create (pgbench)", run_pgbench(pgbench, url, create, DURATION_SECONDS, **options)),
        (
            "first page (pgbench)",
            run_pgbench(pgbench, url, first_page, DURATION_SECONDS, **options),
        ),
    ]


def main() -> int:
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2
    with ExitStack() as stack:
        url = migrated_database(stack, prefix="bench-expenses-")
        env = bench_env(
            url,
            EXPENSETRACKER_LOGIN_MAX_FAILURES_PER_ADDRESS="1000",
            # Long enough for the whole run.
            EXPENSETRACKER_ACCESS_TOKEN_TTL_SECONDS="3600",
            # Two connections per process, four in all for the database's two cores.
            EXPENSETRACKER_DB_POOL_SIZE="2",
            EXPENSETRACKER_DB_MAX_OVERFLOW="0",
        )
        auth_url = serve(stack, "auth", env)[0]
        registered = [
            asyncio.run(register(auth_url, f"bench{n}@bench.example")) for n in range(BENCH_USERS)
        ]
        log(f"loading {EXPENSES:,} expenses over {USERS:,} users")
        started = time.perf_counter()
        users = asyncio.run(load_data(url, registered))
        log(f"loaded in {time.perf_counter() - started:.0f} s")
        api_env = {**env, **IMPORT_SETTINGS, "EXPENSETRACKER_AUTH_URL": auth_url}
        ours = [serve(stack, "expenses", api_env) for _ in range(PROCESSES)]
        bare = [start_bare_app(stack, url) for _ in range(PROCESSES)]

        results = []
        for line in lines(users):
            log(f"measuring: {line.name}")
            sides = {"ours": (ours, line.ours), "bare": (bare, line.bare)}
            if line.expected != 204:  # deletions cannot be sent twice
                for servers, calls in sides.values():  # warm-up: pools, JWKS, statements
                    measure(servers, calls, line, 3, database_url=url)
            mine, theirs = (
                measure(servers, calls, line, DURATION_SECONDS, database_url=url, side=side)
                for side, (servers, calls) in sides.items()
            )
            results.append((line, mine, theirs))
        log("measuring: pgbench")
        raw = pgbench_lines(str(pg_bin("pgbench")), url, users)
        imports = measure_imports(
            stack=stack,
            database_url=url,
            api_url=ours[0][0],
            env=api_env,
            token=users[0].token,
            user_id=users[0].id,
        )

        print(
            f"\n{EXPENSES:,} expenses over {USERS:,} users, {CONNECTIONS} connections over "
            f"{PROCESSES} processes, {DURATION_SECONDS} s per line, {os.cpu_count()} cores. "
            "CPU: milliseconds per request in the serving processes / in PostgreSQL.\n"
        )
        print(table(results, raw))
        print("\n| import | seconds | peak RSS MiB | rows/s | floor s | x floor | target |")
        print("|---|---|---|---|---|---|---|")
        for name, result in imports:
            limit = IMPORT_TARGET_SECONDS["API" if name.endswith("API") else "command line"]
            met = "met" if result["seconds"] <= limit else "MISSED"
            print(
                f"| {name} | {result['seconds']:.1f} | {result['peak_rss_mb']:.0f} | "
                f"{result['rows_per_s']:,.0f} | {result['floor_seconds']:.1f} | "
                f"{result['x_floor']:.2f} | <= {limit} s: {met} |"
            )
    return 0


def table(
    results: list[tuple[Line, dict[str, float], dict[str, float]]],
    raw: list[tuple[str, dict[str, float]]],
) -> str:
    header = "| what | req/s | p50 ms | p99 ms | errors | CPU | bare req/s | bare p99 | bare CPU |"
    rows = [header + " ratio | target |", "|---" * 11 + "|"]

    def cpu(result: dict[str, float]) -> str:
        return f"{result['cpu:app']:.2f} / {result['cpu:database']:.2f}"

    for line, mine, bare in results:
        ratio = mine["rps"] / bare["rps"]
        met = mine["p99"] <= line.target_p99_ms and not mine["errors"]
        if line.target_ratio is not None:
            met = met and ratio >= line.target_ratio
        rows.append(
            f"| {line.name} | {mine['rps']:.0f} | {mine['p50']:.1f} | {mine['p99']:.1f} | "
            f"{mine['errors']:.0f} | {cpu(mine)} | {bare['rps']:.0f} | {bare['p99']:.1f} | "
            f"{cpu(bare)} | {ratio:.2f} | {'met' if met else 'MISSED'} |"
        )
    for name, result in raw:
        rows.append(
            f"| {name} | {result['rps']:.0f} | {result['p50']:.1f} | {result['p99']:.1f} | "
            f"{result['errors']:.0f} | | | | | | |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
