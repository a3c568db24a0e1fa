"""Cross-instance mutations: what ``ctx.mutate_external`` costs against a plain mutation.

    .venv/bin/python -m benchmarks.external [--n 200] [--burst 1000] [--write-doc]

One real server process (uvicorn on 127.0.0.1, SQLite in a temp dir) serving this module's
``backend``; real ``connect`` clients in this process. In the same run:

- **baseline**: a writer in ``room`` runs ``addLocal`` (one row in ``room``); an observer
  client of ``room`` sees it. Write -> visible, one mutation at a time.
- **external**: a writer in ``room`` runs ``addExternal``, which calls
  ``ctx.mutate_external("lobby", "addRow", ...)``; an observer client of ``lobby`` sees the row.
  The path: the caller's commit (with the outbox job), the action runner's claim, the target's
  commit (with the idempotency key), the job marked done, the poke to the lobby's clients.
- **burst**: ``--burst`` mutations pushed at once, until the observer saw them all: rows/s for
  both.

``--write-doc`` writes the ``external`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import percentile  # noqa: E402
from benchmarks.sections import run_facts, write_section  # noqa: E402
from synced_store import define_backend_config, define_schema, table  # noqa: E402

__all__ = ["backend", "run"]


class Row(BaseModel):
    id: str


class RowIn(BaseModel):
    id: str


schema = define_schema(
    schema_version=1,
    tables={"rows": table(Row)},
    mutators={
        "addLocal": {"input": RowIn},
        "addExternal": {"input": RowIn},
        "addRow": {"input": RowIn},
    },
)


async def add_local(ctx: Any, input: RowIn) -> None:
    await ctx.table("rows").set(input.id, {"id": input.id})


async def add_external(ctx: Any, input: RowIn) -> None:
    await ctx.mutate_external("lobby", "addRow", {"id": input.id})


backend = define_backend_config(
    schema=schema,
    mutators={"addLocal": add_local, "addExternal": add_external, "addRow": add_local},
)


class Observer:
    """Resolves a future per row id when the observer's table shows it."""

    def __init__(self, store: Any) -> None:
        self.seen: dict[str, float] = {}
        self.waiting: dict[str, asyncio.Future[float]] = {}
        store.subscribe_to_table("rows", self._on)

    def _on(self, entries: Any, changes: dict[str, list[str]]) -> None:
        now = time.perf_counter()
        for key in changes["added"]:
            self.seen.setdefault(key, now)
            fut = self.waiting.pop(key, None)
            if fut is not None and not fut.done():
                fut.set_result(now)

    def wait(self, key: str) -> asyncio.Future[float]:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if key in self.seen:
            fut.set_result(self.seen[key])
        else:
            self.waiting[key] = fut
        return fut


async def _measure(url: str, n: int, burst: int) -> dict[str, Any]:
    from synced_store.client import connect

    writer = await connect(url, backend, instance_id="room", token="w")
    in_room = await connect(url, backend, instance_id="room", token="o")
    in_lobby = await connect(url, backend, instance_id="lobby", token="o")
    for c in (writer, in_room, in_lobby):
        await c.wait_for_server_data(20)
    watch = {"addLocal": Observer(in_room), "addExternal": Observer(in_lobby)}
    out: dict[str, Any] = {}
    try:
        for name in ("addLocal", "addExternal") * 2:  # warm-up round, then the measured one
            lat: list[float] = []
            for i in range(n):
                key = f"{name}-{len(out)}-{i}"
                t0 = time.perf_counter()
                await getattr(writer.mutate, name)({"id": key})
                t1 = await asyncio.wait_for(watch[name].wait(key), 30)
                lat.append((t1 - t0) * 1000)
            lat.sort()
            out[name] = {"p50": percentile(lat, 50), "p95": percentile(lat, 95), "n": n}
        for name in ("addLocal", "addExternal"):
            keys = [f"{name}-burst-{i}" for i in range(burst)]
            waits = [watch[name].wait(k) for k in keys]
            t0 = time.perf_counter()
            for k in keys:
                await getattr(writer.mutate, name)({"id": k})
            await asyncio.wait_for(asyncio.gather(*waits), 120)
            out[name]["burst_rows_s"] = burst / (time.perf_counter() - t0)
            out[name]["burst"] = burst
    finally:
        for c in (writer, in_room, in_lobby):
            await c.close()
    return out


def run(n: int, burst: int) -> dict[str, Any]:
    """Start a server, measure, stop it; returns the numbers."""
    from synced_store.testing import ServerProcess

    with tempfile.TemporaryDirectory(prefix="bench-external-") as d:
        # One user's unfinished jobs are capped (100 by default): a burst needs room.
        limits = {"max_queued_jobs_per_user": 2 * burst + 100}
        server = ServerProcess(
            "benchmarks.external:backend", Path(d), pythonpath=[str(ROOT)], limits=limits
        )
        server.start()
        try:
            return asyncio.run(_measure(server.url, n, burst))
        finally:
            server.kill()


def table_md(out: dict[str, Any]) -> str:
    base, ext = out["addLocal"], out["addExternal"]
    rows = [
        "| path | write -> visible p50 (ms) | p95 (ms) | burst rows/s |",
        "| :-- | --: | --: | --: |",
        f"| plain mutation, seen in the same instance | {base['p50']:.2f} | {base['p95']:.2f} "
        f"| {base['burst_rows_s']:,.0f} |",
        f"| `mutate_external`, seen in the target instance | {ext['p50']:.2f} | {ext['p95']:.2f} "
        f"| {ext['burst_rows_s']:,.0f} |",
        f"| ratio external / plain | {ext['p50'] / base['p50']:.2f}x | "
        f"{ext['p95'] / base['p95']:.2f}x | {ext['burst_rows_s'] / base['burst_rows_s']:.2f}x |",
    ]
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200, help="sequential mutations per path")
    p.add_argument("--burst", type=int, default=1000, help="mutations pushed at once per path")
    p.add_argument("--write-doc", action="store_true")
    args = p.parse_args()
    out = run(args.n, args.burst)
    md = table_md(out)
    print(md)
    if args.write_doc:
        command = " ".join(["python -m benchmarks.external", *sys.argv[1:]])
        write_section(
            "external",
            "\n".join(
                [
                    "## Cross-instance mutations (`mutate_external`)",
                    "",
                    run_facts(command),
                    f"{args.n} sequential mutations per path (after as many warm-up ones), then "
                    f"{args.burst} pushed at once (`max_queued_jobs_per_user` raised to fit; "
                    "running jobs per user at the default 4); one server process (SQLite), "
                    "clients in the "
                    "benchmark process. An external mutation is an outbox job run by the action "
                    "runner after the caller's commit: two more transactions (the target's, "
                    "the job's outcome) and a claim. `benchmarks/external.py`.",
                    "",
                    md,
                    "",
                    "Reading: one external mutation takes about a millisecond more than a plain "
                    "one to become visible; a burst is delivered at the action runner's pace "
                    "(one user's deliveries run at most `max_running_jobs_per_user` at a time, "
                    "each a claim, the target's commit and the outcome's commit), so a room "
                    "that sends many should batch them into fewer calls. The delivery rate of "
                    "a long queue has not been profiled yet.",
                ]
            ),
        )


if __name__ == "__main__":
    main()
