"""The HTTP platform every service stands on: problem+json errors, security headers, CORS,
body size limits, request ids and the rate limit."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import inspect
from collections.abc import Callable, Iterator

import httpx
import jsonschema
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts
from redis.asyncio import Redis
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from expensetracker.platform.config import MIB
from expensetracker.platform.ratelimit import RateLimit
from expensetracker.targets import COMPONENTS
from expensetracker.web import views
from tests.helpers.apps import AppFactory, app_of
from tests.helpers.environment import REDIS_URL
from tests.helpers.probe import probe_service
from tests.helpers.users import signed_up

pytestmark = pytest.mark.database

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert {"type", "title", "status", "detail"} <= body.keys()
    return body


async def test_unknown_path_is_a_404_problem(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/api/v1/nothing-here"), 404)
    assert body["title"] == "Not Found"


async def test_wrong_method_is_a_405_problem(client: httpx.AsyncClient) -> None:
    response = await client.delete("/livez")
    assert_problem(response, 405)
    assert response.headers["allow"] == "GET"


async def test_a_405_allows_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    """Starlette's 405 named only the methods of the first route with the path: `Allow: POST`
    for /api/v1/expenses, `Allow: GET` for an expense that PATCH and DELETE change too. RFC 9110
    asks for every method the target takes."""
    an_id = "0b6d3f5e-1c2a-4e8b-9f00-3a7c2d1e4b5f"
    for method, path, allowed in [
        ("DELETE", "/api/v1/expenses", "GET, POST"),
        ("PUT", f"/api/v1/expenses/{an_id}", "DELETE, GET, PATCH"),
        ("PATCH", f"/api/v1/budgets/{an_id}", "DELETE, GET, PUT"),
        ("POST", "/api/v1/tags", "GET"),
    ]:
        response = await client.request(method, path)
        assert_problem(response, 405)
        assert response.headers["allow"] == allowed, (method, path)


async def test_validation_errors_list_every_offending_field(serve_app: AppFactory) -> None:
    async with serve_app([probe_service()]) as client:
        response = await client.post(
            "/api/v1/probe/echo",
            json={"amount": "12.345", "note": "x" * 21, "is_admin": True},
        )
    body = assert_problem(response, 422)
    fields = {error["field"]: error["type"] for error in body["errors"]}
    assert fields == {
        "body.amount": "string_pattern_mismatch",
        "body.note": "string_too_long",
        "body.is_admin": "extra_forbidden",
    }
    # Submitted values are never echoed back (they could be secrets).
    assert "12.345" not in response.text


async def test_malformed_json_is_a_422_problem(serve_app: AppFactory) -> None:
    async with serve_app([probe_service()]) as client:
        response = await client.post(
            "/api/v1/probe/echo",
            content=b'{"amount": ',
            headers={"content-type": "application/json"},
        )
    assert_problem(response, 422)


async def test_valid_request_passes(serve_app: AppFactory) -> None:
    async with serve_app([probe_service()]) as client:
        response = await client.post("/api/v1/probe/echo", json={"amount": "12.34"})
    assert response.status_code == 200
    assert response.json() == {"amount": "12.34", "note": None}


async def test_unexpected_error_is_a_500_problem_without_internals(serve_app: AppFactory) -> None:
    async with serve_app([probe_service()]) as client:
        response = await client.get("/api/v1/probe/boom")
    assert_problem(response, 500)
    assert "internal detail" not in response.text
    assert "Traceback" not in response.text


async def test_unexpected_error_of_a_service_with_pages_is_its_error_page(
    serve_app: AppFactory,
) -> None:
    """A service that renders its errors as pages (the web app) shows a person its page, with
    the request id, for a crash too; never the internals."""
    with_pages = dataclasses.replace(probe_service(), error_page=views.error_page)
    async with serve_app([with_pages]) as client:
        response = await client.get("/api/v1/probe/boom")
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["x-request-id"] in response.text
    assert "internal detail" not in response.text
    assert "Traceback" not in response.text


async def test_declared_oversized_body_is_refused_before_reading(serve_app: AppFactory) -> None:
    async with serve_app([probe_service()], max_body_bytes=4096) as client:
        response = await client.post("/api/v1/probe/upload", content=b"x" * 4097)
        accepted = await client.post("/api/v1/probe/upload", content=b"x" * 4096)
    body = assert_problem(response, 413)
    assert body["detail"] == "The request body is over 4 KiB."  # exact, in the unit people read
    assert accepted.json() == {"bytes": 4096}


async def test_streamed_oversized_body_is_refused(serve_app: AppFactory) -> None:
    async def chunks():  # no Content-Length: the limit is enforced while receiving
        for _ in range(10):
            yield b"y" * 1000

    async with serve_app([probe_service()], max_body_bytes=4096) as client:
        response = await client.post("/api/v1/probe/upload", content=chunks())
    assert_problem(response, 413)


async def test_invalid_content_length_is_a_400_problem(serve_app: AppFactory) -> None:
    async with serve_app([probe_service()]) as client:
        response = await client.post(
            "/api/v1/probe/upload", content=b"abc", headers={"content-length": "three"}
        )
    assert_problem(response, 400)


async def test_a_body_with_a_content_coding_is_a_415_problem(serve_app: AppFactory) -> None:
    """A gzipped body went to the parsers as it was: a JSON body's bytes were a 422 "JSON decode
    error", as if the client had sent bad JSON."""
    async with serve_app([probe_service()]) as client:
        gzipped = await client.post(
            "/api/v1/probe/upload",
            content=gzip.compress(b"x" * 100),
            headers={"content-encoding": "gzip"},
        )
        identity = await client.post(
            "/api/v1/probe/upload", content=b"x" * 100, headers={"content-encoding": "Identity"}
        )
    body = assert_problem(gzipped, 415)
    assert "Content-Encoding" in body["detail"]
    assert gzipped.headers["accept-encoding"] == "identity"
    assert identity.json() == {"bytes": 100}


