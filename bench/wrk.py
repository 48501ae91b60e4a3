"""wrk, the HTTP load generator of every benchmark: run against one or several processes at
once (127.0.0.1 only, bounded in time), and its output read into numbers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psutil


def _lua_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _lua_table(headers: dict[str, str]) -> str:
    return (
        "{" + ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()) + "}"
    )


@dataclass(frozen=True)
class Call:
    """One request of a wrk script."""

    path: str
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "GET"
    body: str | None = None


def lua_script(calls: list[Call], *, expected: int = 200, unique_header: str | None = None) -> str:
    """A wrk script that sends ``calls`` in turn and counts every answer but ``expected`` as an
    error (wrk itself would let a redirect to the sign-in page pass). ``unique_header`` gets a
    value of its own on every request (an Idempotency-Key)."""
    entries = ",\n".join(
        f"  {{{_lua_string(call.method)}, {_lua_string(call.path)}, {_lua_table(call.headers)}, "
        f"{_lua_string(call.body) if call.body is not None else 'nil'}}}"
        for call in calls
    )
    unique = (
        f"  call[3][{_lua_string(unique_header)}] = prefix .. '-' .. sent\n"
        if unique_header
        else ""
    )
    return (
        f"local calls = {{\n{entries}\n}}\n"
        "local threads = {}\n"
        "local i = 0\n"
        "local sent = 0\n"
        "function setup(thread) table.insert(threads, thread) end\n"
        "function init(args)\n"
        "  unexpected = 0\n"
        # Distinct across threads and wrk processes: a table's address and the clock.
        "  prefix = tostring({}):match('0x(%x+)') .. '-' .. os.time() .. '-' .. os.clock()\n"
        "end\n"
        "function request()\n"
        "  i = i % #calls + 1\n"
        "  sent = sent + 1\n"
        "  local call = calls[i]\n"
        f"{unique}"
        "  return wrk.format(call[1], call[2], call[3], call[4])\n"
        "end\n"
        "function response(status, headers, body)\n"
        f"  if status ~= {expected} then unexpected = unexpected + 1 end\n"
        "end\n"
        "function done(summary, latency, requests)\n"
        "  local total = 0\n"
        '  for _, thread in ipairs(threads) do total = total + thread:get("unexpected") end\n'
        '  io.write(string.format("Unexpected statuses: %d\\n", total))\n'
        "end\n"
    )


def lua_requests(paths: list[str], headers: dict[str, str]) -> str:
    """GETs of ``paths`` in turn, each with ``headers``, expecting 200."""
    return lua_script([Call(path, headers) for path in paths])


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


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    seconds = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        seconds[pid] = times.user + times.system
    return seconds


def postgres_pids(url: str | None = None) -> list[int]:
    """The database server's processes. The machine is shared: with the URL of a server on a Unix
    socket (the embedded one), its postmaster and the postmaster's children only, not the servers
    of other runs; without one, every postgres process."""
    host = parse_qs(urlsplit(url or "").query).get("host", [""])[0]
    # The socket's lock file starts with the postmaster's process id.
    locks = sorted(Path(host).glob(".s.PGSQL.*.lock")) if host.startswith("/") else []
    if locks:
        postmaster = psutil.Process(int(locks[0].read_text().split()[0]))
        return [postmaster.pid, *(child.pid for child in postmaster.children())]
    return [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "postgres"]


def run_wrk(
    urls: list[str],
    path: str,
    *,
    script: str | list[str],
    seconds: int,
    connections: int,
    cpu_of: dict[str, list[int]] | None = None,
) -> dict[str, float]:
    """``connections`` spread over the processes at ``urls``, one wrk each, at the same time;
    ``script`` is the same for all, or one per process (when they must not send the same
    requests, such as DELETEs). With ``cpu_of``, also the CPU milliseconds per request each
    named group of processes spent (``cpu:<name>``; processes alive from start to end)."""
    before = {name: cpu_seconds(pids) for name, pids in (cpu_of or {}).items()}
    result = _run_wrk(urls, path, scripts=script, seconds=seconds, connections=connections)
    requests = max(result["rps"] * seconds, 1)
    for name, pids in (cpu_of or {}).items():
        after = cpu_seconds(pids)
        spent = sum(after[pid] - before[name][pid] for pid in after if pid in before[name])
        result[f"cpu:{name}"] = spent * 1000 / requests
    return result


def _run_wrk(
    urls: list[str], path: str, *, scripts: str | list[str], seconds: int, connections: int
) -> dict[str, float]:
    scripts = scripts if isinstance(scripts, list) else [scripts] * len(urls)
    files = []
    for text in scripts:
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
            file.write(text)
        files.append(file.name)
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
                    file_name,
                    url + path,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for url, file_name in zip(urls, files, strict=True)
        ]
        outputs = [run.communicate(timeout=seconds + 60) for run in runs]
        for _, errors in outputs:
            if errors.strip():  # a broken script: wrk would go on with plain GETs
                raise RuntimeError(f"wrk: {errors.strip()}")
        results = [parse_wrk(output) for output, _ in outputs]
    finally:
        for file_name in files:
            os.unlink(file_name)
    return {
        "rps": sum(r["rps"] for r in results),
        "p50": max(r["p50"] for r in results),
        "p99": max(r["p99"] for r in results),  # the worse of the processes: conservative
        "errors": sum(r["errors"] for r in results),
    }


@contextmanager
def profiled(pids: dict[str, int], name: str, *, seconds: int) -> Iterator[None]:
    """With BENCH_PROFILE=<folder>, py-spy (in .venv) records each process of ``pids`` (a name
    for each) for ``seconds`` while the block runs, into that folder as collapsed stacks
    (py-spy's "raw" format: a stack and its samples a line), a file a process."""
    folder = os.environ.get("BENCH_PROFILE")
    if not folder:
        yield
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    spy = str(Path(sys.executable).parent / "py-spy")  # beside the venv's python
    records = [
        subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(seconds),
                "--rate",
                "250",
                "--nonblocking",
                "--format",
                "raw",
                "--output",
                str(Path(folder) / f"{name.replace(' ', '-')}-{group}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for group, pid in pids.items()
    ]
    try:
        yield
    finally:
        for record in records:
            record.wait(timeout=seconds + 60)
