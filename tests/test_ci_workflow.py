"""The GitHub Actions pipeline offered to users who host the code on GitHub: valid YAML that
tests, builds and pushes the image tagged with the commit, and moves the development overlay's
image with kustomize."""

from __future__ import annotations

import yaml

from tests.kubernetes import KUBERNETES, REPO, overlay

WORKFLOW = REPO / ".github" / "workflows" / "ci.yaml"


def workflow() -> dict:
    document = yaml.safe_load(WORKFLOW.read_text())
    # YAML 1.1 reads the bare key `on` as True.
    document["on"] = document.pop(True, document.get("on"))
    return document


def commands(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in job["steps"])


def test_workflow_tests_builds_and_updates_the_overlay() -> None:
    document = workflow()
    assert set(document["on"]) == {"push", "pull_request"}
    jobs = document["jobs"]
    assert "make test" in commands(jobs["test"])
    image = jobs["image"]
    assert image["needs"] == "test"
    assert "refs/heads/main" in image["if"]
    build = commands(image)
    assert '--tag "$IMAGE:${{ steps.tag.outputs.tag }}"' in build
    assert 'docker push "$IMAGE:${{ steps.tag.outputs.tag }}"' in build
    assert "GITHUB_SHA" in commands(image)
    deploy = jobs["deploy-development"]
    assert deploy["needs"] == "image"
    [edit] = [step for step in deploy["steps"] if "kustomize edit set image" in step.get("run", "")]
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
