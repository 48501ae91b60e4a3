"""Logs and traces in the monitoring stack (deploy/monitoring/): Loki fed by Alloy, Tempo fed
by the OpenTelemetry Collector, both provisioned in Grafana, and the services' traces sent
there by the tracing component (deploy/kubernetes/components/tracing/).

What runs here and what cannot: no Alloy, Loki, Tempo or collector binary can be had from the
package registries this project uses (PyPI, Debian, npm). So the log pipeline's own stages are
applied to a real log line of ours by tests/helpers/alloy.py (its regexes with Python's re, its JSON
expressions with the jmespath library), and the collector's configuration is checked against
the structure its documentation defines (components declared before use, each of a kind the
image has, every pipeline complete, endpoints that match the Services). The rendered objects go
through the Kubernetes schemas and checkov with the rest
(tests/deploy/test_kubernetes_manifests.py)."""

from __future__ import annotations

import json
import re

import httpx
import pytest
import yaml

from tests.helpers.admission import constraints, expanded, matches
from tests.helpers.alloy import parse, process
from tests.helpers.kubernetes import (
    KUBERNETES,
    MONITORING,
    monitoring,
    named,
    of_kind,
    overlay,
    pod_spec,
)
from tests.helpers.polling import eventually
from tests.helpers.processes import cli, free_port, request_lines, serve_env, spawn
from tests.helpers.users import JWKS_ROUTE

ALLOY_CONFIG = MONITORING / "alloy" / "config.alloy"
LABELS = {"namespace", "container", "stream", "service", "level"}
STRUCTURED_METADATA = {"pod", "request_id", "trace_id"}


def config_map(prefix: str) -> dict:
    [found] = [
        m
        for m in of_kind(monitoring(), "ConfigMap")
        if m["metadata"]["name"].startswith(prefix + "-")
    ]
    return found


def mounted_config(workload: str, kind: str, prefix: str) -> tuple[dict, str]:
    """The workload's container, and the folder its ``<prefix>-config`` ConfigMap is in."""
    spec = pod_spec(named(monitoring(), kind, workload))
    [container] = spec["containers"]
    [volume] = [v for v in spec["volumes"] if "configMap" in v and v["name"] == "config"]
    assert volume["configMap"]["name"] == config_map(prefix)["metadata"]["name"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "config"]
    return container, mount["mountPath"]


def data_volume(workload: str) -> str:
    statefulset = named(monitoring(), "StatefulSet", workload)
    [claim] = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    [container] = pod_spec(statefulset)["containers"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == claim["metadata"]["name"]]
    return mount["mountPath"]


# --- logs -----------------------------------------------------------------------------------


def test_loki_keeps_30_days_on_its_volume_with_structured_metadata() -> None:
    container, folder = mounted_config("loki", "StatefulSet", "loki-config")
    assert f"-config.file={folder}/loki.yaml" in container["args"]
    config = yaml.safe_load(config_map("loki-config")["data"]["loki.yaml"])
    assert config == yaml.safe_load((MONITORING / "loki" / "loki.yaml").read_text())
    assert config["limits_config"]["retention_period"] == "720h"
    assert config["compactor"]["retention_enabled"] is True
    assert config["limits_config"]["allow_structured_metadata"] is True
    [schema] = config["schema_config"]["configs"]
    assert schema["schema"] == "v13" and schema["store"] == "tsdb"  # structured metadata needs both
    root = data_volume("loki")
    filesystem = config["common"]["storage"]["filesystem"]
    for path in (config["common"]["path_prefix"], *filesystem.values()):
        assert path.startswith(root), path
    assert config["compactor"]["working_directory"].startswith(root)
    port = config["server"]["http_listen_port"]
    assert named(monitoring(), "Service", "loki")["spec"]["ports"][0]["port"] == port


