"""Benchmark of the web app's two busiest pages against the JSON API calls behind them.

    .venv/bin/python bench/web.py        (or: make bench-web)

The deployment's shape on one machine: two `serve --target auth,expenses,reports` processes (the
API) and two `serve --target web` processes, each web process calling one API process over
HTTP, as web pods call the API Services in Kubernetes. A user holds 10,000 expenses over the
last twelve months, 12 categories and 5 budgets. At 16 concurrent connections (wrk, 127.0.0.1
only, bounded in time), in the same run:

- the dashboard, and the four API calls it makes, sent in turn straight to the API;
- the first page of expenses, and its three API calls.

"API sets/s" is the API's requests per second divided by the number of calls a page makes:
how many pages' worth of API answers the API gives when nobody renders them. Targets
(issue 12): p99 <= 50 ms per page, and page throughput >= 50% of the API sets/s. Below the
table, the least mean latency those sets allow a page at 16 connections (Little's law): a
page needs all of their work and its own rendering on the same cores.

The two are measured one after the other, so load from elsewhere on the machine that changes
between them moves their ratio. The last column gives the same ratio by CPU time, which such
load hardly moves: the CPU time (every process: web, API, and this run's database server,
not the servers of other runs on the machine) of a set of API calls sent directly, over that of
a page. Both processes are CPU-bound, so throughput goes as its inverse.
Options (environment): BENCH_SECONDS, the seconds per line (15); BENCH_PAGES=expenses or
=dashboard, that page's line only; BENCH_PROFILE=<folder>, py-spy (in .venv) records one web
and one API process during each line, as collapsed stacks (py-spy's
"raw" format, one stack and its samples a line) in that folder.
Needs wrk (Debian package `wrk`). Uses the embedded PostgreSQL in a temporary folder, or the
server in EXPENSETRACKER_BENCH_DATABASE_URL.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import uuid
from contextlib import ExitStack
from datetime import date
from pathlib import Path

import asyncpg
import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.setup import bench_env, log, migrated_database, serve, settle  # noqa: E402
from bench.wrk import lua_requests, postgres_pids, profiled, run_wrk  # noqa: E402

# The dates the pages ask for, computed as the pages do.
from expensetracker.web.service import (  # noqa: E402
    LATEST_EXPENSES,
    PAGE_SIZE,
    TREND_MONTHS,
    months_back,
)

EXPENSES = 10_000
CATEGORIES = 12
BUDGETS = 5
DURATION_SECONDS = int(os.environ.get("BENCH_SECONDS", "15"))
CONNECTIONS = 16
EMAIL = "web@bench.example"
PASSWORD = "benchmark passphrase 2026"
SESSION_KEY = "benchmark-session-key-of-some-forty-characters"
PAGE_TARGET_P99_MS = 50
RATIO_TARGET = 0.5
# BENCH_PAGES's values: the line each names.
PAGES = {"dashboard": "dashboard", "expenses": "first expenses page"}


async def load_data(url: str, user: uuid.UUID, today: date) -> None:
    """10,000 expenses over the last twelve months (90% EUR, 10% USD), categories, budgets."""
    start = months_back(today, TREND_MONTHS)
    days = (today - start).days + 1
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("INSERT INTO expenses.owners (user_id) VALUES ($1)", user)
        categories = [uuid.uuid4() for _ in range(CATEGORIES)]
        await connection.executemany(
            "INSERT INTO expenses.categories (user_id, id, name) VALUES ($1, $2, $3)",
            [(user, category, f"Category {i}") for i, category in enumerate(categories)],
        )
        await connection.execute(
            """
            INSERT INTO expenses.expenses (user_id, id, amount_minor, currency,
                currency_exponent, occurred_on, description, merchant, category_id)
            SELECT $1, gen_random_uuid(), 100 + (n * 7919) % 20000,
                   CASE WHEN n % 10 = 0 THEN 'USD' ELSE 'EUR' END, 2,
                   $3::date + ((n * 31) % $4::int), 'expense ' || n, 'shop ' || n % 50,
                   ($2::uuid[])[1 + n % array_length($2::uuid[], 1)]
            FROM generate_series(0, $5::int - 1) AS n
            """,
            user,
            categories,
            start,
            days,
            EXPENSES,
        )
        await connection.executemany(
            "INSERT INTO reports.budgets (user_id, id, name, category_id, currency, amount_minor, "
            "rollover, thresholds, starts_on) VALUES ($1, $2, $3, $4, 'EUR', $5, $6, '{80,100}', "
            "$7)",
            [
                (user, uuid.uuid4(), f"Budget {i}", categories[i], 50_000, i % 2 == 0, start)
                for i in range(BUDGETS)
            ],
        )
        await settle(connection)
    finally:
        await connection.close()


async def sign_in(web_url: str) -> str:
    """The Cookie header of a signed-in browser."""
    async with httpx.AsyncClient(base_url=web_url, timeout=30) as client:
        page = await client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        response = await client.post(
            "/login",
            data={"csrf_token": token, "email": EMAIL, "password": PASSWORD, "next": "/"},
        )
        assert response.status_code == 303, response.text
        return "; ".join(f"{name}={value}" for name, value in client.cookies.items())


async def api_calls(api_url: str, today: date) -> tuple[str, list[str], list[str]]:
    """A token, and the API paths the dashboard and the first expenses page ask for (what
    web/service.py sends, with this month's dates)."""
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:
        tokens = (
            await client.post("/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})
        ).json()
    dashboard = [
        "/api/v1/auth/session",
        f"/api/v1/reports/overview?month={today.strftime('%Y-%m')}&months={TREND_MONTHS}",
        f"/api/v1/expenses?limit={LATEST_EXPENSES}",
        "/api/v1/categories?limit=500",
    ]
    expenses_page = [
        "/api/v1/auth/session",
        f"/api/v1/expenses?limit={PAGE_SIZE}",
        "/api/v1/categories?limit=500",
    ]
    return tokens["access_token"], dashboard, expenses_page


def measured(groups: dict[str, list[int]], urls: list[str], script: str) -> dict[str, float]:
    return run_wrk(
        urls,
        "/",
        script=script,
        seconds=DURATION_SECONDS,
        connections=CONNECTIONS,
        cpu_of=groups,
    )


GROUPS = ("web", "api", "database")


def cpu(result: dict[str, float]) -> str:
    return " / ".join(f"{result[f'cpu:{name}']:.2f}" for name in GROUPS)


def cpu_total(result: dict[str, float]) -> float:
    return sum(result[f"cpu:{name}"] for name in GROUPS)


def main() -> int:
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2
    today = date.today()
    with ExitStack() as stack:
        url = migrated_database(stack, prefix="bench-web-")
        base_env = bench_env(
            url,
            EXPENSETRACKER_WEB_SESSION_KEY=SESSION_KEY,
            # One token for the whole run: wrk cannot take a renewed cookie.
            EXPENSETRACKER_ACCESS_TOKEN_TTL_SECONDS="3600",
            EXPENSETRACKER_DB_POOL_SIZE="2",
            EXPENSETRACKER_DB_MAX_OVERFLOW="0",
        )

        pids: dict[str, list[int]] = {"web": [], "api": []}

        def start(target: str, **env: str) -> str:
            base, process = serve(stack, target, {**base_env, **env})
            pids["web" if target == "web" else "api"].append(process.popen.pid)
            return base

        apis = [start("auth,expenses,reports") for _ in range(2)]
        webs = [
            start(
                "web",
                EXPENSETRACKER_AUTH_URL=api,
                EXPENSETRACKER_EXPENSES_URL=api,
                EXPENSETRACKER_REPORTS_URL=api,
            )
            for api in apis
        ]
        with httpx.Client(base_url=apis[0]) as client:
            client.post(
                "/api/v1/auth/register",
                json={"email": EMAIL, "password": PASSWORD, "display_name": "Bench"},
            )
        token, dashboard_calls, expenses_calls = asyncio.run(api_calls(apis[0], today))
        user = httpx.get(
            apis[0] + "/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}
        ).json()["id"]
        log(f"loading {EXPENSES:,} expenses")
        asyncio.run(load_data(url, uuid.UUID(user), today))
        cookie = asyncio.run(sign_in(webs[0]))

        api_headers = {"Authorization": f"Bearer {token}"}
        scenarios = [
            ("dashboard", ["/"], dashboard_calls),
            ("first expenses page", ["/expenses"], expenses_calls),
        ]
        only = os.environ.get("BENCH_PAGES")
        if only:
            scenarios = [s for s in scenarios if s[0] == PAGES[only]]
        rows = []
        for name, pages, calls in scenarios:
            page_script = lua_requests(pages, {"Cookie": cookie, "Accept-Encoding": "gzip"})
            api_script = lua_requests(calls, api_headers)
            for base in webs:
                check = httpx.get(base + pages[0], headers={"Cookie": cookie})
                assert check.status_code == 200 and "<h1>" in check.text, check.status_code
            for base in apis:
                for call in calls:
                    answer = httpx.get(base + call, headers=api_headers)
                    assert answer.status_code == 200, (call, answer.text)
            wrk = {"connections": CONNECTIONS}
            run_wrk(webs, "/", script=page_script, seconds=3, **wrk)  # warm-up
            run_wrk(apis, "/", script=api_script, seconds=3, **wrk)
            log(f"measuring: {name}")
            groups = {**pids, "database": postgres_pids(url)}
            first = {group: pids[group][0] for group in ("web", "api")}
            with profiled(first, name, seconds=DURATION_SECONDS):
                page = measured(groups, webs, page_script)
            with profiled(first, f"{name} API calls", seconds=DURATION_SECONDS):
                api = measured(groups, apis, api_script)
            rows.append((name, page, api, len(calls)))
            for base in webs:
                after = httpx.get(base + pages[0], headers={"Cookie": cookie})
                if after.status_code != 200:
                    log(f"after {name}: {base} answered {after.status_code}")
        if os.environ.get("BENCH_DETAIL"):
            # Each API call alone: which of them the pages wait for most.
            for call in dict.fromkeys(dashboard_calls + expenses_calls):
                alone = run_wrk(
                    apis,
                    "/",
                    script=lua_requests([call], api_headers),
                    seconds=5,
                    connections=CONNECTIONS,
                )
                print(f"  {call[:70]:<70} {alone['rps']:>6.0f} req/s  p99 {alone['p99']:.1f} ms")

        print(
            f"\nA user with {EXPENSES:,} expenses, {CONNECTIONS} connections, "
            f"{DURATION_SECONDS} s per line, {os.cpu_count()} cores; two API and two web "
            "processes\n"
        )
        print(
            "| what | req/s | p50 ms | p99 ms | errors | API sets/s | page / API sets | target "
            "| CPU ms per request: web / API / database | page / API sets by CPU |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, page, api, count in rows:
            sets = api["rps"] / count
            ratio = page["rps"] / sets
            cpu_ratio = cpu_total(api) * count / cpu_total(page)
            met = page["p99"] <= PAGE_TARGET_P99_MS and ratio >= RATIO_TARGET and not page["errors"]
            print(
                f"| page: {name} | {page['rps']:.0f} | {page['p50']:.2f} | {page['p99']:.2f} | "
                f"{page['errors']:.0f} | | {ratio:.2f} | {'met' if met else 'MISSED'} | "
                f"{cpu(page)} | {cpu_ratio:.2f} |"
            )
            print(
                f"| API: its {count} calls, in turn | {api['rps']:.0f} | {api['p50']:.2f} | "
                f"{api['p99']:.2f} | {api['errors']:.0f} | {sets:.0f} | | | {cpu(api)} | |"
            )
        print()
        for name, _, api, count in rows:
            sets = api["rps"] / count
            # A page cannot be served more often than the API answers its calls (they share the
            # cores); by Little's law, CONNECTIONS at that rate wait this long on average.
            bound_ms = CONNECTIONS * 1000 / sets
            print(
                f"The {name}'s calls alone, nothing rendered: {sets:.0f} sets a "
                f"second, so {CONNECTIONS} connections wait at least {bound_ms:.0f} ms on average "
                f"for a page (the p99 target: {PAGE_TARGET_P99_MS} ms)."
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
