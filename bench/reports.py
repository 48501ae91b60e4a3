"""Benchmark of the reports service on 1,000,000 expenses (100 users x 10,000).

    .venv/bin/python bench/reports.py        (or: make bench)

Measures, at 16 concurrent clients spread over two `serve --target reports` processes (wrk,
on 127.0.0.1 only, bounded in time):

- the year summary by category of a user holding 10,000 expenses (in 3 currencies);
- the same summary converted to the user's home currency (``in=home``), with a rate per weekday
  for the two other currencies and some amounts charged in the home currency, its whole months
  from the converted monthly totals the reports service keeps (made before measuring, as its
  job keeps them); and, for comparison, a range whose first and last months are read expense
  by expense;
- the monthly budget status of a user with 20 budgets (some with rollover chains);

and, in the same run, the raw database baseline: the same queries sent straight to PostgreSQL
by pgbench at the same concurrency, plus the naive summary over every expense row that the
monthly totals replace. Targets (issue 5): >= 1,000 requests/s and p99 <= 30 ms each; for the
converted summary (issue 15): >= 50% of the unconverted summary's requests/s, p99 <= 30 ms.
The API lines also give the CPU milliseconds a request cost in the reports processes and in
the benchmark's PostgreSQL server (not in other servers on the machine), and the two summaries'
ratio by that CPU time, which load from elsewhere on the machine hardly moves (both sides are
CPU-bound, so throughput goes as its inverse).
Options (environment): BENCH_SECONDS, the seconds per line (15); BENCH_PROFILE=<folder>, py-spy
records the first reports process during each API line (bench/wrk.py: profiled).
Needs wrk (Debian package `wrk`). Uses the embedded PostgreSQL in a temporary folder, or the
server in EXPENSETRACKER_BENCH_DATABASE_URL.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
import uuid
from contextlib import ExitStack
from datetime import date
from pathlib import Path

import asyncpg
import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.pgbench import pgbench_sql, run_pgbench  # noqa: E402
from bench.setup import bench_env, log, migrated_database, register, serve, settle  # noqa: E402
from bench.wrk import postgres_pids, profiled, run_wrk  # noqa: E402
from expensetracker.platform.config import Settings  # noqa: E402
from expensetracker.platform.embedded import pg_bin  # noqa: E402
from expensetracker.reports import budgets as reports_budgets  # noqa: E402
from expensetracker.reports import conversion, summaries  # noqa: E402

USERS = 100
PER_USER = 10_000
CATEGORIES_PER_USER = 12
DURATION_SECONDS = int(os.environ.get("BENCH_SECONDS", "15"))
CONNECTIONS = 16
YEAR = 2025
MONTH = "2025-06"

CONVERTED = "the same in the home currency (in=home, 3 currencies)"
# Its first and last months are not whole: read expense by expense (no target of its own).
PARTIAL = "in=home, Jan 16 to Dec 15 (2 months row by row)"
NAIVE_SUMMARY_SQL = (
    "SELECT category_id::text, currency, sum(amount_minor), count(*) FROM expenses.spending_v1 "
    f"WHERE user_id = :user::uuid AND occurred_on BETWEEN '{YEAR}-01-01' AND '{YEAR}-12-31' "
    "GROUP BY 1, 2"
)


def summary_sql() -> str:
    sql, args = summaries._summary_query(
        group_by="category", from_=date(YEAR, 1, 1), to=date(YEAR, 12, 31)
    )
    return pgbench_sql(sql, [":user::uuid"] + [f"'{value}'::date" for value in args])


def converted_sql() -> str:
    """The statement behind the converted summary by category (the default rate age), its whole
    months fresh: the short one, that reads the kept totals, and the home currency and the
    category names with them."""
    rollup_key, raw_key = summaries._GROUP_KEYS["category"]
    sql, args = conversion.converted_query(
        target="",
        keys=(raw_key,),
        rollup_keys=(rollup_key,),
        from_=date(YEAR, 1, 1),
        to=date(YEAR, 12, 31),
        max_age=Settings.model_fields["rates_max_age_days"].default,
        rolled_up=True,
        at_home=True,
        category_names=True,
    )
    first, last, max_age, first_month, last_month = args
    return pgbench_sql(
        sql,
        [
            ":user::uuid",
            f"'{first}'::date",
            f"'{last}'::date",
            f"{max_age}::int",
            f"'{first_month}'::date",
            f"'{last_month}'::date",
        ],
    )


def budget_sql() -> str:
    """The two statements of a budget status without new alerts (the steady state)."""
    month = f"'{MONTH}-01'::date"
    budgets = pgbench_sql(reports_budgets._BUDGETS_IN_MONTH, [":user::uuid", month])
    spent = pgbench_sql(
        reports_budgets._SPENT_PER_MONTH,
        [":user::uuid", f"'{YEAR}-01-01'::date", month, "'{EUR,USD}'::text[]"],
    )
    return budgets + "\n" + spent


async def load_data(url: str, users: list[uuid.UUID]) -> float:
    """1,000,000 expenses: every user gets 10,000 in the year, over 12 categories, 80% EUR, 10%
    USD (half of them charged in EUR), 10% GBP; ECB-like rates for every weekday of the year;
    the summary user's home currency is EUR."""
    started = time.perf_counter()
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(
            "INSERT INTO expenses.owners (user_id) SELECT unnest($1::uuid[])", users
        )
        categories = [uuid.uuid4() for _ in range(USERS * CATEGORIES_PER_USER)]
        await connection.execute(
            "INSERT INTO expenses.categories (user_id, id, name) "
            "SELECT ($1::uuid[])[1 + (i - 1) / $3::int], ($2::uuid[])[i], 'Category ' || i "
            "FROM generate_series(1, array_length($2::uuid[], 1)) AS i",
            users,
            categories,
            CATEGORIES_PER_USER,
        )
        await connection.execute(
            """
            INSERT INTO expenses.expenses (user_id, id, amount_minor, currency,
                currency_exponent, occurred_on, description, merchant, category_id)
            SELECT ($1::uuid[])[(1 + n % $3::int)::int], gen_random_uuid(),
                   100 + (n * 7919) % 20000,
                   CASE (n / $3::int) % 10 WHEN 0 THEN 'USD' WHEN 1 THEN 'GBP' ELSE 'EUR' END, 2,
                   make_date($5::int, 1, 1) + ((n * 31) % 365)::int, 'expense ' || n,
                   'shop ' || n % 50,
                   ($2::uuid[])[(1 + (n % $3::int) * $4::int + (n / $3::int) % $4::int)::int]
            FROM generate_series(0::bigint, ($3::int * $6::int - 1)::bigint) AS n
            """,
            users,
            categories,
            USERS,
            CATEGORIES_PER_USER,
            YEAR,
            PER_USER,
        )
        await connection.execute(
            "UPDATE expenses.expenses SET charged_minor = amount_minor * 9 / 10, "
            "charged_currency = 'EUR', charged_exponent = 2 "
            "WHERE currency = 'USD' AND amount_minor % 200 = 0"
        )
        await connection.execute(
            "INSERT INTO expenses.rates (day, base, quote, rate, source) "
            "SELECT day, 'EUR', quote, rate + (extract(doy FROM day)::int % 7) / 1000.0, 'ecb' "
            "FROM generate_series(make_date($1::int, 1, 1), make_date($1::int, 12, 31), "
            "'1 day') AS day, (VALUES ('USD', 1.0832), ('GBP', 0.8451)) AS r(quote, rate) "
            "WHERE extract(isodow FROM day) < 6",
            YEAR,
        )
        await connection.execute(
            "UPDATE expenses.owners SET home_currency = 'EUR' WHERE user_id = $1", users[0]
        )
        # The budget user: 20 budgets, 12 per category in EUR (half with rollover since
        # January), 6 per category in USD, 2 overall.
        budget_user = users[1]
        user_categories = categories[CATEGORIES_PER_USER : 2 * CATEGORIES_PER_USER]
        rows = [
            (budget_user, uuid.uuid4(), f"EUR {i}", user_categories[i], "EUR", 150_000, i % 2 == 0)
            for i in range(12)
        ]
        rows += [
            (budget_user, uuid.uuid4(), f"USD {i}", user_categories[i], "USD", 20_000, False)
            for i in range(6)
        ]
        rows += [
            (budget_user, uuid.uuid4(), f"All {c}", None, c, 1_000_000, True)
            for c in ("EUR", "USD")
        ]
        await connection.executemany(
            "INSERT INTO reports.budgets (user_id, id, name, category_id, currency, amount_minor, "
            "rollover, thresholds, starts_on) VALUES ($1, $2, $3, $4, $5, $6, $7, '{80,100}', "
            f"'{YEAR}-01-01')",
            rows,
        )
        # The steady state, as the reports service's job and autovacuum keep it: the converted
        # monthly totals made.
        await conversion.refresh_all(
            connection, max_age=Settings.model_fields["rates_max_age_days"].default
        )
        await settle(connection)
        count = await connection.fetchval("SELECT count(*) FROM expenses.expenses")
        assert count == USERS * PER_USER, count
    finally:
        await connection.close()
    return time.perf_counter() - started


