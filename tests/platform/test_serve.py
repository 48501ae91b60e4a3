"""`expensetracker serve` and the server's graceful shutdown, as real processes over real HTTP."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import struct
import sys
import time

import httpx
import pytest

from tests.helpers.database import connected
from tests.helpers.polling import eventually
from tests.helpers.processes import REPO, clean_env, cli, free_port, spawn

pytestmark = pytest.mark.database

# The probe service behind the real server: `python tests/helpers/probe.py PORT`.
PROBE = str(REPO / "tests" / "helpers" / "probe.py")


async def test_serve_runs_one_service_alone(database_url: str) -> None:
    env = clean_env(EXPENSETRACKER_DATABASE_URL=database_url)
    with spawn(cli("serve", "--target", "auth", "--port", str(free_port())), env) as process:
        url = process.wait_ready()
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            ready = await client.get("/readyz")
            not_served = await client.get("/api/v1/budgets")
            openapi = await client.get("/openapi.json")
            metrics = await client.get("/metrics")
        process.signal(signal.SIGTERM)
        assert process.wait() == 0, process.output
    assert ready.status_code == 200
    assert ready.json()["checks"] == {
        "database": "ok",
        "migrations:auth": "ok",
        "signing_key": "ok",
    }
    assert not_served.status_code == 404
    assert openapi.json()["info"]["title"] == "ExpenseTracker (auth)"
    assert "http_requests_total" in metrics.text
    assert "ExpenseTracker (auth) is ready" in process.output


def test_serve_refuses_to_start_without_a_database() -> None:
    with spawn(cli("serve", "--target", "reports"), clean_env()) as process:
        assert process.wait() == 2
    assert "EXPENSETRACKER_DATABASE_URL is not set" in process.output


def test_serve_refuses_placeholder_secrets_in_production_without_echoing_them() -> None:
    secret_url = "postgresql://expenses:changeme@db.internal/expensetracker"
    env = clean_env(
        EXPENSETRACKER_ENV="production",
        EXPENSETRACKER_DATABASE_URL=secret_url,
        EXPENSETRACKER_KEY_ENCRYPTION_KEY="placeholder-placeholder-placeholder",
    )
    with spawn(cli("serve"), env) as process:
        assert process.wait() == 2
    assert "placeholder password" in process.output
    assert "KEY_ENCRYPTION_KEY" in process.output
    assert "changeme" not in process.output
    assert "placeholder-placeholder" not in process.output


async def pool_connections(database_url: str, application_name: str) -> int:
    async with connected(database_url) as connection:
        return await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", application_name
        )


async def slow_queries(database_url: str, application_name: str) -> int:
    """The probe's /slow requests running their query at the database now."""
    async with connected(database_url) as connection:
        return await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
            "AND state = 'active' AND query LIKE '%pg_sleep%'",
            application_name,
        )


async def test_sigterm_drains_then_finishes_in_flight_requests(database_url: str) -> None:
    env = clean_env(
        EXPENSETRACKER_DATABASE_URL=database_url,
        EXPENSETRACKER_SHUTDOWN_DRAIN_SECONDS="2",
        EXPENSETRACKER_RATE_LIMIT="off",
        EXPENSETRACKER_AUTH_URL="http://127.0.0.1:9",
    )
    port = free_port()
    with spawn([sys.executable, PROBE, str(port)], env) as process:
        url = process.wait_ready()
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            assert (await client.get("/readyz")).status_code == 200
            assert await pool_connections(database_url, "expensetracker-probe") >= 1
            in_flight = asyncio.create_task(client.get("/api/v1/probe/slow", params={"seconds": 4}))

            async def sleeping_in_the_database() -> bool:
                return await slow_queries(database_url, "expensetracker-probe") == 1

            await eventually(
                "the slow request at the database", sleeping_in_the_database, within=10
            )
            signalled = time.monotonic()
            process.signal(signal.SIGTERM)

            async def not_ready() -> httpx.Response | None:
                response = await client.get("/readyz")
                return response if response.status_code == 503 else None

            # Draining: not ready any more, but still serving (the load balancer catches up).
            draining_ready = await eventually("/readyz answering 503", not_ready, within=2)
            draining_live = await client.get("/livez")
            finished = await in_flight
        exit_code = await asyncio.to_thread(process.wait, 30)
        stopped_after = time.monotonic() - signalled

    assert draining_ready.status_code == 503
    assert draining_ready.json()["checks"]["shutdown"] == "in progress"
    assert draining_live.status_code == 200
    assert finished.status_code == 200 and finished.json() == {"slept": 4}
    assert exit_code == 0, process.output
    assert stopped_after < 15
    assert await pool_connections(database_url, "expensetracker-probe") == 0


