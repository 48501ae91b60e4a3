"""OpenTelemetry tracing: server spans named by route template that continue the caller's
traceparent, SQL statements and the JWKS fetch as their children, trace ids in the log lines,
and OTLP/HTTP export to a real receiver only when OTEL_EXPORTER_OTLP_ENDPOINT is set."""

from __future__ import annotations

import signal
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from expensetracker import __version__
from expensetracker.platform.config import Settings
from expensetracker.platform.tracing import configure_tracing
from expensetracker.targets import SERVICES
from tests.helpers.apps import AppFactory
from tests.helpers.processes import (
    cli,
    free_port,
    request_lines,
    serve_env,
    spawn,
)
from tests.helpers.users import JWKS_ROUTE, signed_up
from tests.helpers.web import SESSION_KEY, signed_up_person

pytestmark = pytest.mark.database

# Where an OTLP/HTTP exporter sends by default: a process that made one would reach it.
DEFAULT_OTLP_PORT = 4318


# --- in this process: spans recorded in memory ---------------------------------------------------


@pytest.fixture(scope="session")
def _span_recorder() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    configure_tracing(Settings(), process="tests").add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def recorded(_span_recorder: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    """Spans recorded during this test alone. Nothing exports here, so a span is recorded
    only when its caller's traceparent says the trace is sampled, as an upstream would."""
    _span_recorder.clear()
    yield _span_recorder
    _span_recorder.clear()


def sampled_traceparent() -> tuple[int, int, str]:
    trace_id, parent_id = uuid.uuid4().int, uuid.uuid4().int >> 64
    return trace_id, parent_id, f"00-{trace_id:032x}-{parent_id:016x}-01"


def in_trace(exporter: InMemorySpanExporter, trace_id: int) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.context.trace_id == trace_id]


