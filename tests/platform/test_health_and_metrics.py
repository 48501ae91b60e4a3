"""/livez, /readyz and /metrics."""

from __future__ import annotations

import asyncio
import importlib
import uuid

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from structlog.testing import capture_logs

from expensetracker.platform.background import periodically
from expensetracker.platform.config import Settings
from expensetracker.platform.db import async_url
from expensetracker.platform.migrations import head_revision
from expensetracker.platform.state import app_state
from expensetracker.targets import SERVICES
from tests.helpers.apps import AppFactory, app_of, running
from tests.helpers.users import signed_up

pytestmark = pytest.mark.database


def samples(exposition: str) -> dict[tuple[str, frozenset], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


async def test_livez_needs_nothing(client: httpx.AsyncClient) -> None:
    response = await client.get("/livez")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_checks_database_and_every_schema(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {
        "database": "ok",
        "migrations:auth": "ok",
        "migrations:expenses": "ok",
        "migrations:reports": "ok",
        "signing_key": "ok",
    }


async def test_readyz_is_503_until_migrations_reach_head(
    serve_app: AppFactory, database_url: str
) -> None:
    engine = create_async_engine(async_url(database_url))
    async with engine.begin() as connection:
        await connection.execute(text("UPDATE reports.alembic_version SET version_num = 'old'"))
    await engine.dispose()
    async with serve_app() as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["migrations:reports"] == f"at old, expected {head_revision(SERVICES['reports'])}"
    assert checks["migrations:auth"] == "ok"


async def test_readyz_only_checks_the_services_it_runs(serve_app: AppFactory) -> None:
    async with serve_app([SERVICES["expenses"]]) as client:
        response = await client.get("/readyz")
    assert response.json()["checks"] == {"database": "ok", "migrations:expenses": "ok"}


async def test_readyz_is_503_when_the_database_is_unreachable(serve_app: AppFactory) -> None:
    unreachable = "postgresql://nobody@127.0.0.1:9/none"  # the discard port: nothing listens
    async with serve_app(database_url=unreachable) as client:
        ready = await client.get("/readyz")
        alive = await client.get("/livez")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"].startswith("unreachable")
    assert alive.status_code == 200  # liveness must not restart a pod for a database outage


async def test_readyz_turns_false_when_shutdown_begins(client: httpx.AsyncClient) -> None:
    # httpx types the transport as a BaseTransport; an in-process client's is an ASGITransport.
    app = app_of(client)
    assert (await client.get("/readyz")).status_code == 200
    app_state(app).readiness.shutting_down = True
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["shutdown"] == "in progress"


async def test_metrics_use_route_templates_and_status_classes(client: httpx.AsyncClient) -> None:
    for suffix in ("a1", "b2", "c3"):
        await client.get(f"/api/v1/unknown/{suffix}")
    await client.get("/livez")
    exposition = (await client.get("/metrics")).text
    values = samples(exposition)
    unmatched = frozenset(
        {
            "service": "platform",
            "method": "GET",
            "route": "unmatched",
            "status_class": "4xx",
        }.items()
    )
    livez = frozenset(
        {"service": "platform", "method": "GET", "route": "/livez", "status_class": "2xx"}.items()
    )
    assert values[("http_requests_total", unmatched)] >= 3
    assert values[("http_requests_total", livez)] >= 1
    # Raw paths never become label values (unbounded cardinality).
    assert "/api/v1/unknown/a1" not in exposition
    assert any(name == "http_request_duration_seconds_bucket" for name, _ in values)


async def test_route_labels_stay_bounded_whatever_the_raw_paths(
    client: httpx.AsyncClient,
) -> None:
    account = await signed_up(client)

    async def distinct_paths() -> None:
        for _ in range(5):
            await client.get(f"/api/v1/expenses/{uuid.uuid4()}", headers=account.headers)
            await client.get(f"/{uuid.uuid4().hex}/{uuid.uuid4().hex}")

    async def http_label_sets() -> set[tuple[str, frozenset]]:
        exposition = (await client.get("/metrics")).text
        return {key for key in samples(exposition) if key[0].startswith("http_request")}

    await http_label_sets()  # the scrape counts itself from the next one on
    await distinct_paths()
    before = await http_label_sets()
    await distinct_paths()
    assert await http_label_sets() == before
    expense = {"service": "expenses", "method": "GET", "route": "/api/v1/expenses/{expense_id}"}
    unmatched = {"service": "platform", "method": "GET", "route": "unmatched"}
    for labels in (expense, unmatched):
        key = ("http_requests_total", frozenset({**labels, "status_class": "4xx"}.items()))
        assert key in before


async def test_metrics_attribute_requests_to_the_owning_service(client: httpx.AsyncClient) -> None:
    await client.get("/api/v1/budgets/x")
    await client.get("/api/v1/auth/whatever")
    values = samples((await client.get("/metrics")).text)
    services = {
        dict(labels)["service"]
        for (name, labels), _ in values.items()
        if name == "http_requests_total"
    }
    assert {"reports", "auth", "platform"} <= services


async def test_metrics_show_pool_and_build_info(client: httpx.AsyncClient) -> None:
    await client.get("/readyz")  # opens a pooled connection
    values = samples((await client.get("/metrics")).text)
    pool = "auth+expenses+reports"
    assert values[("expensetracker_db_pool_size", frozenset({"pool": pool}.items()))] == 10
    idle = (
        "expensetracker_db_pool_connections",
        frozenset({"pool": pool, "state": "idle"}.items()),
    )
    assert values[idle] >= 1
    assert any(name == "expensetracker_build_info" for name, _ in values)
    assert any(name == "http_requests_in_flight" for name, _ in values)


async def test_a_failing_background_job_is_counted_until_it_succeeds() -> None:
    service, job = f"test-{uuid.uuid4().hex[:8]}", "poll"
    labels = {"service": service, "background_job": job}
    seen_in_a_row: list[float | None] = []
    outcomes = [OSError("database down"), OSError("still down"), OSError("down"), None]
    done = asyncio.Event()

    async def run() -> None:
        seen_in_a_row.append(
            REGISTRY.get_sample_value("expensetracker_background_job_failures_in_a_row", labels)
        )
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        done.set()

    with capture_logs() as logs:
        async with periodically(job, run, service=service, interval=0.01):
            await asyncio.wait_for(done.wait(), timeout=10)

    assert seen_in_a_row == [0, 1, 2, 3]
    runs = "expensetracker_background_job_runs_total"
    assert REGISTRY.get_sample_value(runs, {**labels, "outcome": "failed"}) == 3
    assert REGISTRY.get_sample_value(runs, {**labels, "outcome": "succeeded"}) == 1
    assert REGISTRY.get_sample_value("expensetracker_background_job_failures_in_a_row", labels) == 0
    failed = [line for line in logs if line["event"] == "background_job_failed"]
    assert [(line["service"], line["job"], line["failures_in_a_row"]) for line in failed] == [
        (service, job, 1),
        (service, job, 2),
        (service, job, 3),
    ]
    # The traceback once, when the failures begin.
    assert [line["exc_info"] is not None for line in failed] == [True, False, False]


@pytest.mark.parametrize("name", sorted(SERVICES))
async def test_each_service_is_an_asgi_app_of_its_own(name: str, database_url: str) -> None:
    module = importlib.import_module(f"expensetracker.{name}.app")
    settings = Settings(database_url=database_url, rate_limit="off", auth_url="http://127.0.0.1:9")
    app = module.create_app(settings)
    async with running(app) as client:
        response = await client.get("/readyz")
        openapi = (await client.get("/openapi.json")).json()
    checks = response.json()["checks"]
    assert checks.pop(f"migrations:{name}") == "ok"
    assert checks.pop("database") == "ok"
    assert checks == ({"signing_key": "ok"} if name == "auth" else {})
    assert openapi["info"]["title"] == f"ExpenseTracker ({name})"


async def test_the_web_app_is_an_asgi_app_of_its_own_without_a_database() -> None:
    from expensetracker.web.app import create_app as create_web_app

    settings = Settings(rate_limit="off", auth_url="http://127.0.0.1:9")
    app = create_web_app(settings)
    async with running(app) as client:
        ready = await client.get("/readyz")
        login = await client.get("/login")
        metrics = (await client.get("/metrics")).text
    assert ready.status_code == 200 and ready.json()["checks"] == {}
    assert login.status_code == 200 and "<h1>Sign in</h1>" in login.text
    assert 'http_requests_total{method="GET",route="/login",service="web",status_class="2xx"}' in (
        metrics
    )
