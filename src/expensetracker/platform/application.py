"""Builds the ASGI app of one or several services, with the platform around them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial

import httpx
from fastapi import FastAPI
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy.ext.asyncio import async_sessionmaker
from starlette.middleware.cors import CORSMiddleware

from expensetracker import __version__
from expensetracker.platform import health
from expensetracker.platform.background import periodically
from expensetracker.platform.config import Environment, Settings
from expensetracker.platform.db import (
    DriverPool,
    create_driver_pool,
    create_engine,
    pool_turns,
)
from expensetracker.platform.error_handlers import document_problems, install_problem_handlers
from expensetracker.platform.events import UserEventConsumer
from expensetracker.platform.metrics import DB_POOLS
from expensetracker.platform.middleware import BodyLimits, RequestContext, SecurityHeaders
from expensetracker.platform.migrations import head_revision
from expensetracker.platform.ratelimit import IN_PROCESS, RateLimit
from expensetracker.platform.spec import ErrorPage, ServiceSpec
from expensetracker.platform.state import AppState, Database, app_state
from expensetracker.platform.tokens import JWKS_PATH, TokenVerifier
from expensetracker.platform.tracing import configure_tracing


def process_name(services: Sequence[ServiceSpec]) -> str:
    return "+".join(spec.name for spec in services)


def _jwks_client(
    app: FastAPI, settings: Settings, tracer_provider: TracerProvider
) -> httpx.AsyncClient:
    """HTTP to the auth service: the app itself when auth runs in this process. Its requests
    are spans of the request that needed the keys, and carry its traceparent."""
    if settings.auth_url is None:
        # Not rate limited: the request that needed the keys was counted.
        transport = httpx.ASGITransport(app=app, client=(IN_PROCESS, 0))
        client = httpx.AsyncClient(transport=transport, base_url="http://in-process")
    else:
        client = httpx.AsyncClient(base_url=settings.auth_url, timeout=5.0)
    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=tracer_provider)
    return client


async def _open_database(stack: AsyncExitStack, settings: Settings, *, name: str) -> Database:
    """The ORM's engine and asyncpg's pools of this process, closed with the stack."""
    engine = create_engine(settings, application_name=f"expensetracker-{name}")
    DB_POOLS.track(engine, name=name)
    stack.push_async_callback(engine.dispose)
    stack.callback(DB_POOLS.untrack, engine)
    primary = await _open_driver_pool(stack, settings, name=name, read_only=False)
    read_pool = primary
    if settings.database_read_url is not None:
        read_pool = await _open_driver_pool(stack, settings, name=name, read_only=True)
    return Database(
        engine=engine,
        sessionmaker=async_sessionmaker(engine, expire_on_commit=False),
        pool_turns=pool_turns(settings),
        driver_pool=primary,
        read_driver_pool=read_pool,
    )


async def _open_driver_pool(
    stack: AsyncExitStack, settings: Settings, *, name: str, read_only: bool
) -> DriverPool:
    """An asyncpg pool (of the read replica when ``read_only``), in the pool metrics while it
    is open, closed with the stack."""
    pool = await create_driver_pool(
        settings, application_name=f"expensetracker-{name}", read_only=read_only
    )
    DB_POOLS.track_driver(pool, name=f"{name}-read" if read_only else name)
    stack.push_async_callback(pool.close)
    stack.callback(DB_POOLS.untrack_driver, pool)
    return DriverPool(pool, wait_seconds=settings.db_pool_timeout_seconds)


async def _start_jobs(stack: AsyncExitStack, state: AppState) -> None:
    """What the services declared to run beside their routes: the consumers of auth's account
    events, and their background jobs, stopped with the stack."""
    settings = state.settings
    for spec in state.services:
        if spec.user_events is not None:
            consumer = state.user_events[spec.name] = UserEventConsumer(
                name=spec.name,
                sessionmaker=state.db.sessionmaker,
                positions=spec.user_events.positions,
                handle=spec.user_events.handle,
            )
            polling = periodically(
                "user_events",
                consumer.catch_up,
                service=spec.name,
                interval=settings.events_poll_seconds,
            )
            await stack.enter_async_context(polling)
        for job in spec.jobs:
            if job.enabled(settings):
                await stack.enter_async_context(
                    periodically(
                        job.name,
                        partial(job.run, state),
                        service=spec.name,
                        interval=getattr(settings, job.interval),
                    )
                )


def create_app(services: Sequence[ServiceSpec], settings: Settings) -> FastAPI:
    """Raises ValueError when the configuration cannot serve these services."""
    name = process_name(services)
    if settings.env is not Environment.development:
        missing = [
            f"EXPENSETRACKER_{setting.upper()} is required by the {spec.name} service"
            for spec in services
            for setting in spec.required_settings
            if getattr(settings, setting) is None
        ]
        if missing:
            raise ValueError(f"refusing to start in {settings.env}: " + "; ".join(missing))
    if any(spec.owns(JWKS_PATH) for spec in services):
        # Auth runs here: its keys are verified in-process, whatever the setting says.
        settings = settings.model_copy(update={"auth_url": None})
    elif settings.auth_url is None:
        raise ValueError(
            "EXPENSETRACKER_AUTH_URL is required when the auth service runs in another process"
        )
    tracer_provider = configure_tracing(settings, process=name)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = app_state(app)
        async with AsyncExitStack() as stack:
            # Last on the way out: the spans of the last requests leave before the process.
            stack.callback(tracer_provider.force_flush)
            if any(spec.keeps_data for spec in services):
                state.database = await _open_database(stack, settings, name=name)
            jwks_client = await stack.enter_async_context(
                _jwks_client(app, settings, tracer_provider)
            )
            state.token_verifier = TokenVerifier(
                http=jwks_client,
                issuer=settings.token_issuer,
                audience=settings.token_audience,
                max_lifetime_seconds=settings.access_token_ttl_seconds,
            )
            for spec in services:
                if spec.lifespan is not None:
                    await stack.enter_async_context(spec.lifespan(app))
            await _start_jobs(stack, state)
            yield

    docs = settings.effective_docs_enabled
    app = FastAPI(
        title=f"ExpenseTracker ({name})",
        version=__version__,
        docs_url="/docs" if docs else None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url="/docs/oauth2-redirect" if docs else None,
        lifespan=lifespan,
        # Our middleware makes the server spans: FastAPI's own cost about 0.1 ms a request, even
        # unsampled (docs/performance.md).
        telemetry={"tracing": False, "metrics": False, "logs": False, "auto_configure": False},
    )
    app.state.platform = AppState(
        settings=settings,
        services=tuple(services),
        tracer_provider=tracer_provider,
        readiness=health.Readiness(),
        migration_heads={spec.name: head_revision(spec) for spec in services if spec.keeps_data},
    )

    def owner(path: str) -> ServiceSpec | None:
        return next((spec for spec in services if spec.owns(path)), None)

    def error_page(path: str) -> ErrorPage | None:
        return spec.error_page if (spec := owner(path)) else None

    install_problem_handlers(app, error_page=error_page)
    document_problems(app, rate_limited=settings.rate_limit != "off")
    app.include_router(health.router)
    for spec in services:
        app.include_router(spec.router)

    _add_middleware(
        app,
        settings,
        services,
        owner=owner,
        error_page=error_page,
        tracer_provider=tracer_provider,
    )
    return app


def _add_middleware(
    app: FastAPI,
    settings: Settings,
    services: Sequence[ServiceSpec],
    *,
    owner: Callable[[str], ServiceSpec | None],
    error_page: Callable[[str], ErrorPage | None],
    tracer_provider: TracerProvider,
) -> None:
    # Added innermost first: a request meets RequestContext first, the rate limit last.
    if settings.rate_limit != "off":
        redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
        app.add_middleware(
            RateLimit, rate=settings.rate_limit, redis_url=redis_url, error_page=error_page
        )
    body_limits = {
        path: getattr(settings, setting)
        for spec in services
        for path, setting in spec.body_limits.items()
    }
    app.add_middleware(
        BodyLimits,
        limit_for_path=lambda path: body_limits.get(path, settings.max_body_bytes),
        error_page=error_page,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=settings.cors_allow_credentials,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
            max_age=600,
        )
    app.add_middleware(SecurityHeaders)

    app.add_middleware(
        RequestContext,
        service_for_path=lambda path: spec.name if (spec := owner(path)) else "platform",
        error_page=error_page,
        tracer=tracer_provider.get_tracer("expensetracker.http"),
    )
