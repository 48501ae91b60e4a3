"""Every overlay and component renders with kubectl kustomize, and every object is valid: the
Kubernetes OpenAPI schemas of two versions (strict), the upstream CRD schemas for the custom
resources, and checkov on the production render."""

from __future__ import annotations

import ipaddress
import json
from collections import Counter
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest

from tests.helpers.kubernetes import (
    COMPONENTS,
    KUBERNETES,
    OVERLAYS,
    REPO,
    Manifest,
    argocd,
    checkov,
    component,
    every_render,
    is_custom,
    kustomize,
    monitoring,
    overlay,
)
from tests.helpers.paths import CRD_SCHEMAS

# The oldest Kubernetes still in wide use by the clouds, and the newest.
KUBERNETES_VERSIONS = ("1.32.0", "1.37.0")
CHECKOV_CONFIG = REPO / "deploy" / "kubernetes" / ".checkov.yaml"


def test_every_overlay_and_component_renders() -> None:
    for name in OVERLAYS:
        kinds = Counter(m["kind"] for m in overlay(name))
        # The four services (auth, expenses, reports, web); in staging and production also the
        # database exporter and the backups' browser, with the backup CronJob, and the
        # database is CloudNativePG's cluster instead of the single StatefulSet.
        single = name == "development"
        assert kinds["Deployment"] == (4 if single else 6), (name, kinds)
        assert kinds["CronJob"] == (0 if single else 1), (name, kinds)
        assert (kinds["StatefulSet"], kinds["Cluster"]) == ((1, 0) if single else (0, 1)), kinds
        # The public Ingress, and the one refusing web's /livez, /readyz and /metrics.
        assert kinds["Ingress"] == 2 and kinds["NetworkPolicy"] >= 9, (name, kinds)
    # Each component adds what it is for on top of the base.
    adds = {
        "network-policies": "NetworkPolicy",
        "autoscaling": "HorizontalPodAutoscaler",
        "tls": "Certificate",
        "external-secrets": "ExternalSecret",
        "monitoring": "Deployment",
        "backup": "CronJob",
        "cloudnative-pg": "Cluster",
    }
    assert set(adds) <= set(COMPONENTS)
    for name in COMPONENTS:
        assert (REPO / "deploy" / "kubernetes" / "components" / name / "README.md").is_file()
        if name in adds:
            assert any(m["kind"] == adds[name] for m in component(name)), name


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_objects_match_the_kubernetes_schemas(version: str) -> None:
    checked = 0
    for render, manifests in every_render().items():
        for manifest in manifests:
            if is_custom(manifest):
                continue
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{render}: {manifest['kind']}/{manifest['metadata']['name']}: {error}")
            checked += 1
    assert checked > 100


def _crd_schema(manifest: Manifest) -> dict:
    group, version = manifest["apiVersion"].split("/")
    path = CRD_SCHEMAS / group / f"{manifest['kind'].lower()}_{version}.json"
    assert path.is_file(), f"no upstream schema for {manifest['apiVersion']} {manifest['kind']}"
    return json.loads(path.read_text())


def test_custom_resources_match_their_upstream_crd_schemas() -> None:
    renders = every_render() | {"argocd": argocd()}
    validated = Counter()
    for render, manifests in renders.items():
        for manifest in filter(is_custom, manifests):
            schema = _crd_schema(manifest)
            validator = jsonschema.validators.validator_for(schema)(schema)
            errors = sorted(validator.iter_errors(manifest), key=lambda e: list(e.path))
            assert not errors, f"{render}: {manifest['kind']}: " + "; ".join(
                f"{list(e.path)}: {e.message}" for e in errors
            )
            validated[manifest["kind"]] += 1
    expected = {
        "AppProject",
        "ApplicationSet",
        "Application",
        "ClusterIssuer",
        "Certificate",
        "ExternalSecret",
        "SecretStore",
        "Cluster",
        "Pooler",
        "Database",
        "ScheduledBackup",
        "ObjectStore",
    }
    assert expected <= set(validated), validated


