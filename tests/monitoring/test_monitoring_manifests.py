"""The monitoring stack's manifests (deploy/monitoring/: a base and an overlay per environment),
rendered with kubectl kustomize and held to the application's rules: the seed's security
contexts, resources, probes, network policies, plus what the issue asks of each part, and what
sets the environments apart (host, links, Prometheus' `environment` label). Schema validation
and checkov run on every overlay with the others (tests/deploy/test_kubernetes_manifests.py)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers.kubernetes import (
    KUBERNETES,
    MONITORING,
    OVERLAYS,
    POD_SECURITY,
    REPO,
    WORKLOAD_KINDS,
    Manifest,
    argocd,
    containers,
    kustomize,
    monitoring,
    named,
    network_allows,
    of_kind,
    overlay,
    pod_labels,
    pod_spec,
    selects,
)
from tests.helpers.polling import eventually
from tests.helpers.processes import clean_env, free_port, spawn

# The only pods that read the host, through read-only hostPath volumes: node-exporter, and
# Alloy (the pods' log files).
HOST_READERS = {"node-exporter", "alloy"}
# Alloy reads the log files the container runtime writes as root:root 0640 through group 0,
# added to the seed's context (tests/monitoring/test_monitoring_logs_traces.py).
EXTRA_POD_SECURITY = {"alloy": {"supplementalGroups": [0]}}


def workloads() -> list[dict]:
    return of_kind(monitoring(), *WORKLOAD_KINDS)


def config_map(prefix: str) -> dict:
    [found] = [
        m
        for m in of_kind(monitoring(), "ConfigMap")
        if m["metadata"]["name"].startswith(prefix + "-")
    ]
    return found


def test_every_pod_is_hardened_like_the_application() -> None:
    names = set()
    for workload in workloads():
        name = workload["metadata"]["name"]
        names.add(name)
        spec = pod_spec(workload)
        assert spec["securityContext"] == POD_SECURITY | EXTRA_POD_SECURITY.get(name, {}), name
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), name
        for container in containers(workload):
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"] == {"drop": ["ALL"]}, name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), name
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe in container, (name, probe)
            tag = container["image"].rpartition(":")[2]
            assert tag and tag != "latest" and "/" not in tag, container["image"]
        host_paths = [v for v in spec.get("volumes", []) if "hostPath" in v]
        if name in HOST_READERS:
            mounts = {m["name"]: m for c in containers(workload) for m in c["volumeMounts"]}
            assert all(mounts[v["name"]]["readOnly"] for v in host_paths)
        else:
            assert not host_paths, name
        # Only the pods that read the API have a token.
        reads_api = name in {"prometheus", "kube-state-metrics"}
        assert spec["automountServiceAccountToken"] is reads_api, name
    assert names == {
        "prometheus",
        "alertmanager",
        "grafana",
        "kube-state-metrics",
        "node-exporter",
        "loki",
        "alloy",
        "tempo",
        "otel-collector",
    }


def test_prometheus_retention_storage_discovery_and_alerting() -> None:
    prometheus = named(monitoring(), "StatefulSet", "prometheus")
    [container] = pod_spec(prometheus)["containers"]
    assert "--storage.tsdb.retention.time=30d" in container["args"]
    [claim] = prometheus["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    config = yaml.safe_load(config_map("prometheus-config")["data"]["prometheus.yml"])
    assert config == yaml.safe_load((MONITORING / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    application = jobs["expensetracker"]
    assert application["kubernetes_sd_configs"][0]["role"] == "pod"
    keep = application["relabel_configs"][0]
    assert keep["source_labels"] == ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"]
    assert keep["action"] == "keep"
    [alertmanagers] = config["alerting"]["alertmanagers"]
    assert alertmanagers["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert named(monitoring(), "Service", "alertmanager")["spec"]["ports"][0]["port"] == 9093


def test_every_rule_file_and_dashboard_is_provisioned() -> None:
    rules = config_map("prometheus-rules")["data"]
    expected = {p.name for p in (MONITORING / "rules").glob("*.yaml")}
    assert expected and set(rules) == expected
    for name, text in rules.items():
        assert text == (MONITORING / "rules" / name).read_text()
    dashboards = config_map("grafana-dashboards")["data"]
    expected = {p.name for p in (MONITORING / "dashboards").glob("*.json")}
    assert expected and set(dashboards) == expected
    for text in dashboards.values():
        assert json.loads(text)["uid"]
    alertmanager = config_map("alertmanager-config")["data"]
    assert set(alertmanager) == {"alertmanager.yml"}


def test_grafana_admin_from_a_secret_provisioned_and_persistent() -> None:
    grafana = named(monitoring(), "Deployment", "grafana")
    [container] = pod_spec(grafana)["containers"]
    env = {e["name"]: e for e in container["env"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(grafana)["volumes"]}
    # As files, not environment variables (Grafana's <variable>__FILE).
    for name, key in (
        ("GF_SECURITY_ADMIN_USER", "admin-user"),
        ("GF_SECURITY_ADMIN_PASSWORD", "admin-password"),
    ):
        assert name not in env
        folder, file = env[f"{name}__FILE"]["value"].rsplit("/", 1)
        secret = volumes[mounts[folder]]["secret"]
        assert secret["secretName"] == "grafana-admin"
        assert {"key": key, "path": file} in secret["items"]
    assert env["GF_SERVER_ROOT_URL"]["value"].endswith("/grafana")
    assert container["envFrom"][0]["configMapRef"]["name"].startswith("grafana-plugins")
    assert volumes[mounts["/var/lib/grafana"]]["persistentVolumeClaim"]["claimName"] == "grafana"
    providers = yaml.safe_load(config_map("grafana-dashboard-providers")["data"]["dashboards.yaml"])
    [provider] = providers["providers"]
    dashboards_folder = provider["options"]["path"]
    assert volumes[mounts[dashboards_folder]]["configMap"]["name"].startswith("grafana-dashboards")
    sources = yaml.safe_load(config_map("grafana-datasources")["data"]["datasources.yaml"])
    source = next(s for s in sources["datasources"] if s["uid"] == "prometheus")
    assert source["type"] == "prometheus" and "prometheus:9090/prometheus" in source["url"]


# Each environment's monitoring host and scheme (deploy/monitoring/overlays/): TLS in staging and
# production (staging's certificate from Let's Encrypt's staging server, like its API's), plain
# HTTP on a .localhost host in development, like the application's overlays.
HOSTS = {
    "production": ("https", "monitoring.expensetracker.example.com"),
    "staging": ("https", "monitoring.staging.expensetracker.example.com"),
    "development": ("http", "monitoring.expensetracker.localhost"),
}
ISSUERS = {"production": "letsencrypt", "staging": "letsencrypt-staging"}


@pytest.mark.parametrize("env", OVERLAYS)
def test_monitoring_ingress_grafana_and_prometheus_behind_authentication(env: str) -> None:
    scheme, host = HOSTS[env]
    manifests = monitoring(env)
    ingresses = {i["metadata"]["name"]: i for i in of_kind(manifests, "Ingress")}
    assert set(ingresses) == {"grafana", "prometheus"}
    paths = {}
    for ingress in ingresses.values():
        [rule] = ingress["spec"]["rules"]
        assert rule["host"] == host
        redirect = ingress["metadata"]["annotations"][
            "nginx.ingress.kubernetes.io/force-ssl-redirect"
        ]
        if scheme == "https":
            assert ingress["spec"]["tls"] == [{"hosts": [host], "secretName": "monitoring-tls"}]
            assert redirect == "true"
        else:
            # No TLS section naming a Secret nothing creates, no redirect to an HTTPS that
            # would answer with the controller's self-signed certificate.
            assert "tls" not in ingress["spec"] and redirect == "false"
        for path in rule["http"]["paths"]:
            paths[path["path"]] = (ingress, path["backend"]["service"]["name"])
    assert {p: s for p, (_, s) in paths.items()} == {
        "/grafana": "grafana",
        "/prometheus": "prometheus",
    }
    annotations = paths["/prometheus"][0]["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/auth-type"] == "basic"
    secret = named(manifests, "Secret", annotations["nginx.ingress.kubernetes.io/auth-secret"])
    assert secret["stringData"]["auth"].startswith("prometheus:")
    certificates = of_kind(manifests, "Certificate")
    if scheme == "https":
        [certificate] = certificates
        assert certificate["spec"]["secretName"] == "monitoring-tls"
        assert certificate["spec"]["dnsNames"] == [host]
        assert certificate["spec"]["issuerRef"]["name"] == ISSUERS[env]
    else:
        assert certificates == []  # development has no cert-manager


def external_urls(manifests: tuple[Manifest, ...]) -> dict[str, str]:
    """The URLs Prometheus (alerts' links), Alertmanager (notifications' links) and Grafana
    (its links and redirects) say they are served at."""

    def flag(kind: str, name: str) -> str:
        [container] = pod_spec(named(manifests, kind, name))["containers"]
        [url] = [
            a.split("=", 1)[1] for a in container["args"] if a.startswith("--web.external-url=")
        ]
        return url

    [grafana] = pod_spec(named(manifests, "Deployment", "grafana"))["containers"]
    root = {e["name"]: e.get("value") for e in grafana["env"]}["GF_SERVER_ROOT_URL"]
    return {
        "prometheus": flag("StatefulSet", "prometheus"),
        "alertmanager": flag("StatefulSet", "alertmanager"),
        "grafana": root,
    }


@pytest.mark.parametrize("env", OVERLAYS)
def test_links_point_at_the_environments_own_host(env: str) -> None:
    scheme, host = HOSTS[env]
    assert external_urls(monitoring(env)) == {
        name: f"{scheme}://{host}/{name}" for name in ("prometheus", "alertmanager", "grafana")
    }


def test_no_two_environments_share_a_monitoring_host() -> None:
    """DNS and a certificate can name one cluster only: every host and URL is one
    environment's, and none is the application's."""
    seen: dict[str, str] = {}
    for env in OVERLAYS:
        manifests = monitoring(env)
        hosts = {r["host"] for i in of_kind(manifests, "Ingress") for r in i["spec"]["rules"]}
        hosts |= {h for c in of_kind(manifests, "Certificate") for h in c["spec"]["dnsNames"]}
        hosts |= {u.split("/")[2] for u in external_urls(manifests).values()}
        assert hosts == {HOSTS[env][1]}, (env, hosts)
        [host] = hosts
        assert host not in seen, f"{env} and {seen.get(host)} share {host}"
        seen[host] = env
        application = {
            r["host"] for i in of_kind(overlay(env), "Ingress") for r in i["spec"]["rules"]
        }
        assert host not in application


def prometheus_environment(manifests: tuple[Manifest, ...]) -> tuple[dict, list[str], str]:
    """Prometheus' rendered config, its arguments, and the value of its ENVIRONMENT variable,
    followed to the ConfigMap it names in the same render."""
    [container] = pod_spec(named(manifests, "StatefulSet", "prometheus"))["containers"]
    [variable] = [e for e in container["env"] if e["name"] == "ENVIRONMENT"]
    reference = variable["valueFrom"]["configMapKeyRef"]
    source = named(manifests, "ConfigMap", reference["name"])
    config = yaml.safe_load(
        next(
            m
            for m in of_kind(manifests, "ConfigMap")
            if m["metadata"]["name"].startswith("prometheus-config-")
        )["data"]["prometheus.yml"]
    )
    return config, container["args"], source["data"][reference["key"]]


@pytest.mark.parametrize("env", OVERLAYS)
def test_prometheus_labels_every_series_and_alert_with_its_environment(env: str) -> None:
    manifests = monitoring(env)
    config, args, value = prometheus_environment(manifests)
    assert value == env
    assert config["global"]["external_labels"] == {
        "cluster": "expensetracker",
        "environment": "${ENVIRONMENT}",
    }
    # Without the feature flag Prometheus would send the text "${ENVIRONMENT}" itself.
    assert "--enable-feature=expand-external-labels" in args
    # Every object says which environment it belongs to, like the application's.
    for manifest in manifests:
        assert manifest["metadata"]["labels"]["environment"] == env, manifest["metadata"]["name"]


async def test_prometheus_expands_the_environment_into_its_external_labels(
    tmp_path: Path,
) -> None:
    """A real Prometheus with staging's rendered global section, arguments and variable: the
    configuration it has loaded says `environment: staging`. (Debian's build has no Kubernetes
    discovery, so the scrape jobs are left out; the e2e test runs those.)"""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is needed: apt-get install prometheus"
    config, args, value = prometheus_environment(monitoring("staging"))
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({"global": config["global"]}))
    features = [a for a in args if a.startswith("--enable-feature=")]
    port = free_port()
    command = [
        binary,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        *features,
    ]
    with spawn(command, clean_env(ENVIRONMENT=value)) as process:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:

            async def loaded() -> dict:
                response = await client.get("/api/v1/status/config")
                # 503 "Service Unavailable", not JSON, until it has started: not yet.
                response.raise_for_status()
                return yaml.safe_load(response.json()["data"]["yaml"])

            config = await eventually(
                "prometheus's configuration", loaded, within=30, processes=(process,)
            )
    assert config["global"]["external_labels"] == {
        "cluster": "expensetracker",
        "environment": "staging",
    }


def test_overlays_change_no_field_a_running_stack_cannot_take() -> None:
    """A StatefulSet's selector and volumeClaimTemplates, and any selector, cannot change once
    created: the overlays leave them as the base has them (the environment label is on the
    objects only), so a cluster that ran the old single stack syncs to its overlay."""

    def fixed(manifests: tuple[Manifest, ...]) -> dict:
        return {
            (m["kind"], m["metadata"]["name"]): (
                m["spec"].get("selector"),
                m["spec"].get("volumeClaimTemplates"),
            )
            for m in of_kind(manifests, *WORKLOAD_KINDS)
        }

    base = fixed(tuple(kustomize(MONITORING)))
    assert any(claims for _, claims in base.values())
    for env in OVERLAYS:
        assert fixed(monitoring(env)) == base, env


def test_argocd_gives_each_cluster_its_environments_overlay() -> None:
    appsets = {m["metadata"]["name"]: m for m in of_kind(argocd(), "ApplicationSet")}
    stack, application = appsets["monitoring"], appsets["expensetracker"]
    [generator] = stack["spec"]["generators"]
    elements = {e["environment"]: e for e in generator["list"]["elements"]}
    assert set(elements) == set(OVERLAYS)
    [app_generator] = application["spec"]["generators"]
    app_elements = {e["environment"]: e for e in app_generator["list"]["elements"]}
    template = stack["spec"]["template"]
    paths = set()
    for env, element in elements.items():
        # The same cluster and revision as the application's environment.
        assert element["cluster"] == app_elements[env]["cluster"]
        assert element["targetRevision"] == app_elements[env]["targetRevision"]
        path = template["spec"]["source"]["path"].replace("{{ .environment }}", env)
        assert path == f"deploy/monitoring/overlays/{env}"
        assert (REPO / path / "kustomization.yaml").is_file()
        paths.add(path)
    assert len(paths) == len(OVERLAYS)
    # Named per cluster as before: a renamed Application is deleted with its stack.
    assert template["metadata"]["name"] == "monitoring-{{ .cluster }}"
    assert template["spec"]["destination"] == {"name": "{{ .cluster }}", "namespace": "monitoring"}


def test_network_policies_cover_every_pod_and_deny_by_default() -> None:
    policies = of_kind(monitoring(), "NetworkPolicy")
    deny = named(monitoring(), "NetworkPolicy", "default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    for workload in workloads():
        labels = pod_labels(workload)

        def selects(selector: dict, labels: dict = labels) -> bool:
            if not selector:
                return False
            if not selector.get("matchLabels", {}).items() <= labels.items():
                return False
            return all(
                labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", [])
            )

        assert any(selects(p["spec"]["podSelector"]) for p in policies), workload["metadata"]


def test_everything_in_the_monitoring_namespace_and_no_exposed_services() -> None:
    for manifest in monitoring():
        if manifest["kind"] in {"Namespace", "ClusterRole", "ClusterRoleBinding"}:
            continue
        assert manifest["metadata"]["namespace"] == "monitoring", manifest["kind"]
    for service in of_kind(monitoring(), "Service"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    # Cluster-wide rights: read-only, nothing else.
    for role in of_kind(monitoring(), "ClusterRole"):
        for rule in role["rules"]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, role["metadata"]["name"]


def test_placeholder_secrets_only() -> None:
    grafana = named(monitoring(), "Secret", "grafana-admin")["stringData"]
    assert grafana["admin-password"].startswith("dev-only-")
    assert Path(MONITORING / "kubernetes" / "secrets.yaml").read_text().count("dev-only") >= 2


def service_names() -> set[str]:
    """The services the base deploys: auth, expenses, reports and web."""
    base = tuple(kustomize(KUBERNETES / "base"))
    return {
        d["metadata"]["name"]
        for d in of_kind(base, "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/name"] == "expensetracker"
    }


def test_service_overview_shows_every_service() -> None:
    """The service dashboard lists services by their label, so a new one (web) appears by
    itself: no query or variable may narrow `service` or `component` to a fixed list
    (`=~"auth|expenses|..."`) that leaves one out."""
    names = service_names()
    assert names == {"auth", "expenses", "reports", "web"}
    board = json.loads((MONITORING / "dashboards" / "service-overview.json").read_text())
    panels = [*board["panels"], *(p for row in board["panels"] for p in row.get("panels", []))]
    queries = [t["expr"] for panel in panels for t in panel.get("targets", [])]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    queries += [v["query"]["query"] for v in variables.values()]
    enumeration = re.compile(r'\b(service|component)\s*=~\s*"([^"]*)"')
    for query in queries:
        for label, value in enumeration.findall(query):
            if "$" in value:
                continue  # a dashboard variable, checked below
            for name in names:
                assert re.fullmatch(value, name), f"{label}=~{value!r} leaves out {name}: {query}"
    service = variables["service"]
    assert service["includeAll"] and service["allValue"] == ".*" and not service["regex"]
    assert "label_values(http_requests_total" in service["query"]["query"]
    by_service = [q for q in queries if re.search(r"by \((?:service|service, le)\)", q)]
    assert len(by_service) >= 3, "requests, errors and latency per service"


# The ports of the pods CloudNativePG makes: PostgreSQL and its exporter on an instance,
# PgBouncer and its exporter on a Pooler's pod.
INSTANCE_PORTS = {"postgresql": 5432, "metrics": 9187}
POOLER_PORTS = {"pgbouncer": 5432, "metrics": 9127}


def application_pods(manifests: tuple[Manifest, ...]) -> list[tuple[str, dict, dict, dict]]:
    """Each kind of pod a render makes: its name, labels, annotations and named ports, the
    operator's (from a Cluster's inheritedMetadata, a Pooler's template) included."""
    pods = []
    for workload in of_kind(manifests, *WORKLOAD_KINDS):
        template = workload["spec"]
        if workload["kind"] == "CronJob":
            template = template["jobTemplate"]["spec"]
        metadata = template["template"]["metadata"]
        ports = {
            p.get("name", str(p["containerPort"])): p["containerPort"]
            for c in containers(workload)
            for p in c.get("ports", [])
        }
        pods.append(
            (
                workload["metadata"]["name"],
                pod_labels(workload),
                metadata.get("annotations", {}),
                ports,
            )
        )
    for cluster in of_kind(manifests, "Cluster"):
        name, inherited = cluster["metadata"]["name"], cluster["spec"]["inheritedMetadata"]
        labels = inherited["labels"] | {"cnpg.io/cluster": name, "cnpg.io/podRole": "instance"}
        pods.append((name, labels, inherited.get("annotations", {}), INSTANCE_PORTS))
    for pooler in of_kind(manifests, "Pooler"):
        name, metadata = pooler["metadata"]["name"], pooler["spec"]["template"]["metadata"]
        labels = metadata["labels"] | {"cnpg.io/poolerName": name}
        pods.append((name, labels, metadata.get("annotations", {}), POOLER_PORTS))
    return pods