def test_alloy_reads_every_nodes_pod_logs_read_only_and_pushes_to_loki() -> None:
    daemonset = named(monitoring(), "DaemonSet", "alloy")
    container, folder = mounted_config("alloy", "DaemonSet", "alloy-config")
    assert container["args"][:2] == ["run", f"{folder}/config.alloy"]
    spec = pod_spec(daemonset)
    assert {"operator": "Exists"} in spec["tolerations"]
    [logs] = [v for v in spec["volumes"] if "hostPath" in v]
    assert logs["hostPath"]["path"] == "/var/log/pods"
    [mount] = [m for m in container["volumeMounts"] if m["name"] == logs["name"]]
    assert mount == {"name": logs["name"], "mountPath": "/var/log/pods", "readOnly": True}
    # Root-owned 0640 log files, read through group 0: no root user, no capability.
    assert spec["securityContext"]["runAsUser"] == 65534
    assert spec["securityContext"]["supplementalGroups"] == [0]
    assert spec["automountServiceAccountToken"] is False

    config = parse(ALLOY_CONFIG.read_text())
    assert config_map("alloy-config")["data"]["config.alloy"] == ALLOY_CONFIG.read_text()
    [target] = config.find("local.file_match", "pods").attributes["path_targets"]
    assert target["__path__"].startswith(mount["mountPath"] + "/")
    url = config.find("loki.write", "loki").find("endpoint").attributes["url"]
    loki_port = named(monitoring(), "Service", "loki")["spec"]["ports"][0]["port"]
    assert url == f"http://loki:{loki_port}/loki/api/v1/push"


def pod_log_path(namespace: str, pod: str, container: str) -> str:
    return f"/var/log/pods/{namespace}_{pod}_0b7e3c8a-5f1d-4e0a-9c57-1f0d2a3b4c5d/{container}/0.log"


def cri(line: str, stream: str = "stderr") -> str:
    """A line as the container runtime writes it to the pod's log file."""
    return f"2026-12-02T05:41:43.123456789Z {stream} F {line}"


@pytest.mark.database
async def test_a_real_request_log_line_becomes_labels_and_structured_metadata(
    database_url: str,
) -> None:
    env = serve_env(database_url)
    with spawn(cli("serve", "--target", "auth", "--port", str(free_port())), env) as auth:
        url = auth.wait_ready()
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            response = await client.get(JWKS_ROUTE)
        assert response.status_code == 200
        request_id = response.headers["X-Request-ID"]
        # The line is written once the response has gone: wait for it, then stop the server.

        async def logged() -> list[dict]:
            return [
                line for line in request_lines(auth, JWKS_ROUTE) if line["request_id"] == request_id
            ]

        logged_lines = await eventually(
            "the request's log line", logged, within=30, processes=(auth,)
        )
        auth.stop()
    [logged] = logged_lines
    [line] = [text for text in auth.lines if text.startswith("{") and json.loads(text) == logged]

    config = parse(ALLOY_CONFIG.read_text())
    pod = "auth-7d9f8b6c4-x2k8q"
    entry = process(
        config,
        "pods",
        filename=pod_log_path("expensetracker", pod, "auth"),
        line=cri(line),
    )
    assert entry.labels == {
        "namespace": "expensetracker",
        "container": "auth",
        "stream": "stderr",
        "service": "auth",
        "level": "info",
    }
    assert entry.structured_metadata == {
        "pod": pod,
        "request_id": request_id,
        "trace_id": logged["trace_id"],
    }
    assert re.fullmatch(r"[0-9a-f]{32}", entry.structured_metadata["trace_id"])
    assert entry.line == line  # the JSON line itself is stored, every field searchable


def test_other_namespaces_lines_keep_their_text_and_get_no_service_label() -> None:
    config = parse(ALLOY_CONFIG.read_text())
    plain = "I1202 05:41:43.123456 1 controller.go:42] synced"
    entry = process(
        config,
        "pods",
        filename=pod_log_path("kube-system", "coredns-5d78c9869d-abcde", "coredns"),
        line=cri(plain, "stdout"),
    )
    assert entry.labels == {"namespace": "kube-system", "container": "coredns", "stream": "stdout"}
    assert entry.structured_metadata == {"pod": "coredns-5d78c9869d-abcde"}
    assert entry.line == plain


def test_ids_are_never_labels_anywhere_in_the_pipeline() -> None:
    """A label per request id or trace id would make a Loki stream per request."""
    config = parse(ALLOY_CONFIG.read_text())

    def label_stages(blocks):
        for block in blocks:
            if block.name == "stage.labels":
                yield from block.attributes["values"]
            yield from label_stages(block.blocks)

    labelled = set(label_stages(config.find("loki.process", "pods").blocks))
    assert labelled == LABELS - {"stream"}  # stream: the cri stage's own label
    assert not labelled & STRUCTURED_METADATA


