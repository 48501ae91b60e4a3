"""What a service gives the platform: its name, schema, routes, tables and migrations."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import APIRouter, FastAPI
from sqlalchemy import MetaData


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    router: APIRouter
    metadata: MetaData
    migrations: Path
    # Path prefixes this service answers, the same in every mode and in the Ingress.
    path_prefixes: tuple[str, ...]
    # Started after the platform (database, token verifier), stopped before it.
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None
    # Extra readiness checks: name -> "ok" or what is wrong.
    readiness: Callable[[FastAPI], Awaitable[dict[str, str]]] | None = None
    # The published read contract: database role -> views of this schema it may SELECT.
    # Granted by every `migrate` to the roles that exist (Kubernetes creates one per service).
    readers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Settings this service cannot run without outside development (secrets only it holds).
    required_settings: tuple[str, ...] = ()

    @property
    def schema(self) -> str:
        assert self.metadata.schema is not None
        return self.metadata.schema

    def owns(self, path: str) -> bool:
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.path_prefixes)
