"""The deployment's requirements, asserted on what kubectl kustomize renders for every overlay:
the seed's security contexts, resources, probes, quota and autoscaling numbers, labels, network
policies, secrets, Ingress routing, and the Argo CD promotion path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import TypeAdapter
from sqlalchemy import make_url

from expensetracker import __version__
from expensetracker.platform.config import Settings, is_placeholder
from expensetracker.targets import SERVICES
from tests.helpers.kubernetes import (
    KUBERNETES,
    OVERLAYS,
    POD_SECURITY,
    WORKLOAD_KINDS,
    Manifest,
    argocd,
    containers,
    mounted_secrets,
    named,
    of_kind,
    overlay,
    pod_labels,
    pod_spec,
)

REQUIRED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/component",
    "app.kubernetes.io/version",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "environment",
)
REPLICAS = {"development": 1, "staging": 2, "production": 3}
# Each environment's own host (tests/deploy/test_kubernetes_environments.py: none shared).
HOSTS = {
    "development": "api.expensetracker.localhost",
    "staging": "api.staging.expensetracker.example.com",
    "production": "api.expensetracker.example.com",
}
# The services with a database (a migrate initContainer, a role of their own), and web, which
# calls their APIs and has none.
API_SERVICES = ("auth", "expenses", "reports")
WEB = "web"
QUOTA = {
    "requests.cpu": "4",
    "requests.memory": "8Gi",
    "limits.cpu": "8",
    "limits.memory": "16Gi",
    "pods": "20",
    "services": "10",
}
pytestmark = pytest.mark.parametrize("env", OVERLAYS)


def workloads(env: str) -> list[Manifest]:
    return of_kind(overlay(env), *WORKLOAD_KINDS)


def services(env: str) -> list[Manifest]:
    return [
        d
        for d in of_kind(overlay(env), "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/name"] == "expensetracker"
    ]


def config(env: str) -> dict[str, str]:
    return named(overlay(env), "ConfigMap", "expensetracker-config")["data"]


def cpu(value: str) -> float:
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


def memory(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([KMG]i)?", value).groups()
    return int(number) * {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}[unit]


def test_every_pod_and_container_has_the_seeds_security_context(env: str) -> None:
    for workload in workloads(env):
        spec = pod_spec(workload)
        assert spec["securityContext"] == POD_SECURITY, workload["metadata"]["name"]
        assert spec["automountServiceAccountToken"] is False
        for container in containers(workload):
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, container["name"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"] == {"drop": ["ALL"]}
            assert security.get("privileged", False) is False
            # Read-only root: the only writable places are volumes.
            assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])


def test_resources_set_everywhere_and_images_pinned(env: str) -> None:
    for workload in workloads(env):
        for container in containers(workload):
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[kind]), container["name"]
            image = container["image"]
            name, _, tag = image.rpartition(":")
            assert name and "/" not in tag and tag not in ("", "latest"), image
    application_images = {
        c["image"] for d in services(env) for c in containers(d) if "expensetracker" in c["image"]
    }
    assert application_images == {"registry.example.com/expensetracker/expensetracker:0.1.0"}


def test_service_deployments_probes_rollout_and_shutdown(env: str) -> None:
    settings = config(env)
    drain = float(settings.get("EXPENSETRACKER_SHUTDOWN_DRAIN_SECONDS", "5"))
    timeout = float(settings["EXPENSETRACKER_SHUTDOWN_TIMEOUT_SECONDS"])
    for deployment in services(env):
        spec = pod_spec(deployment)
        [container] = spec["containers"]
        probes = {
            kind: container[kind]["httpGet"]["path"]
            for kind in ("startupProbe", "livenessProbe", "readinessProbe")
        }
        assert probes == {
            "startupProbe": "/livez",
            "livenessProbe": "/livez",
            "readinessProbe": "/readyz",
        }
        assert deployment["spec"]["strategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
        }
        # Not ready while still serving, then in-flight requests, before SIGKILL.
        assert spec["terminationGracePeriodSeconds"] >= drain + timeout + 5
        assert deployment["spec"]["replicas"] == REPLICAS[env]
        affinity = spec["affinity"]["podAntiAffinity"]
        [term] = affinity["preferredDuringSchedulingIgnoredDuringExecution"]
        assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == pod_labels(
            deployment
        ) | {} or set(term["podAffinityTerm"]["labelSelector"]["matchLabels"].items()) <= set(
            pod_labels(deployment).items()
        )
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(container["ports"][0]["containerPort"])
        assert annotations["prometheus.io/path"] == "/metrics"
        target = deployment["metadata"]["name"]
        assert container["args"] == ["serve", "--target", target, *SERVE_ADDRESS]
        if target == WEB:
            assert "initContainers" not in spec  # no database, nothing to migrate
        else:
            [migrate] = spec["initContainers"]
            assert migrate["args"] == ["migrate", "--target", target]
    assert sorted(d["metadata"]["name"] for d in services(env)) == [*API_SERVICES, WEB]


# How many imports a service pod's /tmp holds at once (docs/deploy.md, service-defaults.yaml):
# more than an expenses pod spools at once (one per turn on its pool), about what web's memory
# holds (it reads each uploaded file into memory).
IMPORTS_PER_POD = 20


def test_tmp_holds_the_imports_a_pod_takes_at_once(env: str) -> None:
    """Import bodies past their first MiB are spooled to /tmp, up to the import body limit each;
    a pod writing past its emptyDir's sizeLimit is evicted with every request in flight."""
    settings = config(env)
    fields = Settings.model_fields
    largest = int(
        settings.get(
            "EXPENSETRACKER_MAX_IMPORT_BODY_BYTES", fields["max_import_body_bytes"].default
        )
    )
    turns = int(settings.get("EXPENSETRACKER_DB_POOL_SIZE", fields["db_pool_size"].default))
    turns += int(settings.get("EXPENSETRACKER_DB_MAX_OVERFLOW", fields["db_max_overflow"].default))
    assert turns <= IMPORTS_PER_POD  # expenses spools one import per turn at most
    for deployment in services(env):
        [tmp] = [v for v in pod_spec(deployment)["volumes"] if v["name"] == "tmp"]
        limit = memory(tmp["emptyDir"]["sizeLimit"])
        assert "medium" not in tmp["emptyDir"]  # on disk, not in the pod's memory
        assert limit >= IMPORTS_PER_POD * largest, (deployment["metadata"]["name"], limit)


