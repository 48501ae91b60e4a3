"""Prometheus metrics shared by every service (the business counters live with their service)."""

from __future__ import annotations

import platform
import weakref
from collections.abc import Iterator
from typing import cast

import asyncpg
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from expensetracker import __version__

HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests answered, by route template and status class.",
    ["service", "method", "route", "status_class"],
)
HTTP_REQUEST_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from request start to the end of the response, by route template.",
    ["service", "method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
HTTP_REQUESTS_IN_FLIGHT = Gauge(
    "http_requests_in_flight", "Requests being handled right now.", ["service"]
)
# `background_job`, not `job`: Prometheus keeps `job` for the scrape job.
BACKGROUND_JOB_RUNS = Counter(
    "expensetracker_background_job_runs_total",
    "Runs of the background jobs the services declare (event consumers included), by outcome.",
    ["service", "background_job", "outcome"],
)
BACKGROUND_JOB_FAILURES_IN_A_ROW = Gauge(
    "expensetracker_background_job_failures_in_a_row",
    "Runs of the background job that failed since it last succeeded: a job that fails each time "
    "(a poisoned event, a lost grant) keeps counting up.",
    ["service", "background_job"],
)
BUILD_INFO = Gauge(
    "expensetracker_build_info",
    "Always 1; the labels say which build is running.",
    ["version", "python_version"],
)
BUILD_INFO.labels(__version__, platform.python_version()).set(1)


class _PoolCollector(Collector):
    """Reads the connection pool of every live engine at scrape time."""

    def __init__(self) -> None:
        self._engines: weakref.WeakKeyDictionary[AsyncEngine, str] = weakref.WeakKeyDictionary()
        # asyncpg's pools take no weak references: untracked when their app stops.
        self._drivers: dict[int, tuple[asyncpg.Pool, str]] = {}

    def track(self, engine: AsyncEngine, *, name: str) -> None:
        self._engines[engine] = name

    def untrack(self, engine: AsyncEngine) -> None:
        self._engines.pop(engine, None)

    def track_driver(self, pool: asyncpg.Pool, *, name: str) -> None:
        """The hot paths' pool of the process ``name``: reported as pool ``<name>-driver``."""
        self._drivers[id(pool)] = (pool, f"{name}-driver")

    def untrack_driver(self, pool: asyncpg.Pool) -> None:
        self._drivers.pop(id(pool), None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        size = GaugeMetricFamily(
            "expensetracker_db_pool_size",
            "Configured size of the connection pool.",
            labels=["pool"],
        )
        connections = GaugeMetricFamily(
            "expensetracker_db_pool_connections",
            "Connections of the pool by state.",
            labels=["pool", "state"],
        )
        for engine, name in list(self._engines.items()):
            # The tracked engines keep SQLAlchemy's default queue pool (platform/db.py).
            pool = cast(QueuePool, engine.sync_engine.pool)
            size.add_metric([name], pool.size())
            connections.add_metric([name, "checked_out"], pool.checkedout())
            connections.add_metric([name, "idle"], pool.checkedin())
            connections.add_metric([name, "overflow"], max(pool.overflow(), 0))
        for driver, name in list(self._drivers.values()):
            size.add_metric([name], driver.get_max_size())
            connections.add_metric(
                [name, "checked_out"], driver.get_size() - driver.get_idle_size()
            )
            connections.add_metric([name, "idle"], driver.get_idle_size())
            connections.add_metric([name, "overflow"], 0)
        yield size
        yield connections


DB_POOLS = _PoolCollector()
REGISTRY.register(DB_POOLS)
