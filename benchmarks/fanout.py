"""Fan-out: server CPU per delivered frame, this build next to an older one and a bare server.

    .venv/bin/python -m benchmarks.fanout --old-root /path/to/checkout-of-12c487d --write-doc

Runs the streaming benchmark's ``story`` workload (100 streams x 10 subscribers, 20 chunks/s,
with and without permessage-deflate; benchmarks/streaming.py) against three servers in one
sitting, the same load-generator clients for all three:

- ``ours``: this checkout;
- ``old``: another checkout (``--old-root``, with its own ``.venv``), run on the same uvicorn
  WebSocket implementation;
- ``bare``: benchmarks/bare_server.py, a raw ASGI app that sends one append frame per chunk to
  every client with a plain ``websocket.send`` (no storage, no sessions): the floor.

Then (unless ``--no-fast``) a provider five times faster (``FAST``: 100 chunks/s), this build
as shipped (a commit per chunk) and with ``StreamedText``'s ``min_interval`` at 40 ms
(``--step-interval 0.04``), reporting server CPU per chunk too.

The figure is server CPU seconds (``/proc/<pid>/stat``) over frames delivered. The plan runs
``--repeat`` times (default 3), interleaved, and each cell is the median. ``--write-doc``
writes the "fanout" section of docs/benchmarks.md and benchmarks/results/fanout-last-run.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.sections import run_facts, write_section  # noqa: E402
from benchmarks.streaming import ServerBuild, _variant, workload_tokens  # noqa: E402

RAW = ROOT / "benchmarks" / "results" / "fanout-last-run.json"


async def _story(
    build: ServerBuild, *, deflate: bool, streams: int, subs: int, pace: float
) -> dict[str, Any]:
    """One streaming run of the ``story`` workload (benchmarks/streaming.py)."""
    return await _variant(
        workload="story",
        naive=False,
        deflate=deflate,
        streams=streams,
        subscribers=subs,
        pace=pace,
        build=build,
    )


def _medians(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """The medians over runs that both tables report."""
    return {
        "server_us_per_frame": statistics.median(r["server_cpu_us_per_frame"] for r in rs),
        "frames_per_subscriber": statistics.median(r["frames_per_subscriber"] for r in rs),
        "p50_ms": statistics.median(r["latency_ms"]["p50"] for r in rs),
        "p95_ms": statistics.median(r["latency_ms"]["p95"] for r in rs),
    }


async def _run(builds: list[ServerBuild], repeat: int, streams: int, subs: int) -> dict[str, Any]:
    cells: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    for i in range(repeat):
        for deflate in (True, False):
            for build in builds:
                r = await _story(build, deflate=deflate, streams=streams, subs=subs, pace=0.05)
                cells.setdefault((build.name, deflate), []).append(r)
                print(
                    f"run {i + 1}/{repeat} {build.name:5} deflate={deflate!s:5} "
                    f"server {r['server_cpu_us_per_frame']} us/frame, "
                    f"frames/sub {r['frames_per_subscriber']}, p95 {r['latency_ms']['p95']} ms",
                    flush=True,
                )
    rows = []
    for (name, deflate), rs in cells.items():
        rows.append(
            {
                "build": name,
                "deflate": deflate,
                **_medians(rs),
                "each_run": [r["server_cpu_us_per_frame"] for r in rs],
                "bytes_ratio": statistics.median(
                    r["bytes_per_subscriber_over_final"]["mean"] for r in rs
                ),
                "runs": rs,
            }
        )
    return {"benchmark": "fanout", "repeat": repeat, "streams": streams, "subs": subs, "rows": rows}


#: The fast-provider comparison: streams, subscribers and seconds between chunks.
FAST = (30, 10, 0.01)


async def _fast(repeat: int) -> list[dict[str, Any]]:
    """A provider 5x faster (100 chunks/s), this build with ``StreamedText(min_interval=0.04)``
    in the chat's action (a commit per frame the fan-out sends) and as shipped (a commit per
    chunk)."""
    streams, subs, pace = FAST
    tokens = len(workload_tokens("story"))
    cells: dict[str, list[dict[str, Any]]] = {}
    for i in range(repeat):
        for name, interval in (("min_interval 40 ms", 0.04), ("default: commit per chunk", None)):
            build = ServerBuild(step_interval=interval)
            r = await _story(build, deflate=False, streams=streams, subs=subs, pace=pace)
            # Server CPU per chunk the provider sent (frames are counted with the sender's).
            r["server_us_per_chunk"] = round(
                r["server_cpu_us_per_frame"] * r["frames_per_subscriber"] * (subs + 1) / tokens
            )
            cells.setdefault(name, []).append(r)
            print(
                f"fast run {i + 1}/{repeat} {name}: server {r['server_us_per_chunk']} us/chunk, "
                f"{r['server_cpu_us_per_frame']} us/frame, p95 {r['latency_ms']['p95']} ms",
                flush=True,
            )
    return [
        {
            "variant": name,
            "server_us_per_chunk": statistics.median(r["server_us_per_chunk"] for r in rs),
            **_medians(rs),
        }
        for name, rs in cells.items()
    ]


def fast_table(rows: list[dict[str, Any]]) -> str:
    """The fast-provider table."""
    lines = [
        "| server | server µs / chunk | server µs / frame | frames / sub | p50 / p95 ms |",
        "| :-- | --: | --: | --: | --: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['server_us_per_chunk']:g} | {r['server_us_per_frame']:g} | "
            f"{r['frames_per_subscriber']:g} | {r['p50_ms']:g} / {r['p95_ms']:g} |"
        )
    return "\n".join(lines)


def table(out: dict[str, Any]) -> str:
    """The markdown table: per build and deflate setting, with the ratios the issue asks for."""
    by = {(r["build"], r["deflate"]): r for r in out["rows"]}
    lines = [
        "| deflate | server | server µs / frame (runs) | ÷ old | ÷ bare | frames / sub | "
        "p50 / p95 ms | bytes ÷ final |",
        "| :-- | :-- | --: | --: | --: | --: | --: | --: |",
    ]
    for deflate in (True, False):
        old = by.get(("old", deflate))
        bare = by.get(("bare", deflate))
        for name in ("ours", "old", "bare"):
            r = by.get((name, deflate))
            if r is None:
                continue
            us = r["server_us_per_frame"]
            each = ", ".join(f"{x:g}" for x in r["each_run"])
            vs_old = f"{us / old['server_us_per_frame']:.2f}×" if old else "–"
            vs_bare = f"{us / bare['server_us_per_frame']:.2f}×" if bare else "–"
            lines.append(
                f"| {'yes' if deflate else 'no'} | {name} | {us:g} ({each}) | {vs_old} | "
                f"{vs_bare} | {r['frames_per_subscriber']:g} | {r['p50_ms']:g} / "
                f"{r['p95_ms']:g} | {r['bytes_ratio']:g} |"
            )
    return "\n".join(lines)


def doc_section(out: dict[str, Any]) -> str:
    """The "fanout" section of docs/benchmarks.md."""
    return "\n".join(
        [
            "## Fan-out: server CPU per delivered frame (issue 10)",
            "",
            out["facts"],
            "",
            f"The streaming benchmark's `story` workload at {out['streams']} streams × "
            f"{out['subs']} subscribers, 20 chunks/s, against three servers in one sitting "
            "with the same load-generator clients: `ours` (this build), `old` (main at "
            f"{out.get('old_commit', '12c487d')}, before one protocol and the shared fan-out, on "
            "the same uvicorn WebSocket implementation) and `bare` (benchmarks/bare_server.py: "
            "a raw ASGI app that sends one append frame per chunk to every client with a plain "
            "`websocket.send`, no storage or sessions). Server CPU from `/proc/<pid>/stat` over "
            f"the frames delivered; each cell is the median of {out['repeat']} interleaved "
            "runs. Raw data: `benchmarks/results/fanout-last-run.json`.",
            "",
            table(out),
            *(
                [
                    "",
                    f"A provider five times faster ({FAST[0]} streams × {FAST[1]} subscribers, "
                    f"a chunk every {FAST[2] * 1000:g} ms, no deflate), this build as shipped "
                    "(a commit per chunk) and with `StreamedText(min_interval=0.04)` in the "
                    "chat's action (steps at least 40 ms apart, the fan-out's row interval: a "
                    "commit per frame subscribers receive), same sitting:",
                    "",
                    fast_table(out["fast"]),
                ]
                if out.get("fast")
                else []
            ),
        ]
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old-root", type=Path, help="checkout of the older build (with .venv)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--streams", type=int, default=100)
    p.add_argument("--subscribers", type=int, default=10)
    p.add_argument("--no-bare", action="store_true")
    p.add_argument(
        "--no-fast", action="store_true", help="skip the fast-provider step-interval comparison"
    )
    p.add_argument("--write-doc", action="store_true")
    args = p.parse_args()
    builds = [ServerBuild()]
    if args.old_root:
        root = args.old_root.resolve()
        builds.append(ServerBuild("old", root, str(root / ".venv" / "bin" / "python")))
    if not args.no_bare:
        builds.append(ServerBuild("bare", bare=True))
    out = asyncio.run(_run(builds, max(1, args.repeat), args.streams, args.subscribers))
    if not args.no_fast:
        out["fast"] = asyncio.run(_fast(max(1, args.repeat)))
    command = " ".join(["python -m benchmarks.fanout", *sys.argv[1:]])
    out["facts"] = run_facts(command)
    if args.old_root:
        import subprocess

        out["old_commit"] = subprocess.run(
            ["git", "-C", str(args.old_root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    print(table(out))
    if out.get("fast"):
        print(fast_table(out["fast"]))
    if args.write_doc:
        RAW.parent.mkdir(parents=True, exist_ok=True)
        RAW.write_text(json.dumps(out, indent=1))
        write_section("fanout", doc_section(out))


if __name__ == "__main__":
    main()