def test_web_has_no_database_and_reaches_the_apis_by_their_services(env: str) -> None:
    web = named(overlay(env), "Deployment", WEB)
    [container] = pod_spec(web)["containers"]
    assert [e["name"] for e in container["env"]] == ["EXPENSETRACKER_SECRETS_DIR"]
    assert mounted_secrets(web) == {"web-session": {"key": "expensetracker_web_session_key"}}
    assert container["envFrom"] == [{"configMapRef": {"name": "expensetracker-config"}}]
    settings = config(env)
    for name in API_SERVICES:
        url = settings[f"EXPENSETRACKER_{name.upper()}_URL"]
        port = named(overlay(env), "Service", name)["spec"]["ports"][0]["port"]
        assert url == f"http://{name}:{port}", url
    assert "EXPENSETRACKER_DATABASE_URL" not in settings


SERVE_ADDRESS = ("--host", "0.0.0.0", "--port", "8000")


def test_labels_on_every_workload_and_pod(env: str) -> None:
    for workload in workloads(env):
        for labels in (workload["metadata"]["labels"], pod_labels(workload)):
            assert set(REQUIRED_LABELS) <= set(labels), workload["metadata"]["name"]
            assert labels["environment"] == env
            assert labels["app.kubernetes.io/managed-by"] == "argocd"
            assert labels["app.kubernetes.io/part-of"] == "expensetracker"
            # The application's own version, not the seed's "1.0" (docs/deploy.md, departures).
            assert labels["app.kubernetes.io/version"] == __version__


def test_everything_namespaced_in_expensetracker(env: str) -> None:
    cluster_scoped = {"Namespace"}
    for manifest in overlay(env):
        if manifest["kind"] not in cluster_scoped:
            assert manifest["metadata"].get("namespace") == "expensetracker", manifest["kind"]
    assert [n["metadata"]["name"] for n in of_kind(overlay(env), "Namespace")] == ["expensetracker"]