def scrape_targets(manifests: tuple[Manifest, ...]) -> list[tuple[str, dict, int]]:
    """What Prometheus scrapes in a render, as (pod, labels, port number): the pods its
    `expensetracker` job keeps by their prometheus.io/scrape annotation, on their
    prometheus.io/port (its relabel rules, prometheus/prometheus.yml), and the endpoints of any
    PodMonitor or ServiceMonitor, a named port resolved through the Service and the pod."""
    pods = application_pods(manifests)
    targets = [
        (name, labels, int(annotations["prometheus.io/port"]))
        for name, labels, annotations, _ in pods
        if annotations.get("prometheus.io/scrape") == "true"
    ]

    def resolve(port: str | int, named_ports: dict) -> int:
        return port if isinstance(port, int) else named_ports[port]

    for monitor in of_kind(manifests, "PodMonitor"):
        for name, labels, _, ports in pods:
            if selects(monitor["spec"]["selector"], labels):
                for endpoint in monitor["spec"]["podMetricsEndpoints"]:
                    port = endpoint.get("portNumber", endpoint.get("port"))
                    targets.append((name, labels, resolve(port, ports)))
    for monitor in of_kind(manifests, "ServiceMonitor"):
        for service in of_kind(manifests, "Service"):
            if not selects(monitor["spec"]["selector"], service["metadata"].get("labels", {})):
                continue
            by_name = {p.get("name"): p for p in service["spec"]["ports"]}
            for endpoint in monitor["spec"]["endpoints"]:
                service_port = by_name[endpoint["port"]]
                target_port = service_port.get("targetPort", service_port["port"])
                for name, labels, _, ports in pods:
                    # A Service's selector is a plain map of labels.
                    if selects({"matchLabels": service["spec"]["selector"]}, labels):
                        targets.append((name, labels, resolve(target_port, ports)))
    return targets


