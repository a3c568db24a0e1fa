"""Run the peers (Replicache client-side, Triplit end-to-end) from a scratch copy.

The peer folders live read-only in ``/work/shared/peers``; they are copied to a scratch
directory (``/tmp/peers`` by default) and installed there with ``npm ci``. Their own
commands (from their RESULTS.md) write JSON that is parsed here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from .common import progress

__all__ = ["PeerSetup", "run_replicache", "run_triplit"]

SHARED = Path("/work/shared/peers")


class PeerSetup:
    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch

    def dir(self, name: str) -> Path:
        return self.scratch / name

    def ensure(self, name: str) -> Path:
        """Copy the peer folder (if not there yet) and ``npm ci`` it (if not installed)."""
        d = self.dir(name)
        if not d.exists():
            progress(f"copying {SHARED / name} -> {d}")
            shutil.copytree(SHARED / name, d)
            for p in [d, *d.rglob("*")]:
                p.chmod(p.stat().st_mode | 0o200)
        marker = d / "node_modules" / ("replicache" if name == "replicache" else "@triplit")
        if not marker.exists():
            if name == "triplit":
                # better-sqlite3 compiles from source; node-gyp needs the node headers.
                subprocess.run(
                    ["npm", "config", "set", "nodedir", "/usr"], check=False, capture_output=True
                )
            progress(f"npm ci in {d} (triplit compiles better-sqlite3: ~80 s)")
            subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund"], cwd=d, check=True, capture_output=True
            )
        return d

    def version(self, name: str, package: str) -> str:
        try:
            data = json.loads(
                (self.dir(name) / "node_modules" / package / "package.json").read_text()
            )
            return str(data.get("version"))
        except OSError:
            return "n/a"


def _run(cmd: list[str], cwd: Path, log: Path, timeout: float) -> None:
    t0 = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}")
    progress(f"  done in {time.monotonic() - t0:.0f} s")


def run_replicache(setup: PeerSetup, label: str, quick: bool = False) -> dict[str, Any]:
    """``node --expose-gc bench.mjs --json results/<label>.json`` (RESULTS.md's run.sh step)."""
    d = setup.ensure("replicache")
    out = d / "results" / f"{label}.json"
    out.parent.mkdir(exist_ok=True)
    cmd = ["node", "--expose-gc", "bench.mjs", "--json", str(out.relative_to(d))]
    if quick:
        cmd.append("--quick")
    progress(f"peer Replicache: {' '.join(cmd)} (about 2.5 min; uses a full core)")
    _run(cmd, d, d / "results" / f"{label}.txt", 1800)
    data = json.loads(out.read_text())
    return {"meta": data["meta"], "rows": {r["id"]: r for r in data["rows"]}, "command": cmd}


def run_triplit(setup: PeerSetup, label: str) -> dict[str, Any]:
    """``node --experimental-websocket bench.mjs --label=L --out=results/L.json``."""
    d = setup.ensure("triplit")
    out = d / "results" / f"{label}.json"
    out.parent.mkdir(exist_ok=True)
    cmd = [
        "node",
        "--experimental-websocket",
        "bench.mjs",
        f"--label={label}",
        f"--out={out.relative_to(d)}",
    ]
    progress(f"peer Triplit: {' '.join(cmd)} (about 5.5 min; server + load generator)")
    _run(cmd, d, d / "results" / f"{label}.log", 3600)
    data = json.loads(out.read_text())
    data["command"] = cmd
    return data