def test_quota_limit_range_and_worst_case_fit(env: str) -> None:
    # Split in two: pods and compute (scoped to the application's pods where the database has
    # a quota of its own), and the Services count, which no such scope may carry.
    quota = named(overlay(env), "ResourceQuota", "expensetracker")
    objects = named(overlay(env), "ResourceQuota", "expensetracker-objects")
    assert quota["spec"]["hard"] | objects["spec"]["hard"] == QUOTA
    assert objects["spec"] == {"hard": {"services": QUOTA["services"]}}
    assert of_kind(overlay(env), "LimitRange")
    # At the HPA maximum the quota admits 20 pods: the other pods (the database, the exporter)
    # and as many of the largest service pods as remain must fit its CPU and memory.
    others = [w for w in workloads(env) if w not in services(env)]
    largest = max(
        (c["resources"] for d in services(env) for c in containers(d)),
        key=lambda r: cpu(r["limits"]["cpu"]),
    )
    fixed = [c["resources"] for w in others for c in pod_spec(w)["containers"]]
    service_pods = int(QUOTA["pods"]) - len(others)
    for scope in ("requests", "limits"):
        total_cpu = sum(cpu(r[scope]["cpu"]) for r in fixed) + service_pods * cpu(
            largest[scope]["cpu"]
        )
        total_memory = sum(memory(r[scope]["memory"]) for r in fixed) + service_pods * memory(
            largest[scope]["memory"]
        )
        assert total_cpu <= cpu(QUOTA[f"{scope}.cpu"]), (scope, total_cpu)
        assert total_memory <= memory(QUOTA[f"{scope}.memory"]), (scope, total_memory)
    if env != "development":
        database_pods_fit_their_own_quota(env, quota)


def database_pods_fit_their_own_quota(env: str, application_quota: Manifest) -> None:
    """CloudNativePG's pods are not in the render: the Cluster and Poolers say what they run.
    They are left out of the application's quota and fit the database's, with one instance
    more while the operator replaces one."""
    priority = named(overlay(env), "Cluster", "postgres")["spec"]["priorityClassName"]
    [scope] = application_quota["spec"]["scopeSelector"]["matchExpressions"]
    assert scope == {"scopeName": "PriorityClass", "operator": "NotIn", "values": [priority]}
    quota = named(overlay(env), "ResourceQuota", "expensetracker-database")["spec"]
    [scope] = quota["scopeSelector"]["matchExpressions"]
    assert scope == {"scopeName": "PriorityClass", "operator": "In", "values": [priority]}
    cluster = named(overlay(env), "Cluster", "postgres")["spec"]
    [store] = of_kind(overlay(env), "ObjectStore")
    instance = [cluster["resources"], store["spec"]["instanceSidecarConfiguration"]["resources"]]
    pods = [instance] * (cluster["instances"] + 1)
    for pooler in of_kind(overlay(env), "Pooler"):
        template = pooler["spec"]["template"]["spec"]
        assert template["priorityClassName"] == priority
        pods += [[c["resources"] for c in template["containers"]]] * pooler["spec"]["instances"]
    assert len(pods) <= int(quota["hard"]["pods"])
    for scope in ("requests", "limits"):
        used_cpu = sum(cpu(r[scope]["cpu"]) for pod in pods for r in pod)
        used_memory = sum(memory(r[scope]["memory"]) for pod in pods for r in pod)
        assert used_cpu <= cpu(quota["hard"][f"{scope}.cpu"]), (scope, used_cpu)
        assert used_memory <= memory(quota["hard"][f"{scope}.memory"]), (scope, used_memory)


