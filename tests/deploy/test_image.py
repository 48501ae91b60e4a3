"""The container image, built from the Dockerfile for real: buildah builds it on a Debian base that
debootstrap makes here (no container registry is reachable), and the checks look into it without a
container runtime: `buildah run`, and a chroot on the image's root mounted read-only."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from expensetracker import __version__
from tests.helpers.processes import LISTENING_UNREADY, REPO, free_port, spawn

# Here the build takes about 35 s, and debootstrap about 40 s more the first time.
pytestmark = [pytest.mark.image, pytest.mark.timeout(1200)]

SUITE = "bookworm"
BASE_IMAGE = f"localhost/debian-python-base:{SUITE}"
IMAGE = "localhost/expensetracker:test"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "expensetracker-tests"
BASE_TARBALL = CACHE / f"debian-{SUITE}-python.tar"
# What the Dockerfile needs of a base besides a shell: python3 with its venv module, TLS roots.
BASE_PACKAGES = "python3,python3-venv,ca-certificates"
LOCAL_CAS = Path("/usr/local/share/ca-certificates")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LABELS = ("title", "description", "source", "licenses", "version", "revision", "created")

# Kubernetes' readOnlyRootFilesystem with an emptyDir on /tmp, in a mount namespace of its own:
# the image's root read-only, a fresh tmpfs on /tmp, then the command as the image's user.
READ_ONLY_ROOT = """
root=$1 user=$2
shift 2
mount -o remount,bind,ro "$root"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
exec chroot --userspec="$user" "$root" "$@"
"""


def run(*args: str, timeout: float = 900) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, (
        f"{' '.join(args)} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


def buildah(*args: str) -> str:
    return run("buildah", *args)


def debian_mirror() -> str:
    """The Debian mirror that apt uses here: the network may reach that one alone."""
    lists = run("apt-get", "indextargets", "--format", "$(REPO_URI)", "Label: Debian")
    assert lists.split(), "apt knows no Debian mirror: run apt-get update"
    return lists.split()[0]


def base_tarball() -> Path:
    """A minimal Debian with python3, made once and kept in the cache."""
    if BASE_TARBALL.exists():
        return BASE_TARBALL
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
        root = Path(scratch, "root")
        run(
            "debootstrap",
            "--variant=minbase",
            f"--include={BASE_PACKAGES}",
            SUITE,
            str(root),
            debian_mirror(),
        )
        # The installer's downloads and package lists are not part of an image.
        for leftover in [
            *root.glob("var/cache/apt/archives/*.deb"),
            *root.glob("var/lib/apt/lists/*_*"),
        ]:
            leftover.unlink()
        tarball = Path(scratch, "base.tar")
        run("tar", "-C", str(root), "--numeric-owner", "-cf", str(tarball), ".")
        tarball.rename(BASE_TARBALL)
    return BASE_TARBALL


@contextmanager
def base_image() -> Iterator[str]:
    """The cached Debian as an image that trusts what this machine trusts: the build reaches PyPI
    through this machine's network, whose TLS may be intercepted by a CA of its own (a company's
    base image carries its CA the same way). Made anew each time, since that CA may change."""
    tarball = base_tarball()
    container = buildah("from", "scratch").strip()
    try:
        buildah("add", "--quiet", container, str(tarball), "/")
        if LOCAL_CAS.is_dir():
            buildah("copy", "--quiet", container, str(LOCAL_CAS), str(LOCAL_CAS))
        buildah("run", "--isolation", "chroot", container, "--", "update-ca-certificates")
        buildah(
            "config",
            "--env",
            f"PATH={DEFAULT_PATH}",
            "--env",
            "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
            container,
        )
        buildah("commit", "--quiet", container, BASE_IMAGE)
    finally:
        buildah("rm", container)
    try:
        yield BASE_IMAGE
    finally:
        buildah("rmi", BASE_IMAGE)


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    missing = [tool for tool in ("buildah", "debootstrap") if shutil.which(tool) is None]
    assert not missing, f"missing {', '.join(missing)}: apt-get install buildah debootstrap"
    with base_image() as base:
        revision = run("git", "-C", str(REPO), "rev-parse", "HEAD").strip()
        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        buildah(
            "bud",
            "--isolation",
            "chroot",
            "--pull=never",
            "--build-arg",
            f"BASE_IMAGE={base}",
            "--build-arg",
            f"VERSION={__version__}",
            "--build-arg",
            f"REVISION={revision}",
            "--build-arg",
            f"CREATED={created}",
            "--tag",
            IMAGE,
            str(REPO),
        )
        try:
            yield IMAGE
        finally:
            buildah("rmi", IMAGE)


@pytest.fixture(scope="module")
def config(image: str) -> dict:
    return json.loads(buildah("inspect", "--type", "image", image))["OCIv1"]["config"]


@contextmanager
def container(image: str) -> Iterator[str]:
    name = buildah("from", "--pull=never", "--quiet", image).strip()
    try:
        yield name
    finally:
        buildah("rm", name)  # unmounts it too


def in_container(name: str, script: str, *options: str) -> str:
    return buildah("run", "--isolation", "chroot", *options, name, "--", "sh", "-c", script)


def read_only_root(root: str, user: str, *command: str) -> list[str]:
    return ["unshare", "--mount", "sh", "-euc", READ_ONLY_ROOT, "sh", root, user, *command]


def test_dockerfile_installs_the_uv_of_the_makefile() -> None:
    makefile = re.search(r"^UV_VERSION \?= (\S+)$", (REPO / "Makefile").read_text(), re.M)
    dockerfile = re.search(r"^ARG UV_VERSION=(\S+)$", (REPO / "Dockerfile").read_text(), re.M)
    assert makefile and dockerfile
    assert dockerfile.group(1) == makefile.group(1)


@pytest.mark.slow
def test_image_config(config: dict) -> None:
    assert config["User"] == "65534:65534"
    assert config["Entrypoint"] == ["expensetracker"]
    assert config["Cmd"] == ["serve", "--target", "all", "--host", "0.0.0.0", "--port", "8000"]
    assert config["ExposedPorts"] == {"8000/tcp": {}}
    assert config["StopSignal"] == "SIGTERM"
    env = dict(variable.split("=", 1) for variable in config["Env"])
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["HOME"] == "/tmp"
    assert env["PYTHONDONTWRITEBYTECODE"] == env["PYTHONUNBUFFERED"] == "1"
    labels = config["Labels"]
    assert {f"org.opencontainers.image.{name}" for name in LABELS} <= labels.keys()
    assert labels["org.opencontainers.image.title"] == "ExpenseTracker"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.version"] == __version__
    assert re.fullmatch(r"[0-9a-f]{40}", labels["org.opencontainers.image.revision"])
    assert datetime.fromisoformat(labels["org.opencontainers.image.created"])


@pytest.mark.slow
def test_image_runs_as_nobody_and_tells_its_version(image: str) -> None:
    with container(image) as name:
        output = in_container(name, "id -u; id -g; expensetracker --version")
    assert output.splitlines() == ["65534", "65534", f"expensetracker {__version__}"]


@pytest.mark.slow
def test_image_has_no_build_tools(image: str) -> None:
    with container(image) as name:
        on_path = in_container(name, 'for tool in gcc cc uv; do command -v "$tool" || true; done')
        venv = in_container(name, "ls /opt/venv/bin").split()
    assert on_path == ""
    assert "pip" not in venv
    assert "uv" not in venv


@pytest.mark.slow
def test_image_bytecode_is_valid_as_it_is(image: str) -> None:
    # As root and allowed to write bytecode, Python rewrites whatever bytecode of the venv it finds
    # stale; on a read-only root it would compile that again at every start instead.
    script = (
        "touch /tmp/before"
        " && env -u PYTHONDONTWRITEBYTECODE python3 -c 'import expensetracker.cli'"
        " && find /opt/venv -newer /tmp/before"
    )
    with container(image) as name:
        assert in_container(name, script, "--user", "0:0") == ""


@pytest.mark.slow
def test_image_serves_as_nobody_on_a_read_only_root(image: str, config: dict) -> None:
    env = dict(variable.split("=", 1) for variable in config["Env"])
    # Nothing listens on the discard port: the server starts without its database, not ready.
    env["EXPENSETRACKER_DATABASE_URL"] = "postgresql://expensetracker@127.0.0.1:9/expensetracker"
    user = config["User"]
    with container(image) as name:
        root = buildah("mount", name).strip()
        probe = subprocess.run(
            read_only_root(root, user, "sh", "-c", "touch /tmp/written && touch /opt/venv/written"),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert (probe.returncode, probe.stderr) == (
            1,
            "touch: cannot touch '/opt/venv/written': Read-only file system\n",
        )
        # The image's own command; only the port differs, as it shares this machine's network
        # (the last --port wins).
        command = [*config["Entrypoint"], *config["Cmd"], "--port", str(free_port())]
        with spawn(read_only_root(root, user, *command), env) as process:
            url = process.wait_ready(said=LISTENING_UNREADY)
            live = httpx.get(f"{url}/livez", timeout=10)
            ready = httpx.get(f"{url}/readyz", timeout=10)
            process.signal(signal.SIGTERM)
            assert process.wait() == 0, process.output
    assert live.status_code == 200
    assert ready.status_code == 503
