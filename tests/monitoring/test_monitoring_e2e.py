"""The monitoring stack end to end, with real parts on 127.0.0.1: the three services as
separate `serve --target` processes (as in Kubernetes), Debian's postgres-exporter on the same
PostgreSQL, and a real Prometheus with the `expensetracker` job and relabel rules of
deploy/monitoring/base/prometheus/prometheus.yml (pod discovery replaced by static targets carrying
the `__meta_kubernetes_*` labels the pods would have) and every rule file of
deploy/monitoring/base/rules. Traffic goes through the public API; then every dashboard query and
every rule expression must be accepted by Prometheus, every rule must evaluate, and the panels
listed in PANELS_WITH_DATA must show data.

Prometheus and the exporter come from Debian (`apt-get install prometheus
prometheus-postgres-exporter`; .ci/run installs them)."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import date, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import make_url

from tests.helpers.database import connected
from tests.helpers.polling import eventually
from tests.helpers.processes import REPO, clean_env, cli, free_port, http_server, spawn
from tests.helpers.users import PASSWORD, login, new_email, register
from tests.helpers.web import csrf_token

MONITORING = REPO / "deploy" / "monitoring" / "base"
DASHBOARDS = MONITORING / "dashboards"
RULES = MONITORING / "rules"
PROMETHEUS_CONFIG = MONITORING / "prometheus" / "prometheus.yml"
GRAFANA = MONITORING / "grafana"

ENVIRONMENT = "e2e"
NAMESPACE = "expensetracker"
# The processes of a deployment, each scraped as its own pod.
COMPONENTS = ("auth", "expenses", "reports", "web")
SCRAPE_SECONDS = 1
# What Grafana puts in place of its built-in variables, for a dashboard looking at this test:
# $__rate_interval as with the datasource's 15 s scrape interval (four of them), which also
# spans both rounds of traffic on a busy machine.
RATE_INTERVAL = "60s"
STEP_SECONDS = 1
# Every panel, by dashboard file and title: it must show data after the test's traffic, or be
# named in PANELS_WITHOUT_DATA with the reason. A new panel fails the test until it is listed.
PANELS_WITH_DATA = {
    "service-overview.json": {
        "Targets up",
        "Targets down",
        "API request rate",
        "API error ratio (5xx)",
        "API latency p99",
        "Request rate by service",
        "Responses by status class",
        "Request rate by route",
        "Error ratio (5xx) by service",
        "Error ratio (5xx) by route",
        "Latency by service (p50, p95, p99)",
        "Latency p95 by route",
        "Latency p99 by route",
        "Requests in flight",
        "DB pool usage by component",
        "DB pool connections by state",
        "Background job failures in a row",
        "Background job runs by outcome",
        "Build info",
        "Scrape targets",
    },
    "business.json": {
        "Registrations",
        "Logins by outcome",
        "Expenses created",
        "Imports by outcome",
        "Budgets exceeded",
        "Import rows by outcome",
        "Failed login ratio",
        "Import row rejection ratio",
        "Registrations per minute",
        "Logins per minute by outcome",
        "Expenses created per minute",
        "Imports per minute by outcome",
        "Import rows per minute by outcome",
        "Budgets exceeded per minute",
    },
    "postgresql.json": {
        "PostgreSQL up",
        "Exporter up",
        "Connections used",
        "Transactions per second",
        "Cache hit ratio",
        "Deadlocks",
        "Connections vs max_connections",
        "Transactions per second by database",
        "Cache hit ratio by database",
        "Deadlocks by database",
        "Locks by mode",
        "Database size",
        "Service pool usage",
        "Service pool connections by state",
    },
    # From the stand-in below until the backup feature exposes the same metrics.
    "backups.json": {
        "Last successful backup age",
        "Last failure",
        "Failing since last success",
        "Backup size",
        "Backups kept",
        "Backup age",
        "Backup size over time",
        "Backups kept over time",
    },
}
PANELS_WITHOUT_DATA: dict[str, dict[str, str]] = {}
# Panels on Loki: no Loki runs here; tests/monitoring/test_monitoring_logs_traces.py checks that
# their queries select only the labels the log pipeline makes.
LOG_PANELS = {"service-overview.json": {"Log lines by level", "Logs"}}
LOKI = {"type": "loki", "uid": "loki"}

# The backup feature lands later; its metric names are the contract the dashboard reads. This
# stand-in exposes them like the backup component will, so the dashboard's arithmetic is checked.
BACKUP_AGE_SECONDS = 3600
BACKUP_SIZE_BYTES = 123_456_789
BACKUPS_KEPT = 7


def _load_dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def _rule_files() -> dict[str, dict[str, Any]]:
    """Every rule file of the folder (promtool's test files are not), by name."""
    found = {}
    for path in sorted([*RULES.glob("*.yaml"), *RULES.glob("*.yml")]):
        document = yaml.safe_load(path.read_text())
        if isinstance(document, dict) and "groups" in document:
            found[path.name] = document
    return found


# --- the files themselves ----------------------------------------------------------------------


def test_dashboards_are_grafana_11_documents_on_the_prometheus_datasource() -> None:
    dashboards = _load_dashboards()
    assert set(dashboards) == {
        "service-overview.json",
        "business.json",
        "postgresql.json",
        "backups.json",
    }
    uids = [board["uid"] for board in dashboards.values()]
    assert len(set(uids)) == len(uids)
    for name, board in dashboards.items():
        assert re.fullmatch(r"[a-z0-9-]{1,40}", board["uid"]), name
        assert board["schemaVersion"] >= 39 and board["id"] is None, name
        ids = [panel["id"] for panel in board["panels"]]
        assert len(set(ids)) == len(ids), f"{name}: duplicate panel ids"
        titles = [panel["title"] for panel in _panels(board)]
        assert len(set(titles)) == len(titles), f"{name}: duplicate panel titles"
        listed = PANELS_WITH_DATA[name] | set(PANELS_WITHOUT_DATA.get(name, {}))
        listed |= LOG_PANELS.get(name, set())
        assert set(titles) == listed, f"{name}: panels and the test's lists differ"
        for panel in _panels(board):
            where = f"{name}: {panel['title']}"
            on_loki = panel["title"] in LOG_PANELS.get(name, set())
            expected = LOKI if on_loki else {"type": "prometheus", "uid": "prometheus"}
            assert panel["datasource"] == expected, where
            assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), where
            assert panel["targets"], where
            for target in panel["targets"]:
                assert target["datasource"] == panel["datasource"], where
                assert target["expr"].strip(), where
        for variable in board["templating"]["list"]:
            assert variable["datasource"] == {"type": "prometheus", "uid": "prometheus"}, name