def only(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    matching = [span for span in spans if span.name == name]
    assert len(matching) == 1, [span.name for span in spans]
    return matching[0]


def descendants(spans: list[ReadableSpan], root: ReadableSpan) -> list[ReadableSpan]:
    below, found = {root.context.span_id}, []
    for span in sorted(spans, key=lambda span: span.start_time or 0):
        if span.parent is not None and span.parent.span_id in below:
            below.add(span.context.span_id)
            found.append(span)
    return found


def statements(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return [span for span in spans if span.attributes.get("db.system") == "postgresql"]


async def test_a_request_continues_the_callers_trace_named_by_route_with_its_sql(
    client: httpx.AsyncClient, recorded: InMemorySpanExporter
) -> None:
    account = await signed_up(client)
    await client.get("/api/v1/categories", headers=account.headers)  # keys fetched, untraced
    trace_id, parent_id, traceparent = sampled_traceparent()
    expense_id = uuid.uuid4()
    response = await client.get(
        f"/api/v1/expenses/{expense_id}",
        headers={**account.headers, "traceparent": traceparent},
    )
    assert response.status_code == 404
    spans = in_trace(recorded, trace_id)
    server = only(spans, "GET /api/v1/expenses/{expense_id}")
    assert server.kind is SpanKind.SERVER
    assert server.parent is not None and server.parent.is_remote
    assert server.parent.span_id == parent_id
    assert server.attributes["http.route"] == "/api/v1/expenses/{expense_id}"
    assert server.attributes["http.response.status_code"] == 404
    assert len(descendants(spans, server)) == len(spans) - 1
    sql = statements(spans)
    texts = [span.attributes["db.statement"] for span in sql]
    # One span per statement: the read is a single SELECT, outside any explicit transaction.
    assert [text.split()[0] for text in texts] == ["SELECT"]
    assert "FROM expenses.expenses" in texts[0]
    assert str(expense_id) not in texts[0]  # the text, never the values
    assert all(span.kind is SpanKind.CLIENT for span in sql)


async def test_raw_driver_reads_are_spans_too_and_unmatched_paths_are_not_named(
    client: httpx.AsyncClient, recorded: InMemorySpanExporter
) -> None:
    account = await signed_up(client)
    await client.get("/api/v1/categories", headers=account.headers)
    summary_trace, _, summary_parent = sampled_traceparent()
    response = await client.get(
        "/api/v1/reports/summary",
        params={"from": "2026-01-01", "to": "2026-12-31", "group_by": "category"},
        headers={**account.headers, "traceparent": summary_parent},
    )
    assert response.status_code == 200, response.text
    spans = in_trace(recorded, summary_trace)
    server = only(spans, "GET /api/v1/reports/summary")
    sql = statements(descendants(spans, server))
    assert len(sql) == 1  # one statement through asyncpg itself, no transaction around it
    assert "monthly_spending_v1" in sql[0].attributes["db.statement"]
    unmatched_trace, _, unmatched_parent = sampled_traceparent()
    path = f"/no/such/{uuid.uuid4().hex}"
    await client.get(path, headers={"traceparent": unmatched_parent})
    [unmatched] = in_trace(recorded, unmatched_trace)
    assert unmatched.name == "GET"  # no route: the method alone, never the raw path
    assert "http.route" not in unmatched.attributes


async def test_probes_and_scrapes_are_not_traced(
    client: httpx.AsyncClient, recorded: InMemorySpanExporter
) -> None:
    for path in ("/livez", "/readyz", "/metrics"):
        trace_id, _, traceparent = sampled_traceparent()
        assert (await client.get(path, headers={"traceparent": traceparent})).status_code == 200
        assert not any(span.kind is SpanKind.SERVER for span in in_trace(recorded, trace_id))


async def test_the_jwks_fetch_carries_the_traceparent(
    client: httpx.AsyncClient, recorded: InMemorySpanExporter
) -> None:
    """Auth runs in this process: the fetch goes over HTTP to the app itself, whose server span
    continues the trace from the fetch's own span."""
    account = await signed_up(client)
    trace_id, _, traceparent = sampled_traceparent()
    response = await client.get(
        "/api/v1/categories", headers={**account.headers, "traceparent": traceparent}
    )
    assert response.status_code == 200
    spans = in_trace(recorded, trace_id)
    request = only(spans, "GET /api/v1/categories")
    [fetch] = [span for span in spans if span.kind is SpanKind.CLIENT and span.name == "GET"]
    jwks = only(spans, f"GET {JWKS_ROUTE}")
    assert fetch in descendants(spans, request)
    assert jwks.parent is not None and jwks.parent.is_remote
    assert jwks.parent.span_id == fetch.context.span_id


# --- real processes and a real OTLP/HTTP receiver ------------------------------------------------


class OtlpReceiver:
    """A collector's OTLP/HTTP trace endpoint on 127.0.0.1 that keeps every request's body."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((self.path, self.headers["Content-Type"], body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @contextmanager
    def running(self) -> Iterator[OtlpReceiver]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()
            thread.join(timeout=10)

    def spans(self) -> list[tuple[dict[str, str], object]]:
        """(resource attributes, span) for every span received."""
        found = []
        for path, content_type, body in self.requests:
            assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
            request = ExportTraceServiceRequest.FromString(body)
            for resource_spans in request.resource_spans:
                resource = {
                    item.key: item.value.string_value for item in resource_spans.resource.attributes
                }
                for scope_spans in resource_spans.scope_spans:
                    found += [(resource, span) for span in scope_spans.spans]
        return found


async def test_services_in_separate_processes_export_one_trace_over_otlp(
    serve_app: AppFactory, database_url: str, recorded: InMemorySpanExporter
) -> None:
    """Kubernetes mode: auth exports to a collector; expenses (here) fetches auth's JWKS inside
    a sampled request, and auth's span of that fetch joins the request's trace."""
    with OtlpReceiver().running() as receiver:
        env = serve_env(
            database_url,
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
            # Only the flush at shutdown exports: no batch is due before.
            OTEL_BSP_SCHEDULE_DELAY="600000",
        )
        with spawn(cli("serve", "--target", "auth", "--port", str(free_port())), env) as auth:
            auth_url = auth.wait_ready()
            async with httpx.AsyncClient(base_url=auth_url, timeout=10) as auth_client:
                account = await signed_up(auth_client)
            trace_id, _, traceparent = sampled_traceparent()
            async with serve_app([SERVICES["expenses"]], auth_url=auth_url) as expenses:
                response = await expenses.get(
                    "/api/v1/categories", headers={**account.headers, "traceparent": traceparent}
                )
            assert response.status_code == 200
            assert receiver.requests == []
            auth.signal(signal.SIGTERM)
            assert auth.wait() == 0
        received = receiver.spans()

    for _, _, body in receiver.requests:
        assert account.email.encode() not in body  # statements travel without their values
        assert account.password.encode() not in body
    resources = {tuple(sorted(resource.items())) for resource, _ in received}
    assert len(resources) == 1
    resource = dict(next(iter(resources)))
    assert resource["service.name"] == "expensetracker-auth"
    assert resource["service.version"] == __version__
    spans = [span for _, span in received]
    by_name = {span.name: span for span in spans}
    register = by_name["POST /api/v1/auth/register"]
    assert register.parent_span_id == b""  # a root: the client sent no traceparent
    register_sql = [
        attribute.value.string_value
        for span in spans
        if span.trace_id == register.trace_id
        for attribute in span.attributes
        if attribute.key == "db.statement"
    ]
    assert any("INSERT INTO auth.users" in statement for statement in register_sql)
    jwks = by_name[f"GET {JWKS_ROUTE}"]
    [fetch] = [
        span
        for span in in_trace(recorded, trace_id)
        if span.kind is SpanKind.CLIENT and span.name == "GET"
    ]
    assert int.from_bytes(jwks.trace_id, "big") == trace_id
    assert int.from_bytes(jwks.parent_span_id, "big") == fetch.context.span_id

    # The log line of each request names its span.
    [register_line] = request_lines(auth, "/api/v1/auth/register")
    assert register_line["trace_id"] == register.trace_id.hex()
    assert register_line["span_id"] == register.span_id.hex()
    [jwks_line] = request_lines(auth, JWKS_ROUTE)
    assert jwks_line["trace_id"] == f"{trace_id:032x}"


async def test_the_sampler_and_the_service_name_come_from_the_standard_variables(
    database_url: str,
) -> None:
    """parentbased_traceidratio at 0 keeps no trace that starts here but follows a caller's
    sampled one; OTEL_SERVICE_NAME names the resource."""
    with OtlpReceiver().running() as receiver:
        env = serve_env(
            database_url,
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
            OTEL_TRACES_SAMPLER="parentbased_traceidratio",
            OTEL_TRACES_SAMPLER_ARG="0",
            OTEL_SERVICE_NAME="auth-eu-west",
            OTEL_BSP_SCHEDULE_DELAY="600000",
        )
        with spawn(cli("serve", "--target", "auth", "--port", str(free_port())), env) as auth:
            url = auth.wait_ready()
            trace_id, _, traceparent = sampled_traceparent()
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                assert (await client.get(JWKS_ROUTE)).status_code == 200
                response = await client.get(JWKS_ROUTE, headers={"traceparent": traceparent})
                assert response.status_code == 200
            auth.signal(signal.SIGTERM)
            assert auth.wait() == 0
        received = receiver.spans()
    assert {resource["service.name"] for resource, _ in received} == {"auth-eu-west"}
    assert {int.from_bytes(span.trace_id, "big") for _, span in received} == {trace_id}
    assert f"GET {JWKS_ROUTE}" in {span.name for _, span in received}


async def test_without_an_endpoint_nothing_is_exported_and_logs_still_carry_trace_ids(
    database_url: str,
) -> None:
    with OtlpReceiver(DEFAULT_OTLP_PORT).running() as receiver:
        env = serve_env(database_url, OTEL_BSP_SCHEDULE_DELAY="100")
        with spawn(cli("serve", "--target", "all", "--port", str(free_port())), env) as server:
            url = server.wait_ready()
            trace_id, _, traceparent = sampled_traceparent()
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                account = await signed_up(client)
                for _ in range(2):
                    await client.get("/api/v1/categories", headers=account.headers)
                await client.get(
                    "/api/v1/categories", headers={**account.headers, "traceparent": traceparent}
                )
            server.signal(signal.SIGTERM)
            assert server.wait() == 0
    assert receiver.requests == []
    lines = request_lines(server, "/api/v1/categories")
    assert len(lines) == 3
    assert lines[2]["trace_id"] == f"{trace_id:032x}"
    untraced = lines[:2]
    assert all(len(line["trace_id"]) == 32 and len(line["span_id"]) == 16 for line in untraced)
    assert untraced[0]["trace_id"] != untraced[1]["trace_id"]  # a trace per request


async def test_the_web_apps_calls_carry_its_trace_to_the_api(database_url: str) -> None:
    """The web app in its own process, as in Kubernetes: its calls to the API carry the page's
    trace, sampled by the caller or not: the API's log lines name the page's trace."""
    env = serve_env(database_url)
    with spawn(
        cli("serve", "--target", "auth,expenses,reports", "--port", str(free_port())), env
    ) as api:
        api_url = api.wait_ready()
        web_env = {
            **env,
            "EXPENSETRACKER_WEB_SESSION_KEY": SESSION_KEY,
            **{f"EXPENSETRACKER_{name}_URL": api_url for name in ("AUTH", "EXPENSES", "REPORTS")},
        }
        with spawn(cli("serve", "--target", "web", "--port", str(free_port())), web_env) as web:
            async with httpx.AsyncClient(base_url=web.wait_ready(), timeout=10) as browser:
                await signed_up_person(browser)
                trace_id, _, traceparent = sampled_traceparent()
                sampled = await browser.get("/expenses", headers={"traceparent": traceparent})
                unsampled = await browser.get("/expenses")
            assert sampled.status_code == unsampled.status_code == 200
            web.signal(signal.SIGTERM)
            assert web.wait() == 0
        api.signal(signal.SIGTERM)
        assert api.wait() == 0

    pages = request_lines(web, "/expenses")
    assert len(pages) == 2 and pages[0]["trace_id"] == f"{trace_id:032x}"
    assert pages[1]["trace_id"] != pages[0]["trace_id"]
    for route in ("/api/v1/auth/session", "/api/v1/expenses", "/api/v1/categories"):
        calls = request_lines(api, route)
        assert [line["trace_id"] for line in calls[-2:]] == [line["trace_id"] for line in pages], (
            route
        )
