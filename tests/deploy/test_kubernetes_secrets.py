"""Secrets reach the pods of staging and production as files, never as environment variables
(checkov's CKV_K8S_35, enforced): each service mounts its own Secrets where
EXPENSETRACKER_SECRETS_DIR points, one file per setting, and a real process serves from such a
folder alone; the PostgreSQL exporter reads its password from a file too, checked with the real
exporter."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import make_url

from expensetracker.platform.config import Settings
from tests.helpers.kubernetes import (
    WORKLOAD_KINDS,
    containers,
    mounted_secrets,
    named,
    of_kind,
    overlay,
    pod_spec,
    secret_environment,
)
from tests.helpers.polling import eventually
from tests.helpers.processes import clean_env, cli, free_port, spawn

STORE_OVERLAYS = ("staging", "production")
SETTINGS_FILES = {f"expensetracker_{name}" for name in Settings.model_fields}


@pytest.mark.parametrize("env", STORE_OVERLAYS)
def test_no_secret_reaches_a_container_through_its_environment(env: str) -> None:
    workloads = of_kind(overlay(env), *WORKLOAD_KINDS)
    assert len(workloads) >= 6
    for workload in workloads:
        assert secret_environment(workload) == [], workload["metadata"]["name"]


@pytest.mark.parametrize("env", STORE_OVERLAYS)
def test_our_containers_read_their_secrets_from_files_named_like_their_settings(env: str) -> None:
    """Every container of our image that reads the settings mounts its pod's Secrets read-only
    where its EXPENSETRACKER_SECRETS_DIR points, and each file is named after a setting."""
    checked = set()
    for workload in of_kind(overlay(env), *WORKLOAD_KINDS):
        for container in containers(workload):
            reads_settings = any(
                source.get("configMapRef", {}).get("name") == "expensetracker-config"
                for source in container.get("envFrom", [])
            )
            if not reads_settings:
                continue
            env_vars = {e["name"]: e.get("value") for e in container.get("env", [])}
            folder = env_vars["EXPENSETRACKER_SECRETS_DIR"]
            mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
            assert mounts[folder]["readOnly"] is True, (workload["metadata"]["name"], container)
            files = {path for keys in mounted_secrets(workload).values() for path in keys.values()}
            assert "expensetracker_database_url" in files or workload["metadata"]["name"] == "web"
            assert files <= SETTINGS_FILES, files - SETTINGS_FILES
            checked.add(workload["metadata"]["name"])
    assert checked >= {"auth", "expenses", "reports", "web", "postgres-backup"}


@pytest.mark.parametrize("env", STORE_OVERLAYS)
def test_reports_get_the_read_only_pooler_as_their_read_url(env: str) -> None:
    reports = named(overlay(env), "Deployment", "reports")
    assert mounted_secrets(reports)["reports-db"] == {
        "url": "expensetracker_database_url",
        "read-url": "expensetracker_database_read_url",
    }
    template = named(overlay(env), "ExternalSecret", "reports-db")["spec"]["target"]["template"]
    assert make_url(template["data"]["url"]).host == "postgres-pooler-rw"
    assert make_url(template["data"]["read-url"]).host == "postgres-pooler-ro"
    assert named(overlay(env), "Pooler", "postgres-pooler-ro")["spec"]["type"] == "ro"
    # Only reports: the other services have no path that may lag the primary.
    for name in ("auth", "expenses"):
        files = mounted_secrets(named(overlay(env), "Deployment", name))[f"{name}-db"]
        assert "expensetracker_database_read_url" not in files.values()


def _files_as_mounted(workload: dict, values: dict[str, str], folder: Path) -> Path:
    """The folder the pod would see: one file per mounted key, with ``values`` by file name."""
    files = {path for keys in mounted_secrets(workload).values() for path in keys.values()}
    assert files == set(values)
    folder.mkdir()
    for name, value in values.items():
        (folder / name).write_text(value)
    return folder


@pytest.mark.database
async def test_a_service_serves_from_the_secret_files_its_pod_mounts(
    database_url: str, tmp_path: Path
) -> None:
    """`serve --target reports` in production with no secret in its environment: its database
    URLs come from files named as its pod mounts them."""
    reports = named(overlay("production"), "Deployment", "reports")
    # The test servers trust their local clients: a password that is no placeholder is sent,
    # as production's are, and ignored.
    url = make_url(database_url)
    url = url.set(password=url.password or "a-real-password-from-the-store-7d1c")
    real = url.render_as_string(hide_password=False)
    folder = _files_as_mounted(
        reports,
        {"expensetracker_database_url": real, "expensetracker_database_read_url": real},
        tmp_path / "secrets",
    )
    env = clean_env(
        EXPENSETRACKER_ENV="production",
        EXPENSETRACKER_SECRETS_DIR=str(folder),
        EXPENSETRACKER_AUTH_URL="http://127.0.0.1:9",
    )
    assert real not in "".join(env.values())
    port = str(free_port())
    with spawn(cli("serve", "--target", "reports", "--port", port), env) as process:
        base = process.wait_ready()
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            ready = await client.get("/readyz")
        process.signal(signal.SIGTERM)
        assert process.wait() == 0, process.output
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "migrations:reports": "ok"}
    assert url.password not in process.output

    # Without the folder, the same process refuses to start: the files were what it read.
    env.pop("EXPENSETRACKER_SECRETS_DIR")
    with spawn(cli("serve", "--target", "reports", "--port", port), env) as process:
        assert process.wait() == 2
    assert "EXPENSETRACKER_DATABASE_URL is not set" in process.output


@pytest.mark.database
async def test_the_exporter_reads_its_password_from_the_mounted_file(
    database_url: str, tmp_path: Path
) -> None:
    """The real prometheus-postgres-exporter with the rendered Deployment's environment: the
    URI (here the test server's), the user, and the password from a file where the pod mounts
    it."""
    exporter = named(overlay("production"), "Deployment", "postgres-exporter")
    [container] = pod_spec(exporter)["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert set(env) == {"DATA_SOURCE_URI", "DATA_SOURCE_USER", "DATA_SOURCE_PASS_FILE"}
    assert make_url(f"postgresql://{env['DATA_SOURCE_URI']}").host == "postgres-rw"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    [file] = mounted_secrets(exporter)["postgres-exporter-db"].values()
    assert env["DATA_SOURCE_PASS_FILE"] == f"{mounts['secrets']}/{file}"

    url = make_url(database_url)
    password = tmp_path / file
    password.write_text(url.password or "")
    uri = url.set(drivername="postgresql", username=None, password=None).update_query_dict(
        {"sslmode": "disable"}
    )
    binary = shutil.which("prometheus-postgres-exporter")
    assert binary, "apt-get install prometheus-postgres-exporter (make test-deps)"
    port = free_port()
    exporter_env = clean_env(
        DATA_SOURCE_URI=uri.render_as_string().removeprefix("postgresql://"),
        DATA_SOURCE_USER=url.username or "",
        DATA_SOURCE_PASS_FILE=str(password),
    )
    with spawn([binary, f"--web.listen-address=127.0.0.1:{port}"], exporter_env) as process:
        async with httpx.AsyncClient(timeout=10) as client:

            async def scraped() -> str:
                return (await client.get(f"http://127.0.0.1:{port}/metrics")).text

            metrics = await eventually(
                "the exporter serving its metrics", scraped, within=20, processes=(process,)
            )
    assert "\npg_up 1" in metrics, process.output[-2000:]

    # The file is read (the test servers trust their local clients, so no password is checked
    # here): without it the exporter does not start.
    password.unlink()
    with spawn([binary, f"--web.listen-address=127.0.0.1:{port}"], exporter_env) as process:
        assert process.wait() != 0
    assert str(password) in process.output