def cpu_per_request(result: dict[str, float]) -> float:
    """Milliseconds of CPU a request cost in the reports processes and PostgreSQL together."""
    return result["cpu:reports"] + result["cpu:database"]


def bearer(token: str) -> str:
    return f'wrk.headers["Authorization"] = "Bearer {token}"\n'


def explain(url: str, script: str, user: str) -> str:
    """The plans of a pgbench script's statements, run with the user's id."""

    async def run() -> str:
        connection = await asyncpg.connect(url)
        plans = []
        try:
            for sql in script.replace(":user", f"'{user}'").splitlines():
                rows = await connection.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql.rstrip(";"))
                plans.append(sql + "\n" + "\n".join(row[0] for row in rows))
        finally:
            await connection.close()
        return "\n\n".join(plans)

    return asyncio.run(run())


def main() -> int:
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2
    with ExitStack() as stack:
        url = migrated_database(stack, prefix="bench-")
        pgbench = str(pg_bin("pgbench"))
        base_env = bench_env(
            url,
            EXPENSETRACKER_LOGIN_MAX_FAILURES_PER_ADDRESS="1000",
            # Two connections per process, four in all for the database's two cores (PostgreSQL
            # peaks at about twice as many active connections as cores): more only made
            # backends and services preempt each other, and the p99 with them.
            EXPENSETRACKER_DB_POOL_SIZE="2",
            EXPENSETRACKER_DB_MAX_OVERFLOW="0",
        )

        reports_pids: list[int] = []

        def start(target: str, **env: str) -> str:
            base, process = serve(stack, target, {**base_env, **env})
            if target == "reports":
                reports_pids.append(process.popen.pid)
            return base

        auth_url = start("auth")
        summary_user, summary_token = asyncio.run(register(auth_url, "summary@bench.example"))
        budget_user, budget_token = asyncio.run(register(auth_url, "budgets@bench.example"))
        users = [uuid.UUID(summary_user), uuid.UUID(budget_user)]
        users += [uuid.uuid4() for _ in range(USERS - 2)]
        log("loading 1,000,000 expenses")
        load_seconds = asyncio.run(load_data(url, users))
        log(f"loaded in {load_seconds:.0f} s")
        reports = [start("reports", EXPENSETRACKER_AUTH_URL=auth_url) for _ in range(2)]

        summary_path = (
            f"/api/v1/reports/summary?from={YEAR}-01-01&to={YEAR}-12-31&group_by=category"
        )
        scenarios = [
            (
                "year summary by category (10,000 expenses)",
                summary_path,
                summary_token,
                summary_user,
                summary_sql(),
            ),
            (
                CONVERTED,
                summary_path + "&in=home",
                summary_token,
                summary_user,
                converted_sql(),
            ),
            (
                PARTIAL,
                f"/api/v1/reports/summary?from={YEAR}-01-16&to={YEAR}-12-15&group_by=category"
                "&in=home",
                summary_token,
                summary_user,
                None,
            ),
            (
                "budget status, 20 budgets",
                f"/api/v1/reports/budgets?month={MONTH}",
                budget_token,
                budget_user,
                budget_sql(),
            ),
        ]
        rows = []
        for name, path, token, user, sql in scenarios:
            response = httpx.get(reports[0] + path, headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200, response.text
            wrk = {"script": bearer(token), "connections": CONNECTIONS}
            run_wrk(reports, path, seconds=3, **wrk)  # warm-up: pools, JWKS, caches
            log(f"measuring: {name}")
            cpu_of = {"reports": reports_pids, "database": postgres_pids(url)}
            with profiled({"reports": reports_pids[0]}, name, seconds=DURATION_SECONDS):
                api = run_wrk(reports, path, seconds=DURATION_SECONDS, cpu_of=cpu_of, **wrk)
            rows.append((f"API: {name}", api))
            if sql is not None:
                raw = run_pgbench(
                    pgbench, url, sql, DURATION_SECONDS, clients=CONNECTIONS, user=user
                )
                rows.append(("  raw SQL behind it (pgbench)", raw))
        naive = run_pgbench(
            pgbench,
            url,
            NAIVE_SUMMARY_SQL,
            DURATION_SECONDS,
            clients=CONNECTIONS,
            user=summary_user,
        )
        rows.append(("  raw SQL without monthly totals (pgbench)", naive))

        print(
            f"\n{USERS * PER_USER:,} expenses, {CONNECTIONS} concurrent clients, "
            f"{DURATION_SECONDS} s per line, {os.cpu_count()} cores\n"
        )
        header = ("what", "req/s", "p50 ms", "p99 ms", "errors", "CPU ms: reports / db")
        print("| {:<50} | {:>8} | {:>7} | {:>7} | {:>6} | {:>20} | target |".format(*header))
        print(f"|{'-' * 52}|{'-' * 10}|{'-' * 9}|{'-' * 9}|{'-' * 8}|{'-' * 22}|--------|")
        unconverted = rows[0][1]["rps"]
        for label, result in rows:
            target = ""
            if label.startswith("API") and label != f"API: {PARTIAL}":
                floor = unconverted / 2 if label == f"API: {CONVERTED}" else 1000
                met = result["rps"] >= floor and result["p99"] <= 30 and not result["errors"]
                target = "met" if met else "MISSED"
            cpu = (
                f"{result['cpu:reports']:.2f} / {result['cpu:database']:.2f}"
                if "cpu:reports" in result
                else ""
            )
            print(
                f"| {label:<50} | {result['rps']:>8.0f} | {result['p50']:>7.2f} | "
                f"{result['p99']:>7.2f} | {result['errors']:>6.0f} | {cpu:>20} | {target:<6} |"
            )
        converted = next(result for label, result in rows if label == f"API: {CONVERTED}")
        print(
            f"\nconverted / unconverted summary: {converted['rps'] / unconverted:.0%} of the "
            f"req/s, {cpu_per_request(rows[0][1]) / cpu_per_request(converted):.0%} by CPU "
            "time (the ratio that load from elsewhere on the machine hardly moves)"
        )
        if os.environ.get("BENCH_EXPLAIN"):
            for _, _, _, user, sql in scenarios:
                if sql is None:
                    continue
                print("\n" + explain(url, sql, user))
            print("\n" + explain(url, NAIVE_SUMMARY_SQL, summary_user))
    return 0


if __name__ == "__main__":
    sys.exit(main())
