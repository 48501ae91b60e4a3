"""The database roles as Kubernetes prepares them: the PostgreSQL init script of deploy/ (run
with psql, as the image's entrypoint runs it) gives each service a role owning only its schema,
and a monitor and a backup role."""

from __future__ import annotations

import os
import subprocess

from sqlalchemy import make_url

from expensetracker.platform.embedded import pg_bin
from expensetracker.targets import SERVICES as TARGETS
from tests.helpers.database import connected
from tests.helpers.kubernetes import KUBERNETES, kustomize, named, of_kind, pod_spec

BASE = tuple(kustomize(KUBERNETES / "base"))
# The services the manifests migrate (a `migrate` initContainer): those with a database. The web
# app has none, so no role either.
SERVICES = {
    name: TARGETS[name]
    for deployment in of_kind(BASE, "Deployment")
    for init in pod_spec(deployment).get("initContainers", [])
    if init["args"][:2] == ["migrate", "--target"]
    and (name := init["args"][2]) == deployment["metadata"]["name"]
}
ROLES = {name: f"expensetracker_{name}" for name in SERVICES}
PASSWORDS = {name: f"test-{name}-password" for name in SERVICES}
MONITOR = "expensetracker_monitor"
MONITOR_PASSWORD = "test-monitor-password"
BACKUP = "expensetracker_backup"
BACKUP_PASSWORD = "test-backup-password"


def init_script() -> str:
    init = named(BASE, "ConfigMap", "postgres-init")
    [script] = init["data"].values()
    return script


def run_init_script(admin_url: str) -> None:
    url = make_url(admin_url)
    env = {
        **os.environ,
        "PATH": f"{pg_bin('psql').parent}:{os.environ['PATH']}",
        # The embedded server is reached over its Unix socket (a `host` query parameter).
        "PGHOST": str(url.query.get("host") or url.host),
        "PGPORT": str(url.query.get("port") or url.port or 5432),
        "PGPASSWORD": url.password or "",
        "POSTGRES_USER": url.username,
        "POSTGRES_DB": url.database,
        **{f"{name.upper()}_DB_PASSWORD": PASSWORDS[name] for name in SERVICES},
        "MONITOR_DB_PASSWORD": MONITOR_PASSWORD,
        "BACKUP_DB_PASSWORD": BACKUP_PASSWORD,
    }
    result = subprocess.run(
        ["sh", "-c", init_script()], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


async def prepare_roles_for_a_non_superuser(admin_url: str) -> None:
    """In PostgreSQL 15 only members of a role may give it a schema; the image runs the script
    as the superuser, CI's server run as a role with CREATEROLE: make it a member first."""
    async with connected(admin_url) as connection:
        if await connection.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
            return
        for role in (*ROLES.values(), MONITOR, BACKUP):
            exists = await connection.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
            if not exists:
                await connection.execute(f'CREATE ROLE "{role}"')
            await connection.execute(f'GRANT "{role}" TO CURRENT_USER')


def role_url(admin_url: str, name: str) -> str:
    url = make_url(admin_url).set(username=ROLES[name], password=PASSWORDS[name])
    return url.render_as_string(hide_password=False)