def test_the_database_has_the_seeds_resources_and_storage(env: str) -> None:
    """The single instance in development; elsewhere the CloudNativePG cluster's instances."""
    seed = {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "2000m", "memory": "4Gi"},
    }
    if env == "development":
        postgres = named(overlay(env), "StatefulSet", "postgres")
        [container] = pod_spec(postgres)["containers"]
        assert container["resources"] == seed
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["exec"]["command"][0] == "pg_isready"
        [claim] = postgres["spec"]["volumeClaimTemplates"]
        assert claim["spec"]["storageClassName"]
        assert claim["spec"]["resources"]["requests"]["storage"]
        return
    assert of_kind(overlay(env), "StatefulSet") == []
    cluster = named(overlay(env), "Cluster", "postgres")["spec"]
    assert cluster["resources"] == seed
    assert cluster["instances"] == {"staging": 2, "production": 3}[env]
    assert cluster["affinity"]["podAntiAffinityType"] == "required"
    assert cluster["affinity"]["topologyKey"] == "kubernetes.io/hostname"
    assert cluster["enablePDB"] is True
    assert cluster["storage"]["storageClass"] and cluster["storage"]["size"]
    assert (cluster["postgresUID"], cluster["postgresGID"]) == (65534, 65534)
    assert cluster["seccompProfile"] == {"type": "RuntimeDefault"}
    assert cluster["enableSuperuserAccess"] is False


def test_every_pooler_reaches_its_cluster_through_an_enabled_service(env: str) -> None:
    """A Pooler of type rw or ro connects to its Cluster's `<cluster>-rw` or `<cluster>-ro`
    Service, which the operator does not create when the Cluster lists that type in
    disabledDefaultServices: the Pooler, and whoever connects through it, would get nowhere."""
    poolers = of_kind(overlay(env), "Pooler")
    if env == "development":
        assert poolers == []
        return
    assert {p["spec"]["type"] for p in poolers} == {"rw", "ro"}
    for pooler in poolers:
        cluster = named(overlay(env), "Cluster", pooler["spec"]["cluster"]["name"])
        services = cluster["spec"].get("managed", {}).get("services", {})
        disabled = services.get("disabledDefaultServices", [])
        assert pooler["spec"]["type"] not in disabled, (pooler["metadata"]["name"], disabled)


def test_disruption_budgets_wherever_replicas_exceed_one(env: str) -> None:
    budgets = {p["metadata"]["name"]: p for p in of_kind(overlay(env), "PodDisruptionBudget")}
    for deployment in services(env):
        name = deployment["metadata"]["name"]
        if deployment["spec"]["replicas"] > 1:
            selector = budgets[name]["spec"]["selector"]["matchLabels"]
            assert selector.items() <= pod_labels(deployment).items()
        else:
            assert name not in budgets  # one replica: a budget would only block drains


def test_autoscaling_numbers(env: str) -> None:
    autoscalers = of_kind(overlay(env), "HorizontalPodAutoscaler")
    if env == "development":
        assert autoscalers == []
        return
    assert {a["spec"]["scaleTargetRef"]["name"] for a in autoscalers} == {
        d["metadata"]["name"] for d in services(env)
    }
    for autoscaler in autoscalers:
        spec = autoscaler["spec"]
        targets = {
            m["resource"]["name"]: m["resource"]["target"]["averageUtilization"]
            for m in spec["metrics"]
        }
        assert targets == {"cpu": 70, "memory": 80}
        assert (spec["minReplicas"], spec["maxReplicas"]) == (
            (2, 10) if env == "production" else (2, 4)
        )
        assert spec["behavior"]["scaleUp"]["stabilizationWindowSeconds"] > 0
        assert (
            spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"]
            > spec["behavior"]["scaleUp"]["stabilizationWindowSeconds"]
        )


