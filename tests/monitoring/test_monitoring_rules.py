"""The alerting rules, their promtool unit tests, their runbooks and the Alertmanager config.

promtool checks and unit-tests every rule file; the Python checks here hold every alert to the
conventions (severity, summary, templated description, a runbook with a "What to do"), prove
that each alert is tested on both sides of its `for:` window, and run a real Alertmanager to
show its routes and inhibitions. promtool, amtool and alertmanager come from Debian's
`prometheus` and `prometheus-alertmanager` packages (.ci/run installs them); without them
these tests fail, they do not skip.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from expensetracker.targets import COMPONENTS
from tests.helpers.kubernetes import (
    KUBERNETES,
    MONITORING,
    OVERLAYS,
    REPO,
    kustomize,
    monitoring,
    of_kind,
)
from tests.helpers.processes import free_port

RULES = MONITORING / "rules"
RULE_FILES = sorted(RULES.glob("*.yaml"))
TEST_FILES = sorted((RULES / "tests").glob("*.yaml"))
ALERTMANAGER_CONFIG = MONITORING / "alertmanager" / "alertmanager.yml"
PROMETHEUS_CONFIG = MONITORING / "prometheus" / "prometheus.yml"
RUNBOOKS = REPO / "docs" / "runbooks"
RUNBOOK_URL = "https://github.com/expensetracker/expensetracker/blob/main/docs/runbooks/{}.md"
RUNBOOK_SECTIONS = ("What it means", "Impact", "Diagnosis", "What to do", "Escalation")
RECEIVER_OF_SEVERITY = {"critical": "oncall-pager", "warning": "team-tickets"}
# The `environment` external label each overlay's Prometheus puts on its alerts (None: an alert
# without it, treated as production's).
ENVIRONMENTS = ("development", "staging", "production", None)
# The SRE workbook's table for a 99.9% objective: (long, short) windows -> burn rate, `for:`,
# severity.
BURN_RATE_WINDOWS = {
    ("1h", "5m"): ("14.4", "2m", "critical"),
    ("6h", "30m"): ("6", "15m", "critical"),
    ("1d", "2h"): ("3", "1h", "warning"),
    ("3d", "6h"): ("1", "3h", "warning"),
}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is needed: apt-get install prometheus prometheus-alertmanager")
    return path


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)


SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def seconds(duration: str) -> float:
    """A Prometheus duration ("1h30m", "3d") in seconds."""
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * SECONDS[u] for n, u in parts)


# --- the rules, as data ----------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    file: str
    name: str
    expr: str
    for_: str | None
    labels: dict[str, str]
    annotations: dict[str, str]

    @property
    def id(self) -> str:
        extra = [v for k, v in sorted(self.labels.items()) if k != "severity"]
        return "-".join([self.name, self.labels.get("severity", "?"), *extra])


def groups(path: Path) -> list[dict]:
    return yaml.safe_load(path.read_text())["groups"]


@functools.cache
def alerts() -> tuple[Alert, ...]:
    return tuple(
        Alert(
            file=path.name,
            name=rule["alert"],
            expr=rule["expr"],
            for_=rule.get("for"),
            labels=rule.get("labels", {}),
            annotations=rule.get("annotations", {}),
        )
        for path in RULE_FILES
        for group in groups(path)
        for rule in group["rules"]
        if "alert" in rule
    )


@functools.cache
def recorded() -> frozenset[str]:
    return frozenset(
        rule["record"]
        for path in RULE_FILES
        for group in groups(path)
        for rule in group["rules"]
        if "record" in rule
    )


def by_id(items: tuple[Alert, ...]) -> dict:
    return {"argvalues": items, "ids": [alert.id for alert in items]}


# --- the promtool unit tests, as data --------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One alert_rule_test: an alert name, a time, and the label sets expected to fire."""

    file: str
    test: str
    alertname: str
    at: float
    interval: float
    firing: tuple[dict[str, str], ...]

    def fires(self, alert: Alert) -> bool:
        return self.alertname == alert.name and any(
            alert.labels.items() <= labels.items() for labels in self.firing
        )


