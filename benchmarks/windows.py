"""Windowed sync: a room of many messages, first render with a window against a full sync.

The room is written straight through the storage layer (``SqliteInstanceStore``, one
transaction, chat-sized messages with sort keys), then served by real server processes
(``ServerProcess``, uvicorn on 127.0.0.1) and read by real Python clients, each in a process
of its own (``--client``) so its RSS is its own:

- **windowed**: the schema windows ``messages`` (latest ``--window``); time from ``connect()``
  to the first render (the client has server data and the latest 50 messages are read from
  it), bytes received over the WebSocket until then, client RSS after it, then paging back
  ``--pages`` times 50 older messages (``load_older``), p50 / p95;
- **full**: the same schema without windows, the whole room — on a room of
  ``--full-messages`` (default: as many as ``--messages``), with the windowed client on that
  same room as the baseline.

``python -m benchmarks.windows [--messages N] [--write-doc]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from benchmarks.common import percentile  # noqa: E402
from benchmarks.sections import run_facts, write_section  # noqa: E402
from synced_store import define_backend_config, define_schema, table  # noqa: E402
from synced_store.types import RowKey  # noqa: E402

__all__ = ["full", "main", "windowed"]

WINDOW = 50


class Message(BaseModel):
    id: str
    text: str
    role: str
    senderId: str
    status: str | None = None


def _backend(windows: dict[str, int | None]) -> Any:
    schema = define_schema(1, tables={"messages": table(Message)}, pull_windows=windows)
    return define_backend_config(schema, {})


windowed = _backend({"messages": WINDOW})
full = _backend({})


def _message(i: int) -> bytes:
    return orjson.dumps(
        {
            "id": f"m{i:08d}",
            "text": f"message number {i}: the quick brown fox jumps over the lazy dog",
            "role": "user",
            "senderId": f"user{i % 7}",
            "status": None,
        }
    )


async def _generate(path: Path, n: int) -> float:
    from synced_store.storage.sqlite import SqliteInstanceStore

    t0 = time.perf_counter()
    store = SqliteInstanceStore(path)
    try:
        tx = await store.begin()
        version = tx.version + 1
        for i in range(n):
            await tx.write(RowKey("", "messages", f"m{i:08d}"), f"{i:010d}", _message(i), version)
        await tx.set_schema_version(1)
        await tx.commit(version)
    finally:
        await store.close()
    return time.perf_counter() - t0


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# -- the client process -------------------------------------------------------------------


class _Counting:
    """A connector that counts the bytes of the frames it receives."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.bytes = 0

    async def connect(self) -> Any:
        conn = await self.inner.connect()
        outer = self

        class Conn:
            async def send(self, frame: bytes) -> None:
                await conn.send(frame)

            async def recv(self) -> Any:
                data = await conn.recv()
                outer.bytes += len(data)
                return data

            async def close(self) -> None:
                await conn.close()

        return Conn()


async def _client(url: str, instance: str, mode: str, pages: int) -> dict[str, Any]:
    from synced_store.client import connect
    from synced_store.client.transport import WebSocketConnector, sync_url

    backend = windowed if mode == "windowed" else full
    rss0 = _rss_kib()
    counting = _Counting(WebSocketConnector(sync_url(url, instance)))
    t0 = time.perf_counter()
    c = await connect(url, backend, instance_id=instance, token="reader", connector=counting)
    await c.wait_for_server_data(timeout=600)
    latest = await c.query(lambda ctx: ctx.table("messages").scan(limit=50, reverse=True).values())
    first_render = time.perf_counter() - t0
    assert len(latest) == 50
    out: dict[str, Any] = {
        "first_render_ms": first_render * 1000,
        "bytes": counting.bytes,
        "rows": c.engine.store.count(),
        "rss_kib": _rss_kib(),
        "rss_delta_kib": _rss_kib() - rss0,
    }
    if mode == "windowed" and pages:
        times = []
        for _ in range(pages):
            t = time.perf_counter()
            added = await c.load_older("messages", limit=50)
            times.append((time.perf_counter() - t) * 1000)
            assert added == 50
        out["page_ms"] = times
    await c.close()
    return out