def test_crd_schemas_are_strict_enough_to_catch_a_mistake() -> None:
    """The vendored schemas reject what the API server would: a misspelt field, a bad type."""
    [certificate] = [m for m in component("tls") if m["kind"] == "Certificate"]
    schema = _crd_schema(certificate)
    broken = json.loads(json.dumps(certificate))
    broken["spec"]["dnsName"] = broken["spec"].pop("dnsNames")
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))
    broken = json.loads(json.dumps(certificate))
    broken["spec"]["duration"] = 2160
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


@pytest.mark.parametrize("render", ["production", *(f"monitoring/{env}" for env in OVERLAYS)])
def test_checkov_passes_on_the_production_render(render: str, tmp_path: Path) -> None:
    """The production overlay, and the monitoring stack beside it in every environment (each
    cluster runs its own overlay of it)."""
    kind, _, env = render.partition("/")
    manifests = monitoring(env) if kind == "monitoring" else overlay(render)
    report, stderr, returncode = checkov(
        manifests, tmp_path / f"{kind}-{env}.yaml", "--config-file", str(CHECKOV_CONFIG)
    )
    reports = report if isinstance(report, list) else [report]
    summary = Counter()
    failed = []
    for entry in reports:
        for key in ("passed", "failed", "skipped"):
            summary[key] += entry["summary"][key]
        failed += [
            f"{c['check_id']} {c['resource']}: {c['check_name']}"
            for c in entry["results"]["failed_checks"]
        ]
    assert not failed, "\n".join(failed)
    assert summary["passed"] > 200, summary
    # Every skip is listed, with its reason, in deploy/kubernetes/.checkov.yaml.
    assert returncode == 0, stderr[-2000:]


def test_forwarded_headers_are_trusted_from_the_ingress_controller_only() -> None:
    """No environment trusts X-Forwarded-For from everyone: each overlay names its ingress
    controller's addresses, and the base trusts no proxy (issue 13, finding 5)."""
    base_config = next(
        m
        for m in kustomize(KUBERNETES / "base")
        if m["kind"] == "ConfigMap" and m["metadata"]["name"] == "expensetracker-config"
    )
    assert "EXPENSETRACKER_FORWARDED_ALLOW_IPS" not in base_config["data"]
    for name in OVERLAYS:
        config = next(
            m
            for m in overlay(name)
            if m["kind"] == "ConfigMap" and m["metadata"]["name"] == "expensetracker-config"
        )
        value = config["data"]["EXPENSETRACKER_FORWARDED_ALLOW_IPS"]
        for entry in value.split(","):
            network = ipaddress.ip_network(entry.strip())  # an address or network, never "*"
            assert network.is_private and network.prefixlen >= 8, (name, entry)


# What the API server accepts under each ResourceQuota scope (Kubernetes'
# IsResourceQuotaScopeValidForResource, pkg/apis/core/helper): the pod scopes take only the pod
# count and compute; BestEffort only the pod count. A quota naming anything else under one of
# them (`services` under a PriorityClass scope, say) is refused as a whole, and then none of its
# limits is enforced.
POD_COUNT = {"pods", "count/pods"}
POD_COMPUTE = {"cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"}
SCOPE_ALLOWS = {
    "Terminating": POD_COUNT | POD_COMPUTE,
    "NotTerminating": POD_COUNT | POD_COMPUTE,
    "NotBestEffort": POD_COUNT | POD_COMPUTE,
    "PriorityClass": POD_COUNT | POD_COMPUTE,
    "CrossNamespacePodAffinity": POD_COUNT | POD_COMPUTE,
    "BestEffort": POD_COUNT,
}


def test_every_scoped_quota_names_only_what_its_scopes_allow() -> None:
    scoped = 0
    for render, manifests in every_render().items():
        for quota in (m for m in manifests if m["kind"] == "ResourceQuota"):
            spec = quota["spec"]
            scopes = [
                *spec.get("scopes", []),
                *(
                    e["scopeName"]
                    for e in spec.get("scopeSelector", {}).get("matchExpressions", [])
                ),
            ]
            for scope in scopes:
                refused = set(spec["hard"]) - SCOPE_ALLOWS[scope]
                assert not refused, f"{render}: {quota['metadata']['name']}: {scope} {refused}"
                scoped += 1
    assert scoped >= 2  # the application's and the database's quotas in the cluster renders