@functools.cache
def cases() -> tuple[Case, ...]:
    found = []
    for path in TEST_FILES:
        document = yaml.safe_load(path.read_text())
        interval = seconds(document.get("evaluation_interval", "1m"))
        for index, test in enumerate(document["tests"]):
            for case in test.get("alert_rule_test", []):
                found.append(
                    Case(
                        file=path.name,
                        test=f"{index}: {test.get('name', '')}",
                        alertname=case["alertname"],
                        at=seconds(case["eval_time"]),
                        interval=interval,
                        firing=tuple(a.get("exp_labels", {}) for a in case.get("exp_alerts") or []),
                    )
                )
    return tuple(found)


# --- promtool --------------------------------------------------------------------------------


def test_there_are_rules_and_tests() -> None:
    assert {p.name for p in RULE_FILES} >= {
        "slo.yaml",
        "services.yaml",
        "kubernetes.yaml",
        "postgresql.yaml",
        "backups.yaml",
        "certificates.yaml",
        "watchdog.yaml",
    }
    assert TEST_FILES


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(path: Path) -> None:
    result = run(tool("promtool"), "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_test_rules(path: Path) -> None:
    result = run(tool("promtool"), "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_file_is_unit_tested() -> None:
    tested = {
        (path.parent / rule_file).resolve()
        for path in TEST_FILES
        for rule_file in yaml.safe_load(path.read_text())["rule_files"]
    }
    assert {p.resolve() for p in RULE_FILES} <= tested


def test_prometheus_loads_every_rule_file() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    patterns = [Path(pattern).name for pattern in config["rule_files"]]
    for path in RULE_FILES:
        assert any(fnmatch.fnmatch(path.name, p) for p in patterns), path.name


def test_rules_select_scrape_jobs_that_exist() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    used = {
        job
        for path in RULE_FILES
        for group in groups(path)
        for rule in group["rules"]
        for job in re.findall(r'\bjob="([^"]+)"', rule["expr"])
    }
    assert used and used <= jobs, used - jobs


def test_recorded_series_that_alerts_read_are_recorded() -> None:
    for alert in alerts():
        for name in re.findall(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b", alert.expr):
            assert name in recorded(), f"{alert.name} reads {name}, which no rule records"


# --- conventions of every alert --------------------------------------------------------------


@pytest.mark.parametrize("alert", **by_id(alerts()))
def test_alert_is_named_labelled_and_annotated(alert: Alert) -> None:
    assert re.fullmatch(r"(?:[A-Z][a-z0-9]*)+", alert.name) and re.search("[a-z]", alert.name), (
        f"{alert.name}: PascalCase <Component><Symptom>"
    )
    if alert.name == "Watchdog":
        assert alert.labels["severity"] == "none"
    else:
        assert alert.labels.get("severity") in {"critical", "warning"}
    assert set(alert.annotations) >= {"summary", "description", "runbook_url"}
    assert alert.annotations["summary"].strip()
    if alert.name != "Watchdog":
        # Says which service, pod, volume... and how bad.
        assert "{{ $labels." in alert.annotations["description"]
    assert alert.annotations["runbook_url"] == RUNBOOK_URL.format(alert.name)


@pytest.mark.parametrize("name", sorted({a.name for a in alerts()}))
def test_alert_has_a_runbook(name: str) -> None:
    path = RUNBOOKS / f"{name}.md"
    assert path.is_file(), f"{path} is missing"
    text = path.read_text()
    assert text.startswith(f"# {name}\n")
    sections = dict(re.findall(r"^## (.+)\n((?:(?!^## ).*\n?)*)", text, flags=re.MULTILINE))
    for heading in RUNBOOK_SECTIONS:
        assert heading in sections, f"{path.name} has no '## {heading}'"
    # Something to run and something to do, not a placeholder.
    assert "```" in sections["Diagnosis"]
    assert len(sections["What to do"].split()) >= 40


def test_runbook_index_lists_every_alert() -> None:
    index = (RUNBOOKS / "README.md").read_text()
    for name in {a.name for a in alerts()}:
        assert f"[{name}]({name}.md)" in index


def test_error_budget_burn_follows_the_workbook() -> None:
    burns = [a for a in alerts() if a.name == "ServiceErrorBudgetBurn"]
    windows = {}
    for alert in burns:
        long, short = alert.labels["long"], alert.labels["short"]
        factor, for_, severity = BURN_RATE_WINDOWS[(long, short)]
        expr = " ".join(alert.expr.split())
        assert expr == (
            f"service:http_request_errors:ratio_rate{long} > ({factor} * 0.001) and "
            f"service:http_request_errors:ratio_rate{short} > ({factor} * 0.001)"
        )
        assert (alert.for_, alert.labels["severity"]) == (for_, severity)
        windows[(long, short)] = alert
    assert windows.keys() == BURN_RATE_WINDOWS.keys()
    assert all(f"service:http_request_errors:ratio_rate{w}" in recorded() for w, _ in windows)


# --- every alert is unit-tested, on both sides -----------------------------------------------


@pytest.mark.parametrize("alert", **by_id(alerts()))
def test_alert_is_tested_firing_and_not_firing(alert: Alert) -> None:
    mine = [c for c in cases() if c.alertname == alert.name]
    assert len(mine) >= 2, f"{alert.name}: fewer than two promtool test cases"
    assert any(c.fires(alert) for c in mine), f"{alert.id}: no test case where it fires"
    if alert.for_:
        # Not firing at the evaluation before `for:` elapses, firing at the one where it does.
        assert any(
            not before.fires(alert)
            and after.fires(alert)
            and (after.file, after.test) == (before.file, before.test)
            and after.at - before.at == before.interval
            for before in mine
            for after in mine
        ), f"{alert.id}: no test one evaluation either side of its for: {alert.for_}"
    elif alert.expr.strip() != "vector(1)":
        assert any(not c.fires(alert) for c in mine), f"{alert.id}: no test where it stays quiet"


# --- every service is covered ----------------------------------------------------------------


def service_deployments() -> set[str]:
    base = tuple(kustomize(KUBERNETES / "base"))
    return {
        d["metadata"]["name"]
        for d in of_kind(base, "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/name"] == "expensetracker"
    }


def test_service_down_names_every_service_the_manifests_deploy() -> None:
    """The SLO alerts read the `service` label of whatever is scraped; ServiceDown must name each
    service, both to see its pods down and to notice it has none at all."""
    names = service_deployments()
    assert names == {"auth", "expenses", "reports", "web"}
    [down] = [a for a in alerts() if a.name == "ServiceDown"]
    [pattern] = re.findall(r'\bcomponent=~"([^"]+)"', down.expr)
    assert set(pattern.split("|")) == names
    absent = re.findall(r'absent\(up\{[^}]*\bcomponent="([^"]+)"', down.expr)
    assert sorted(absent) == sorted(names)
    for alert in alerts():
        if alert.file in {"services.yaml", "slo.yaml"}:
            # No other rule narrows the services to a fixed list that could leave one out.
            for value in re.findall(r'\b(?:service|component)=~"([^"]+)"', alert.expr):
                assert all(re.fullmatch(value, name) for name in names), alert.id


def can_fire_for_the_web_app(alert: Alert) -> bool:
    """The background job alert reads series that only a service with jobs has; the web app's
    ServiceSpec declares none (should it gain one, the alert must be shown firing for it)."""
    web = COMPONENTS["web"]
    return "expensetracker_background_job" not in alert.expr or bool(web.jobs or web.user_events)


def test_service_alerts_are_shown_firing_for_the_web_app() -> None:
    """Each alert of services.yaml that can fire for web has a promtool case in which web's own
    series make it fire, one evaluation after they have not yet (its `for:`)."""
    web_alerts = {
        a.name for a in alerts() if a.file == "services.yaml" and can_fire_for_the_web_app(a)
    }
    assert {"ServiceDown", "ServiceErrorBudgetBurn", "ServiceHighLatency"} <= web_alerts
    for name in sorted(web_alerts):
        rules = [a for a in alerts() if a.name == name]
        mine = [c for c in cases() if c.alertname == name]

        def for_web(case: Case, alert: Alert) -> bool:
            return any(
                alert.labels.items() <= labels.items() and labels.get("service") == "web"
                for labels in case.firing
            )

        assert any(
            not for_web(before, alert)
            and for_web(after, alert)
            and (after.file, after.test) == (before.file, before.test)
            and after.at - before.at == before.interval
            for alert in rules
            for before in mine
            for after in mine
        ), f"{name}: no promtool case shows it firing for web on both sides of its for:"


# --- Alertmanager ----------------------------------------------------------------------------


def alertmanager_config() -> dict:
    return yaml.safe_load(ALERTMANAGER_CONFIG.read_text())


def test_amtool_check_config() -> None:
    result = run(tool("amtool"), "check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def receiver_of(labels: dict[str, str]) -> str:
    result = run(
        tool("amtool"),
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_CONFIG}",
        *(f"{k}={v}" for k, v in labels.items()),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def expected_receiver(alert: Alert, environment: str | None) -> str:
    """Production (or no label): by severity, Watchdog to the dead man's switch. Development
    and staging: never a page, a ticket at most, and their heartbeat dropped."""
    if environment in {"development", "staging"}:
        return "discard" if alert.name == "Watchdog" else "team-tickets"
    if alert.name == "Watchdog":
        return "dead-mans-switch"
    return RECEIVER_OF_SEVERITY[alert.labels["severity"]]


@pytest.mark.parametrize("environment", ENVIRONMENTS, ids=lambda e: e or "no-environment")
@pytest.mark.parametrize("alert", **by_id(alerts()))
def test_alert_reaches_the_receiver_of_its_severity_and_environment(
    alert: Alert, environment: str | None
) -> None:
    labels = {"alertname": alert.name, "namespace": "expensetracker", **alert.labels}
    if environment is not None:
        labels["environment"] = environment
    assert receiver_of(labels) == expected_receiver(alert, environment)


def test_only_production_pages() -> None:
    """amtool on the committed routes: a critical alert pages in production only, whatever
    else it carries; an environment that merely contains a word of another is not it."""
    critical = {"alertname": "ServiceDown", "severity": "critical", "service": "auth"}
    assert receiver_of(critical | {"environment": "production"}) == "oncall-pager"
    assert receiver_of(critical | {"environment": "staging"}) == "team-tickets"
    assert receiver_of(critical | {"environment": "development"}) == "team-tickets"
    assert receiver_of(critical | {"environment": "pre-staging"}) == "oncall-pager"
    assert receiver_of({"alertname": "Watchdog", "environment": "staging"}) == "discard"
    # The environment every overlay names is one these routes know.
    for env in OVERLAYS:
        config_maps = of_kind(monitoring(env), "ConfigMap")
        [named_env] = [
            m["data"]["environment"]
            for m in config_maps
            if m["metadata"]["name"].startswith("monitoring-environment-")
        ]
        paged = receiver_of(critical | {"environment": named_env}) == "oncall-pager"
        assert paged is (env == "production"), env


def test_dead_mans_switch_hears_the_watchdog_every_minute() -> None:
    [route] = [
        r for r in alertmanager_config()["route"]["routes"] if r["receiver"] == "dead-mans-switch"
    ]
    assert seconds(route["repeat_interval"]) <= 60
    assert seconds(route["group_interval"]) <= 60


def test_receivers_are_placeholders_without_secrets() -> None:
    config = alertmanager_config()
    assert {r["name"] for r in config["receivers"]} == {
        *RECEIVER_OF_SEVERITY.values(),
        "dead-mans-switch",
        "discard",
    }
    for receiver in config["receivers"]:
        if receiver["name"] == "discard":
            assert receiver == {"name": "discard"}  # no integration: dropped
            continue
        assert set(receiver) == {"name", "webhook_configs"}
        for webhook in receiver["webhook_configs"]:
            host = httpx.URL(webhook["url"]).host
            assert host.endswith(".example.com"), webhook["url"]
            assert "http_config" not in webhook


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """Alertmanager with the committed routes and inhibitions; its webhooks point nowhere."""
    binary = shutil.which("prometheus-alertmanager") or tool("alertmanager")
    folder = tmp_path_factory.mktemp("alertmanager")
    config = alertmanager_config()
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            webhook["url"] = "http://127.0.0.1:9/"  # discard: no notification leaves the test
    (folder / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (folder / "alertmanager.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={folder / 'alertmanager.yml'}",
            f"--storage.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # no gossip port: a single instance
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (folder / "alertmanager.log").read_text()
            try:
                if client.get("/-/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "alertmanager did not become ready"
            time.sleep(0.1)
        yield client
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)
        log.close()


def post(client: httpx.Client, *label_sets: dict[str, str]) -> None:
    response = client.post("/api/v2/alerts", json=[{"labels": labels} for labels in label_sets])
    assert response.status_code == 200, response.text


def suppressed(client: httpx.Client, expected: dict[str, bool]) -> dict[str, bool]:
    """Which alerts (by their `case` label) are inhibited, once it matches `expected` or 10 s
    have passed: the inhibitor learns of new source alerts asynchronously."""
    deadline = time.monotonic() + 10
    while True:
        found = {
            alert["labels"]["case"]: bool(alert["status"]["inhibitedBy"])
            for alert in client.get("/api/v2/alerts").json()
            if alert["labels"]["case"] in expected
        }
        if found == expected or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_critical_inhibits_its_warning_twin_only(alertmanager: httpx.Client) -> None:
    burn = {"alertname": "ServiceErrorBudgetBurn", "namespace": "expensetracker"}
    volume = {"alertname": "KubePersistentVolumeAlmostFull", "namespace": "expensetracker"}
    post(
        alertmanager,
        {**burn, "case": "fast burn", "severity": "critical", "service": "expenses"},
        {**burn, "case": "slow burn", "severity": "warning", "service": "expenses"},
        {**burn, "case": "other service", "severity": "warning", "service": "auth"},
        {**volume, "case": "95% full", "severity": "critical", "persistentvolumeclaim": "data"},
        {**volume, "case": "85% full", "severity": "warning", "persistentvolumeclaim": "data"},
        {**volume, "case": "other volume", "severity": "warning", "persistentvolumeclaim": "tsdb"},
        {"alertname": "KubeHpaMaxedOut", "case": "other alert", "severity": "warning"},
    )
    expected = {
        "fast burn": False,
        "slow burn": True,
        "other service": False,
        "95% full": False,
        "85% full": True,
        "other volume": False,
        "other alert": False,
    }
    assert suppressed(alertmanager, expected) == expected


def test_postgresql_down_inhibits_the_services_symptoms(alertmanager: httpx.Client) -> None:
    namespace = {"namespace": "postgresql-test"}
    post(
        alertmanager,
        {**namespace, "alertname": "PostgreSQLDown", "case": "database", "severity": "critical"},
        *(
            {**namespace, "alertname": name, "case": case, "severity": severity, "service": s}
            for name, case, severity, s in [
                ("ServiceErrorBudgetBurn", "errors", "critical", "expenses"),
                ("ServiceHighLatency", "latency", "warning", "reports"),
                ("ServiceDown", "service down", "critical", "auth"),
            ]
        ),
        {
            "alertname": "ServiceErrorBudgetBurn",
            "case": "errors elsewhere",
            "severity": "critical",
            "namespace": "another",
            "service": "expenses",
        },
    )
    expected = {
        "database": False,
        "errors": True,
        "latency": True,
        # A pod that does not answer is not explained by the database: it still pages.
        "service down": False,
        "errors elsewhere": False,
    }
    assert suppressed(alertmanager, expected) == expected


def test_alertmanager_pages_for_production_only(alertmanager: httpx.Client) -> None:
    """The running Alertmanager, not only amtool: the same critical alert from each
    environment, and the heartbeats, reach the receivers the routes name."""
    down = {"alertname": "ServiceDown", "severity": "critical", "service": "web"}
    post(
        alertmanager,
        *({**down, "case": f"down in {env}", "environment": env} for env in OVERLAYS),
        *(
            {
                "alertname": "Watchdog",
                "severity": "none",
                "case": f"heartbeat {env}",
                "environment": env,
            }
            for env in OVERLAYS
        ),
    )
    expected = {
        "down in development": ["team-tickets"],
        "down in staging": ["team-tickets"],
        "down in production": ["oncall-pager"],
        "heartbeat development": ["discard"],
        "heartbeat staging": ["discard"],
        "heartbeat production": ["dead-mans-switch"],
    }
    received = {
        alert["labels"]["case"]: [r["name"] for r in alert["receivers"]]
        for alert in alertmanager.get("/api/v2/alerts").json()
        if alert["labels"]["case"] in expected
    }
    assert received == expected
