"""The GitHub Actions pipeline offered to users who host the code on GitHub: valid YAML that
tests, builds and pushes the image tagged with the commit, and moves the development overlay's
image with kustomize."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.helpers.kubernetes import (
    KUBERNETES,
    REPO,
    WORKLOAD_KINDS,
    checkov,
    containers,
    kustomize,
    of_kind,
    overlay,
)

WORKFLOW = REPO / ".github" / "workflows" / "ci.yaml"


def workflow() -> dict:
    document = yaml.safe_load(WORKFLOW.read_text())
    # YAML 1.1 reads the bare key `on` as True.
    document["on"] = document.pop(True, document.get("on"))
    return document


def commands(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def _step(job: dict, **match: str) -> tuple[int, dict]:
    """The one step whose `uses`/`name`/`run` contains each given text, and its position."""
    [found] = [
        (index, step)
        for index, step in enumerate(job["steps"])
        if all(text in str(step.get(key, "")) for key, text in match.items())
    ]
    return found


def test_workflow_tests_builds_and_updates_the_overlay() -> None:
    document = workflow()
    assert set(document["on"]) == {"push", "pull_request"}
    jobs = document["jobs"]
    # The checks first, then the tests.
    lint, _ = _step(jobs["test"], run="make lint")
    typecheck, _ = _step(jobs["test"], run="make typecheck")
    test, tests = _step(jobs["test"], name="Tests")
    assert lint < typecheck < test
    assert tests["run"].endswith(" make test")
    # Every test runs there (a missing prerequisite fails in CI): a Redis, and root for the image.
    assert tests["run"].startswith("sudo --preserve-env=CI,EXPENSETRACKER_TEST_REDIS_URL ")
    assert jobs["test"]["services"]["redis"]["ports"] == ["6379:6379"]
    assert jobs["test"]["env"]["EXPENSETRACKER_TEST_REDIS_URL"].startswith(
        "redis://127.0.0.1:6379/"
    )
    image = jobs["image"]
    assert image["needs"] == "test"
    assert "refs/heads/main" in image["if"]
    build = commands(image)
    assert '--tag "$IMAGE:${{ steps.tag.outputs.tag }}"' in build
    assert 'docker push "$IMAGE:${{ steps.tag.outputs.tag }}"' in build
    assert "GITHUB_SHA" in commands(image)
    deploy = jobs["deploy-development"]
    assert deploy["needs"] == "image"
    _, edit = _step(deploy, name="development overlay", run="kustomize edit set image")
    overlay_dir = REPO / edit["working-directory"]
    assert overlay_dir.parent == KUBERNETES / "overlays"
    # The image name it sets is the one the overlay's `images:` rewrites.
    assert 'set image "expensetracker=' in edit["run"]
    rendered = {
        container["image"]
        for manifest in overlay(overlay_dir.name)
        if manifest["kind"] == "Deployment"
        for container in manifest["spec"]["template"]["spec"]["containers"]
    }
    assert rendered == {"registry.example.com/expensetracker/expensetracker:0.1.0"}
    # Least privilege: write access only where a job needs it.
    assert document["permissions"] == {"contents": "read"}
    assert image["permissions"]["packages"] == "write"
    assert deploy["permissions"] == {"contents": "write"}


def test_make_test_installs_the_debian_packages_the_tests_run() -> None:
    """Issue 13, finding 11: `make test` itself brings what the tests need on a fresh machine
    (`make test-deps`, scripts/test-prerequisites); .ci/run calls only what the README says."""
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^test: .*\btest-deps\b", makefile, re.MULTILINE)
    assert re.search(
        r"^test-deps:\n\t@scripts/test-prerequisites \$\(TEST_DEBIAN_PACKAGES\)",
        makefile,
        re.MULTILINE,
    )
    ci = (REPO / ".ci" / "run").read_text()
    assert "apt-get" not in ci and "pip install" not in ci
    assert re.search(r"^export CI=true$", ci, re.MULTILINE)
    assert re.findall(r"^\s*(make \S+.*)$", ci, re.MULTILINE) == [
        "make lint",
        "make typecheck",
        "make test",
        'make test PYTEST_ARGS="-m database"',
    ]
    assert re.search(r"^typecheck: bootstrap\n\t\$\(VENV\)/bin/mypy$", makefile, re.MULTILINE)
    # make test ran it before pytest: every package it names is installed now.
    listed = subprocess.run(
        ["make", "-s", "--no-print-directory", "-f", "-", "print"],
        input=makefile + "\nprint:\n\t@echo $(TEST_DEBIAN_PACKAGES)\n",
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
        check=True,
    ).stdout.split()
    assert {"buildah", "debootstrap", "prometheus", "prometheus-alertmanager"} <= set(listed)
    for package in listed:
        status = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True
        ).stdout
        assert status == "install ok installed", package


def test_a_normal_user_is_told_the_one_command_to_run() -> None:
    # A copy any user can run (the script needs nothing else of the checkout).
    folder = Path(tempfile.mkdtemp(prefix="et-prereq-", dir="/tmp"))
    try:
        script = folder / "test-prerequisites"
        shutil.copy(REPO / "scripts" / "test-prerequisites", script)
        folder.chmod(0o755)
        script.chmod(0o755)
        command = [str(script), "buildah", "expensetracker-no-such-package"]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "nobody", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    finally:
        shutil.rmtree(folder)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].strip() == (
        "sudo apt-get update && sudo apt-get install -y --no-install-recommends "
        "expensetracker-no-such-package"
    )


def _runtime_packages_in_lock() -> dict[str, dict]:
    """uv.lock's packages that the image installs: the project's own dependencies (with the
    extras it asks for), transitively, without the dev group."""
    packages = {p["name"]: p for p in tomllib.loads((REPO / "uv.lock").read_text())["package"]}
    project = next(p for p in packages.values() if p["source"].get("editable") == ".")
    wanted, pending = {}, list(project["dependencies"])
    while pending:
        dependency = pending.pop()
        package = packages[dependency["name"]]
        pending += [] if package["name"] in wanted else package.get("dependencies", [])
        for extra in dependency.get("extra", []):
            pending += package["optional-dependencies"][extra]
        wanted[package["name"]] = package
    return wanted


def test_the_sbom_lists_the_locked_runtime_packages(tmp_path: Path) -> None:
    """`make sbom`, a real cyclonedx-py run on uv.lock's export: every package the image
    installs, at its locked version and with the lock's hashes, and none of the dev tools."""
    sbom_path = tmp_path / "sbom.cdx.json"
    subprocess.run(
        ["make", "-s", "--no-print-directory", "sbom", f"SBOM={sbom_path}"],
        cwd=REPO,
        check=True,
        timeout=300,
    )
    sbom = json.loads(sbom_path.read_text())
    assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"] >= "1.5"
    listed = {c["name"].lower(): c for c in sbom["components"]}
    locked = _runtime_packages_in_lock()
    assert set(listed) == set(locked)
    assert {"fastapi", "asyncpg", "sqlalchemy", "pydantic-settings"} <= set(listed)
    for name, component in listed.items():
        assert component["version"] == locked[name]["version"], name
        assert component["purl"] == f"pkg:pypi/{name}@{locked[name]['version']}"
        lock_hashes = {
            artifact["hash"].removeprefix("sha256:")
            for artifact in [*locked[name].get("wheels", []), locked[name].get("sdist", {})]
            if "hash" in artifact
        }
        sbom_hashes = {
            h["content"] for ref in component["externalReferences"] for h in ref["hashes"]
        }
        assert sbom_hashes and sbom_hashes <= lock_hashes, name
    assert not {"checkov", "pytest", "cyclonedx-bom"} & set(listed)


