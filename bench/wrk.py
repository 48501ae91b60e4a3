"""wrk, the HTTP load generator of every benchmark: run against one or several processes at
once (127.0.0.1 only, bounded in time), and its output read into numbers."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile


def _lua_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def lua_requests(paths: list[str], headers: dict[str, str]) -> str:
    """A wrk script that sends ``paths`` in turn, each with ``headers``, and counts every
    answer but a 200 as an error (wrk itself would let a redirect to the sign-in page pass)."""
    quoted = ", ".join(_lua_string(path) for path in paths)
    fields = ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items())
    return (
        f"local paths = {{{quoted}}}\n"
        f"local headers = {{{fields}}}\n"
        "local threads = {}\n"
        "local i = 0\n"
        "function setup(thread) table.insert(threads, thread) end\n"
        "function init(args) unexpected = 0 end\n"
        "function request()\n"
        "  i = i % #paths + 1\n"
        '  return wrk.format("GET", paths[i], headers)\n'
        "end\n"
        "function response(status, headers, body)\n"
        "  if status ~= 200 then unexpected = unexpected + 1 end\n"
        "end\n"
        "function done(summary, latency, requests)\n"
        "  local total = 0\n"
        '  for _, thread in ipairs(threads) do total = total + thread:get("unexpected") end\n'
        '  io.write(string.format("Unexpected statuses: %d\\n", total))\n'
        "end\n"
    )


def parse_wrk(output: str) -> dict[str, float]:
    if "Requests/sec" not in output or "99%" not in output:
        raise RuntimeError(f"unexpected wrk output:\n{output}")

    def latency_ms(value: str) -> float:
        number, unit = re.match(r"([\d.]+)(us|ms|s|m)", value).groups()
        return float(number) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]

    errors = re.search(r"Unexpected statuses: (\d+)", output) or re.search(
        r"Non-2xx or 3xx responses: (\d+)", output
    )
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        # Anchored: "+/- Stdev" columns such as "90.50%" must not be taken for percentiles.
        "p50": latency_ms(re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE).group(1)),
        "p99": latency_ms(re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE).group(1)),
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def run_wrk(
    urls: list[str], path: str, *, script: str, seconds: int, connections: int
) -> dict[str, float]:
    """``connections`` spread over the processes at ``urls``, one wrk each, at the same time."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write(script)
    per = connections // len(urls)
    try:
        runs = [
            subprocess.Popen(
                [
                    "wrk",
                    "-t1",
                    f"-c{per}",
                    f"-d{seconds}s",
                    "--latency",
                    "-s",
                    file.name,
                    url + path,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for url in urls
        ]
        outputs = [run.communicate(timeout=seconds + 60) for run in runs]
        for _, errors in outputs:
            if errors.strip():  # a broken script: wrk would go on with plain GETs
                raise RuntimeError(f"wrk: {errors.strip()}")
        results = [parse_wrk(output) for output, _ in outputs]
    finally:
        os.unlink(file.name)
    return {
        "rps": sum(r["rps"] for r in results),
        "p50": max(r["p50"] for r in results),
        "p99": max(r["p99"] for r in results),  # the worse of the processes: conservative
        "errors": sum(r["errors"] for r in results),
    }