async def test_a_gzipped_expense_is_refused_and_nothing_is_created(
    client: httpx.AsyncClient,
) -> None:
    account = await signed_up(client)
    body = b'{"amount": "1.00", "currency": "EUR", "occurred_on": "2026-01-01", "description": "x"}'
    headers = {**account.headers, "content-type": "application/json", "content-encoding": "gzip"}
    refused = await client.post("/api/v1/expenses", content=gzip.compress(body), headers=headers)
    assert_problem(refused, 415)
    listed = await client.get("/api/v1/expenses", headers=account.headers)
    assert listed.json()["items"] == []


async def test_import_path_has_the_larger_limit(client: httpx.AsyncClient) -> None:
    two_mib = b"z" * (2 * MIB)
    assert_problem(await client.post("/api/v1/expenses", content=two_mib), 413)
    # Not refused for size (the import route itself arrives with the expenses service).
    assert (await client.post("/api/v1/expenses/import", content=two_mib)).status_code != 413
    assert_problem(await client.post("/api/v1/expenses/import", content=b"z" * (11 * MIB)), 413)


async def test_security_headers_on_every_response(client: httpx.AsyncClient) -> None:
    for response in (await client.get("/livez"), await client.get("/nope")):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "strict-transport-security" not in response.headers  # plain HTTP


async def test_hsts_only_over_tls(serve_app: AppFactory) -> None:
    async with serve_app(base_url="https://api.example.org") as client:
        response = await client.get("/livez")
    assert response.headers["strict-transport-security"].startswith("max-age=")


async def test_cors_allows_configured_origins_only(serve_app: AppFactory) -> None:
    allowed, other = "https://app.example.org", "https://evil.example.net"
    async with serve_app(cors_origins=[allowed]) as client:
        preflight = await client.options(
            "/api/v1/auth/me",
            headers={"origin": allowed, "access-control-request-method": "GET"},
        )
        foreign = await client.get("/livez", headers={"origin": other})
        own = await client.get("/livez", headers={"origin": allowed})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == allowed
    assert "access-control-allow-origin" not in foreign.headers
    assert own.headers["access-control-allow-origin"] == allowed
    assert "access-control-allow-credentials" not in own.headers