def _run_client(url: str, instance: str, mode: str, pages: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.windows", "--client", url, instance, mode, str(pages)]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if res.returncode != 0:
        raise RuntimeError(f"client failed: {res.stderr[-2000:]}")
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


# -- the run ------------------------------------------------------------------------------


def run(messages: int, full_messages: int, pages: int, repeat: int) -> dict[str, Any]:
    from synced_store.storage.sqlite import instance_path
    from synced_store.testing.server_process import ServerProcess

    tmp = Path(tempfile.mkdtemp(prefix="bench-windows-"))
    out: dict[str, Any] = {"messages": messages, "full_messages": full_messages, "window": WINDOW}
    try:
        dir_w, dir_f = tmp / "windowed", tmp / "full"
        dir_w.mkdir()
        dir_f.mkdir()
        big, small = instance_path(dir_w, "big"), instance_path(dir_w, "small")
        big.parent.mkdir(parents=True, exist_ok=True)
        out["generate_s"] = asyncio.run(_generate(big, messages))
        if full_messages == messages:
            shutil.copy(big, small)
        else:
            asyncio.run(_generate(small, full_messages))
        out["db_bytes"] = big.stat().st_size
        target = instance_path(dir_f, "small")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(small, target)
        servers = {
            "windowed": ServerProcess("benchmarks.windows:windowed", dir_w, pythonpath=[str(ROOT)]),
            "full": ServerProcess("benchmarks.windows:full", dir_f, pythonpath=[str(ROOT)]),
        }
        for s in servers.values():
            s.start(timeout=60)
        try:
            url_w, url_f = servers["windowed"].url, servers["full"].url
            runs: dict[str, list[dict[str, Any]]] = {"big": [], "small_w": [], "small_f": []}
            for r in range(repeat):
                runs["big"].append(_run_client(url_w, "big", "windowed", pages if r == 0 else 0))
                runs["small_w"].append(_run_client(url_w, "small", "windowed", 0))
                runs["small_f"].append(_run_client(url_f, "small", "full", 0))
            out["runs"] = runs
        finally:
            for s in servers.values():
                s.kill()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _med(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def table_md(out: dict[str, Any]) -> str:
    runs = out["runs"]
    n, m = out["messages"], out["full_messages"]
    rows = [
        (f"windowed, room of {n:,}", runs["big"]),
        (f"windowed, room of {m:,} (the full sync's room)", runs["small_w"]),
        (f"full sync, room of {m:,}", runs["small_f"]),
    ]
    lines = [
        "| client | first render (ms) | bytes received | rows held | client RSS (MiB) "
        "| RSS growth (MiB) |",
        "| :-- | --: | --: | --: | --: | --: |",
    ]
    for name, rs in rows:
        lines.append(
            f"| {name} | {_med(rs, 'first_render_ms'):.1f} | {_med(rs, 'bytes'):,.0f} "
            f"| {_med(rs, 'rows'):,.0f} | {_med(rs, 'rss_kib') / 1024:.1f} "
            f"| {_med(rs, 'rss_delta_kib') / 1024:.1f} |"
        )
    fw, ff = _med(runs["small_w"], "first_render_ms"), _med(runs["small_f"], "first_render_ms")
    bw, bf = _med(runs["small_w"], "bytes"), _med(runs["small_f"], "bytes")
    lines.append("")
    lines.append(
        f"Full sync of {m:,} / windowed on the same room: first render x{ff / fw:.0f}, "
        f"bytes x{bf / bw:.0f}."
    )
    pages = sorted(runs["big"][0].get("page_ms") or [])
    if pages:
        lines.append(
            f"Paging 50 older messages on the room of {n:,} ({len(pages)} pages, "
            f"`load_older`, one `$scan` round trip each): p50 {percentile(pages, 50):.2f} ms, "
            f"p95 {percentile(pages, 95):.2f} ms."
        )
    big = _med(runs["big"], "first_render_ms")
    kib = _med(runs["big"], "bytes") / 1024
    ok = big <= 150 and kib <= 64
    lines.append(
        f"Targets (first render <= 150 ms and <= 64 KiB with a window of 50 on {n:,}): "
        f"{big:.1f} ms, {kib:.1f} KiB — {'met' if ok else 'NOT met'}."
    )
    return "\n".join(lines)


def doc_section(out: dict[str, Any]) -> str:
    n, m = out["messages"], out["full_messages"]
    if m == n:
        full = (
            f"The full sync is of the same {n:,} rows, in the same run (a copy of the room "
            "served by a second process without windows); the windowed client is measured on "
            "both copies, and the one on the full sync's copy is the baseline of the ratios."
        )
    else:
        full = (
            f"The full sync runs on a room of {m:,} (the same rows), not {n:,} "
            "(`--full-messages`); the windowed client on that room is the baseline of the "
            "ratios."
        )
    return "\n".join(
        [
            "## Windowed sync",
            "",
            out["facts"],
            "",
            f"A room of {n:,} chat messages (~140 bytes of JSON each, sort keys in "
            f"order; SQLite file {out['db_bytes'] / 2**20:,.0f} MiB) written straight through the "
            "storage layer, served by a server process on 127.0.0.1; each client is a fresh "
            "Python process (`synced_store.client.connect`, no local cache). First render = "
            "from `connect()` to the client having server data and reading the latest 50 "
            "messages from it. Bytes = WebSocket payloads received until then. "
            f"{full} Medians of {len(out['runs']['big'])} runs. "
            "Client RSS is the client process's after the "
            "first render; RSS growth is that minus its RSS before `connect()` (every module "
            "imported). Raw data: `benchmarks/results/windows-last-run.json`.",
            "",
            table_md(out),
        ]
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--client", nargs=4, metavar=("URL", "INSTANCE", "MODE", "PAGES"))
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--full-messages", type=int, default=0, help="default: --messages")
    p.add_argument("--pages", type=int, default=40)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--write-doc", action="store_true")
    args = p.parse_args()
    if args.client:
        url, inst, mode, pages = args.client
        print(json.dumps(asyncio.run(_client(url, inst, mode, int(pages)))))
        return
    full_n = min(args.full_messages or args.messages, args.messages)
    out = run(args.messages, full_n, args.pages, max(1, args.repeat))
    out["facts"] = run_facts(" ".join(["python -m benchmarks.windows", *sys.argv[1:]]))
    print(table_md(out))
    if args.write_doc:
        raw = ROOT / "benchmarks" / "results" / "windows-last-run.json"
        raw.parent.mkdir(parents=True, exist_ok=True)
        raw.write_text(json.dumps(out, indent=1))
        write_section("windows", doc_section(out))


if __name__ == "__main__":
    main()
