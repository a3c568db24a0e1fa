"""End-to-end workloads of ``/work/shared/peers/triplit/WORKLOAD.md``: (b) write -> visible,
(c) sustained confirmed writes, (d) initial sync.

The server is a real uvicorn process (``python -m benchmarks.server``) on 127.0.0.1 with a
fresh SQLite data directory per phase, stopped by PID. All clients are real
``synced_store.client.connect`` clients in this (the load-generator) process.
"""

from __future__ import annotations

import asyncio
import gc
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from synced_store.client import SyncedStoreClient, connect
from synced_store.testing import free_port

from .app import backend
from .common import cpu_seconds, latency_stats, progress, rss_mib

__all__ = ["ServerProcess", "run_e2e"]

ROOT = Path(__file__).resolve().parent.parent
BODY = "x" * 32


class ServerProcess:
    """``python -m benchmarks.server`` in its own process."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"{data_dir.name}-server.log"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        # Popen only forks; the readiness wait below is asynchronous.
        with open(self.log, "ab") as log:  # noqa: ASYNC230
            self.proc = subprocess.Popen(  # noqa: ASYNC220
                [
                    sys.executable,
                    "-m",
                    "benchmarks.server",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log}")
            try:
                r, w = await asyncio.open_connection("127.0.0.1", self.port)
                w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = await r.read()
                w.close()
                if b"200 OK" in data:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.05)
        raise RuntimeError("server did not start in 30 s")

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> float:
        return rss_mib(self.pid)

    async def stop(self) -> None:
        """SIGTERM by PID (graceful), SIGKILL after 15 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        for _ in range(300):
            if self.proc.poll() is not None:
                return
            await asyncio.sleep(0.05)
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)


def _row(room: str, client: int, seq: int, id_: str) -> dict[str, Any]:
    return {
        "id": id_,
        "room": room,
        "client": client,
        "seq": seq,
        "t": time.time() * 1000,
        "body": BODY,
    }


async def _ids(ctx: Any) -> set[str]:
    return {k.item_key for k in await ctx.table("msgs").keys()}


async def _connect_all(
    url: str, room: str, n: int, on_result: Callable[[int, Any], None] | None, prefix: str = "u"
) -> tuple[list[SyncedStoreClient], float]:
    """Connect n clients to the room, subscribe each (if on_result) and wait until all have
    received the server's answer and delivered it to the subscription."""
    t0 = time.perf_counter()
    clients: list[SyncedStoreClient] = []
    answered = [False] * n

    for i in range(n):
        c = await connect(url, backend, instance_id=room, token=f"{prefix}{i}")
        clients.append(c)
        if on_result is not None:

            def cb(result: Any, i: int = i, c: SyncedStoreClient = c) -> None:
                if c.has_server_data:
                    answered[i] = True
                on_result(i, result)

            c.subscribe_to_table("msgs", lambda entries, _changes, cb=cb: cb(entries))
    await asyncio.gather(*(c.wait_for_server_data(60) for c in clients))
    if on_result is not None:
        # The first callback after the server's first poke (the local empty result is earlier).
        deadline = time.monotonic() + 60
        while not all(answered) and time.monotonic() < deadline:
            for i, c in enumerate(clients):
                if not answered[i] and c.has_server_data:
                    answered[i] = True  # an empty room: the result did not change, no callback
            await asyncio.sleep(0.001)
    return clients, (time.perf_counter() - t0) * 1000


async def _close_all(clients: list[SyncedStoreClient]) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


# -- (b) write -> visible ---------------------------------------------------------------------


