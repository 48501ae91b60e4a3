"""The apps in-process, with their lifespan, and clients speaking real HTTP semantics to them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
from fastapi import FastAPI
from prometheus_client import REGISTRY

from expensetracker.platform.application import create_app
from expensetracker.platform.config import Settings
from expensetracker.platform.spec import ServiceSpec
from expensetracker.targets import SERVICES


@asynccontextmanager
async def running(
    app: FastAPI, base_url: str = "http://testserver", client_address: str = "203.0.113.7"
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan, and a client speaking real HTTP semantics to it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(client_address, 50000))
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client


AppFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


def app_factory(database_url: str) -> AppFactory:
    """``async with factory(services=..., **settings) as client`` on ``database_url``."""

    def factory(
        services: list[ServiceSpec] | None = None,
        base_url: str = "http://testserver",
        client_address: str = "203.0.113.7",
        **overrides: object,
    ) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        # Services without auth in-process need its URL; nothing listens on the discard port.
        values = {
            "database_url": database_url,
            "rate_limit": "off",
            "auth_url": "http://127.0.0.1:9",
            **overrides,
        }
        # Settings fields of several types in one dict: pydantic checks each.
        settings = Settings(**values)  # type: ignore[arg-type]
        app = create_app(services or list(SERVICES.values()), settings)
        return running(app, base_url, client_address)

    return factory


def app_of(client: httpx.AsyncClient) -> FastAPI:
    """The app behind an in-process client."""
    # httpx types the transport as a BaseTransport; an in-process client's is an ASGITransport.
    return client._transport.app  # type: ignore[attr-defined]


def counter(name: str, **labels: str) -> float:
    """A sample of the process's Prometheus registry, 0 until first counted."""
    return REGISTRY.get_sample_value(name, labels) or 0.0