def test_grafana_provisioning_points_at_prometheus_and_the_dashboards() -> None:
    datasources = yaml.safe_load((GRAFANA / "datasources.yaml").read_text())
    by_uid = {source["uid"]: source for source in datasources["datasources"]}
    assert set(by_uid) == {"prometheus", "loki", "tempo"}
    prometheus = by_uid["prometheus"]
    assert prometheus["uid"] == "prometheus" and prometheus["type"] == "prometheus"
    assert prometheus["url"] == "http://prometheus:9090/prometheus"
    assert prometheus["isDefault"] is True
    providers = yaml.safe_load((GRAFANA / "dashboards.yaml").read_text())["providers"]
    assert [p["options"]["path"] for p in providers if p["type"] == "file"] == [
        "/var/lib/grafana/dashboards"
    ]


# --- Grafana's variables -----------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")
_LABEL_VALUES = re.compile(r"^label_values\((.+),\s*(\w+)\)$", re.S)


def _variable_values(board: dict[str, Any], range_seconds: int) -> dict[str, str]:
    values = {
        "__rate_interval": RATE_INTERVAL,
        "__interval": f"{STEP_SECONDS}s",
        "__interval_ms": str(STEP_SECONDS * 1000),
        "__range": f"{range_seconds}s",
        "__range_s": str(range_seconds),
        "__range_ms": str(range_seconds * 1000),
    }
    for variable in board["templating"]["list"]:
        if variable["name"] == "environment":
            values["environment"] = ENVIRONMENT
        else:
            assert variable.get("includeAll"), f"pick a test value for ${variable['name']}"
            values[variable["name"]] = variable["allValue"]
    return values