async def latency_phase(
    base: Path, n: int, samples: int, warmup: int, timeout_ms: float = 5000
) -> dict[str, Any]:
    server = ServerProcess(base / f"latency-n{n}")
    await server.start()
    room = "lat" + secrets.token_hex(4)
    state: dict[str, Any] = {"target": None, "t_obs": 0.0, "t_all": 0.0, "left": 0}
    seen = [False] * n
    done = asyncio.Event()
    pc = time.perf_counter

    def on_result(i: int, result: Any) -> None:
        target = state["target"]
        if i == 0 or target is None or seen[i] or not result:
            return
        # Ids grow with the sample number, so the newest row is the last in key order.
        if result[-1][0].item_key != target:
            return
        now = pc()
        seen[i] = True
        if i == 1:
            state["t_obs"] = now
        state["left"] -= 1
        if state["left"] == 0:
            state["t_all"] = now
            done.set()

    clients, connect_ms = await _connect_all(server.url, room, n, on_result)
    cpu0 = server.cpu()
    obs: list[float] = []
    alls: list[float] = []
    timeouts = 0
    writer = clients[0]
    for s in range(warmup + samples):
        id_ = f"m{s:07d}-{secrets.token_hex(6)}"
        row = _row(room, 0, s, id_)
        for i in range(n):
            seen[i] = False
        state["left"] = n - 1
        done.clear()
        state["target"] = id_
        t0 = pc()
        await writer.mutate.insert_msg(row)
        try:
            await asyncio.wait_for(done.wait(), timeout_ms / 1000)
        except TimeoutError:
            timeouts += 1 if s >= warmup else 0
            state["target"] = None
            continue
        state["target"] = None
        if s >= warmup:
            obs.append((state["t_obs"] - t0) * 1000)
            alls.append((state["t_all"] - t0) * 1000)
        if (s + 1) % 100 == 0:
            progress(f"    N={n}: {s + 1}/{warmup + samples} samples")
    cpu = server.cpu() - cpu0
    rss = server.rss()
    await _close_all(clients)
    await server.stop()
    return {
        "N": n,
        "samples": samples,
        "warmup": warmup,
        "timeouts": timeouts,
        "connect_all_ms": connect_ms,
        "write_to_observer_ms": latency_stats(obs).to_json(),
        "write_to_all_others_ms": latency_stats(alls).to_json(),
        "server_cpu_s": cpu,
        "server_rss_mib": rss,
    }


# -- (c) sustained confirmed writes -----------------------------------------------------------


