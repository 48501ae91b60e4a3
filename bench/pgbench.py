"""pgbench, the raw database baseline of the benchmarks: the services' own statements sent
straight to PostgreSQL at the same concurrency, bounded in time."""

from __future__ import annotations

import re
import statistics
import subprocess
import tempfile
from pathlib import Path


def pgbench_sql(sql: str, params: list[str]) -> str:
    """A statement of the service with its $n placeholders as pgbench variables (bound as
    parameters of a prepared statement with -M prepared, as asyncpg does)."""
    sql = re.sub(r"\$(\d+)", lambda match: params[int(match.group(1)) - 1], sql)
    # pgbench reads ":MI" even inside a quoted literal as a variable: the same time format,
    # with its colons quoted for to_char instead.
    sql = sql.replace("HH24:MI:SS", 'HH24":"MI":"SS')
    return " ".join(sql.split()) + ";"


def run_pgbench(
    pgbench: str, url: str, sql: str, seconds: int, *, clients: int, **variables: str
) -> dict[str, float]:
    """``sql`` (a script of statements with pgbench variables, ``variables`` set with -D) sent
    by ``clients`` at once as prepared statements; every transaction's latency from the log."""
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "query.sql"
        script.write_text(sql + "\n")
        run = subprocess.run(
            [
                pgbench,
                "-n",
                "-M",
                "prepared",
                *(f"-D{name}={value}" for name, value in variables.items()),
                "-c",
                str(clients),
                "-j",
                "2",
                "-T",
                str(seconds),
                "-l",
                "--log-prefix",
                f"{folder}/log",
                "-f",
                str(script),
                url,
            ],
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            raise RuntimeError(f"pgbench failed:\n{run.stderr[-2000:]}")
        latencies = []
        for log_file in Path(folder).glob("log*"):
            for line in log_file.read_text().splitlines():
                latencies.append(int(line.split()[2]) / 1000)  # microseconds -> ms
    latencies.sort()
    return {
        "rps": len(latencies) / seconds,
        "p50": statistics.median(latencies),
        "p99": latencies[int(len(latencies) * 0.99) - 1],
        "errors": 0.0,
    }