def test_workflow_audits_scans_and_attaches_the_sbom() -> None:
    """The supply-chain steps, which need the vulnerability databases and a registry and so run
    only on GitHub: present, in order, and wired to each other (docs/deploy.md)."""
    jobs = workflow()["jobs"]
    _, audit = _step(jobs["test"], run="pip-audit")
    assert "uv export --frozen --no-dev --no-emit-project" in audit["run"]
    assert re.search(r"pip-audit==\d+\.\d+\.\d+ --requirement requirements\.txt", audit["run"])
    assert "--require-hashes" in audit["run"] and "--strict" in audit["run"]

    image = jobs["image"]
    sbom_at, sbom = _step(image, run="make sbom")
    assert "SBOM=sbom.cdx.json" in sbom["run"]
    upload_at, upload = _step(image, uses="actions/upload-artifact@")
    assert upload["with"]["path"] == "sbom.cdx.json"
    build_at, build = _step(image, name="Build", run="docker build")
    assert '--label "org.cyclonedx.sbom.sha256=$(sha256sum sbom.cdx.json' in build["run"]
    scan_at, scan = _step(image, uses="aquasecurity/trivy-action@")
    assert re.fullmatch(r"aquasecurity/trivy-action@\d+\.\d+\.\d+", scan["uses"])
    assert scan["with"] == {
        "image-ref": "${{ env.IMAGE }}:${{ steps.tag.outputs.tag }}",
        "severity": "CRITICAL",
        "exit-code": "1",
    }
    push_at, push = _step(image, run="docker push")
    # The SBOM exists before the build labels it; nothing unscanned is pushed.
    assert sbom_at < upload_at < build_at < scan_at < push_at
    assert image["outputs"]["digest"] == "${{ steps.push.outputs.digest }}"
    assert push["id"] == "push" and 'echo "digest=${digest#*@}" >> "$GITHUB_OUTPUT"' in push["run"]

    for env in ("staging", "production"):
        _, pin = _step(jobs["deploy-development"], name=f"{env} overlay")
        assert REPO / pin["working-directory"] == KUBERNETES / "overlays" / env
        assert pin["run"] == (
            'kustomize edit set image "expensetracker=$IMAGE@${{ needs.image.outputs.digest }}"'
        )


