"""Faults lose nothing (issue 13): the serving process killed with SIGKILL in the middle of a
stream of idempotent creates, and PostgreSQL stopped and started again under load. Real
processes over real HTTP on 127.0.0.1, bounded in time and count."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest

from expensetracker.platform.migrations import upgrade
from expensetracker.targets import SERVICES
from tests.helpers.database import connected, with_database
from tests.helpers.environment import EXTERNAL_DATABASE_URL
from tests.helpers.pgcluster import DEBIAN_15, PrivateCluster, embedded_bin_dir
from tests.helpers.processes import Process, clean_env, cli, free_port
from tests.helpers.users import Account, signed_up

pytestmark = pytest.mark.database

WRITES = 240
WORKERS = 4
KILLS_AT = (60, 150)  # acknowledged writes after which the server is killed
RETRY_PAUSE = 0.05


def serve(database_url: str, port: int, **settings: str) -> Process:
    env = clean_env(
        EXPENSETRACKER_DATABASE_URL=database_url,
        EXPENSETRACKER_RATE_LIMIT="off",
        EXPENSETRACKER_LOG_LEVEL="WARNING",
        **settings,
    )
    targets = ",".join(SERVICES)  # the API services, whatever else `all` may serve
    return Process(cli("serve", "--target", targets, "--port", str(port)), env)


def expense(n: int) -> dict:
    return {
        "amount": f"{n % 97 + 1}.25",
        "currency": "EUR",
        "occurred_on": "2026-11-15",
        "description": f"write {n}",
    }


@dataclass
class Writer:
    """Creates expense n with Idempotency-Key n, retrying every failure and every missing
    answer until it is acknowledged (201)."""

    client: httpx.AsyncClient
    account: Account
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    acknowledged: dict[int, str] = field(default_factory=dict)
    outcomes: Counter = field(default_factory=Counter)
    progress: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def write(self, n: int, *, deadline: float) -> None:
        headers = {**self.account.headers, "Idempotency-Key": f"{self.run}-{n}"}
        while time.monotonic() < deadline:
            try:
                response = await self.client.post(
                    "/api/v1/expenses", json=expense(n), headers=headers
                )
            except httpx.TransportError as exc:
                self.outcomes[type(exc).__name__] += 1
                await asyncio.sleep(RETRY_PAUSE)
                continue
            self.outcomes[response.status_code] += 1
            if response.status_code == 201:
                self.outcomes["replayed"] += "Idempotent-Replayed" in response.headers
                self.acknowledged[n] = response.json()["id"]
                async with self.progress:
                    self.progress.notify_all()
                return
            # 409: the first request with this key is still running (or died with the process
            # and its transaction is being rolled back); 503: the database is away.
            assert response.status_code in (409, 503), response.text
            await asyncio.sleep(RETRY_PAUSE)
        raise AssertionError(f"write {n} not acknowledged in time: {self.outcomes}")


async def expenses_of(database_url: str, account: Account, client: httpx.AsyncClient) -> dict:
    user_id = (await client.get("/api/v1/auth/me", headers=account.headers)).json()["id"]
    async with connected(database_url) as connection:
        rows = await connection.fetch(
            "SELECT id, description, amount_minor FROM expenses.expenses WHERE user_id = $1",
            uuid.UUID(user_id),
        )
    return {str(row["id"]): (row["description"], row["amount_minor"]) for row in rows}


async def test_sigkill_during_idempotent_creates_loses_and_doubles_nothing(
    database_url: str,
) -> None:
    port = free_port()
    process = serve(database_url, port)
    kills = 0
    try:
        base_url = process.wait_ready()
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
            account = await signed_up(client)
            writer = Writer(client, account)
            queue: asyncio.Queue[int] = asyncio.Queue()
            for n in range(WRITES):
                queue.put_nowait(n)
            deadline = time.monotonic() + 120

            async def worker() -> None:
                while not queue.empty():
                    await writer.write(queue.get_nowait(), deadline=deadline)

            async def killer() -> None:
                nonlocal process, kills
                for threshold in KILLS_AT:
                    async with writer.progress:
                        await writer.progress.wait_for(
                            lambda n=threshold: len(writer.acknowledged) >= n
                        )
                    process.popen.send_signal(signal.SIGKILL)  # mid-stream: writes in flight
                    await asyncio.to_thread(process.wait, 30)
                    kills += 1
                    process = serve(database_url, port)
                    await asyncio.to_thread(process.wait_ready)

            await asyncio.gather(killer(), *(worker() for _ in range(WORKERS)))
            stored = await expenses_of(database_url, account, client)
    finally:
        process.stop()
    assert kills == len(KILLS_AT)
    assert len(writer.acknowledged) == WRITES
    # Exactly one expense per write, and every acknowledged one is there, as acknowledged.
    assert len(stored) == WRITES, writer.outcomes
    assert set(stored) == set(writer.acknowledged.values())
    for n, expense_id in writer.acknowledged.items():
        assert stored[expense_id] == (f"write {n}", (n % 97 + 1) * 100 + 25)
    # The kills did hit requests in flight: some got no answer and were retried.
    assert sum(writer.outcomes.values()) > WRITES, writer.outcomes
    print(f"\nSIGKILL: {kills} kills, {WRITES} writes checked, outcomes {dict(writer.outcomes)}")


# --- database restart under load -----------------------------------------------------------

POOL_TIMEOUT = 2.0
# A request may take the pool timeout to give up, plus its own work: anything longer is a hang.
HANG = POOL_TIMEOUT + 3.0


@pytest.fixture
async def private_cluster(postgres_admin_url: str) -> AsyncIterator[PrivateCluster]:
    """A PostgreSQL of this test alone, which it may stop: the wheel's (PostgreSQL 18, as
    `expensetracker up` runs it) on the embedded pass; Debian's PostgreSQL 15 on the pass
    against a server (never the shared server on 127.0.0.1:5432 itself)."""
    bin_dir = DEBIAN_15 if EXTERNAL_DATABASE_URL else embedded_bin_dir()
    cluster = PrivateCluster(bin_dir)
    try:
        await asyncio.to_thread(cluster.init)
        await asyncio.to_thread(cluster.start)
        async with connected(cluster.url) as connection:
            await connection.execute("CREATE DATABASE expensetracker")
        url = with_database(cluster.url, "expensetracker")
        for spec in SERVICES.values():
            await asyncio.to_thread(upgrade, spec, url)
        yield cluster
    finally:
        await asyncio.to_thread(cluster.remove)


@dataclass
class Sample:
    phase: str  # when the request was sent: up, down (stopping to ready again) or back
    outcome: int | str  # status, or the transport error
    seconds: float


async def test_database_restart_under_load(private_cluster: PrivateCluster) -> None:
    database_url = with_database(private_cluster.url, "expensetracker")
    process = serve(
        database_url, free_port(), EXPENSETRACKER_DB_POOL_TIMEOUT_SECONDS=str(POOL_TIMEOUT)
    )
    phase = "up"
    samples: list[Sample] = []
    readiness: list[tuple[str, int]] = []
    try:
        base_url = process.wait_ready()
        async with httpx.AsyncClient(base_url=base_url, timeout=HANG) as client:
            account = await signed_up(client)
            acknowledged: dict[int, str] = {}
            next_write = 0
            stop = asyncio.Event()

            async def request(method: str, path: str, **kwargs: object) -> httpx.Response | None:
                sent, started = phase, time.monotonic()
                try:
                    # kwargs are httpx's request options, of several types, passed on as given.
                    response = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
                except httpx.TransportError as exc:
                    samples.append(Sample(sent, type(exc).__name__, time.monotonic() - started))
                    return None
                samples.append(Sample(sent, response.status_code, time.monotonic() - started))
                return response

            async def worker(number: int) -> None:
                nonlocal next_write
                while not stop.is_set():
                    n, next_write = next_write, next_write + 1
                    headers = {**account.headers, "Idempotency-Key": f"restart-{n}"}
                    while True:  # this write until acknowledged, reads in between
                        response = await request(
                            "POST", "/api/v1/expenses", json=expense(n), headers=headers
                        )
                        if response is not None and response.status_code == 201:
                            acknowledged[n] = response.json()["id"]
                            break
                        read = ("/api/v1/expenses", "/api/v1/reports/budgets")[number % 2]
                        await request("GET", read, headers=account.headers)
                        await asyncio.sleep(0.05)

            async def ready_is(status: int, within: float) -> None:
                deadline = time.monotonic() + within
                while time.monotonic() < deadline:
                    answer = (await client.get("/readyz")).status_code
                    readiness.append((phase, answer))
                    if answer == status:
                        return
                    await asyncio.sleep(0.1)
                raise AssertionError(f"/readyz never answered {status}: {readiness[-5:]}")

            workers = [asyncio.create_task(worker(n)) for n in range(WORKERS)]
            await asyncio.sleep(1.5)
            phase = "down"
            await asyncio.to_thread(private_cluster.stop, "fast")
            await ready_is(503, within=10)
            await asyncio.sleep(2.0)  # requests keep coming while it is down
            await asyncio.to_thread(private_cluster.start)
            await ready_is(200, within=30)
            phase = "back"
            await asyncio.sleep(2.0)
            stop.set()
            await asyncio.wait_for(asyncio.gather(*workers), timeout=60)
            stored = await expenses_of(database_url, account, client)
    finally:
        process.stop()
    by_phase = Counter((sample.phase, sample.outcome) for sample in samples)
    assert ("up", 201) in by_phase and ("back", 201) in by_phase, by_phase
    # While it was down: 503 problems, never a 500, never a hang past the pool timeout.
    assert by_phase[("down", 503)] > 0, by_phase
    server_errors = {key: count for key, count in by_phase.items() if key[1] in range(500, 600)}
    assert set(server_errors) <= {("down", 503), ("up", 503)}, by_phase
    assert ("back", 503) not in by_phase, by_phase  # once ready again, no 5xx at all
    assert not [key for key in by_phase if isinstance(key[1], str)], by_phase
    assert max(sample.seconds for sample in samples) < HANG
    # /readyz turned false, then true again.
    assert ("down", 503) in readiness and readiness[-1] == ("down", 200), readiness
    # Every acknowledged write is there, once.
    assert len(stored) == len(acknowledged) > 0
    assert set(stored) == set(acknowledged.values())
    print(
        f"\nrestart ({private_cluster.bin_dir}): {len(samples)} requests, "
        f"{len(acknowledged)} writes checked, {dict(by_phase)}"
    )
