"""A test-only service with the routes the platform tests need (validation, uploads, slow
requests, a crash), run in-process or, as ``python tests/helpers/probe.py PORT``, behind the
real server."""

from __future__ import annotations

import dataclasses
import sys

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text

from expensetracker.platform.deps import DbSession

router = APIRouter(prefix="/api/v1/probe")


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: str = Field(pattern=r"^\d{1,12}\.\d{2}$")
    note: str | None = Field(default=None, max_length=20)


@router.post("/echo")
async def echo(payload: Payload) -> Payload:
    return payload


@router.post("/upload")
async def upload(request: Request) -> dict[str, int]:
    return {"bytes": len(await request.body())}


@router.get("/slow")
async def slow(session: DbSession, seconds: float = Query(ge=0, le=30)) -> dict[str, float]:
    # Holds a pooled connection for the whole request, as a heavy report would.
    await session.execute(text("SELECT pg_sleep(:seconds)"), {"seconds": seconds})
    return {"slept": seconds}


@router.get("/boom")
async def boom() -> None:
    raise RuntimeError("internal detail that must not leak")


# Unannotated: the ServiceSpec it returns is the auth app's, imported only when called.
def probe_service():  # type: ignore[no-untyped-def]
    """The auth service's schema and migrations, with the probe's routes."""
    from expensetracker.auth.app import SPEC as auth

    return dataclasses.replace(auth, name="probe", router=router, path_prefixes=("/api/v1/probe",))


if __name__ == "__main__":
    from expensetracker.platform import server
    from expensetracker.platform.application import create_app
    from expensetracker.platform.config import Settings
    from expensetracker.platform.logging import configure_logging
    from expensetracker.platform.state import app_state

    settings = Settings()
    configure_logging(level="INFO", fmt="json", service="probe")
    app = create_app([probe_service()], settings)
    port = int(sys.argv[1])
    ok = server.run(
        app,
        settings=settings,
        host="127.0.0.1",
        port=port,
        readiness=app_state(app).readiness,
        on_ready=lambda: print(f"ready http://127.0.0.1:{port}", flush=True),
    )
    sys.exit(0 if ok else 1)