def _set_image(kustomization_file: Path, argument: str) -> None:
    """What `kustomize edit set image NAME=IMAGE[:TAG|@DIGEST]` leaves in a kustomization: the
    image's entry with the new name and the tag or the digest (and not the other)."""
    name, _, image = argument.partition("=")
    kustomization = yaml.safe_load(kustomization_file.read_text())
    entry: dict[str, str] = {"name": name}
    if "@" in image:
        entry["newName"], entry["digest"] = image.split("@")
    else:
        entry["newName"], _, entry["newTag"] = image.rpartition(":")
    others = [i for i in kustomization.get("images", []) if i["name"] != name]
    kustomization["images"] = [*others, entry]
    kustomization_file.write_text(yaml.safe_dump(kustomization))


def test_staging_and_production_run_the_image_ci_pins_and_the_same_one(tmp_path: Path) -> None:
    """Every step of the deploy job that edits an overlay's image, run on a copy of the tree
    (with made-up values for the workflow's IMAGE and the pushed digest): staging and production
    then run the same image, by digest, from the registry CI pushed it to, and development its
    tag from that registry. Before CI's first run the committed overlays name one registry."""
    committed = {
        env: {
            i["newName"]
            for i in yaml.safe_load(
                (KUBERNETES / "overlays" / env / "kustomization.yaml").read_text()
            )["images"]
        }
        for env in ("development", "staging", "production")
    }
    assert len(set(map(frozenset, committed.values()))) == 1, committed

    document = workflow()
    image = "ghcr.io/expensetracker/expensetracker"
    assert document["env"]["IMAGE"] == "ghcr.io/${{ github.repository }}"
    digest = "sha256:" + hashlib.sha256(b"not a real image").hexdigest()
    values = {
        "$IMAGE": image,
        "${{ needs.image.outputs.digest }}": digest,
        "${{ needs.image.outputs.tag }}": "1a2b3c4d5e6f",
    }
    tree = tmp_path / "kubernetes"
    shutil.copytree(KUBERNETES, tree)
    edited = set()
    for step in document["jobs"]["deploy-development"]["steps"]:
        run = step.get("run", "")
        if not run.startswith("kustomize edit set image "):
            continue
        argument = run.removeprefix("kustomize edit set image ").strip('"')
        for variable, value in values.items():
            argument = argument.replace(variable, value)
        folder = REPO / step["working-directory"]
        assert folder.parent == KUBERNETES / "overlays"
        _set_image(tree / "overlays" / folder.name / "kustomization.yaml", argument)
        edited.add(folder.name)
    assert edited == {"development", "staging", "production"}

    def ours(env: str) -> set[str]:
        rendered = tuple(kustomize(tree / "overlays" / env))
        return {
            container["image"]
            for manifest in of_kind(rendered, *WORKLOAD_KINDS)
            for container in containers(manifest)
            if container["image"].startswith(image)
            or container["image"].startswith("registry.example.com")
        }

    assert ours("staging") == ours("production") == {f"{image}@{digest}"}
    assert ours("development") == {f"{image}:1a2b3c4d5e6f"}


