"""Gatekeeper as our admission runs it: the policies of deploy/policies/, each constraint's
template Rego in a real Rego engine (regopy), its match block, and the ExpansionTemplates that
turn a workload into the Pods it makes."""

from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import dataclass

from regopy import Interpreter

from tests.helpers.kubernetes import REPO, Manifest, kustomize

POLICIES = REPO / "deploy" / "policies"


@dataclass(frozen=True)
class Constraint:
    name: str
    match: dict
    parameters: dict
    package: str
    engine: Interpreter

    def violations(self, obj: Manifest) -> list[str]:
        review = {
            "kind": group_version_kind(obj),
            "name": obj["metadata"].get("name", ""),
            "namespace": obj["metadata"].get("namespace", ""),
            "operation": "CREATE",
            "object": obj,
        }
        self.engine.set_input({"review": review, "parameters": self.parameters})
        output = self.engine.query(f"data.{self.package}.violation")
        assert output.ok(), f"{self.name}: {output}"
        [found] = json.loads(str(output))["expressions"]
        return sorted(v["msg"] for v in found)


def group_version_kind(obj: Manifest) -> dict:
    group, _, version = obj["apiVersion"].rpartition("/")
    return {"group": group, "version": version, "kind": obj["kind"]}


@functools.cache
def policies() -> tuple[Manifest, ...]:
    return tuple(kustomize(POLICIES))


def of_kind(kind: str) -> list[Manifest]:
    return [m for m in policies() if m["kind"] == kind]


@functools.cache
def constraints() -> tuple[Constraint, ...]:
    templates = {
        t["spec"]["crd"]["spec"]["names"]["kind"]: t for t in of_kind("ConstraintTemplate")
    }
    loaded = []
    for constraint in policies():
        if not constraint["apiVersion"].startswith("constraints.gatekeeper.sh/"):
            continue
        [target] = templates[constraint["kind"]]["spec"]["targets"]
        engine = Interpreter()
        for number, lib in enumerate(target.get("libs", [])):
            engine.add_module(f"lib{number}", lib)
        engine.add_module(constraint["kind"], target["rego"])
        package = re.search(r"^package (\S+)", target["rego"], re.M).group(1)
        spec = constraint["spec"]
        loaded.append(
            Constraint(
                constraint["metadata"]["name"],
                spec["match"],
                spec.get("parameters", {}),
                package,
                engine,
            )
        )
    return tuple(loaded)


def expanded(obj: Manifest) -> list[Manifest]:
    """The object and what Gatekeeper's ExpansionTemplates (expansion.yaml) make of it: the Pod
    of a Deployment, the Job and then the Pod of a CronJob."""
    gvk = group_version_kind(obj)
    made = [obj]
    for template in of_kind("ExpansionTemplate"):
        spec = template["spec"]
        applies = any(
            gvk["group"] in rule["groups"] and obj["kind"] in rule["kinds"]
            for rule in spec["applyTo"]
        )
        if not applies:
            continue
        source = obj
        for step in spec["templateSource"].split("."):
            source = source[step]
        generated = spec["generatedGVK"]
        api_version = "/".join(filter(None, (generated["group"], generated["version"])))
        metadata = copy.deepcopy(source.get("metadata", {}))
        metadata |= {"name": obj["metadata"]["name"], "namespace": obj["metadata"].get("namespace")}
        child = {"apiVersion": api_version, "kind": generated["kind"], "metadata": metadata}
        made += expanded(child | {"spec": source["spec"]})
    return made


def selected(selector: dict, labels: dict[str, str]) -> bool:
    operators = {
        "Exists": lambda key, _: key in labels,
        "DoesNotExist": lambda key, _: key not in labels,
        "In": lambda key, values: labels.get(key) in values,
        "NotIn": lambda key, values: labels.get(key) not in values,
    }
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()) and all(
        operators[e["operator"]](e["key"], e.get("values", []))
        for e in selector.get("matchExpressions", [])
    )


def matches(match: dict, obj: Manifest) -> bool:
    """Gatekeeper's match block, the fields our constraints use: kinds, namespaces, labels."""
    gvk = group_version_kind(obj)
    kinds = any(
        gvk["group"] in rule["apiGroups"] and obj["kind"] in rule["kinds"]
        for rule in match["kinds"]
    )
    namespace = obj["metadata"].get("namespace")
    in_namespace = "namespaces" not in match or namespace in match["namespaces"]
    labels = obj["metadata"].get("labels", {})
    return kinds and in_namespace and selected(match.get("labelSelector", {}), labels)


def refusals(obj: Manifest) -> list[str]:
    """What admission says to the object: '<constraint>: <message>' per violation."""
    return [
        f"{constraint.name}: {message}"
        for made in expanded(obj)
        for constraint in constraints()
        if matches(constraint.match, made)
        for message in constraint.violations(made)
    ]