def test_no_node_ports_or_load_balancers(env: str) -> None:
    for service in of_kind(overlay(env), "Service"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", service["metadata"]


def test_one_service_account_per_workload_and_no_api_access(env: str) -> None:
    accounts = {a["metadata"]["name"]: a for a in of_kind(overlay(env), "ServiceAccount")}
    used = [pod_spec(w)["serviceAccountName"] for w in workloads(env)]
    assert len(used) == len(set(used)), used
    for name in used:
        assert accounts[name]["automountServiceAccountToken"] is False
    # No pod here talks to the Kubernetes API: no roles at all, and nothing cluster-wide.
    kinds = {m["kind"] for m in overlay(env)}
    assert not kinds & {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


def cloudnative_pg_pods(env: str) -> dict[str, dict[str, str]]:
    """The labels of the pods that CloudNativePG makes from the Cluster and the Poolers."""
    pods = {}
    for cluster in of_kind(overlay(env), "Cluster"):
        name = cluster["metadata"]["name"]
        inherited = cluster["spec"]["inheritedMetadata"]["labels"]
        pods[name] = inherited | {"cnpg.io/cluster": name, "cnpg.io/podRole": "instance"}
    for pooler in of_kind(overlay(env), "Pooler"):
        name = pooler["metadata"]["name"]
        labels = pooler["spec"]["template"]["metadata"]["labels"]
        pods[name] = labels | {"cnpg.io/poolerName": name}
    return pods


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    if not selector:
        return True
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        if operator == "In":
            matches = labels.get(key) in expression["values"]
        elif operator == "NotIn":
            matches = labels.get(key) not in expression["values"]
        elif operator == "Exists":
            matches = key in labels
        else:
            assert operator == "DoesNotExist", operator
            matches = key not in labels
        if not matches:
            return False
    return True


def _allowed(policies: list[Manifest], source: dict, target: dict, port: int) -> bool:
    """Whether ``source`` pod labels (with a namespace label) may reach ``target`` on ``port``:
    ingress at the target and egress at the source must both allow it."""

    def peer_matches(peer: dict, labels: dict) -> bool:
        namespace = labels.get("namespace", "expensetracker")
        if "namespaceSelector" in peer:
            if not _selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace}):
                return False
        elif namespace != "expensetracker":
            return False
        return _selects(peer.get("podSelector", {}), labels)

    def direction_allows(labels: dict, kind: str, peer_labels: dict) -> bool:
        applicable = [
            p
            for p in policies
            if kind.capitalize() in p["spec"]["policyTypes"]
            and _selects(p["spec"]["podSelector"], labels)
        ]
        if labels.get("namespace", "expensetracker") != "expensetracker":
            return True  # outside this namespace: not ours to restrict
        return any(
            any(
                peer_matches(peer, peer_labels)
                for peer in rule.get("from" if kind == "ingress" else "to", [])
            )
            and any(p["port"] == port for p in rule.get("ports", []))
            for policy in applicable
            for rule in policy["spec"].get(kind, [])
        )

    return direction_allows(target, "ingress", source) and direction_allows(
        source, "egress", target
    )


