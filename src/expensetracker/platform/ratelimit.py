"""The general request rate limit per client address, in memory or in Redis (shared by replicas)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from starlette.types import ASGIApp, Receive, Scope, Send

from expensetracker.platform.error_handlers import refusal

if TYPE_CHECKING:
    from expensetracker.platform.spec import ErrorPage

log = structlog.get_logger(__name__)

_EXEMPT_PATHS = frozenset({"/livez", "/readyz", "/metrics"})
# The client address of calls a process makes to its own API without a socket (the web app's,
# the JWKS fetch): the request that caused them has been counted already.
IN_PROCESS = "in-process"


def _storage(redis_url: str | None) -> Storage:
    if redis_url is None:
        return MemoryStorage()
    # redis-py's client rather than limits' default, coredis: when Redis has lost its script cache
    # (a restart), coredis's reload-and-retry of concurrent hits can refuse a hit it has counted.
    return RedisStorage(f"async+{redis_url}", implementation="redispy")


class RateLimit:
    def __init__(
        self,
        app: ASGIApp,
        *,
        rate: str,
        redis_url: str | None,
        error_page: Callable[[str], ErrorPage | None] = lambda _path: None,
    ) -> None:
        self.app = app
        self.error_page = error_page
        self.items: list[RateLimitItem] = parse_many(rate)
        self.limiter = MovingWindowRateLimiter(_storage(redis_url))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        key = client[0] if client else "unknown"
        if key == IN_PROCESS:
            await self.app(scope, receive, send)
            return
        try:
            refused = await self._first_exceeded(key)
        except Exception as exc:  # the limiter's store being down must not take the API down
            log.warning("rate_limit_store_unavailable", error=type(exc).__name__)
            refused = None
        if refused is None:
            await self.app(scope, receive, send)
            return
        stats = await self.limiter.get_window_stats(refused, "http", key)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        response = refusal(
            scope,
            429,
            detail=f"Rate limit of {refused} exceeded; retry after {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
            error_page=self.error_page,
        )
        await response(scope, receive, send)

    async def _first_exceeded(self, key: str) -> RateLimitItem | None:
        for item in self.items:
            if not await self.limiter.hit(item, "http", key):
                return item
        return None
