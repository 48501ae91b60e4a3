"""Pure ASGI middleware shared by every service: request context, security headers, body limit."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import structlog
from opentelemetry import propagate, trace
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
)
from opentelemetry.semconv.attributes.url_attributes import URL_PATH, URL_SCHEME
from opentelemetry.trace import SpanKind, StatusCode
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from expensetracker.platform.db import database_unavailable
from expensetracker.platform.error_handlers import refusal
from expensetracker.platform.logging import scrub_exception
from expensetracker.platform.metrics import (
    HTTP_REQUEST_DURATION,
    HTTP_REQUESTS,
    HTTP_REQUESTS_IN_FLIGHT,
)

if TYPE_CHECKING:
    from expensetracker.platform.spec import ErrorPage

log = structlog.get_logger("expensetracker.http")

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# Probes and scrapes would drown the request log and the traces; they are still counted in
# metrics.
QUIET_PATHS = frozenset({"/livez", "/readyz", "/metrics"})


UNMATCHED = "unmatched"
# What the W3C propagators read (traceparent, tracestate, baggage), as ASGI names them.
_TRACE_HEADERS = frozenset({b"traceparent", b"tracestate", b"baggage"})


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or UNMATCHED


class RequestContext:
    """Request id, server span, one log line and the HTTP metrics for every request; an
    unexpected exception is logged here once, with the request id, and answered with a 500
    problem (or the path's error page, where its service has one)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        service_for_path: Callable[[str], str],
        tracer: trace.Tracer,
        error_page: Callable[[str], ErrorPage | None] = lambda _path: None,
    ) -> None:
        self.app = app
        self.service_for_path = service_for_path
        self.tracer = tracer
        self.error_page = error_page
        # The metrics' children by labels: prometheus_client's labels() costs more than the
        # increment itself, and the label sets are few (routes x methods x status classes).
        self._counted: dict[tuple[str, ...], tuple[Any, Any]] = {}
        self._in_flight: dict[str, Any] = {}

    def _observe(
        self, service: str, method: str, route: str, status_class: str, seconds: float
    ) -> None:
        key = (service, method, route, status_class)
        children = self._counted.get(key)
        if children is None:
            children = self._counted[key] = (
                HTTP_REQUESTS.labels(service, method, route, status_class),
                HTTP_REQUEST_DURATION.labels(service, method, route),
            )
        children[0].inc()
        children[1].observe(seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        incoming = headers.get("x-request-id", "")
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        service = self.service_for_path(scope["path"])
        method = scope["method"]
        quiet = scope["path"] in QUIET_PATHS
        status = 500
        response_started = False
        started = time.perf_counter()

        async def send_with_request_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                MutableHeaders(scope=message).append("X-Request-ID", request_id)
            await send(message)

        in_flight = self._in_flight.get(service)
        if in_flight is None:
            in_flight = self._in_flight[service] = HTTP_REQUESTS_IN_FLIGHT.labels(service)
        in_flight.inc()
        # The caller's trace (traceparent) goes on here, named once routing found the template.
        # Probes and scrapes get no span: their traces would only be noise.
        # Without trace headers there is nothing to extract: the span starts a trace.
        traced = any(name in _TRACE_HEADERS for name, _ in scope["headers"])
        server_span = (
            nullcontext(trace.INVALID_SPAN)
            if quiet
            else self.tracer.start_as_current_span(
                method,
                context=propagate.extract(headers) if traced else None,
                kind=SpanKind.SERVER,
                record_exception=False,  # recorded below, where the exception is handled
            )
        )
        with server_span as span, structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_request_id)
            except Exception as exc:
                scrub_exception(exc)  # before the log line and the span see its text
                unavailable = database_unavailable(exc)
                if unavailable:  # expected while the database restarts: no traceback
                    log.warning("database_unavailable", path=scope["path"], error=repr(exc)[:200])
                else:
                    log.exception("unhandled_exception", path=scope["path"])
                span.record_exception(exc)
                if response_started:
                    raise  # too late for a problem document: the server drops the connection
                if unavailable:
                    answer = refusal(
                        scope,
                        503,
                        detail="The database is unavailable; try again in a moment.",
                        headers={"Retry-After": "1"},
                        error_page=self.error_page,
                    )
                else:
                    answer = refusal(
                        scope,
                        500,
                        detail="An unexpected error occurred; it has been logged.",
                        error_page=self.error_page,
                    )
                await answer(scope, receive, send_with_request_id)
            finally:
                in_flight.dec()
                duration = time.perf_counter() - started
                route = _route_template(scope)
                self._observe(service, method, route, f"{status // 100}xx", duration)
                if span.is_recording():
                    span.set_attributes(
                        {
                            HTTP_REQUEST_METHOD: method,
                            HTTP_RESPONSE_STATUS_CODE: status,
                            URL_PATH: scope["path"],
                            URL_SCHEME: scope["scheme"],
                        }
                    )
                    if route != UNMATCHED:  # else the method alone names it, never the path
                        span.update_name(f"{method} {route}")
                        span.set_attribute(HTTP_ROUTE, route)
                    if status >= 500:
                        span.set_status(StatusCode.ERROR)
                if not quiet:
                    log.info(
                        "request",
                        method=method,
                        route=route,
                        status=status,
                        duration_ms=round(duration * 1000, 2),
                    )


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        over_tls = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("Referrer-Policy", "no-referrer")
                headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
                if over_tls:
                    headers.setdefault(
                        "Strict-Transport-Security", "max-age=63072000; includeSubDomains"
                    )
            await send(message)

        await self.app(scope, receive, send_with_headers)


_BINARY_UNITS = (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024))


def _size(limit: int) -> str:
    """A byte count as people read it: "10 MiB", not 10485760; in bytes when no whole unit."""
    for name, unit in _BINARY_UNITS:
        if limit % unit == 0:
            return f"{limit // unit} {name}"
    return f"{limit:,} bytes"


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, detail=f"The request body is over {_size(limit)}.")


class BodyLimits:
    """Refuses bodies it would not read as sent: a content coding (gzip, ...), which the JSON,
    form and file parsers would take for the body itself; or over the limit, at once by
    Content-Length or while streaming."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit_for_path: Callable[[str], int],
        error_page: Callable[[str], ErrorPage | None] = lambda _path: None,
    ) -> None:
        self.app = app
        self.limit_for_path = limit_for_path
        self.error_page = error_page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for_path(scope["path"])
        headers = Headers(scope=scope)
        if headers.get("content-encoding", "identity").strip().lower() != "identity":
            await refusal(
                scope,
                415,
                detail="A body is read as sent: send it without a Content-Encoding.",
                headers={"Accept-Encoding": "identity"},
                error_page=self.error_page,
            )(scope, receive, send)
            return
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                await refusal(
                    scope, 400, detail="Invalid Content-Length header.", error_page=self.error_page
                )(scope, receive, send)
                return
            if int(declared) > limit:
                too_large = BodyTooLarge(limit)
                await refusal(
                    scope,
                    413,
                    detail=too_large.detail,
                    headers={"Connection": "close"},
                    error_page=self.error_page,
                )(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited_receive, send)
