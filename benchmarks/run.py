"""Run the whole benchmark suite and write ``docs/benchmarks.md``.

/work/main/.venv/bin/python -m benchmarks             # full run, peers included
/work/main/.venv/bin/python -m benchmarks --quick     # smoke run: tiny counts, no peers
/work/main/.venv/bin/python benchmarks/run.py --skip-peers
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # ``python benchmarks/run.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from .client_side import run_client_side
from .common import check_vectors, console, loadavg, machine_facts, progress
from .e2e import run_e2e
from .peers import PeerSetup, run_replicache, run_triplit
from .report import print_tables, write_markdown
from .sections import carry_over
from .sqlite_baseline import run_capacity

ROOT = Path(__file__).resolve().parent.parent


def wait_for_load(max_load: float, max_wait: float) -> dict[str, Any]:
    """Wait (bounded) until the 1-minute load average drops below ``max_load``."""
    t0 = time.monotonic()
    announced = False
    while os.getloadavg()[0] >= max_load and time.monotonic() - t0 < max_wait:
        if not announced:
            progress(
                f"waiting for the 1-min load average ({os.getloadavg()[0]:.2f}) to drop "
                f"below {max_load} (at most {max_wait:.0f} s; the box is shared)"
            )
            announced = True
        time.sleep(5)
    return {"waited_s": round(time.monotonic() - t0, 1), "loadavg": loadavg()}


def _stats_json(results: dict[str, Any]) -> dict[str, Any]:
    return {k: v.to_json() for k, v in results.items()}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    data: dict[str, Any] = {
        "argv": sys.argv[1:],
        "quick": args.quick,
        "skip_peers": args.skip_peers,
        "machine": machine_facts(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    progress(
        "synced-store benchmarks: 2 shared cores; the full run takes 30-40 min and "
        "keeps both cores busy"
        if not args.quick
        else "synced-store benchmarks: --quick"
    )
    data["vectors"] = check_vectors()
    progress("make_value conformance vectors: all 4 SHA-256 match")
    parts = set(args.only.split(",")) if args.only else {"client", "capacity", "e2e"}
    peers = not (args.skip_peers or args.quick)
    setup = PeerSetup(Path(args.peers_dir))
    data["client_runs"] = []
    data["replicache_runs"] = []
    if "client" in parts:
        for run in range(1, args.runs + 1):
            load = wait_for_load(args.max_load, args.max_wait)
            progress(
                f"[run {run}/{args.runs}] ours, client-side (WORKLOAD.md a-e), "
                f"load {load['loadavg']}"
            )
            res = await run_client_side(args.quick)
            data["client_runs"].append({"load": load, "results": _stats_json(res)})
            gc.collect()
            if peers:
                load = wait_for_load(args.max_load, args.max_wait)
                progress(f"[run {run}/{args.runs}] Replicache, client-side, load {load['loadavg']}")
                rep = run_replicache(setup, f"synced-store-sitting-{run}")
                rep["load"] = load
                data["replicache_runs"].append(rep)
        if peers:
            data["replicache_version"] = setup.version("replicache", "replicache")
    if "capacity" in parts:
        load = wait_for_load(args.max_load, args.max_wait)
        progress(f"capacity: instance writer vs raw sqlite3, load {load['loadavg']}")
        data["capacity"] = await run_capacity(args.quick)
        data["capacity"]["load"] = load
    data["e2e_runs"] = []
    data["triplit_runs"] = []
    if "e2e" in parts:
        for run in range(1, args.e2e_runs + 1):
            load = wait_for_load(args.max_load, args.max_wait)
            progress(
                f"[e2e run {run}/{args.e2e_runs}] ours, end-to-end (server process + "
                f"load generator), load {load['loadavg']}"
            )
            e2e = await run_e2e(args.quick)
            e2e["load"] = load
            data["e2e_runs"].append(e2e)
            if peers:
                load = wait_for_load(args.max_load, args.max_wait)
                progress(
                    f"[e2e run {run}/{args.e2e_runs}] Triplit, end-to-end, load {load['loadavg']}"
                )
                tri = run_triplit(setup, f"synced-store-sitting-{run}")
                tri["load"] = load
                data["triplit_runs"].append(tri)
    data["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    data["machine"]["loadavg_end"] = loadavg()
    return data


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="tiny iteration counts; skips the peers")
    p.add_argument("--skip-peers", action="store_true", help="do not run Replicache / Triplit")
    p.add_argument(
        "--runs",
        type=int,
        default=3,
        help="interleaved client-side runs, ours then Replicache (default 3)",
    )
    p.add_argument(
        "--e2e-runs", type=int, default=1, help="end-to-end runs, ours then Triplit (default 1)"
    )
    p.add_argument("--only", default="", help="comma list of: client, capacity, e2e")
    p.add_argument("--peers-dir", default="/tmp/peers", help="scratch copy of the peers")
    p.add_argument(
        "--max-load",
        type=float,
        default=1.0,
        help="wait for the 1-min load average to drop below this before each run",
    )
    p.add_argument("--max-wait", type=float, default=120.0, help="... but at most this long (s)")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "last-run.json"))
    p.add_argument(
        "--report-only",
        metavar="JSON",
        help="rewrite the tables and --out from a saved run's JSON; runs nothing",
    )
    args = p.parse_args()
    out_path = Path(args.out)
    previous = out_path.read_text() if out_path.exists() else ""
    if args.report_only:
        data = json.loads(Path(args.report_only).read_text())
        print_tables(data)
        write_markdown(data, Path(args.out), Path(args.report_only))
        carry_over(previous, out_path)
        console.print(f"wrote {args.out} from {args.report_only}")
        return
    if args.quick:
        args.runs = min(args.runs, 1)
    logging.basicConfig(level=logging.WARNING)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    data = asyncio.run(main_async(args))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(data, indent=1, default=str))
    print_tables(data)
    write_markdown(data, Path(args.out), Path(args.json))
    carry_over(previous, out_path)
    console.print(f"wrote {args.out} and {args.json}")


if __name__ == "__main__":
    main()