async def throughput_phase(
    base: Path,
    mode: str,
    k: int = 10,
    seconds: float = 10.0,
    window: int = 100,
    drain_s: float = 30.0,
    converge_s: float = 30.0,
    stable_s: float = 5.0,
    yield_every: int = 0,
) -> dict[str, Any]:
    server = ServerProcess(base / f"throughput-{mode}")
    await server.start()
    room = "tp" + secrets.token_hex(4)
    live_counts = [0] * k

    def on_result(i: int, result: Any) -> None:
        live_counts[i] = len(result)

    clients, connect_ms = await _connect_all(
        server.url, room, k, on_result if mode == "live" else None
    )
    issued = [0] * k
    confirmed_ids: set[str] = set()
    confirmed_in_window = 0
    failed = 0
    t_end = 0.0
    stop = False
    wake = [asyncio.Event() for _ in range(k)]
    unconfirmed = [0] * k

    def on_done(i: int, id_: str, fut: asyncio.Future[None]) -> None:
        nonlocal confirmed_in_window, failed
        unconfirmed[i] -= 1
        wake[i].set()
        if fut.cancelled() or fut.exception() is not None:
            failed += 1
            return
        confirmed_ids.add(id_)
        if time.perf_counter() <= t_end:
            confirmed_in_window += 1

    async def writer(i: int) -> None:
        c = clients[i]
        seq = 0
        while not stop and time.perf_counter() < t_end:
            if unconfirmed[i] >= window:
                wake[i].clear()
                await wake[i].wait()
                continue
            id_ = f"c{i:03d}-{seq:08d}"
            res = await c.mutate.insert_msg(_row(room, i, seq, id_))
            seq += 1
            issued[i] += 1
            unconfirmed[i] += 1
            res.confirmed.add_done_callback(lambda f, i=i, id_=id_: on_done(i, id_, f))
            if yield_every and seq % yield_every == 0:
                await asyncio.sleep(0)
            # By default a writer yields only when its window is full, like bench.mjs's
            # worker (its awaits resolve as microtasks, which do not let I/O run).

    cpu_s0, cpu_l0 = server.cpu(), time.process_time()
    t_start = time.perf_counter()
    t_end = t_start + seconds
    tasks = [asyncio.create_task(writer(i)) for i in range(k)]
    await asyncio.sleep(seconds)
    stop = True
    # CPU over the window as the loop saw it end (a writer's burst can delay this a little).
    cpu_s_window, cpu_l_window = server.cpu() - cpu_s0, time.process_time() - cpu_l0
    window_wall_s = time.perf_counter() - t_start
    for w in wake:
        w.set()
    await asyncio.gather(*tasks)
    t_window_end = time.perf_counter()
    total_issued = sum(issued)
    # Drain: every issued write confirmed (or failed), at most drain_s.
    while sum(unconfirmed) > 0 and time.perf_counter() - t_window_end < drain_s:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    drain_ms = (time.perf_counter() - t_window_end) * 1000
    # Convergence: every client's view holds exactly the confirmed ids.
    t_conv0 = time.perf_counter()
    last_change = t_conv0
    prev_counts: list[int] = []
    views: list[set[str]] = []
    converged_clients = False
    while time.perf_counter() - t_conv0 < converge_s:
        views = [await c.query(_ids) for c in clients]
        counts = [len(v) for v in views]
        if all(v == confirmed_ids for v in views):
            converged_clients = True
            break
        if counts != prev_counts:
            prev_counts, last_change = counts, time.perf_counter()
        elif time.perf_counter() - last_change > stable_s:
            break
        await asyncio.sleep(0.05)
    converge_ms = (time.perf_counter() - t_conv0) * 1000
    fresh, _ = await _connect_all(server.url, room, 1, None, prefix="verify")
    server_ids = await fresh[0].query(_ids)
    await _close_all(fresh + clients)
    missing = confirmed_ids - server_ids
    server_total_cpu = server.cpu()
    await server.stop()
    commits = rows = 0
    db = server.data_dir / f"{room}.sqlite3"
    if db.exists():
        with sqlite3.connect(db) as conn:
            commits = conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0]
            rows = conn.execute("SELECT count(*) FROM rows").fetchone()[0]
    return {
        "subscription": mode,
        "clients": k,
        "window": window,
        "seconds": seconds,
        "connect_all_ms": connect_ms,
        "issued": total_issued,
        "confirmed_in_window": confirmed_in_window,
        "confirmed_total": len(confirmed_ids),
        "failed": failed,
        "confirmed_per_s": confirmed_in_window / seconds,
        "drain_ms": drain_ms,
        "converge_after_drain_ms": converge_ms,
        "converged": converged_clients and server_ids == confirmed_ids,
        "client_counts": [len(v) for v in views],
        "server_count": len(server_ids),
        "confirmed_missing_on_server": len(missing),
        "window_wall_s": window_wall_s,
        "server_cpu_s_in_window": cpu_s_window,
        "loadgen_cpu_s_in_window": cpu_l_window,
        "server_cpu_s_total": server_total_cpu,
        "commits": commits,
        "db_rows": rows,
        "mutations_per_commit": (rows / commits) if commits else 0.0,
    }


# -- (d) initial sync -------------------------------------------------------------------------


async def _fresh_client_sync(url: str, room: str, rows: int, timeout: float) -> dict[str, Any]:
    gc.collect()  # untimed: start every fresh client from a collected heap
    t0 = time.perf_counter()
    first: list[float] = []
    full = asyncio.Event()
    t_all: list[float] = []

    def cb(result: Any) -> None:
        now = time.perf_counter()
        if result and not first:
            first.append(now)
        if len(result) >= rows and not t_all:
            t_all.append(now)
            full.set()

    c = await connect(url, backend, instance_id=room, token="reader" + secrets.token_hex(3))
    c.subscribe_to_table("msgs", lambda entries, _changes: cb(entries))
    await asyncio.wait_for(full.wait(), timeout)
    ms = (t_all[0] - t0) * 1000
    await c.close()
    return {"ms": ms, "first_rows_ms": (first[0] - t0) * 1000, "rows_per_s": rows / (ms / 1000)}


