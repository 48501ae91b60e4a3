"""The services a process can run, by ``--target`` name."""

from __future__ import annotations

from expensetracker.auth.app import service as auth
from expensetracker.expenses.app import service as expenses
from expensetracker.platform.service import ServiceSpec
from expensetracker.reports.app import service as reports

SERVICES: dict[str, ServiceSpec] = {spec.name: spec for spec in (auth, expenses, reports)}
TARGET_NAMES = (*SERVICES, "all")


def resolve_targets(target: str) -> list[ServiceSpec]:
    """``all`` or a comma-separated list of service names, in a stable order."""
    names = {part.strip() for part in target.split(",") if part.strip()}
    if "all" in names:
        return list(SERVICES.values())
    unknown = names - SERVICES.keys()
    if unknown or not names:
        raise ValueError(
            f"unknown target {', '.join(sorted(unknown)) or repr(target)}; "
            f"choose from {', '.join(TARGET_NAMES)}"
        )
    return [spec for name, spec in SERVICES.items() if name in names]