async def test_request_log_lines_are_json_with_request_ids_and_no_secrets(
    database_url: str,
) -> None:
    env = clean_env(
        EXPENSETRACKER_DATABASE_URL=database_url,
        EXPENSETRACKER_RATE_LIMIT="off",
        EXPENSETRACKER_AUTH_URL="http://127.0.0.1:9",
    )
    port = free_port()
    with spawn([sys.executable, PROBE, str(port)], env) as process:
        url = process.wait_ready()
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            await client.post(
                "/api/v1/probe/echo",
                json={"amount": "1.00", "password": "hunter2-very-secret"},
                headers={"x-request-id": "req-abc-1", "authorization": "Bearer tok-xyz-secret"},
            )
            await client.get("/api/v1/probe/boom", headers={"x-request-id": "req-boom-2"})
        process.signal(signal.SIGTERM)
        assert process.wait() == 0

    records = [json.loads(line) for line in process.lines if line.startswith("{")]
    by_request = {r.get("request_id"): r for r in records if r.get("event") == "request"}
    echo = by_request["req-abc-1"]
    assert {"timestamp", "level", "service", "request_id", "route", "status", "duration_ms"} <= set(
        echo
    )
    assert echo["route"] == "/api/v1/probe/echo"
    assert echo["status"] == 422
    assert echo["service"] == "probe"
    crash = [r for r in records if r.get("event") == "unhandled_exception"]
    assert crash and crash[0]["request_id"] == "req-boom-2"
    assert "RuntimeError" in crash[0]["exception"]
    assert by_request["req-boom-2"]["status"] == 500
    assert "hunter2" not in process.output
    assert "tok-xyz-secret" not in process.output


async def served_statuses(database_url: str, **settings: str) -> list[int]:
    """Statuses of 5 requests from 127.0.0.1, each claiming another client address, under a
    rate limit of 3 per minute per client address."""
    env = clean_env(
        EXPENSETRACKER_DATABASE_URL=database_url, EXPENSETRACKER_RATE_LIMIT="3/minute", **settings
    )
    with spawn(cli("serve", "--target", "auth", "--port", str(free_port())), env) as process:
        url = process.wait_ready()
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            statuses = [
                (
                    await client.get(
                        "/api/v1/auth/.well-known/jwks.json",
                        headers={"X-Forwarded-For": f"198.51.100.{n}"},
                    )
                ).status_code
                for n in range(5)
            ]
        process.stop()
    return statuses


async def test_forwarded_for_from_an_untrusted_peer_changes_nothing(database_url: str) -> None:
    # By default no proxy is trusted: the header cannot pick the rate limit's address.
    assert await served_statuses(database_url) == [200, 200, 200, 429, 429]
    # A configured proxy (here the test client's own address) is believed.
    trusted = await served_statuses(database_url, EXPENSETRACKER_FORWARDED_ALLOW_IPS="127.0.0.1/32")
    assert trusted == [200] * 5


def data_segments_received(connection: socket.socket) -> int:
    """The kernel's count of segments with data that arrived on this TCP connection
    (``tcpi_data_segs_in`` of Linux's ``struct tcp_info``)."""
    info = connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 160)
    return int(struct.unpack_from("I", info, 152)[0])


def test_each_response_leaves_in_one_segment(database_url: str) -> None:
    """The real server sends a response's head and body in one write: one TCP segment each for
    small responses, where uvicorn alone sends two."""
    env = clean_env(EXPENSETRACKER_DATABASE_URL=database_url, EXPENSETRACKER_RATE_LIMIT="off")
    with spawn(cli("serve", "--target", "auth", "--port", str(free_port())), env) as process:
        url = httpx.URL(process.wait_ready())
        with socket.create_connection((url.host, url.port), timeout=10) as connection:
            before = data_segments_received(connection)
            for _ in range(20):
                connection.sendall(b"GET /livez HTTP/1.1\r\nHost: test\r\n\r\n")
                response = b""
                while not (b"\r\n\r\n" in response and response.endswith(b"}")):
                    chunk = connection.recv(65536)
                    assert chunk, response  # the server closed the connection
                    response += chunk
                assert response.startswith(b"HTTP/1.1 200 ")
            segments = data_segments_received(connection) - before
            # A response that closes the connection is sent whole before the close.
            connection.sendall(b"GET /livez HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            last = b""
            while chunk := connection.recv(65536):
                last += chunk
        process.signal(signal.SIGTERM)
        assert process.wait() == 0, process.output
    assert segments == 20
    head, body = last.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 ") and b"connection: close" in head.lower()
    assert json.loads(body)["status"] == "ok"