async def initial_phase(
    base: Path, rows: int = 50_000, batch: int = 1_000, timeout: float = 300.0
) -> dict[str, Any]:
    data_dir = base / "initial"
    server = ServerProcess(data_dir)
    await server.start()
    room = "init"
    loader = await connect(server.url, backend, instance_id=room, token="loader")
    await loader.wait_for_server_data(60)
    t0 = time.perf_counter()
    results = []
    for b in range(0, rows, batch):
        batch_rows = [_row(room, 0, i, f"r{i:07d}") for i in range(b, min(rows, b + batch))]
        results.append(await loader.mutate.insert_msgs({"rows": batch_rows}))
        await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*(r.confirmed for r in results)), timeout)
    preload_ms = (time.perf_counter() - t0) * 1000
    await loader.close()
    del loader, results  # the loader's 50,000-row store must not weigh on the fresh clients
    out: dict[str, Any] = {
        "rows": rows,
        "load_batch": batch,
        "preload_ms": preload_ms,
        "preload_rows_per_s": rows / (preload_ms / 1000),
    }
    out["fresh_client_1"] = await _fresh_client_sync(server.url, room, rows, timeout)
    out["fresh_client_2"] = await _fresh_client_sync(server.url, room, rows, timeout)
    out["server_after_warm"] = {"rss_mib": server.rss(), "cpu_s": server.cpu()}
    await server.stop()
    server2 = ServerProcess(data_dir)
    await server2.start()
    out["fresh_client_after_restart"] = await _fresh_client_sync(server2.url, room, rows, timeout)
    out["server_after_restart"] = {"rss_mib": server2.rss(), "cpu_s": server2.cpu()}
    await server2.stop()
    out["sqlite_bytes"] = sum(p.stat().st_size for p in data_dir.iterdir() if p.is_file())
    return out


# -- all --------------------------------------------------------------------------------------


async def run_e2e(quick: bool, phases: set[str] | None = None) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="synced-store-bench-"))
    out: dict[str, Any] = {"latency": [], "throughput": [], "initial": None, "data_dir": str(base)}
    samples, warmup = (50, 5) if quick else (500, 20)
    try:
        if not phases or "latency" in phases:
            for n in (2, 10) if quick else (2, 100):
                progress(
                    f"e2e (b) write -> visible, N={n}, {samples} samples (server + "
                    f"{n} clients share the 2 cores)"
                )
                r = await latency_phase(base, n, samples, warmup)
                o = r["write_to_observer_ms"]
                progress(
                    f"  N={n}: observer p50 {o['p50']:.2f} ms, p99 {o['p99']:.2f} ms, "
                    f"timeouts {r['timeouts']}"
                )
                out["latency"].append(r)
        if not phases or "throughput" in phases:
            for mode in ("live", "background"):
                secs = 3.0 if quick else 10.0
                progress(
                    f"e2e (c) sustained writes, 10 clients x {secs:.0f} s, window 100, "
                    f"{mode} (long, CPU-heavy)"
                )
                r = await throughput_phase(base, mode, seconds=secs)
                progress(
                    f"  {mode}: {r['confirmed_per_s']:.0f} confirmed/s, converged "
                    f"{r['converged']}, missing {r['confirmed_missing_on_server']}"
                )
                out["throughput"].append(r)
        if not phases or "initial" in phases:
            rows = 5_000 if quick else 50_000
            progress(f"e2e (d) initial sync of {rows} rows")
            r = await initial_phase(base, rows=rows)
            progress(
                f"  fresh #1 {r['fresh_client_1']['rows_per_s']:.0f} rows/s, #2 "
                f"{r['fresh_client_2']['rows_per_s']:.0f}, after restart "
                f"{r['fresh_client_after_restart']['rows_per_s']:.0f}"
            )
            out["initial"] = r
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return out
