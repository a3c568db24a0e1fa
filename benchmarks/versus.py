"""This build against an older checkout, in one sitting: the reactive loop (a1) and write →
visible with 100 clients.

    .venv/bin/python -m benchmarks.versus --old-root /path/to/checkout --repeat 2 --write-doc

Each measurement runs in a fresh process of its own checkout (its own ``.venv``), ours and
the old one alternating, ``--repeat`` times; each cell is the median. The client-side a1 row is
benchmarks/client_side.py's (p50/p95 from a mutation to the 5th subscription callback); the
write → visible row is benchmarks/e2e.py's latency phase with 100 clients (observer p50/p99).
``--write-doc`` writes the "versus" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.sections import run_facts, write_section  # noqa: E402

RAW = ROOT / "benchmarks" / "results" / "versus-last-run.json"

_CODE = """
import asyncio, json, logging, sys
logging.disable(logging.WARNING)
from benchmarks.client_side import run_client_side
from benchmarks.e2e import run_e2e
async def main():
    a1 = await run_client_side(False, {"a1"})
    cb = a1["a1/cb"]
    e2e = await run_e2e(False, {"latency"})
    o = next(r for r in e2e["latency"] if r["N"] == 100)["write_to_observer_ms"]
    print("RESULT " + json.dumps({"a1_p50": cb.p50, "a1_p95": cb.p95,
                                  "wv_p50": o["p50"], "wv_p99": o["p99"]}))
asyncio.run(main())
"""


def _measure(root: Path, python: str) -> dict[str, float]:
    out = subprocess.run(
        [python, "-c", _CODE],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    result: dict[str, float] = json.loads(line[len("RESULT ") :])
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old-root", type=Path, required=True)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--write-doc", action="store_true")
    args = p.parse_args()
    old = args.old_root.resolve()
    builds = {"ours": (ROOT, sys.executable), "old": (old, str(old / ".venv" / "bin" / "python"))}
    runs: dict[str, list[dict[str, float]]] = {"ours": [], "old": []}
    for i in range(args.repeat):
        for name, (root, python) in builds.items():
            r = _measure(root, python)
            runs[name].append(r)
            print(f"run {i + 1}/{args.repeat} {name}: {r}", flush=True)
    med = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in runs.items()}
    rows = [
        ("reactive loop a1: mutation → 5th callback p50 (ms)", "a1_p50"),
        ("reactive loop a1: p95 (ms)", "a1_p95"),
        ("write → visible, 100 clients: observer p50 (ms)", "wv_p50"),
        ("write → visible, 100 clients: observer p99 (ms)", "wv_p99"),
    ]
    commit = subprocess.run(
        ["git", "-C", str(old), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    lines = [
        "| measure | this build | old (" + commit + ") | this ÷ old |",
        "| :-- | --: | --: | --: |",
    ]
    for label, key in rows:
        a, b = med["ours"][key], med["old"][key]
        lines.append(f"| {label} | {a:.3f} | {b:.3f} | {a / b:.2f}× |")
    table = "\n".join(lines)
    print(table)
    if args.write_doc:
        command = " ".join(["python -m benchmarks.versus", *sys.argv[1:]])
        RAW.parent.mkdir(parents=True, exist_ok=True)
        RAW.write_text(json.dumps({"runs": runs, "median": med, "old": commit}, indent=1))
        doc: list[Any] = [
            "## This build against the previous main (issue 10)",
            "",
            run_facts(command),
            "",
            f"Each figure is the median of {args.repeat} runs, ours and the old checkout "
            "alternating, each run a fresh process of its own checkout: the client-side "
            "reactive loop (a1, as in the table above) and write → visible with 100 clients "
            "(the e2e latency phase). Raw data: `benchmarks/results/versus-last-run.json`.",
            "",
            table,
        ]
        write_section("versus", "\n".join(doc))


if __name__ == "__main__":
    main()
