"""Shared helpers: the value generator, percentiles, machine facts, CPU time from /proc."""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape

__all__ = [
    "ALPHABET",
    "VECTORS",
    "LatencyStats",
    "check_vectors",
    "console",
    "cpu_seconds",
    "latency_stats",
    "machine_facts",
    "make_value",
    "percentile",
    "progress",
]

console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_T_START = time.monotonic()


def progress(msg: str) -> None:
    """One progress line with the elapsed time since the runner started."""
    console.print(f"[dim]\\[{time.monotonic() - _T_START:7.1f}s][/dim] {escape(msg)}")
    console.file.flush()  # progress must show up even when stdout is a file or a pipe


def make_value(id_: int, rev: int, size: int) -> dict[str, Any]:
    """WORKLOAD.md section 2, verbatim: a JSON object whose compact encoding is ``size`` bytes."""
    value: dict[str, Any] = {
        "id": id_,
        "rev": rev,
        "flag": (id_ + rev) % 2 == 0,
        "score": rev + 0.5,
        "nil": None,
        "text": "",
    }
    n = size - len(json.dumps(value, separators=(",", ":")).encode())
    x = (id_ * 2654435761 + rev * 40503 + 1) & 0xFFFFFFFF or 1
    out = []
    for _ in range(n):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        out.append(ALPHABET[x % 36])
    value["text"] = "".join(out)
    return value


#: (id, rev, size) -> sha256 of the compact JSON bytes (WORKLOAD.md section 2).
VECTORS = {
    (0, 0, 128): "a0d73ba9fb8059ec262d54858b48f367031ee5952652dc8fed40386aac8b01a9",
    (7, 3, 1024): "b7407e00cab10ec4177104a68e5751fc763c2532cb9db6052829955b7e747ff1",
    (19, 2501, 10240): "e1a91c0e53da9c9d4422f825d8f8d091bc344bc65ca03a3b7471816c0a9c849b",
    (9999, 0, 1024): "942a740a6277a025513ba802a297538ac3dc8bef3f558f815aee6d9abf95ea87",
}


def check_vectors() -> list[tuple[str, int, str, bool]]:
    """Check make_value against the conformance vectors; raises if one differs."""
    rows = []
    for (i, r, s), want in VECTORS.items():
        data = json.dumps(make_value(i, r, s), separators=(",", ":")).encode()
        got = hashlib.sha256(data).hexdigest()
        ok = got == want and len(data) == s
        rows.append((f"make_value({i}, {r}, {s})", len(data), got, ok))
        if not ok:
            raise AssertionError(f"make_value({i}, {r}, {s}) sha256 {got} != {want}")
    return rows


def percentile(sorted_samples: list[float], p: float) -> float:
    """Nearest rank: ``s[ceil(p/100 * n) - 1]``."""
    n = len(sorted_samples)
    if n == 0:
        return math.nan
    return sorted_samples[max(0, math.ceil(p / 100 * n) - 1)]


@dataclass
class LatencyStats:
    n: int
    p50: float
    p95: float
    p99: float
    mean: float
    min: float
    max: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def latency_stats(samples_ms: list[float], **extra: Any) -> LatencyStats:
    s = sorted(samples_ms)
    if not s:
        return LatencyStats(0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, extra)
    return LatencyStats(
        len(s),
        percentile(s, 50),
        percentile(s, 95),
        percentile(s, 99),
        sum(s) / len(s),
        s[0],
        s[-1],
        extra,
    )


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process from /proc/<pid>/stat (psutil is not installed)."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_mib(pid: int) -> float:
    """Resident set size of a process in MiB (from /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return math.nan


def loadavg() -> tuple[float, float, float]:
    a, b, c = os.getloadavg()
    return (round(a, 2), round(b, 2), round(c, 2))


def _cmd(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "n/a"


def machine_facts() -> dict[str, Any]:
    """nproc, CPU model, memory, OS, runtime and package versions."""
    cpu = "n/a"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "n/a"
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f"{kb / 2**20:.1f} GiB"
    except (OSError, ValueError):
        pass
    os_name = "n/a"
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    os_name = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    import sqlite3
    from importlib.metadata import version

    def v(pkg: str) -> str:
        try:
            return version(pkg)
        except Exception:
            return "n/a"

    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "os": os_name,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "event_loop": f"uvloop {v('uvloop')}" if v("uvloop") != "n/a" else "asyncio",
        "sqlite": sqlite3.sqlite_version,
        "node": _cmd(["node", "--version"]),
        "packages": {
            p: v(p)
            for p in (
                "synced-store",
                "pydantic",
                "pydantic-core",
                "orjson",
                "uvicorn",
                "websockets",
                "starlette",
                "rich",
            )
        },
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "loadavg_start": loadavg(),
    }
