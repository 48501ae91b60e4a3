"""The web app as an ASGI app, and its description for the platform. It keeps no data: every page
is made from the public JSON API of auth, expenses and reports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import aiohttp
from fastapi import FastAPI
from opentelemetry.instrumentation.aiohttp_client import create_trace_config
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

from expensetracker.platform.application import create_app as create_platform_app
from expensetracker.platform.config import Settings, get_settings
from expensetracker.platform.ratelimit import IN_PROCESS
from expensetracker.platform.spec import ServiceSpec
from expensetracker.platform.state import app_state
from expensetracker.web import routes
from expensetracker.web.client import (
    CONNECTIONS_PER_SERVICE,
    SERVICES,
    TIMEOUT_SECONDS,
    ApiClient,
    LocalTransport,
    RemoteTransport,
    Transport,
    in_process_client,
)
from expensetracker.web.service import WebState
from expensetracker.web.session import SessionCodec

# Where each service is reached when it runs in another process.
_URL_SETTINGS = {"auth": "auth_url", "expenses": "expenses_url", "reports": "reports_url"}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state = app_state(app)
    settings = state.settings
    tracer_provider = state.tracer_provider
    served_here = {spec.name for spec in state.services}
    async with AsyncExitStack() as stack:
        transports: dict[str, Transport] = {}
        for name in SERVICES:
            base_url = getattr(settings, _URL_SETTINGS[name])
            if name in served_here or base_url is None:
                # The same process: the API is called through the app itself, as from outside
                # (every middleware, the token check), without a socket.
                client = in_process_client(app, IN_PROCESS)
                HTTPXClientInstrumentor.instrument_client(client, tracer_provider=tracer_provider)
                transports[name] = LocalTransport(await stack.enter_async_context(client))
            else:
                session = aiohttp.ClientSession(
                    base_url=base_url,
                    timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS),
                    connector=aiohttp.TCPConnector(limit=CONNECTIONS_PER_SERVICE),
                    # A client span per call only when traces are exported: otherwise it goes
                    # nowhere, for 8% of this process's CPU under load (the page's trace still
                    # travels: RemoteTransport sends its traceparent).
                    trace_configs=(
                        [create_trace_config(tracer_provider=tracer_provider)]
                        if settings.otlp_traces_endpoint is not None
                        else []
                    ),
                    # The API sets no cookie, and a shared jar would hand one person's to another.
                    cookie_jar=aiohttp.DummyCookieJar(),
                    raise_for_status=False,
                )
                transports[name] = RemoteTransport(name, await stack.enter_async_context(session))
        secret = settings.web_session_key
        web = WebState(
            api=ApiClient(transports, local_app=app if "auth" in served_here else None),
            codec=SessionCodec(secret.get_secret_value() if secret else None),
            refresh_ttl_seconds=settings.refresh_token_ttl_seconds,
        )
        state.keep(web)
        yield


SPEC = ServiceSpec(
    name="web",
    router=routes.router,
    path_prefixes=("/",),
    excluded_prefixes=("/api/", "/livez", "/readyz", "/metrics", "/docs", "/openapi.json"),
    lifespan=lifespan,
    required_settings=("web_session_key",),
    body_limits={"/import": "max_import_body_bytes", "/import/confirm": "max_import_body_bytes"},
    error_page=routes.error_page,
)


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_platform_app([SPEC], settings or get_settings())
