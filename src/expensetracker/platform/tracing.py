"""OpenTelemetry tracing, the same in every service.

The request middleware makes a server span of every request (but probes and scrapes), named
by its route template and continuing the caller's W3C ``traceparent``
(``platform/middleware.py``). SQL statements (asyncpg's, under the ORM and on the raw read
paths alike) and the JWKS fetch are spans inside it, and the fetch carries ``traceparent`` to
the auth service. Spans always exist,
so that log lines carry a trace id and callees see the caller's trace, but they are recorded
and exported (OTLP over HTTP, in batches) only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set; then ``OTEL_TRACES_SAMPLER`` (and its
``OTEL_TRACES_SAMPLER_ARG``) decides which traces are. Without it a span is recorded only when
the caller's ``traceparent`` says its trace is sampled (so that its decision travels on), and
nothing leaves the process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    TraceIdRatioBased,
)

from expensetracker import __version__
from expensetracker.platform.config import Settings

_provider: TracerProvider | None = None
_Call = Callable[..., Awaitable[Any]]


async def _when_recording(
    traced: _Call, func: _Call, instance: object, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if trace.get_current_span().is_recording():
        return await traced(func, instance, args, kwargs)
    return await func(*args, **kwargs)


class _RecordedTracesOnly(AsyncPGInstrumentor):
    """SQL spans only inside traces being recorded: an unrecorded one would cost about as much
    CPU as the statement itself does in this process (15 us), for nothing. Outside requests
    (background tasks) there is no trace to join, so none either."""

    async def _do_execute(self, *call: Any) -> Any:
        return await _when_recording(super()._do_execute, *call)

    async def _do_prepared_execute(self, *call: Any) -> Any:
        return await _when_recording(super()._do_prepared_execute, *call)

    async def _do_cursor_execute(self, *call: Any) -> Any:
        return await _when_recording(super()._do_cursor_execute, *call)


def sampler(settings: Settings) -> Sampler:
    """The sampler that OTEL_TRACES_SAMPLER names (OpenTelemetry's names) while export is on;
    without export, new traces are not recorded and a caller's decision is followed."""
    if settings.otlp_traces_endpoint is None:
        return ParentBased(root=ALWAYS_OFF)
    ratio = settings.otel_traces_sampler_arg
    samplers: dict[str, Callable[[], Sampler]] = {
        "always_on": lambda: ALWAYS_ON,
        "always_off": lambda: ALWAYS_OFF,
        "traceidratio": lambda: TraceIdRatioBased(ratio),
        "parentbased_always_on": lambda: ParentBased(root=ALWAYS_ON),
        "parentbased_always_off": lambda: ParentBased(root=ALWAYS_OFF),
        "parentbased_traceidratio": lambda: ParentBasedTraceIdRatio(ratio),
    }
    return samplers[settings.otel_traces_sampler]()


def configure_tracing(settings: Settings, *, process: str) -> TracerProvider:
    """The process's TracerProvider, set up by the first call (the process's app, named
    ``expensetracker-<process>``); later calls, from more apps in one process as in the tests,
    share it: asyncpg's instrumentation patches the driver's classes, once per process.
    OTEL_SERVICE_NAME, when set, names it instead."""
    global _provider
    if _provider is None:
        exporting = settings.otlp_traces_endpoint is not None
        provider = TracerProvider(
            resource=Resource.create(
                {
                    SERVICE_NAME: settings.otel_service_name or f"expensetracker-{process}",
                    SERVICE_VERSION: __version__,
                }
            ),
            sampler=sampler(settings),
        )
        if exporting:
            # The exporter reads the endpoint, headers, timeout and compression from OTEL_*.
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        # Statements only, never their parameters (capture_parameters stays off).
        # The instrumentor's __init__ is unannotated in opentelemetry-instrumentation-asyncpg.
        _RecordedTracesOnly().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
        _provider = provider
    return _provider