def _substitute(expr: str, values: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        assert name in values, f"unknown variable ${name} in {expr}"
        return values[name]

    return _VARIABLE.sub(replace, expr)


# --- the processes -----------------------------------------------------------------------------


def _binary(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: apt-get install prometheus prometheus-postgres-exporter"
    return path


def _without_bgwriter(exporter: str) -> list[str]:
    """The flag that turns the bgwriter collector off, as in Kubernetes (PostgreSQL 17 moved
    what it reads); it was renamed stat_bgwriter after Debian 12's 0.11."""
    options = subprocess.run(
        [exporter, "--help"], capture_output=True, text=True, timeout=30, check=True
    )
    for name in ("stat_bgwriter", "bgwriter"):
        if re.search(rf"collector\.{name}\b", options.stdout + options.stderr):
            return [f"--no-collector.{name}"]
    return []


def _pod(component: str, port: int, **overrides: str) -> dict[str, Any]:
    """A static target labelled as Kubernetes pod discovery labels a pod; its address is the
    pod's address with a port the relabeling must replace by the annotation's (nothing listens
    on the discard port 9)."""
    labels = {
        "__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true",
        "__meta_kubernetes_pod_annotation_prometheus_io_port": str(port),
        "__meta_kubernetes_pod_annotation_prometheus_io_path": "/metrics",
        "__meta_kubernetes_pod_label_app_kubernetes_io_component": component,
        "__meta_kubernetes_namespace": NAMESPACE,
        "__meta_kubernetes_pod_name": f"{component}-7c9d8f6b5-{uuid.uuid4().hex[:5]}",
        "__meta_kubernetes_pod_phase": "Running",
        "__meta_kubernetes_pod_label_environment": ENVIRONMENT,
        **overrides,
    }
    return {"targets": ["127.0.0.1:9"], "labels": labels}


def _prometheus_config(
    pods: list[dict[str, Any]], prometheus_port: int, rule_files: list[Path]
) -> dict[str, Any]:
    """deploy/monitoring/base/prometheus/prometheus.yml for this machine: the application's job with
    its relabel rules unchanged, Prometheus' own job, second-long intervals."""
    source = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in source["scrape_configs"]}
    application = {k: v for k, v in jobs["expensetracker"].items() if k != "kubernetes_sd_configs"}
    assert "static_configs" not in application
    application["static_configs"] = pods
    itself = {
        **jobs["prometheus"],
        "static_configs": [{"targets": [f"127.0.0.1:{prometheus_port}"]}],
    }
    return {
        "global": {
            **source["global"],
            "scrape_interval": f"{SCRAPE_SECONDS}s",
            "scrape_timeout": f"{SCRAPE_SECONDS}s",
            "evaluation_interval": "1s",
        },
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [application, itself],
    }


def _fast_rule_copies(rule_files: dict[str, dict[str, Any]], folder: Path) -> list[Path]:
    """The rule files with every group evaluated each second (a group's own `interval` of a
    minute would make the test wait for its first evaluation)."""
    folder.mkdir()
    copies = []
    for name, document in rule_files.items():
        groups = [{**group, "interval": "1s"} for group in document["groups"]]
        copy = folder / name
        copy.write_text(yaml.safe_dump({**document, "groups": groups}, sort_keys=False))
        copies.append(copy)
    return copies


@contextmanager
def _backup_stand_in() -> Iterator[int]:
    """The backup component's metrics, as the contract names them."""
    now = time.time()
    body = (
        "# TYPE expensetracker_backup_last_success_timestamp_seconds gauge\n"
        f"expensetracker_backup_last_success_timestamp_seconds {now - BACKUP_AGE_SECONDS}\n"
        "# TYPE expensetracker_backup_last_failure_timestamp_seconds gauge\n"
        f"expensetracker_backup_last_failure_timestamp_seconds {now - 2 * BACKUP_AGE_SECONDS}\n"
        "# TYPE expensetracker_backup_size_bytes gauge\n"
        f"expensetracker_backup_size_bytes {BACKUP_SIZE_BYTES}\n"
        "# TYPE expensetracker_backups gauge\n"
        f"expensetracker_backups {BACKUPS_KEPT}\n"
    ).encode()

    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    with http_server(Metrics) as port:
        yield port


def _exporter_dsn(database_url: str) -> str:
    """The test database's URL for lib/pq (the exporter): no TLS on 127.0.0.1 or a socket."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.update_query_dict({"sslmode": "disable"}).render_as_string(hide_password=False)


# --- traffic -----------------------------------------------------------------------------------


async def _drive_traffic(urls: dict[str, str], database_url: str) -> None:
    """Every kind of request the dashboards count, through the public API of each process."""
    today = date.today()
    month = today.strftime("%Y-%m")
    async with (
        httpx.AsyncClient(base_url=urls["auth"], timeout=30) as auth,
        httpx.AsyncClient(base_url=urls["expenses"], timeout=30) as expenses,
        httpx.AsyncClient(base_url=urls["reports"], timeout=30) as reports,
    ):
        email = new_email()
        await register(auth, email)
        account = await login(auth, email)
        wrong = await auth.post(
            "/api/v1/auth/login", json={"email": email, "password": PASSWORD + "?"}
        )
        assert wrong.status_code == 401, wrong.text
        assert (await auth.get("/api/v1/auth/me", headers=account.headers)).status_code == 200
        headers = account.headers

        for amount, description in (("12.34", "Lunch"), ("5.60", "Bus"), ("42.00", "Books")):
            created = await expenses.post(
                "/api/v1/expenses",
                json={
                    "amount": amount,
                    "currency": "EUR",
                    "occurred_on": today.isoformat(),
                    "description": description,
                },
                headers=headers,
            )
            assert created.status_code == 201, created.text
        csv = (
            "occurred_on,amount,currency,description,merchant,external_id\n"
            f"{today},4.50,EUR,Coffee,Café,bank-1\n"
            f"{today},19.90,EUR,Groceries,Market,bank-2\n"
            f"{today},7.00,EUR,Cinema,,bank-3\n"
        )
        csv_headers = {**headers, "content-type": "text/csv"}
        imported = await expenses.post("/api/v1/expenses/import", content=csv, headers=csv_headers)
        assert imported.status_code == 201, imported.text
        bad_csv = "occurred_on,amount,currency,description\n" + f"{today},-1,EUR,Refund?\n"
        rejected = await expenses.post(
            "/api/v1/expenses/import", content=bad_csv, headers=csv_headers
        )
        assert rejected.status_code == 422, rejected.text
        listed = await expenses.get("/api/v1/expenses", headers=headers)
        assert listed.status_code == 200 and len(listed.json()["items"]) == 6, listed.text
        missing = await expenses.get(f"/api/v1/expenses/{uuid.uuid4()}", headers=headers)
        assert missing.status_code == 404
        assert (await expenses.get("/api/v1/no-such-route")).status_code == 404

        # A 5xx the honest way: a long lock on the expenses table (a migration, a VACUUM FULL)
        # makes the listing wait past the statement timeout; the service answers 500.
        async with connected(database_url) as connection, connection.transaction():
            await connection.execute("LOCK TABLE expenses.expenses IN ACCESS EXCLUSIVE MODE")
            failed = await expenses.get("/api/v1/expenses", headers=headers)
        assert failed.status_code == 500, failed.text

        budget = await reports.post(
            "/api/v1/budgets",
            json={"name": "Everything", "amount": "50.00", "currency": "EUR", "starts": month},
            headers=headers,
        )
        assert budget.status_code == 201, budget.text
        status = await reports.get(
            "/api/v1/reports/budgets", params={"month": month}, headers=headers
        )
        assert status.status_code == 200 and status.json()["budgets"][0]["state"] == "over", (
            status.text
        )
        summary = await reports.get(
            "/api/v1/reports/summary",
            params={"from": f"{month}-01", "to": today.isoformat(), "group_by": "category"},
            headers=headers,
        )
        assert summary.status_code == 200, summary.text
        alerts = await reports.get("/api/v1/reports/alerts", headers=headers)
        assert alerts.status_code == 200 and len(alerts.json()["items"]) == 2, alerts.text

    # The web app, signed in through its own page: its calls reach the three processes above.
    async with httpx.AsyncClient(base_url=urls["web"], timeout=30) as web:
        token = csrf_token((await web.get("/login")).text)
        signed_in = await web.post(
            "/login", data={"csrf_token": token, "email": email, "password": PASSWORD}
        )
        assert signed_in.status_code == 303, signed_in.text
        dashboard = await web.get("/")
        assert dashboard.status_code == 200 and "Everything" in dashboard.text


# --- Prometheus' answers -----------------------------------------------------------------------


class PrometheusAPI:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.client.get(f"/prometheus/api/v1/{path}", params=params)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (
            f"{path} {params}: {response.status_code} {body}"
        )
        return body["data"]


def _has_data(result: list[dict[str, Any]]) -> bool:
    """At least one point that is a number (Grafana draws nothing for NaN)."""
    return any(not math.isnan(float(value)) for series in result for _, value in series["values"])


def _max_value(result: list[dict[str, Any]], **labels: str) -> float:
    values = [
        float(value)
        for series in result
        if labels.items() <= series["metric"].items()
        for _, value in series["values"]
        if not math.isnan(float(value))
    ]
    assert values, f"no series with {labels} in {result}"
    return max(values)


# What the traffic must show, beyond "some data": (dashboard, panel title, labels) -> at least.
EXPECTED_AT_LEAST = [
    ("business.json", "Registrations", {}, 1),
    ("business.json", "Logins by outcome", {"outcome": "succeeded"}, 1),
    ("business.json", "Logins by outcome", {"outcome": "failed"}, 1),
    ("business.json", "Expenses created", {}, 3),
    ("business.json", "Imports by outcome", {"outcome": "succeeded"}, 1),
    ("business.json", "Imports by outcome", {"outcome": "rejected"}, 1),
    ("business.json", "Import rows by outcome", {"outcome": "accepted"}, 3),
    ("business.json", "Import rows by outcome", {"outcome": "rejected"}, 1),
    ("business.json", "Budgets exceeded", {}, 2),
    ("service-overview.json", "Responses by status class", {"status_class": "5xx"}, 0.001),
    ("service-overview.json", "Responses by status class", {"status_class": "4xx"}, 0.001),
    ("service-overview.json", "API error ratio (5xx)", {}, 0.001),
    (
        "service-overview.json",
        "Error ratio (5xx) by route",
        {"service": "expenses", "method": "GET", "route": "/api/v1/expenses"},
        0.001,
    ),
    ("service-overview.json", "Error ratio (5xx) by service", {"service": "expenses"}, 0.001),
    ("service-overview.json", "Request rate by route", {"route": "unmatched"}, 0.001),
    ("service-overview.json", "Targets up", {"component": "postgres-exporter"}, 1),
    ("service-overview.json", "Targets up", {"component": "web"}, 1),
    ("service-overview.json", "Request rate by route", {"service": "web", "route": "/"}, 0.001),
    ("postgresql.json", "PostgreSQL up", {}, 1),
    ("backups.json", "Backups kept", {}, BACKUPS_KEPT),
    ("backups.json", "Backup size", {}, BACKUP_SIZE_BYTES),
    ("backups.json", "Last successful backup age", {}, BACKUP_AGE_SECONDS),
    ("backups.json", "Last failure", {}, 1000 * (time.time() - 2 * BACKUP_AGE_SECONDS - 600)),
]


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_dashboards_and_rules_on_a_real_prometheus(database_url: str) -> None:
    prometheus_binary = _binary("prometheus")
    exporter_binary = _binary("prometheus-postgres-exporter")
    dashboards = _load_dashboards()
    rule_files = _rule_files()

    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="monitoring-e2e-")))
        ports = {
            name: free_port() for name in ("auth", "expenses", "reports", "web", "exporter", "prom")
        }
        env = clean_env(
            EXPENSETRACKER_DATABASE_URL=database_url,
            EXPENSETRACKER_LOG_LEVEL="WARNING",
            EXPENSETRACKER_AUTH_URL=f"http://127.0.0.1:{ports['auth']}",
            # The web app's, as its pods reach the APIs in Kubernetes.
            EXPENSETRACKER_EXPENSES_URL=f"http://127.0.0.1:{ports['expenses']}",
            EXPENSETRACKER_REPORTS_URL=f"http://127.0.0.1:{ports['reports']}",
        )
        services = {
            name: stack.enter_context(
                spawn(
                    cli("serve", "--target", name, "--host", "127.0.0.1", "--port", str(port)),
                    # The listing that meets the lock gives up after a second, not thirty.
                    {**env, "EXPENSETRACKER_DB_STATEMENT_TIMEOUT_MS": "1000"}
                    if name == "expenses"
                    else env,
                )
            )
            for name, port in ports.items()
            if name in COMPONENTS
        }
        exporter = stack.enter_context(
            spawn(
                [
                    exporter_binary,
                    f"--web.listen-address=127.0.0.1:{ports['exporter']}",
                    *_without_bgwriter(exporter_binary),
                    "--log.level=warn",
                ],
                {**clean_env(), "DATA_SOURCE_NAME": _exporter_dsn(database_url)},
            )
        )
        backup_port = stack.enter_context(_backup_stand_in())
        urls = {name: process.wait_ready() for name, process in services.items()}

        pods = [_pod(name, ports[name]) for name in COMPONENTS]
        pods += [_pod("postgres-exporter", ports["exporter"]), _pod("backup", backup_port)]
        # Pods the relabeling must leave out: a finished Job's, and one not asking for scrapes.
        pods += [
            _pod("migrate", ports["auth"], __meta_kubernetes_pod_phase="Succeeded"),
            _pod("debug", ports["auth"], __meta_kubernetes_pod_annotation_prometheus_io_scrape=""),
        ]
        config = folder / "prometheus.yml"
        rules = _fast_rule_copies(rule_files, folder / "rules")
        config.write_text(yaml.safe_dump(_prometheus_config(pods, ports["prom"], rules)))
        prometheus = stack.enter_context(
            spawn(
                [
                    prometheus_binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={folder / 'data'}",
                    f"--web.listen-address=127.0.0.1:{ports['prom']}",
                    f"--web.external-url=http://127.0.0.1:{ports['prom']}/prometheus",
                    "--web.route-prefix=/prometheus",
                    "--log.level=warn",
                ],
                clean_env(),
            )
        )
        everything = (*services.values(), exporter, prometheus)

        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{ports['prom']}", timeout=10
        ) as client:
            api = PrometheusAPI(client)

            async def ready() -> bool:
                return (await client.get("/prometheus/-/ready")).status_code == 200

            await eventually("Prometheus ready", ready, within=30, every=0.25, processes=everything)

            async def all_up() -> dict[str, Any] | None:
                targets = await api.get("targets")
                active = targets["activeTargets"]
                return targets if active and all(t["health"] == "up" for t in active) else None

            targets = await eventually(
                "every target up", all_up, within=30, every=0.25, processes=everything
            )
            by_component = {
                t["labels"].get("component", t["labels"]["job"]): t
                for t in targets["activeTargets"]
            }
            assert set(by_component) == {
                *COMPONENTS,
                "postgres-exporter",
                "backup",
                "prometheus",
            }
            for name in COMPONENTS:
                target = by_component[name]
                assert target["scrapeUrl"] == f"http://127.0.0.1:{ports[name]}/metrics"
                labels = target["labels"]
                assert labels["namespace"] == NAMESPACE
                assert labels["environment"] == ENVIRONMENT
                assert labels["pod"].startswith(f"{name}-")
                assert not [label for label in labels if label.startswith("__")]
            assert by_component["prometheus"]["scrapeUrl"].endswith("/prometheus/metrics")
            assert len(targets["droppedTargets"]) == 2

            def scraped_after(moment: float) -> Callable[[], Awaitable[dict | None]]:
                """When every target is up and was scraped after ``moment``: each one's last
                scrape, by job and instance."""

                async def check() -> dict[tuple[str, str], float] | None:
                    active = (await api.get("targets"))["activeTargets"]
                    scrapes = {
                        (t["labels"]["job"], t["labels"]["instance"]): datetime.fromisoformat(
                            t["lastScrape"]
                        ).timestamp()
                        for t in active
                        if t["health"] == "up"
                    }
                    if len(scrapes) == len(active) and min(scrapes.values()) > moment:
                        return scrapes
                    return None

                return check

            window_start = time.time()
            # Twice: a series appears with its first request, so a rate sees only the requests
            # made after the series was first scraped.
            for round_ in ("first", "second"):
                await _drive_traffic(urls, database_url)
                scrapes = await eventually(
                    f"a scrape of every target after the {round_} round",
                    scraped_after(time.time()),
                    within=30,
                    every=0.25,
                    processes=everything,
                )

            # The range queries' last steps must come after that scrape: a range query ending
            # now whose last step evaluates every target's sample of it, or a later one.
            async def last_step_after_the_scrape() -> float | None:
                end = time.time()
                data = await api.get(
                    "query_range",
                    query="timestamp(up)",
                    start=window_start,
                    end=end,
                    step=STEP_SECONDS,
                )
                seen = {
                    (series["metric"]["job"], series["metric"]["instance"]): float(
                        series["values"][-1][1]
                    )
                    for series in data["result"]
                }
                # Sample timestamps are the scrapes' in milliseconds.
                caught_up = all(seen.get(target, 0) >= at - 0.001 for target, at in scrapes.items())
                return end if caught_up else None

            window_end = await eventually(
                "a range query's last step after the last scrape",
                last_step_after_the_scrape,
                within=10,
                every=0.25,
                processes=everything,
            )
            range_seconds = math.ceil(window_end - window_start)

            # -- the rules: loaded, evaluated without error, their expressions accepted
            file_rules = [
                (group["name"], rule.get("alert") or rule.get("record"), rule["expr"])
                for document in rule_files.values()
                for group in document["groups"]
                for rule in group["rules"]
            ]

            async def evaluated() -> list[dict[str, Any]] | None:
                groups = (await api.get("rules"))["groups"]
                loaded = [(g["name"], r) for g in groups for r in g["rules"]]
                return loaded if all(r["health"] != "unknown" for _, r in loaded) else None

            loaded = await eventually(
                "every rule evaluated", evaluated, within=30, every=0.25, processes=(prometheus,)
            )
            assert {(group, rule["name"]) for group, rule in loaded} == {
                (group, name) for group, name, _ in file_rules
            }
            unhealthy = [
                (rule["name"], rule["health"], rule.get("lastError"))
                for _, rule in loaded
                if rule["health"] != "ok"
            ]
            assert not unhealthy
            for _, _, expr in file_rules:
                await api.get("query", query=expr, time=window_end)

            # -- the dashboards: variables, every query accepted, the listed panels with data
            empty, shortfalls = [], []
            for name, board in dashboards.items():
                values = _variable_values(board, range_seconds)
                for variable in board["templating"]["list"]:
                    match = _LABEL_VALUES.match(variable["definition"])
                    assert match, f"{name}: ${variable['name']} is not label_values(...)"
                    selector = _substitute(match.group(1), values)
                    series = await api.get(
                        "series", **{"match[]": selector}, start=window_start, end=window_end
                    )
                    found = {s[match.group(2)] for s in series if match.group(2) in s}
                    assert found, f"{name}: ${variable['name']} offers nothing"
                    if variable["name"] == "environment":
                        assert found == {ENVIRONMENT}
                for panel in _panels(board):
                    if panel["title"] in LOG_PANELS.get(name, set()):
                        continue
                    results = []
                    for target in panel["targets"]:
                        expr = _substitute(target["expr"], values)
                        await api.get("query", query=expr, time=window_end)
                        data = await api.get(
                            "query_range",
                            query=expr,
                            start=window_start,
                            end=window_end,
                            step=STEP_SECONDS,
                        )
                        results += data["result"]
                    if panel["title"] in PANELS_WITH_DATA[name] and not _has_data(results):
                        empty.append(f"{name}: {panel['title']}")
                    for board_name, title, labels, at_least in EXPECTED_AT_LEAST:
                        if (board_name, title) == (name, panel["title"]) and results:
                            value = _max_value(results, **labels)
                            if value < at_least:
                                shortfalls.append(f"{name}: {title} {labels}: {value} < {at_least}")
            assert not empty, f"panels without data: {empty}"
            assert not shortfalls, shortfalls

        for process in everything:
            assert process.popen.poll() is None, process.output