def logql_selectors(query: str) -> set[str]:
    """The label names in a LogQL query's stream selectors ({...})."""
    names = set()
    for selector in re.findall(r"\{([^{}]*)\}", query.replace("${", "$(")):
        names |= set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"", selector))
    return names


def test_grafana_links_log_lines_to_traces_and_spans_to_log_lines() -> None:
    sources = yaml.safe_load(config_map("grafana-datasources")["data"]["datasources.yaml"])
    by_uid = {source["uid"]: source for source in sources["datasources"]}
    assert set(by_uid) == {"prometheus", "loki", "tempo"}
    loki, tempo = by_uid["loki"], by_uid["tempo"]
    assert loki["type"] == "loki" and loki["url"] == "http://loki:3100"
    assert tempo["type"] == "tempo" and tempo["url"] == "http://tempo:3200"
    [derived] = loki["jsonData"]["derivedFields"]
    # From the trace_id structured metadata to Tempo; `$$` is Grafana's escaped `$`.
    assert derived["matcherType"] == "label" and derived["matcherRegex"] == "trace_id"
    assert derived["datasourceUid"] == "tempo" and derived["url"] == "$${__value.raw}"
    to_logs = tempo["jsonData"]["tracesToLogsV2"]
    assert to_logs["datasourceUid"] == "loki" and to_logs["customQuery"] is True
    query = to_logs["query"]
    assert logql_selectors(query) <= LABELS
    assert re.search(r'\| trace_id="\$\$\{__trace\.traceId\}"', query)


def test_the_service_overview_has_a_logs_row_on_loki() -> None:
    board = json.loads((MONITORING / "dashboards" / "service-overview.json").read_text())
    rows = [panel["title"] for panel in board["panels"] if panel["type"] == "row"]
    assert rows[-1] == "Logs"
    start = next(i for i, p in enumerate(board["panels"]) if p.get("title") == "Logs")
    logs_row = board["panels"][start + 1 :]
    assert {panel["type"] for panel in logs_row} == {"logs", "timeseries"}
    for panel in logs_row:
        assert panel["datasource"] == {"type": "loki", "uid": "loki"}
        for target in panel["targets"]:
            assert logql_selectors(target["expr"]) <= LABELS
            assert 'namespace="expensetracker"' in target["expr"]
            assert 'service=~"$service"' in target["expr"]


# --- traces ---------------------------------------------------------------------------------

# The components of otel/opentelemetry-collector-contrib 0.115 that this configuration may use,
# by section (the image's `components` command lists them all).
COLLECTOR_COMPONENTS = {
    "extensions": {"health_check"},
    "receivers": {"otlp"},
    "processors": {"memory_limiter", "batch"},
    "exporters": {"otlp", "debug"},
}


def collector_config() -> dict:
    return yaml.safe_load(config_map("otel-collector-config")["data"]["config.yaml"])


def test_the_collector_configuration_is_complete_and_well_formed() -> None:
    config = collector_config()
    path = MONITORING / "otel-collector" / "config.yaml"
    assert config == yaml.safe_load(path.read_text())
    assert set(config) <= {*COLLECTOR_COMPONENTS, "connectors", "service"}
    for section, kinds in COLLECTOR_COMPONENTS.items():
        for name in config.get(section, {}):
            # <kind> or <kind>/<name>, as the collector's documentation defines component ids.
            assert re.fullmatch(r"[a-z_]+(/[\w.-]+)?", name), name
            assert name.partition("/")[0] in kinds, f"{section}: {name}"
    service = config["service"]
    assert set(service) <= {"extensions", "pipelines", "telemetry"}
    assert set(service["extensions"]) == set(config["extensions"])
    used = {section: set() for section in ("receivers", "processors", "exporters")}
    for name, pipeline in service["pipelines"].items():
        assert name.partition("/")[0] in {"traces", "metrics", "logs"}, name
        assert pipeline["receivers"] and pipeline["exporters"], name
        for section, components in pipeline.items():
            assert set(components) <= set(config[section]), (name, section)
            used[section] |= set(components)
        processors = pipeline["processors"]
        # The documented order: memory_limiter first, batch after it.
        assert processors[0] == "memory_limiter" and processors[-1] == "batch"
    for section, names in used.items():
        assert names == set(config[section]), f"{section} declared but unused"
    limiter = config["processors"]["memory_limiter"]
    assert limiter["check_interval"] and 0 < limiter["spike_limit_percentage"] < 100
    assert 0 < limiter["limit_percentage"] <= 90