def test_network_policies_deny_by_default_and_allow_only_the_flows(env: str) -> None:
    policies = of_kind(overlay(env), "NetworkPolicy")
    deny = named(overlay(env), "NetworkPolicy", "default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    for workload in workloads(env):
        labels = pod_labels(workload)
        specific = [
            p
            for p in policies
            if p["spec"]["podSelector"] and _selects(p["spec"]["podSelector"], labels)
        ]
        assert specific, f"no NetworkPolicy selects {workload['metadata']['name']}"
    pods = {d["metadata"]["name"]: pod_labels(d) for d in workloads(env)} | cloudnative_pg_pods(env)
    # The services' database endpoint: the instance, or the cluster's read-write PgBouncer.
    endpoint = pods.get("postgres-pooler-rw", pods["postgres"])
    operator = {"namespace": "cnpg-system", "app.kubernetes.io/name": "cloudnative-pg"}
    controller = {"namespace": "ingress-nginx", "app.kubernetes.io/name": "ingress-nginx"}
    prometheus = {"namespace": "monitoring", "app.kubernetes.io/name": "prometheus"}
    # The backup CronJob's pods and the hand-run restore Job's (backup component, its
    # restore-job.yaml template) dump and restore the database.
    backup = {"app.kubernetes.io/name": "postgres-backup", "app.kubernetes.io/component": "backup"}
    restore = {
        "app.kubernetes.io/name": "postgres-restore",
        "app.kubernetes.io/component": "backup",
    }
    dns = {"namespace": "kube-system", "k8s-app": "kube-dns"}
    for name in (*API_SERVICES, WEB):
        assert _allowed(policies, controller, pods[name], 8000)
        assert _allowed(policies, prometheus, pods[name], 8000)
        assert _allowed(policies, pods[name], dns, 53)
    for name in API_SERVICES:
        assert _allowed(policies, pods[name], endpoint, 5432)
        if endpoint is not pods["postgres"]:  # through the pooler only
            assert not _allowed(policies, pods[name], pods["postgres"], 5432)
            assert _allowed(policies, endpoint, pods["postgres"], 5432)
            assert _allowed(policies, operator, endpoint, 8000)
            assert _allowed(policies, prometheus, endpoint, 9127)
    assert not _allowed(policies, controller, endpoint, 5432)
    for name in ("expenses", "reports"):
        assert _allowed(policies, pods[name], pods["auth"], 8000)  # the JWKS
    assert not _allowed(policies, pods["auth"], pods["reports"], 8000)
    # web calls the three APIs and nothing else: not the database, not the exporter; and no
    # other service calls web.
    for name in API_SERVICES:
        assert _allowed(policies, pods[WEB], pods[name], 8000)
        assert not _allowed(policies, pods[name], pods[WEB], 8000)
    assert not _allowed(policies, pods[WEB], endpoint, 5432)
    for name, labels in pods.items():
        if name not in API_SERVICES:
            for port in (8000, 5432, 9187, 9188):
                assert not _allowed(policies, pods[WEB], labels, port), (name, port)
    assert _allowed(policies, backup, pods["postgres"], 5432)
    assert _allowed(policies, restore, pods["postgres"], 5432)
    for workload in workloads(env):
        if workload["kind"] == "CronJob" and workload["metadata"]["name"] == "postgres-backup":
            assert _allowed(policies, pod_labels(workload), pods["postgres"], 5432)
        # The backups' browser reads its volume and serves metrics: no database, at either end.
        if workload["kind"] == "Deployment" and workload["metadata"]["name"] == "postgres-backup":
            browser = pod_labels(workload)
            assert browser["app.kubernetes.io/component"] == "backup"
            for database in (pods["postgres"], endpoint):
                assert not _allowed(policies, browser, database, 5432)
                assert not any(
                    _selects(peer.get("podSelector", {}), browser)
                    for policy in policies
                    if _selects(policy["spec"]["podSelector"], database)
                    for rule in policy["spec"].get("ingress", [])
                    for peer in rule.get("from", [])
                    if "namespaceSelector" not in peer
                )
    if "postgres-exporter" in pods:
        assert _allowed(policies, prometheus, pods["postgres-exporter"], 9187)
        assert _allowed(policies, pods["postgres-exporter"], pods["postgres"], 5432)
        assert not _allowed(policies, controller, pods["postgres-exporter"], 9187)
    if "postgres-pooler-rw" in pods:
        # Replication between instances, the operator's status checks, the scrapes.
        assert _allowed(policies, pods["postgres"], pods["postgres"], 5432)
        assert _allowed(policies, operator, pods["postgres"], 8000)
        assert _allowed(policies, prometheus, pods["postgres"], 9187)
        assert not _allowed(policies, operator, pods["postgres"], 5432)
    stranger = {"namespace": "default", "app": "anything"}
    for name, labels in pods.items():
        assert not _allowed(policies, stranger, labels, 8000), name
        assert not _allowed(policies, stranger, labels, 5432), name


def test_secrets_are_placeholders_or_come_from_the_store(env: str) -> None:
    secrets = of_kind(overlay(env), "Secret")
    if env == "development":
        assert {s["metadata"]["name"] for s in secrets} >= {
            "postgres-admin",
            "auth-db",
            "expenses-db",
            "reports-db",
            "auth-keys",
            "web-session",
            "postgres-exporter-db",
            "postgres-backup-db",
        }
        for secret in secrets:
            for key, value in secret["stringData"].items():
                if key == "url":
                    assert is_placeholder(make_url(value).password), secret["metadata"]["name"]
                elif key not in ("username", "admin-user"):
                    assert is_placeholder(value), (secret["metadata"]["name"], key)
        return
    # Staging and production: not one Secret in Git, every one from an ExternalSecret.
    assert secrets == []
    made = {e["spec"]["target"]["name"] for e in of_kind(overlay(env), "ExternalSecret")}
    referenced = {name for workload in workloads(env) for name in mounted_secrets(workload)}
    assert referenced <= made, referenced - made


def test_each_pod_gets_only_its_own_secrets(env: str) -> None:
    for deployment in services(env):
        name = deployment["metadata"]["name"]
        own = {"auth": {"auth-db", "auth-keys"}, WEB: {"web-session"}}
        assert set(mounted_secrets(deployment)) == own.get(name, {f"{name}-db"}), name


def test_environment_settings(env: str) -> None:
    settings = config(env)
    assert settings["EXPENSETRACKER_ENV"] == env
    assert (
        settings["EXPENSETRACKER_LOG_LEVEL"]
        == {
            "development": "DEBUG",
            "staging": "INFO",
            "production": "WARNING",
        }[env]
    )
    # Interactive API docs (/docs) in development only (the SPEC), decided as the settings do:
    # the variable when set, else on in development alone.
    docs = settings.get("EXPENSETRACKER_DOCS_ENABLED")
    enabled = TypeAdapter(bool).validate_python(docs) if docs is not None else env == "development"
    assert enabled is (env == "development"), docs


def test_ingress_routes_exactly_the_spec_prefixes_with_tls_and_limits(env: str) -> None:
    ingress = named(overlay(env), "Ingress", "expensetracker")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/limit-rpm"] == "100"
    # HTTPS wherever there is a certificate (staging, production); development is plain HTTP.
    https = "true" if env != "development" else "false"
    assert annotations["nginx.ingress.kubernetes.io/force-ssl-redirect"] == https
    # A browser's requests stay on one web replica, where its token refreshes are single-flight.
    assert annotations["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    assert annotations["nginx.ingress.kubernetes.io/affinity-mode"] == "persistent"
    assert annotations["nginx.ingress.kubernetes.io/session-cookie-secure"] == https
    namespace, name = annotations["nginx.ingress.kubernetes.io/custom-headers"].split("/")
    headers = named(overlay(env), "ConfigMap", name)["data"]
    assert namespace == "expensetracker"
    assert {
        "Strict-Transport-Security",
        "X-Content-Type-Options",
        "X-Frame-Options",
        "Referrer-Policy",
    } <= set(headers)
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == HOSTS[env]
    [tls] = ingress["spec"].get("tls", [{"hosts": [rule["host"]], "secretName": None}])
    assert tls["hosts"] == [rule["host"]]
    assert ("tls" in ingress["spec"]) is (env != "development")
    routes = {path["path"]: path["backend"]["service"]["name"] for path in rule["http"]["paths"]}
    assert {path["pathType"] for path in rule["http"]["paths"]} == {"Prefix"}
    # The same prefixes the API services answer, from the code itself; everything else is the
    # web app's. The longest matching prefix wins, so / takes only what no API prefix does.
    expected = {prefix: spec.name for spec in SERVICES.values() for prefix in spec.path_prefixes}
    expected["/"] = WEB
    assert {p.rstrip("/") or "/": s for p, s in routes.items()} == {
        p.rstrip("/") or "/": s for p, s in expected.items()
    }
    # Inside only: no API prefix covers them, and web's (which / would reach) are refused to
    # every address by the other Ingress, whose more specific paths nginx picks first.
    internal = ("/livez", "/readyz", "/metrics")
    api_prefixes = [p.rstrip("/") for p in routes if p != "/"]
    for path in internal:
        assert not any(path == p or path.startswith(p + "/") for p in api_prefixes), path
    [refusing] = [i for i in of_kind(overlay(env), "Ingress") if i is not ingress]
    refusals = refusing["metadata"]["annotations"]
    assert set(refusals["nginx.ingress.kubernetes.io/denylist-source-range"].split(",")) == {
        "0.0.0.0/0",
        "::/0",
    }
    assert not any("snippet" in key for key in refusals)
    assert refusing["spec"]["ingressClassName"] == ingress["spec"]["ingressClassName"]
    assert refusing["spec"].get("tls") == ingress["spec"].get("tls")
    [refused] = refusing["spec"]["rules"]
    assert refused["host"] == rule["host"]
    assert sorted(path["path"] for path in refused["http"]["paths"]) == sorted(internal)
    assert {path["pathType"] for path in refused["http"]["paths"]} == {"Prefix"}
    if env != "development":
        certificate = named(overlay(env), "Certificate", tls["secretName"])
        assert certificate["spec"]["dnsNames"] == tls["hosts"]
        issuer = "letsencrypt" if env == "production" else "letsencrypt-staging"
        assert certificate["spec"]["issuerRef"] == {
            "group": "cert-manager.io",
            "kind": "ClusterIssuer",
            "name": issuer,
        }


def test_ingress_tls_secrets_exist_and_redirects_have_somewhere_to_go(env: str) -> None:
    """An Ingress naming a TLS Secret that nothing in its environment creates is served with the
    controller's self-signed default certificate; redirecting to HTTPS without TLS sends every
    browser there. Each TLS Secret comes from the render (a Secret, or a cert-manager
    Certificate writing it), and only an Ingress with TLS redirects to HTTPS."""
    made = {s["metadata"]["name"] for s in of_kind(overlay(env), "Secret")}
    made |= {c["spec"]["secretName"] for c in of_kind(overlay(env), "Certificate")}
    made |= {e["spec"]["target"]["name"] for e in of_kind(overlay(env), "ExternalSecret")}
    for ingress in of_kind(overlay(env), "Ingress"):
        name = ingress["metadata"]["name"]
        tls = ingress["spec"].get("tls", [])
        for entry in tls:
            assert entry["secretName"] in made, (name, entry["secretName"])
        annotations = ingress["metadata"].get("annotations", {})
        for redirect in ("ssl-redirect", "force-ssl-redirect"):
            if annotations.get(f"nginx.ingress.kubernetes.io/{redirect}") == "true":
                assert tls, (name, redirect)
        if annotations.get("nginx.ingress.kubernetes.io/session-cookie-secure") == "true":
            assert tls, name  # a Secure cookie never comes back over HTTP


def test_cors_names_only_origins_this_environment_serves(env: str) -> None:
    """A CORS origin is a page allowed to call the APIs from elsewhere; one that nothing serves
    is either dead configuration or a name someone else may register. The web app is served
    from the APIs' own host (same origin), so none is needed; any that is set must be one of
    this environment's hosts."""
    served = {
        f"{scheme}://{rule['host']}"
        for ingress in of_kind(overlay(env), "Ingress")
        for rule in ingress["spec"]["rules"]
        for scheme in (["https"] if ingress["spec"].get("tls") else ["http", "https"])
    }
    origins = [
        o.strip() for o in config(env).get("EXPENSETRACKER_CORS_ORIGINS", "").split(",") if o
    ]
    for ingress in of_kind(overlay(env), "Ingress"):
        annotations = ingress["metadata"].get("annotations", {})
        if annotations.get("nginx.ingress.kubernetes.io/enable-cors") == "true":
            # ingress-nginx's default origin, when none is named, is every origin.
            allowed = annotations.get("nginx.ingress.kubernetes.io/cors-allow-origin", "*")
            origins += [o.strip() for o in allowed.split(",")]
    for origin in origins:
        assert origin in served, (origin, served)


def test_argocd_generates_this_environment_with_its_own_revision(env: str) -> None:
    [project] = [
        m
        for m in argocd()
        if m["kind"] == "AppProject" and m["metadata"]["name"] == "expensetracker"
    ]
    assert project["spec"]["clusterResourceWhitelist"] == [{"group": "", "kind": "Namespace"}]
    assert len(project["spec"]["sourceRepos"]) == 1
    assert {d["namespace"] for d in project["spec"]["destinations"]} == {"expensetracker"}
    assert {r["name"] for r in project["spec"]["roles"]} >= {"developer", "release-manager"}
    [appset] = [
        m
        for m in argocd()
        if m["kind"] == "ApplicationSet" and m["metadata"]["name"] == "expensetracker"
    ]
    [generator] = appset["spec"]["generators"]
    elements = {e["environment"]: e for e in generator["list"]["elements"]}
    assert set(elements) == set(OVERLAYS)
    element = elements[env]
    path = appset["spec"]["template"]["spec"]["source"]["path"].replace("{{ .environment }}", env)
    assert (Path(KUBERNETES.parents[1]) / path / "kustomization.yaml").is_file()
    assert element["automated"] is (env != "production")
    revisions = [e["targetRevision"] for e in elements.values()]
    assert len(set(revisions)) == len(revisions)  # promotion moves a revision, per environment
    # The patch that turns automated sync on, for the elements that ask for it.
    template_patch = appset["spec"]["templatePatch"]
    assert template_patch.lstrip().startswith("{{- if .automated }}")
    patch = yaml.safe_load(
        "\n".join(line for line in template_patch.splitlines() if "{{" not in line)
    )
    assert patch["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
