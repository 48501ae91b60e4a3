"""Argo CD's order for the CloudNativePG path, on the rendered manifests: the operator (its own
Application, at the validated version), then the secrets and the cluster, then the services,
each migrating in its initContainer before it serves."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.helpers.kubernetes import (
    KUBERNETES,
    REPO,
    WORKLOAD_KINDS,
    argocd,
    of_kind,
    overlay,
    pod_spec,
)

WAVE = "argocd.argoproj.io/sync-wave"
CLUSTER_KINDS = {"Cluster", "Database", "Pooler", "ObjectStore", "ScheduledBackup"}
# The CloudNativePG version the manifests were validated against (docs/deploy.md).
OPERATOR = ("v1.27.0", "cnpg-1.27.0.yaml")
PLUGIN = "v0.7.0"


def wave(manifest: dict) -> int:
    return int(manifest["metadata"].get("annotations", {}).get(WAVE, "0"))


def cnpg_environments() -> set[str]:
    """The overlays that run the database on CloudNativePG."""
    found = set()
    for folder in (KUBERNETES / "overlays").iterdir():
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        if "../../components/cloudnative-pg" in kustomization.get("components", []):
            found.add(folder.name)
    return found


@pytest.mark.parametrize("env", sorted(cnpg_environments()))
def test_secrets_then_the_cluster_then_the_migrating_services(env: str) -> None:
    manifests = overlay(env)
    cluster_waves = {wave(m) for m in manifests if m["kind"] in CLUSTER_KINDS}
    assert len(cluster_waves) == 1, cluster_waves
    [cluster_wave] = cluster_waves
    secrets = of_kind(manifests, "ExternalSecret", "SecretStore")
    assert secrets and max(map(wave, secrets)) < cluster_wave
    workloads = of_kind(manifests, *WORKLOAD_KINDS)
    assert min(map(wave, workloads)) > cluster_wave
    # Migrations: each API service's first step, before its container serves.
    for deployment in of_kind(manifests, "Deployment"):
        name = deployment["metadata"]["name"]
        if name in ("auth", "expenses", "reports"):
            [migrate] = pod_spec(deployment)["initContainers"]
            assert migrate["args"] == ["migrate", "--target", name]


def test_the_operator_has_its_own_application_at_the_validated_version() -> None:
    appsets = {m["metadata"]["name"]: m for m in of_kind(argocd(), "ApplicationSet")}
    operator = appsets["cloudnative-pg"]
    # Before the environments', when a root Application syncs deploy/argocd.
    assert wave(operator) < wave(appsets["expensetracker"])
    [generator] = operator["spec"]["generators"]
    clusters = {e["cluster"] for e in generator["list"]["elements"]}
    environments = {
        e["environment"]: e["cluster"]
        for e in appsets["expensetracker"]["spec"]["generators"][0]["list"]["elements"]
    }
    assert clusters == {environments[env] for env in cnpg_environments()}
    template = operator["spec"]["template"]["spec"]
    sources = {s["repoURL"].rsplit("/", 1)[1]: s for s in template["sources"]}
    assert (
        sources["cloudnative-pg.git"]["targetRevision"],
        sources["cloudnative-pg.git"]["directory"]["include"],
    ) == OPERATOR
    assert sources["plugin-barman-cloud.git"]["targetRevision"] == PLUGIN
    for source in sources.values():  # a tag, never a branch that moves
        assert re.fullmatch(r"v\d+\.\d+\.\d+", source["targetRevision"]), source
    assert template["destination"]["namespace"] == "cnpg-system"
    assert template["syncPolicy"]["automated"]["prune"] is False
    assert "ServerSideApply=true" in template["syncPolicy"]["syncOptions"]
    [project] = [
        m for m in of_kind(argocd(), "AppProject") if m["metadata"]["name"] == "cloudnative-pg"
    ]
    assert set(project["spec"]["sourceRepos"]) == {s["repoURL"] for s in template["sources"]}
    allowed = {(r["group"], r["kind"]) for r in project["spec"]["clusterResourceWhitelist"]}
    assert ("apiextensions.k8s.io", "CustomResourceDefinition") in allowed
    # The docs name the same versions.
    docs = (REPO / "docs" / "deploy.md").read_text()
    assert OPERATOR[1] in docs and PLUGIN in docs
