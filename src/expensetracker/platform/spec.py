"""What a service gives the platform: its name, routes, and (for the services that keep data) its
schema, tables and migrations."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI, Request, Response
from sqlalchemy import MetaData

from expensetracker.platform.config import Settings
from expensetracker.platform.events import UserEventHandling

if TYPE_CHECKING:
    from expensetracker.platform.state import AppState

# Renders an error (status, detail) for a path the service owns, instead of a problem document.
ErrorPage = Callable[[Request, int, str | None], Response]


def _always(_settings: Settings) -> bool:
    return True


@dataclass(frozen=True)
class BackgroundJob:
    """Work a service runs while it serves: now, then every ``interval`` seconds (the name of
    the setting that holds them); a failure is logged and tried again at the next turn."""

    name: str
    run: Callable[[AppState], Awaitable[object]]
    interval: str
    # Whether this configuration runs it at all.
    enabled: Callable[[Settings], bool] = _always


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    router: APIRouter
    # Path prefixes this service answers, the same in every mode and in the Ingress.
    path_prefixes: tuple[str, ...]
    # Prefixes inside path_prefixes that belong to others (the web app owns "/" but not "/api/").
    excluded_prefixes: tuple[str, ...] = ()
    # The schema's tables and Alembic history; None for a service that keeps no data.
    metadata: MetaData | None = None
    migrations: Path | None = None
    # Started after the platform (database, token verifier), stopped before it.
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None
    # Auth's account events it applies (each every EXPENSETRACKER_EVENTS_POLL_SECONDS).
    user_events: UserEventHandling | None = None
    # What it runs in the background while it serves.
    jobs: tuple[BackgroundJob, ...] = ()
    # Extra readiness checks: name -> "ok" or what is wrong.
    readiness: Callable[[FastAPI], Awaitable[dict[str, str]]] | None = None
    # The published read contract: database role -> views of this schema it may SELECT.
    # Granted by every `migrate` to the roles that exist (Kubernetes creates one per service).
    readers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Settings this service cannot run without outside development (secrets only it holds).
    required_settings: tuple[str, ...] = ()
    # Request bodies larger than the general limit that some of its paths accept:
    # path -> name of the setting that holds the limit in bytes.
    body_limits: dict[str, str] = field(default_factory=dict)
    # Errors on its paths rendered for people rather than as problem documents.
    error_page: ErrorPage | None = None

    @property
    def keeps_data(self) -> bool:
        return self.metadata is not None

    @property
    def schema(self) -> str:
        assert self.metadata is not None and self.metadata.schema is not None
        return self.metadata.schema

    def owns(self, path: str) -> bool:
        return _under(path, self.path_prefixes) and not _under(path, self.excluded_prefixes)


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)