@pytest.mark.parametrize("env", OVERLAYS)
def test_prometheus_may_reach_every_port_it_scrapes_in_the_application(env: str) -> None:
    """Every scrape of the application's namespace passes both ends' network policies:
    Prometheus' egress (monitoring) and the target's ingress from Prometheus (expensetracker).
    A port left out means a target that is down forever (BackupMissing and PgBouncer's alerts
    firing for nothing, or never firing)."""
    prometheus = ("monitoring", pod_labels(named(monitoring(), "StatefulSet", "prometheus")))
    policies = [*of_kind(monitoring(), "NetworkPolicy"), *of_kind(overlay(env), "NetworkPolicy")]
    targets = scrape_targets(overlay(env))
    ports = {port for _, _, port in targets}
    assert {8000} <= ports and (env == "development" or {9127, 9187, 9188} <= ports), ports
    for name, labels, port in targets:
        assert network_allows(policies, prometheus, ("expensetracker", labels), port), (name, port)
    # The check itself: a port Prometheus may not reach is refused, by either end.
    [(name, labels, _)] = [t for t in targets if t[0] == "web"]
    assert not network_allows(policies, prometheus, ("expensetracker", labels), 9999)


def test_scrape_targets_follow_monitors_named_ports_to_their_numbers() -> None:
    """The PodMonitor and ServiceMonitor path of scrape_targets, on made-up monitors of web."""
    manifests = overlay("production")
    pod_monitor = {
        "kind": "PodMonitor",
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/component": "web"}},
            "podMetricsEndpoints": [{"port": "http"}],
        },
    }
    service_monitor = {
        "kind": "ServiceMonitor",
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/component": "web"}},
            "endpoints": [{"port": "http"}],
        },
    }
    annotated = len(scrape_targets(manifests))
    targets = scrape_targets((*manifests, pod_monitor, service_monitor))
    assert [(t[0], t[2]) for t in targets[annotated:]] == [("web", 8000), ("web", 8000)]