def port_of(service: str, name: str) -> int:
    [port] = [
        p for p in named(monitoring(), "Service", service)["spec"]["ports"] if p["name"] == name
    ]
    return port["port"]


def container_port(workload: str, kind: str, name: str) -> int:
    [container] = pod_spec(named(monitoring(), kind, workload))["containers"]
    [port] = [p for p in container["ports"] if p["name"] == name]
    return port["containerPort"]


def test_collector_endpoints_probes_and_tempo_agree() -> None:
    config = collector_config()
    http = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert http == f"0.0.0.0:{container_port('otel-collector', 'Deployment', 'otlp-http')}"
    assert port_of("otel-collector", "otlp-http") == 4318
    health = config["extensions"]["health_check"]["endpoint"]
    assert health == f"0.0.0.0:{container_port('otel-collector', 'Deployment', 'health')}"
    container, folder = mounted_config("otel-collector", "Deployment", "otel-collector-config")
    assert container["args"] == [f"--config={folder}/config.yaml"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "health"
    [reader] = config["service"]["telemetry"]["metrics"]["readers"]
    metrics = reader["pull"]["exporter"]["prometheus"]
    assert metrics["port"] == container_port("otel-collector", "Deployment", "metrics")
    [exporter] = config["exporters"].values()
    assert exporter["endpoint"] == f"tempo:{port_of('tempo', 'otlp-grpc')}"

    tempo = yaml.safe_load(config_map("tempo-config")["data"]["tempo.yaml"])
    assert tempo == yaml.safe_load((MONITORING / "tempo" / "tempo.yaml").read_text())
    grpc = tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert grpc == f"0.0.0.0:{container_port('tempo', 'StatefulSet', 'otlp-grpc')}"
    assert tempo["server"]["http_listen_port"] == port_of("tempo", "http")
    root = data_volume("tempo")
    storage = tempo["storage"]["trace"]
    assert storage["backend"] == "local"
    assert storage["wal"]["path"].startswith(root) and storage["local"]["path"].startswith(root)
    assert tempo["compactor"]["compaction"]["block_retention"] == "336h"
    # Two collectors, one of them always up through drains.
    collector = named(monitoring(), "Deployment", "otel-collector")
    assert collector["spec"]["replicas"] == 2
    budget = named(monitoring(), "PodDisruptionBudget", "otel-collector")["spec"]
    assert budget["minAvailable"] == 1
    assert budget["selector"]["matchLabels"] == collector["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize("env", ["staging", "production"])
def test_staging_and_production_services_send_sampled_traces_to_the_collector(env: str) -> None:
    manifests = overlay(env)
    config = named(manifests, "ConfigMap", "expensetracker-config")["data"]
    port = port_of("otel-collector", "otlp-http")
    assert config["OTEL_EXPORTER_OTLP_ENDPOINT"] == (f"http://otel-collector.monitoring.svc:{port}")
    assert config["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert 0 < float(config["OTEL_TRACES_SAMPLER_ARG"]) <= 1
    # Every service reads the ConfigMap.
    for deployment in of_kind(manifests, "Deployment"):
        if deployment["metadata"]["labels"]["app.kubernetes.io/name"] != "expensetracker":
            continue
        container = pod_spec(deployment)["containers"][0]
        sources = [s["configMapRef"]["name"] for s in container.get("envFrom", [])]
        assert "expensetracker-config" in sources, deployment["metadata"]["name"]
    # Their way out, beside the default deny of the network-policies component.
    policy = named(manifests, "NetworkPolicy", "traces-to-the-collector")["spec"]
    assert named(manifests, "NetworkPolicy", "default-deny")
    [rule] = policy["egress"]
    [peer] = rule["to"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "otel-collector"}
    assert rule["ports"] == [{"protocol": "TCP", "port": port}]
    # And the collector lets them in.
    collector = named(monitoring(), "NetworkPolicy", "otel-collector")["spec"]
    [inbound] = [rule for rule in collector["ingress"] if rule["ports"][0]["port"] == port]
    [source] = inbound["from"]
    selector = source["podSelector"]["matchLabels"]
    assert selector.items() <= policy["podSelector"]["matchLabels"].items()
    assert inbound["ports"] == [{"protocol": "TCP", "port": port}]


def test_development_exports_no_traces() -> None:
    config = named(overlay("development"), "ConfigMap", "expensetracker-config")["data"]
    assert not any(name.startswith("OTEL_") for name in config)
    assert (KUBERNETES / "components" / "tracing" / "README.md").is_file()


def allowed(policy: dict, direction: str, peer: str, port: int) -> bool:
    rules = policy["spec"].get(direction, [])
    key = "from" if direction == "ingress" else "to"
    return any(
        any(
            p.get("podSelector", {}).get("matchLabels") == {"app.kubernetes.io/name": peer}
            for p in rule.get(key, [])
        )
        and {"protocol": "TCP", "port": port} in rule.get("ports", [])
        for rule in rules
    )


@pytest.mark.parametrize(
    ("source", "target", "port"),
    [
        ("alloy", "loki", 3100),
        ("otel-collector", "tempo", 4317),
        ("grafana", "loki", 3100),
        ("grafana", "tempo", 3200),
        ("prometheus", "loki", 3100),
        ("prometheus", "tempo", 3200),
        ("prometheus", "otel-collector", 8888),
        ("prometheus", "alloy", 12345),
    ],
)
def test_network_policies_open_each_path_at_both_ends(source: str, target: str, port: int) -> None:
    policies = of_kind(monitoring(), "NetworkPolicy")

    def selecting(name: str) -> list[dict]:
        return [
            p
            for p in policies
            if p["spec"]["podSelector"].get("matchLabels") == {"app.kubernetes.io/name": name}
        ]

    assert any(allowed(p, "egress", target, port) for p in selecting(source)), (source, target)
    assert any(allowed(p, "ingress", source, port) for p in selecting(target)), (source, target)


def test_the_monitoring_pods_meet_the_applications_admission_rules() -> None:
    """The Gatekeeper constraints are enforced in the application's namespace only; the
    monitoring stack's pods (Loki, Alloy, Tempo and the collector with the rest) are held to the
    same Rego here, by the same engine, all but the labels rule, whose environment and version
    labels name an application release."""
    evaluated = set()
    for obj in monitoring():
        for made in expanded(obj):
            for constraint in constraints():
                if constraint.name == "recommended-labels":
                    continue
                anywhere = {k: v for k, v in constraint.match.items() if k != "namespaces"}
                if matches(anywhere, made):
                    assert constraint.violations(made) == [], obj["metadata"]["name"]
                    if made["kind"] == "Pod":
                        evaluated.add(obj["metadata"]["name"])
    assert {"loki", "alloy", "tempo", "otel-collector"} <= evaluated


def test_prometheus_scrapes_the_pipelines_on_their_metrics_ports() -> None:
    """The jobs that rules/logs-traces.yaml reads keep the right pods' ports."""
    config = yaml.safe_load(config_map("prometheus-config")["data"]["prometheus.yml"])
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for job, kind in (("otel-collector", "Deployment"), ("alloy", "DaemonSet")):
        keep = jobs[job]["relabel_configs"][0]
        assert keep["action"] == "keep"
        assert keep["source_labels"] == [
            "__meta_kubernetes_pod_label_app_kubernetes_io_name",
            "__meta_kubernetes_pod_container_port_name",
        ]
        workload, port_name = keep["regex"].split(";")
        assert workload == job
        container_port(workload, kind, port_name)  # the port exists, by that name
    for job, port_name in (("loki", "http"), ("tempo", "http")):
        [target] = jobs[job]["static_configs"][0]["targets"]
        assert target == f"{job}:{port_of(job, port_name)}"
