"""The services a process can run, by ``--target`` name."""

from __future__ import annotations

from expensetracker.auth.app import SPEC as auth
from expensetracker.expenses.app import SPEC as expenses
from expensetracker.platform.spec import ServiceSpec
from expensetracker.reports.app import SPEC as reports
from expensetracker.web.app import SPEC as web

# The services that keep data, each in its own schema.
SERVICES: dict[str, ServiceSpec] = {spec.name: spec for spec in (auth, expenses, reports)}
# Everything a process can run; the web app last, as it owns every path the others do not.
COMPONENTS: dict[str, ServiceSpec] = {**SERVICES, web.name: web}
TARGET_NAMES = (*COMPONENTS, "all")


def resolve_targets(target: str) -> list[ServiceSpec]:
    """``all`` or a comma-separated list of service names, in a stable order."""
    names = {part.strip() for part in target.split(",") if part.strip()}
    if "all" in names:
        return list(COMPONENTS.values())
    unknown = names - COMPONENTS.keys()
    if unknown or not names:
        raise ValueError(
            f"unknown target {', '.join(sorted(unknown)) or repr(target)}; "
            f"choose from {', '.join(TARGET_NAMES)}"
        )
    return [spec for name, spec in COMPONENTS.items() if name in names]
