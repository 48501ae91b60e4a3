"""``/metrics`` of the backup folder, read at each scrape (the postgres-backup Deployment in
Kubernetes serves it; the alert rules of deploy/monitoring/base/rules/backups.yaml read these
names)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.responses import Response

from expensetracker.backup import store


class BackupCollector(Collector):
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def collect(self) -> Iterator[GaugeMetricFamily]:
        backups = [backup for backup in store.scan(self.folder) if backup.manifest is not None]
        verified = [backup for backup in backups if backup.state == "verified"]
        # Absent until a backup is verified: the BackupMissing alert fires on its absence.
        if verified:
            yield GaugeMetricFamily(
                "expensetracker_backup_last_success_timestamp_seconds",
                "When the newest complete and verified backup was taken (Unix time).",
                value=verified[-1].created_at.timestamp(),
            )
        failure = store.read_status(self.folder).last_failure
        yield GaugeMetricFamily(
            "expensetracker_backup_last_failure_timestamp_seconds",
            "When a backup or its verification last failed (Unix time; 0 if never).",
            value=failure.at.timestamp() if failure else 0,
        )
        newest = backups[-1].manifest if backups else None
        yield GaugeMetricFamily(
            "expensetracker_backup_size_bytes",
            "Size of the newest backup's archive.",
            value=newest.size_bytes if newest else 0,
        )
        yield GaugeMetricFamily(
            "expensetracker_backups", "Backups kept in the folder.", value=len(backups)
        )


def create_app(folder: Path) -> FastAPI:
    registry = CollectorRegistry()
    registry.register(BackupCollector(folder))
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/livez")
    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