def test_the_digest_ci_writes_pins_our_image_but_not_the_third_party_ones(tmp_path: Path) -> None:
    """Why checkov's CKV_K8S_43 (images by digest) stays skipped for production: with the digest
    that the workflow writes (what `kustomize edit set image NAME=IMAGE@DIGEST` leaves in the
    overlay: the new name and the digest, no tag; a made-up digest here, since nothing is pushed
    from this workplace), every container of our image is pinned and passes the check, but the
    third-party images are still pinned by tag only, and fail it (docs/deploy.md)."""
    tree = tmp_path / "kubernetes"
    shutil.copytree(KUBERNETES, tree)
    kustomization_file = tree / "overlays" / "production" / "kustomization.yaml"
    kustomization = yaml.safe_load(kustomization_file.read_text())
    digest = "sha256:" + hashlib.sha256(b"not a real image").hexdigest()
    [image] = kustomization["images"]
    kustomization["images"] = [
        {"name": "expensetracker", "newName": image["newName"], "digest": digest}
    ]
    kustomization_file.write_text(yaml.safe_dump(kustomization))
    rendered = kustomize(tree / "overlays" / "production")
    ours = {
        container["image"]
        for manifest in of_kind(tuple(rendered), *WORKLOAD_KINDS)
        for container in containers(manifest)
        if container["image"].startswith(image["newName"])
    }
    assert ours == {f"{image['newName']}@{digest}"}

    report, _, _ = checkov(
        rendered, tmp_path / "production.yaml", "--framework", "kubernetes", "--check", "CKV_K8S_43"
    )
    failed = {c["resource"] for c in report["results"]["failed_checks"]}
    passed = {c["resource"] for c in report["results"]["passed_checks"]}
    assert {"Deployment.expensetracker.auth", "CronJob.expensetracker.postgres-backup"} <= passed
    assert failed == {"Deployment.expensetracker.postgres-exporter"}, failed


def test_ci_fails_where_a_prerequisite_is_missing() -> None:
    """The redis and image tests need what the suite cannot embed. Where CI=true and it is
    missing they fail and say why; elsewhere they are deselected, with one line saying why."""
    redis_test = (
        "tests/platform/test_http_platform.py::test_rate_limit_in_redis_is_shared_by_replicas"
    )
    env = {k: v for k, v in os.environ.items() if k not in {"CI", "EXPENSETRACKER_TEST_REDIS_URL"}}
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", redis_test]

    def run(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, env=env | extra, cwd=REPO, capture_output=True, text=True, timeout=120
        )

    in_ci = run(CI="true")
    assert in_ci.returncode == pytest.ExitCode.TESTS_FAILED, in_ci.stdout
    assert (
        "Failed: CI must run this test, but EXPENSETRACKER_TEST_REDIS_URL names no Redis"
        in in_ci.stdout
    ), in_ci.stdout
    elsewhere = run()
    assert elsewhere.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, elsewhere.stdout
    reason = "EXPENSETRACKER_TEST_REDIS_URL names no Redis (in CI this fails)"
    lines = elsewhere.stdout.splitlines()
    assert f"1 redis test(s) deselected: {reason}" in lines, elsewhere.stdout