async def test_request_id_is_kept_when_safe_and_replaced_otherwise(
    client: httpx.AsyncClient,
) -> None:
    kept = await client.get("/livez", headers={"x-request-id": "abc-123"})
    replaced = await client.get("/livez", headers={"x-request-id": "bad id\r\nX-Evil: 1"})
    fresh = await client.get("/livez")
    assert kept.headers["x-request-id"] == "abc-123"
    assert replaced.headers["x-request-id"] != "bad id"
    assert len(fresh.headers["x-request-id"]) == 32


async def test_openapi_is_published_and_docs_only_in_development(serve_app: AppFactory) -> None:
    async with serve_app(env="development") as dev:
        assert (await dev.get("/docs")).status_code == 200
        assert (await dev.get("/openapi.json")).status_code == 200
    async with serve_app(docs_enabled=False) as prod_like:
        assert_problem(await prod_like.get("/docs"), 404)
        assert (await prod_like.get("/openapi.json")).json()["openapi"].startswith("3.")


async def test_every_operation_says_what_it_does(serve_app: AppFactory) -> None:
    # The docstring of a route is its description in the API reference third parties read.
    async with serve_app(services=list(COMPONENTS.values())) as client:
        document = (await client.get("/openapi.json")).json()
    operations = {
        f"{method.upper()} {path}": operation.get("description", "")
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }
    assert {"POST /api/v1/auth/login", "PATCH /api/v1/expenses/{expense_id}"} <= operations.keys()
    assert [name for name, description in operations.items() if not description.strip()] == []


