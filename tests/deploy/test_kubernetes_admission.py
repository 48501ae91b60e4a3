"""The Gatekeeper policies in deploy/policies/, run by a real Rego engine (regopy, Microsoft's
rego-cpp) the way Gatekeeper runs them: each template's Rego gets ``input.review.object`` and the
constraint's ``input.parameters``, and ``violation[{"msg": msg}]`` refuses. Every rendered object
of every overlay is admitted; one deliberately bad object per rule is refused, for its reason."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest

from tests.helpers.admission import constraints, expanded, matches, of_kind, policies, refusals
from tests.helpers.kubernetes import OVERLAYS, Manifest, argocd, named, overlay
from tests.helpers.paths import CRD_SCHEMAS

GATEKEEPER_TARGET = "admission.k8s.gatekeeper.sh"


def test_every_rule_is_a_constraint_with_a_template_that_compiles() -> None:
    names = {c.name for c in constraints()}
    assert names == {
        "seed-pod-security-context",
        "no-privilege-escalation",
        "cpu-and-memory-requests-and-limits",
        "no-latest-images",
        "services-behind-the-ingress",
        "recommended-labels",
        "no-secrets-in-configmaps",
    }


@pytest.mark.parametrize("env", OVERLAYS)
def test_every_rendered_object_is_admitted(env: str) -> None:
    checked = 0
    for obj in overlay(env):
        assert refusals(obj) == [], f"{obj['kind']}/{obj['metadata']['name']}"
        checked += sum(1 for made in expanded(obj) for c in constraints() if matches(c.match, made))
    # Pods of every workload, the Services, ConfigMaps and workloads were really evaluated.
    assert checked > 30, checked


def deployment(env: str = "production") -> Manifest:
    return copy.deepcopy(named(overlay(env), "Deployment", "expenses"))


def container_security(obj: Manifest) -> dict:
    return obj["spec"]["template"]["spec"]["containers"][0]["securityContext"]


def as_root(obj: Manifest) -> None:
    container_security(obj)["runAsNonRoot"] = False


def as_uid_1000(obj: Manifest) -> None:
    container_security(obj)["runAsUser"] = 1000


def unconfined(obj: Manifest) -> None:
    container_security(obj)["seccompProfile"] = {"type": "Unconfined"}


def writable_root(obj: Manifest) -> None:
    container_security(obj)["readOnlyRootFilesystem"] = False


def keeps_capabilities(obj: Manifest) -> None:
    container_security(obj)["capabilities"] = {"drop": ["NET_RAW"]}


def escalates(obj: Manifest) -> None:
    del container_security(obj)["allowPrivilegeEscalation"]


def privileged(obj: Manifest) -> None:
    container_security(obj)["privileged"] = True


def no_memory_limit(obj: Manifest) -> None:
    del obj["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]


def latest(obj: Manifest) -> None:
    obj["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example.com/x:latest"


def untagged(obj: Manifest) -> None:
    obj["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example.com:5000/x"


def unlabelled_pods(obj: Manifest) -> None:
    del obj["spec"]["template"]["metadata"]["labels"]["environment"]


WORKLOAD_BREAKS = {
    as_root: "seed-pod-security-context: container <expenses> must set runAsNonRoot: true",
    as_uid_1000: "seed-pod-security-context: container <expenses> must run as uid 65534, not 1000",
    unconfined: "seed-pod-security-context: container <expenses> must use the seccomp profile "
    "RuntimeDefault, not Unconfined",
    writable_root: "seed-pod-security-context: container <expenses> must set "
    "readOnlyRootFilesystem: true",
    keeps_capabilities: "seed-pod-security-context: container <expenses> must drop ALL "
    "capabilities",
    escalates: "no-privilege-escalation: container <expenses> must set "
    "allowPrivilegeEscalation: false",
    privileged: "no-privilege-escalation: container <expenses> must not be privileged",
    no_memory_limit: "cpu-and-memory-requests-and-limits: container <expenses> has no memory "
    "limits",
    latest: "no-latest-images: container <expenses> image <registry.example.com/x:latest> uses "
    "the disallowed tag <latest>",
    untagged: "no-latest-images: container <expenses> image <registry.example.com:5000/x> has no "
    "tag: name a release tag or digest",
    unlabelled_pods: "recommended-labels: Pod <expenses> is missing the label environment",
}


@pytest.mark.parametrize("breaks", WORKLOAD_BREAKS, ids=lambda f: f.__name__)
def test_a_workload_breaking_one_rule_is_refused_for_that_rule(breaks) -> None:
    bad = deployment()
    breaks(bad)
    assert refusals(bad) == [WORKLOAD_BREAKS[breaks]]


def test_a_cronjobs_pods_are_checked_through_its_job() -> None:
    backup = copy.deepcopy(named(overlay("production"), "CronJob", "postgres-backup"))
    pod = backup["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    pod["containers"][0]["image"] = "postgres:latest"
    [refusal] = refusals(backup)
    assert refusal.startswith("no-latest-images: ") and "<postgres:latest>" in refusal


def test_a_digest_pinned_image_is_admitted() -> None:
    pinned = deployment()
    container = pinned["spec"]["template"]["spec"]["containers"][0]
    container["image"] = "registry.example.com/expensetracker/expensetracker@sha256:" + "a" * 64
    assert refusals(pinned) == []


def test_workloads_themselves_carry_the_labels() -> None:
    bad = deployment()
    del bad["metadata"]["labels"]["app.kubernetes.io/version"]
    assert refusals(bad) == [
        "recommended-labels: Deployment <expenses> is missing the label app.kubernetes.io/version"
    ]


@pytest.mark.parametrize("service_type", ["NodePort", "LoadBalancer"])
def test_a_service_outside_the_ingress_is_refused(service_type: str) -> None:
    service = copy.deepcopy(named(overlay("production"), "Service", "auth"))
    service["spec"]["type"] = service_type
    assert refusals(service) == [
        f"services-behind-the-ingress: Service <auth> must not be of type {service_type}: "
        "expose it through the Ingress"
    ]


CONFIGMAP_BREAKS = {
    "EXPENSETRACKER_DB_PASSWORD": (
        "hunter2",
        "key <EXPENSETRACKER_DB_PASSWORD> looks like a credential: keep it in a Secret",
    ),
    "EXPENSETRACKER_REPORTS_DATABASE": (
        "postgresql://reports:hunter2@postgres:5432/expensetracker",
        "key <EXPENSETRACKER_REPORTS_DATABASE> holds a URL with a password: keep it in a Secret",
    ),
    "tls.pem": (
        "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n",
        "key <tls.pem> holds a private key: keep it in a Secret",
    ),
}


@pytest.mark.parametrize("key", CONFIGMAP_BREAKS)
def test_a_secret_value_in_a_configmap_is_refused(key: str) -> None:
    config = copy.deepcopy(named(overlay("production"), "ConfigMap", "expensetracker-config"))
    value, reason = CONFIGMAP_BREAKS[key]
    config["data"][key] = value
    assert refusals(config) == [
        f"no-secrets-in-configmaps: ConfigMap <expensetracker-config> {reason}"
    ]


def test_a_database_url_without_a_password_stays_in_the_configmap() -> None:
    config = copy.deepcopy(named(overlay("production"), "ConfigMap", "expensetracker-config"))
    config["data"]["EXPENSETRACKER_READ_DATABASE_HOST"] = "postgresql://reports@postgres-ro:5432/x"
    assert refusals(config) == []


def test_operator_made_database_pods_are_left_to_their_cluster_spec() -> None:
    instance = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "postgres-1",
            "namespace": "expensetracker",
            "labels": {"cnpg.io/cluster": "postgres"},
        },
        "spec": {"containers": [{"name": "postgres", "image": "postgres:latest"}]},
    }
    assert refusals(instance) == []
    del instance["metadata"]["labels"]["cnpg.io/cluster"]
    assert len(refusals(instance)) > 5


def _schema(group: str, kind: str) -> dict:
    return json.loads((CRD_SCHEMAS / group / f"{kind}_v1.json").read_text())


def test_templates_match_the_upstream_schema_and_constraints_their_templates() -> None:
    schema = _schema("templates.gatekeeper.sh", "constrainttemplate")
    validator = jsonschema.Draft7Validator(schema)
    templates = of_kind("ConstraintTemplate")
    assert len(templates) == 7
    parameters = {}
    for template in templates:
        errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(template)]
        assert not errors, (template["metadata"]["name"], errors)
        names = template["spec"]["crd"]["spec"]["names"]
        # Gatekeeper requires the template's name to be its kind, lowercased.
        assert template["metadata"]["name"] == names["kind"].lower()
        [target] = template["spec"]["targets"]
        assert target["target"] == GATEKEEPER_TARGET
        validation = template["spec"]["crd"]["spec"].get("validation", {})
        parameters[names["kind"]] = validation.get("openAPIV3Schema", {"type": "object"})
    # The constraint's CRD is made from the template: its parameters are checked against it.
    for constraint in policies():
        if constraint["apiVersion"] != "constraints.gatekeeper.sh/v1beta1":
            continue
        schema = parameters[constraint["kind"]] | {"additionalProperties": False}
        given = constraint["spec"].get("parameters", {})
        errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(given)]
        assert not errors, (constraint["metadata"]["name"], errors)
        assert constraint["spec"]["enforcementAction"] == "deny"
    broken = copy.deepcopy(templates[0])
    broken["spec"]["targets"][0]["regoo"] = broken["spec"]["targets"][0].pop("rego")
    assert list(validator.iter_errors(broken)), "the schema must catch a misspelt field"


def test_argo_cd_applies_the_templates_before_their_constraints() -> None:
    [applications] = [
        m for m in argocd() if m["kind"] == "ApplicationSet" and m["metadata"]["name"] == "policies"
    ]
    assert applications["spec"]["template"]["spec"]["source"]["path"] == "deploy/policies"
    assert applications["spec"]["template"]["spec"]["project"] == "policies"
    [project] = [
        m for m in argocd() if m["kind"] == "AppProject" and m["metadata"]["name"] == "policies"
    ]
    allowed = {(r["group"], r["kind"]) for r in project["spec"]["clusterResourceWhitelist"]}
    for policy in policies():
        group = policy["apiVersion"].split("/")[0]
        assert {(group, policy["kind"]), (group, "*")} & allowed, policy["kind"]
        annotations = policy["metadata"].get("annotations", {})
        if group == "constraints.gatekeeper.sh":
            # Gatekeeper makes a constraint's CRD from its template: templates go first.
            assert annotations["argocd.argoproj.io/sync-wave"] == "1"
            assert (
                "SkipDryRunOnMissingResource=true" in annotations["argocd.argoproj.io/sync-options"]
            )
        else:
            assert "argocd.argoproj.io/sync-wave" not in annotations
