"""MCP tool-call benchmark: an agent's write, from the tool call to another client's screen.

One real server process (uvicorn on 127.0.0.1, ``create_app(examples.todo backend, mcp=True)``)
and, in this process, an observer: a synced-store client subscribed to the ``todos`` table.
Three writers add todos one at a time, interleaved so they share the same conditions:

- ``mcp-http``: the official ``mcp`` SDK's client over Streamable HTTP (``/mcp/{instance}``),
  ``call_tool("addTodo", ...)``: the server validates the input, commits the mutation through the
  instance's writer as the token's user, and answers;
- ``mcp-stdio``: the same SDK client talking to ``synced-store mcp`` (a subprocess that is itself a
  synced-store client of the instance) over stdio;
- ``client``: a plain ``synced_store.client`` mutation, ``await store.mutate.addTodo(...)`` then
  ``await res.confirmed``.

For each write: **call** is the time until the writer's call returned (the tool result; for the
plain client, the server's confirmation), **visible** the time until the observer's table
subscription saw the new row. Two pacings: ``paced``, a write every 50 ms or more (each one
finds the server idle), and ``back-to-back``, the next write as soon as the previous one was
seen. Every ``addTodo`` also bumps the ``$seq/todos`` counter row (``get_next_sort_key``), and
the server sends a row at most once per 40 ms window to a client (``ROW_INTERVAL``), so
back-to-back writes are seen about 40 ms apart whatever the writer.
``python -m benchmarks.mcp_tools [--quick] [--write-doc]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import percentile  # noqa: E402
from benchmarks.sections import run_facts, write_section  # noqa: E402

__all__ = ["doc_section", "run"]

RAW = ROOT / "benchmarks" / "results" / "mcp-last-run.json"
INSTANCE = "bench-list"
WRITERS = ("mcp-http", "mcp-stdio", "client")
#: ``(name, seconds from one write's start to the next)``: 0 is back to back.
PACINGS = (("paced", 0.05), ("back-to-back", 0.0))


def _serve(port: int, data_dir: str) -> None:
    import logging

    import uvicorn
    from examples.todo.app import backend

    from synced_store.server import create_app

    logging.basicConfig(level=logging.WARNING)
    app = create_app(backend, data_dir=data_dir, authenticate=lambda t: t or None, mcp=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


@contextlib.contextmanager
def _server() -> Any:
    from synced_store.testing import free_port

    data = Path(tempfile.mkdtemp(prefix="ss-bench-mcp-"))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.mcp_tools", "--serve", str(port), str(data)],
        env=env,
        cwd=str(ROOT),
    )
    try:
        import httpx

        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the benchmark server did not start")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(data, ignore_errors=True)


@contextlib.asynccontextmanager
async def _mcp_http(port: int) -> AsyncIterator[Any]:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    url = f"http://127.0.0.1:{port}/mcp/{INSTANCE}"
    async with (
        httpx2.AsyncClient(headers={"Authorization": "Bearer agent-http"}) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        yield client


@contextlib.asynccontextmanager
async def _mcp_stdio(port: int) -> AsyncIterator[Any]:
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(
        command=sys.executable,
        args=[
            "-m",
            "synced_store.cli",
            "mcp",
            "examples.todo.app:backend",
            "--url",
            f"ws://127.0.0.1:{port}",
            "--instance",
            INSTANCE,
            "--token",
            "agent-stdio",
        ],
        cwd=str(ROOT),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    async with Client(params) as client:
        yield client


def _stats(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {
        "n": len(s),
        "p50": round(percentile(s, 50), 2),
        "p95": round(percentile(s, 95), 2),
        "p99": round(percentile(s, 99), 2),
        "mean": round(sum(s) / len(s), 2) if s else float("nan"),
    }


async def _run(quick: bool) -> dict[str, Any]:
    from examples.todo.app import backend

    from synced_store.client import connect

    n = 30 if quick else 300
    with _server() as port:
        url = f"ws://127.0.0.1:{port}"
        observer = await connect(url, backend, instance_id=INSTANCE, token="observer")
        writer = await connect(url, backend, instance_id=INSTANCE, token="writer")
        await observer.wait_for_server_data(10)
        await writer.wait_for_server_data(10)
        seen: dict[str, asyncio.Future[float]] = {}

        def on_change(entries: Any, changes: dict[str, list[str]]) -> None:
            now = time.perf_counter()
            for key in changes["added"]:
                fut = seen.get(key)
                if fut is not None and not fut.done():
                    fut.set_result(now)

        observer.subscribe_to_table("todos", on_change)
        samples: dict[str, dict[str, dict[str, list[float]]]] = {
            p: {w: {"call": [], "visible": []} for w in WRITERS} for p, _ in PACINGS
        }
        async with _mcp_http(port) as http_client, _mcp_stdio(port) as stdio_client:
            clients = {"mcp-http": http_client, "mcp-stdio": stdio_client}
            for pacing, gap in PACINGS:
                for i in range(-3, n):  # 3 warm-up rounds, not recorded
                    for w in WRITERS:
                        key = f"{pacing}-{w}-{i}"
                        fut = seen[key] = asyncio.get_running_loop().create_future()
                        args = {"id": key, "text": f"todo {i} from {w}"}
                        t0 = time.perf_counter()
                        if w == "client":
                            res = await writer.mutate.addTodo(args)
                            await res.confirmed
                        else:
                            result = await clients[w].call_tool("addTodo", args)
                            if result.is_error:
                                raise RuntimeError(f"{w}: {result.content[0].text}")
                        t_call = time.perf_counter()
                        try:
                            t_seen = await asyncio.wait_for(fut, 10)
                        except TimeoutError:
                            raise RuntimeError(f"{key} never reached the observer") from None
                        del seen[key]
                        if i >= 0:
                            samples[pacing][w]["call"].append((t_call - t0) * 1000)
                            samples[pacing][w]["visible"].append((t_seen - t0) * 1000)
                        # Pacing of the benchmark's writes (not a wait for state).
                        await asyncio.sleep(max(0.0, t0 + gap - time.perf_counter()))
        await observer.close()
        await writer.close()
    return {
        "n_per_writer": n,
        "results": {
            p: {
                w: {"call": _stats(s["call"]), "visible": _stats(s["visible"])}
                for w, s in by_writer.items()
            }
            for p, by_writer in samples.items()
        },
        "loadavg": os.getloadavg(),
    }


def run(quick: bool) -> dict[str, Any]:
    """Run the benchmark; returns the numbers."""
    return asyncio.run(_run(quick))


_LABELS = {
    "mcp-http": "MCP tool call, Streamable HTTP (`create_app(mcp=True)`)",
    "mcp-stdio": "MCP tool call, stdio (`synced-store mcp`, a client of the instance)",
    "client": "plain client mutation (`mutate` + `confirmed`)",
}


def table(out: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    rows = [
        "| pacing | writer | call p50 | call p95 | visible p50 | visible p95 | visible p99 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for pacing, _ in PACINGS:
        for w in WRITERS:
            r = out["results"][pacing][w]
            rows.append(
                f"| {pacing} | {_LABELS[w]} | {r['call']['p50']:.2f} ms | "
                f"{r['call']['p95']:.2f} ms | {r['visible']['p50']:.2f} ms | "
                f"{r['visible']['p95']:.2f} ms | {r['visible']['p99']:.2f} ms |"
            )
    return "\n".join(rows)


def doc_section(out: dict[str, Any]) -> str:
    """The ``mcp`` section of docs/benchmarks.md."""
    return "\n".join(
        [
            "## Agents: MCP tool call → committed → visible on another client (issue 13)",
            "",
            out["facts"],
            "",
            "One server process (uvicorn on 127.0.0.1, the todo example with",
            "`create_app(..., mcp=True)`); in the benchmark process an observer client",
            "subscribed to `todos` and three writers adding one todo at a time, interleaved",
            f"({out['n_per_writer']} each per pacing, after 3 warm-up rounds). **call**: until the",
            "writer's call returned (the MCP tool result, which the server sends once the",
            "mutation is committed; for the plain client, its `confirmed`). **visible**: until",
            "the observer's table subscription saw the row. The MCP writers use the official",
            "`mcp` SDK's client; `mcp-stdio` goes through `synced-store mcp`, itself a",
            "synced-store client (optimistic apply, push, wait for the confirmation). `paced`:",
            "a write starts every 50 ms (or when the previous one was seen, if later);",
            "`back-to-back`: as soon as the previous one was seen. Each `addTodo` also bumps the",
            "`$seq/todos` counter row, and the server sends one row to a client at most once",
            "per 40 ms (`ROW_INTERVAL`, which merges a streaming reply's updates), so",
            "back-to-back writes become visible 40 ms apart, whoever writes them. Raw data:",
            "`benchmarks/results/mcp-last-run.json`.",
            "",
            table(out),
        ]
    )


def _main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="30 writes per writer instead of 300")
    p.add_argument("--write-doc", action="store_true", help="update docs/benchmarks.md")
    p.add_argument("--serve", nargs=2, metavar=("PORT", "DATA_DIR"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        _serve(int(args.serve[0]), args.serve[1])
        return
    out = run(args.quick)
    out["command"] = " ".join(["python -m benchmarks.mcp_tools", *sys.argv[1:]])
    out["facts"] = run_facts(out["command"])
    print(json.dumps(out, indent=1))
    print(table(out))
    if args.write_doc:
        RAW.parent.mkdir(parents=True, exist_ok=True)
        RAW.write_text(json.dumps(out, indent=1))
        write_section("mcp", doc_section(out))


if __name__ == "__main__":
    _main()
