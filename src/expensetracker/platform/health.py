"""``/livez``, ``/readyz`` and ``/metrics``: in every process, never routed by the Ingress."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import APIRouter, FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from sqlalchemy import text
from starlette.responses import JSONResponse, Response

from expensetracker.platform.migrations import current_revision
from expensetracker.platform.state import app_state

if TYPE_CHECKING:
    from expensetracker.platform.state import AppState

router = APIRouter(include_in_schema=False)

DB_CHECK_TIMEOUT_SECONDS = 2.0


@dataclass
class Readiness:
    """Flipped by the server on SIGTERM, before it stops accepting connections."""

    shutting_down: bool = False


@router.get("/livez")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    checks = await readiness_checks(request.app)
    ready = all_ok(checks)
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )


async def readiness_checks(app: FastAPI) -> dict[str, str]:
    """Each check of /readyz: "ok", or why not."""
    state = app_state(app)
    checks: dict[str, str] = {}
    if state.readiness.shutting_down:
        checks["shutdown"] = "in progress"
    if state.database is not None:
        checks.update(await _database_checks(state))
    for spec in state.services:
        if spec.readiness is not None:
            checks.update(await spec.readiness(app))
    return checks


def all_ok(checks: dict[str, str]) -> bool:
    return all(value == "ok" for value in checks.values())


async def _database_checks(state: AppState) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        async with (
            asyncio.timeout(DB_CHECK_TIMEOUT_SECONDS),
            state.db.engine.connect() as connection,
        ):
            await connection.execute(text("SELECT 1"))
            checks["database"] = "ok"
            for spec in state.services:
                if not spec.keeps_data:
                    continue
                revision = await current_revision(connection, spec)
                expected = state.migration_heads[spec.name]
                checks[f"migrations:{spec.name}"] = (
                    "ok" if revision == expected else f"at {revision}, expected {expected}"
                )
    except Exception as exc:  # any failure to reach the database means "not ready"
        checks["database"] = f"unreachable ({type(exc).__name__})"
    return checks


@router.get("/metrics")
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