async def test_every_error_is_documented_as_a_problem(serve_app: AppFactory) -> None:
    # Clients generated from the document must expect problem+json, not FastAPI's default 422.
    async with serve_app(services=list(COMPONENTS.values()), rate_limit="100/minute") as client:
        document = (await client.get("/openapi.json")).json()
        invalid = await client.post("/api/v1/auth/login", json={"email": 1})
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    problem = {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    errors: dict[str, set[int]] = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            documented = {int(status): answer for status, answer in operation["responses"].items()}
            failures = {status for status in documented if status >= 400}
            errors[f"{method.upper()} {path}"] = failures
            for status in failures:
                assert documented[status]["content"] == problem, (method, path, status)
    # Each kind of route's shared errors, and those a route declares (404, 409).
    assert errors["GET /api/v1/auth/.well-known/jwks.json"] == {429}
    assert errors["GET /api/v1/budgets/{budget_id}"] == {401, 404, 422, 429}
    assert errors["POST /api/v1/expenses"] == {400, 401, 409, 413, 422, 429}
    assert errors["POST /api/v1/auth/login"] == {400, 401, 413, 422, 429}
    # A real answer conforms to the published schema, field errors and all.
    body = assert_problem(invalid, 422)
    jsonschema.validate(body, {**schemas["Problem"], "components": document["components"]})
    assert {error["field"] for error in body["errors"]} == {"body.email", "body.password"}


async def test_rate_limit_answers_429_with_retry_after(serve_app: AppFactory) -> None:
    async with serve_app(rate_limit="3/minute") as client:
        statuses = [(await client.get("/api/v1/anything")).status_code for _ in range(3)]
        refused = await client.get("/api/v1/anything")
        # Probes and scrapes are never limited, or Kubernetes would restart a busy pod.
        probes = [(await client.get("/livez")).status_code for _ in range(5)]
    assert statuses == [404, 404, 404]
    body = assert_problem(refused, 429)
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert "3 per 1 minute" in body["detail"]
    assert probes == [200] * 5


async def test_rate_limit_is_per_client_address(serve_app: AppFactory) -> None:
    async with serve_app(rate_limit="2/minute") as client:
        # httpx types the transport as a BaseTransport; an in-process client's is an ASGITransport.
        app = app_of(client)
        for _ in range(2):
            await client.get("/nope")
        first_client_refused = await client.get("/nope")
        transport = httpx.ASGITransport(app=app, client=("198.51.100.9", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as other:
            other_client = await other.get("/nope")
    assert first_client_refused.status_code == 429
    assert other_client.status_code == 404


async def test_rate_limit_off_disables_it(serve_app: AppFactory) -> None:
    async with serve_app(rate_limit="off") as client:
        statuses = {(await client.get("/nope")).status_code for _ in range(150)}
    assert statuses == {404}


@pytest.mark.redis
async def test_rate_limit_in_redis_is_shared_by_replicas(serve_app: AppFactory) -> None:
    # Two app instances (two replicas) on one Redis: together they get the budget once.
    settings = {"rate_limit": "4/minute", "redis_url": REDIS_URL, "client_address": "198.51.100.1"}
    # The test's own Redis database: no window left from an earlier run.
    await Redis.from_url(REDIS_URL).flushdb()
    async with serve_app(**settings) as first, serve_app(**settings) as second:
        statuses = await asyncio.gather(
            *[(first if i % 2 else second).get("/nope") for i in range(6)]
        )
    codes = sorted(response.status_code for response in statuses)
    assert codes == [404, 404, 404, 404, 429, 429]


@pytest.mark.redis
async def test_rate_limit_counts_exactly_when_redis_has_lost_its_scripts() -> None:
    # Replicas just started, against a Redis that has lost its scripts (as on a restart): their
    # first hits open connections and load the scripts concurrently. limits' default client,
    # coredis, refused some of those hits although it had counted them (about 1 burst in 20).
    async def found_nothing(scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse("nothing here", status_code=404)(scope, receive, send)

    redis = Redis.from_url(REDIS_URL)
    await redis.flushdb()
    bursts = []
    for burst in range(100):
        await redis.script_flush()
        replicas = [RateLimit(found_nothing, rate="4/minute", redis_url=REDIS_URL) for _ in "ab"]
        transports = [
            httpx.ASGITransport(app=replica, client=(f"198.51.100.{burst + 2}", 1234))
            for replica in replicas
        ]
        clients = [httpx.AsyncClient(transport=t, base_url="http://testserver") for t in transports]
        statuses = await asyncio.gather(*[clients[i % 2].get("/nope") for i in range(6)])
        bursts.append(sorted(response.status_code for response in statuses))
        for client in clients:
            await client.aclose()
    await redis.aclose()
    assert bursts == [[404, 404, 404, 404, 429, 429]] * 100


def _calls(dependant: Dependant) -> Iterator[Callable[..., object]]:
    if dependant.call is not None:
        yield dependant.call
    for sub in dependant.dependencies:
        yield from _calls(sub)


def _runs_on_the_event_loop(call: Callable[..., object]) -> bool:
    method = getattr(call, "__call__", None)  # noqa: B004 (a dependency may be an instance)
    return any(
        inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f) for f in (call, method)
    )


async def test_no_route_runs_code_in_the_thread_pool(serve_app: AppFactory) -> None:
    # FastAPI runs a plain `def` endpoint or dependency in a worker thread: a hand-off per
    # request that cost the list routes about a tenth of their throughput on two cores.
    async with serve_app(services=list(COMPONENTS.values())) as client:
        app = app_of(client)
    routes = [r for r in iter_route_contexts(app.routes) if hasattr(r, "dependant")]
    in_threads = {
        f"{route.path}: {call.__qualname__}"  # type: ignore[attr-defined]
        for route in routes
        for call in _calls(route.dependant)
        if not _runs_on_the_event_loop(call)
    }
    assert {"/api/v1/expenses", "/api/v1/budgets", "/expenses"} <= {r.path for r in routes}
    assert not in_threads
