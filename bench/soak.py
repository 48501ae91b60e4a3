"""A bounded soak: a mixed workload at a fixed rate for a set time against one process serving
auth, expenses and reports.

    make soak                                  (10 minutes at 50 requests/s)
    SOAK_SECONDS=120 SOAK_RATE=100 make soak   (settable)

Every second SOAK_RATE requests start (open loop: a slow answer does not slow the schedule),
spread over SOAK_USERS accounts: creates with an Idempotency-Key, lists, reads, updates, the
categories, the summary and the budget status. Each minute it prints the requests sent, p50
and p99 latency, errors (anything but 2xx, or no answer) and the server's RSS; at the end the
RSS at the start and the end, to catch leaks. A benchmark, not a test: nothing is asserted.

Uses the embedded PostgreSQL in a temporary folder, or the server in
EXPENSETRACKER_BENCH_DATABASE_URL. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import sys
import time
import uuid
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.setup import bench_env, migrated_database, serve  # noqa: E402
from expensetracker.targets import SERVICES  # noqa: E402

SECONDS = int(os.environ.get("SOAK_SECONDS", "600"))
RATE = int(os.environ.get("SOAK_RATE", "50"))
USERS = int(os.environ.get("SOAK_USERS", "10"))
MAX_IN_FLIGHT = 500  # beyond this the server is not keeping up: counted as errors
PASSWORD = "soak test passphrase 2026"
SEED = 20261201

# (weight, kind): what a request does.
MIX = [
    (25, "create"),
    (25, "list"),
    (10, "get"),
    (10, "update"),
    (10, "categories"),
    (10, "summary"),
    (10, "budgets"),
]


@dataclass
class User:
    headers: dict[str, str]
    expenses: list[str] = field(default_factory=list)


@dataclass
class Minute:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    rss: int = 0


async def sign_up(client: httpx.AsyncClient, n: int) -> User:
    email = f"soak-{n}-{uuid.uuid4().hex[:8]}@example.org"
    await client.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
    login = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    login.raise_for_status()
    user = User({"Authorization": f"Bearer {login.json()['access_token']}"})
    await client.post(
        "/api/v1/budgets",
        json={"name": "everything", "amount": "2000", "currency": "EUR"},
        headers=user.headers,
    )
    return user


def expense_body(rng: random.Random) -> dict:
    day = date.today() - timedelta(days=rng.randrange(300))
    return {
        "amount": f"{rng.randrange(1, 20000) / 100:.2f}",
        "currency": "EUR",
        "occurred_on": day.isoformat(),
        "description": rng.choice(["groceries", "train", "coffee", "rent", "cinema", "books"]),
        "tags": rng.sample(["home", "work", "fun", "family"], k=rng.randrange(3)),
    }


async def one_request(
    client: httpx.AsyncClient, user: User, kind: str, rng: random.Random
) -> httpx.Response:
    today = date.today()
    if kind == "create" or (kind in ("get", "update") and not user.expenses):
        headers = {**user.headers, "Idempotency-Key": uuid.uuid4().hex}
        response = await client.post("/api/v1/expenses", json=expense_body(rng), headers=headers)
        if response.status_code == 201:
            user.expenses.append(response.json()["id"])
            del user.expenses[:-200]  # a bounded working set
        return response
    if kind == "list":
        return await client.get("/api/v1/expenses", params={"limit": 50}, headers=user.headers)
    if kind == "get":
        path = f"/api/v1/expenses/{rng.choice(user.expenses)}"
        return await client.get(path, headers=user.headers)
    if kind == "update":
        path = f"/api/v1/expenses/{rng.choice(user.expenses)}"
        body = {"notes": f"note {rng.randrange(1000)}"}
        return await client.patch(path, json=body, headers=user.headers)
    if kind == "categories":
        return await client.get("/api/v1/categories", headers=user.headers)
    if kind == "summary":
        params = {"from": (today - timedelta(days=365)).isoformat(), "to": today.isoformat()}
        return await client.get("/api/v1/reports/summary", params=params, headers=user.headers)
    return await client.get("/api/v1/reports/budgets", headers=user.headers)


async def soak(base_url: str, server: psutil.Process) -> None:
    rng = random.Random(SEED)
    kinds = [kind for weight, kind in MIX for _ in range(weight)]
    limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:
        users = [await sign_up(client, n) for n in range(USERS)]
        rss_start = server.memory_info().rss
        minutes: dict[int, Minute] = defaultdict(Minute)
        by_kind: dict[str, list[float]] = defaultdict(list)
        in_flight: set[asyncio.Task] = set()
        started = time.monotonic()

        async def timed(minute: int, user: User, kind: str) -> None:
            began = time.monotonic()
            try:
                response = await one_request(client, user, kind, rng)
                ok = response.is_success
            except httpx.HTTPError:
                ok = False
            minutes[minute].latencies.append(time.monotonic() - began)
            minutes[minute].errors += not ok
            by_kind[kind].append(time.monotonic() - began)

        print(
            f"soak: {SECONDS} s at {RATE} requests/s, {USERS} users, "
            f"mix {', '.join(f'{w}% {k}' for w, k in MIX)}"
        )
        print("minute  requests   p50 ms   p99 ms  errors  RSS MiB")
        sent = 0
        last_reported = 0
        while (elapsed := time.monotonic() - started) < SECONDS:
            due = int(elapsed * RATE)
            minute = int(elapsed // 60)
            for _ in range(due - sent):
                if len(in_flight) >= MAX_IN_FLIGHT:
                    minutes[minute].errors += 1
                    continue
                task = asyncio.create_task(timed(minute, rng.choice(users), rng.choice(kinds)))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            sent = due
            if minute > last_reported:
                report(last_reported, minutes[last_reported], server)
                last_reported = minute
            await asyncio.sleep(0.005)
        await asyncio.gather(*in_flight)
        report(last_reported, minutes[last_reported], server)
        rss_end = server.memory_info().rss
        total = [latency for m in minutes.values() for latency in m.latencies]
        errors = sum(m.errors for m in minutes.values())
        print(
            f"total: {len(total)} requests, p50 {percentile(total, 50):.1f} ms, "
            f"p99 {percentile(total, 99):.1f} ms, {errors} errors; server RSS "
            f"{rss_start / 2**20:.0f} MiB at the start, {rss_end / 2**20:.0f} MiB at the end"
        )
        for kind, latencies in sorted(by_kind.items()):
            print(
                f"  {kind:<10} {len(latencies):>7} requests, p50 {percentile(latencies, 50):.1f} "
                f"ms, p99 {percentile(latencies, 99):.1f} ms"
            )


def percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return (values[0] * 1000) if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


def report(minute: int, data: Minute, server: psutil.Process) -> None:
    data.rss = server.memory_info().rss
    print(
        f"{minute + 1:>6}  {len(data.latencies):>8}  {percentile(data.latencies, 50):>7.1f}  "
        f"{percentile(data.latencies, 99):>7.1f}  {data.errors:>6}  {data.rss / 2**20:>7.0f}",
        flush=True,
    )


def main() -> None:
    with ExitStack() as stack:
        url = migrated_database(stack, prefix="et-soak-")
        env = bench_env(
            url,
        )
        base_url, process = serve(stack, ",".join(SERVICES), env)  # the three API services
        asyncio.run(soak(base_url, psutil.Process(process.popen.pid)))


if __name__ == "__main__":
    main()
