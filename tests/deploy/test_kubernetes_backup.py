"""The backup component as rendered in staging and production: the seed's daily 02:00 backup
with create, verify and prune in order, its volume, the browsing Deployment, the manual trigger,
and the restore Job template (valid, hardened, never applied by an overlay)."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from tests.helpers.kubernetes import (
    KUBERNETES,
    containers,
    mounted_secrets,
    named,
    of_kind,
    overlay,
    pod_spec,
)

RESTORE_TEMPLATE = KUBERNETES / "components" / "backup" / "restore-job.yaml"


@pytest.mark.parametrize("env", ["staging", "production"])
def test_daily_backup_create_verify_prune(env: str) -> None:
    cronjob = named(overlay(env), "CronJob", "postgres-backup")
    spec = cronjob["spec"]
    assert spec["schedule"] == "0 2 * * *"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] >= 1 and job["activeDeadlineSeconds"] > 0
    steps = [c["args"][:2] for c in containers(cronjob)]
    assert steps == [["backup", "create"], ["backup", "verify"], ["backup", "prune"]]
    for container in containers(cronjob):
        env_vars = {e["name"]: e for e in container["env"]}
        assert env_vars["EXPENSETRACKER_BACKUP_DIR"]["value"] == "/backup"
        assert env_vars["EXPENSETRACKER_BACKUP_RETENTION_DAYS"]["value"] == "7"
        # The database URL as a file where the settings look for it.
        folder = env_vars["EXPENSETRACKER_SECRETS_DIR"]["value"]
        assert {m["mountPath"] for m in container["volumeMounts"]} == {"/backup", "/tmp", folder}
    assert mounted_secrets(cronjob) == {
        "postgres-backup-db": {"url": "expensetracker_database_url"}
    }
    volumes = {v["name"]: v for v in pod_spec(cronjob)["volumes"]}
    claim = volumes["backup"]["persistentVolumeClaim"]["claimName"]
    assert named(overlay(env), "PersistentVolumeClaim", claim)["spec"]["resources"]


@pytest.mark.parametrize("env", ["staging", "production"])
def test_backups_can_be_listed_and_scraped(env: str) -> None:
    browser = named(overlay(env), "Deployment", "postgres-backup")
    [container] = pod_spec(browser)["containers"]
    assert container["args"][:2] == ["backup", "serve-metrics"]
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == "/backup"]
    assert mount["readOnly"] is True
    annotations = browser["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(container["ports"][0]["containerPort"])
    # The jobs share the browser's ReadWriteOnce volume: they run on its node.
    cronjob = named(overlay(env), "CronJob", "postgres-backup")
    [term] = pod_spec(cronjob)["affinity"]["podAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    labels = browser["spec"]["template"]["metadata"]["labels"]
    assert term["labelSelector"]["matchLabels"].items() <= labels.items()


def test_no_backup_in_development() -> None:
    assert of_kind(overlay("development"), "CronJob") == []


@pytest.mark.parametrize("version", ["1.32.0", "1.37.0"])
def test_restore_job_template_is_valid_and_hardened(version: str) -> None:
    [job] = [doc for doc in yaml.safe_load_all(RESTORE_TEMPLATE.read_text()) if doc]
    kubernetes_validate.validate(job, version, strict=True)
    spec = pod_spec(job)
    assert spec["securityContext"]["runAsUser"] == 65534
    assert spec["automountServiceAccountToken"] is False
    [container] = spec["containers"]
    assert container["args"][:2] == ["backup", "restore"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # A template: no overlay creates it by itself.
    component = (KUBERNETES / "components" / "backup" / "kustomization.yaml").read_text()
    assert "restore-job.yaml" not in yaml.safe_load(component)["resources"]
