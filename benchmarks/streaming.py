"""Streaming benchmark: concurrent bot replies watched by many subscribers.

``S`` rooms (instances), each with one bot stream (the chat example's ``callBot`` action, one
``ctx.mutate("updateMessage", ...)`` per chunk) and ``N`` subscriber clients. The server is a
real uvicorn process on 127.0.0.1 (``python -m benchmarks.streaming --serve ...``); all clients
are real ``synced_store.client.connect`` clients in separate load-generator processes.

Two workloads, both token-sized chunks:

- ``tokens``: 200 chunks of 4 random letters-and-digits (incompressible, the worst case);
- ``story``: a 2.6 KB English story (``benchmarks/story.txt``) cut the way LLM tokenizers cut
  text (a word with its leading space, punctuation apart): 573 chunks of 4.6 bytes on average.

Measured, per variant, in the same run:

- **chunk -> subscriber latency**: the benchmark bot records the wall-clock time it yields each
  chunk (one clock: every process is on this machine); a subscriber records when its copy of the
  reply first reaches each length, so chunk ``i`` is seen when the text is as long as chunks
  ``0..i`` together;
- **bytes per subscriber / final text size**: wire bytes every subscriber received (WebSocket
  frames as read from the socket, headers included, compressed if permessage-deflate was
  negotiated) from the user's message to the reply's ``complete``, divided by the final
  reply's length.

Variants: ``deltas`` (the shipped server: append deltas and append frames) and ``naive``
(``append_deltas=False``: every update resends the whole row); clients with permessage-deflate
(as browsers always negotiate it) or without it (``connect()``'s default).

``run(quick)`` returns the numbers; ``python -m benchmarks.streaming [--quick]`` prints them.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import functools
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PacedBot", "doc_section", "run", "summary", "workload_tokens"]

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_seconds, percentile  # noqa: E402
from benchmarks.sections import run_facts, write_section  # noqa: E402
from synced_store.testing import free_port  # noqa: E402

#: Where ``--write-doc`` keeps the raw numbers of the run it documents.
RAW = ROOT / "benchmarks" / "results" / "streaming-last-run.json"

#: GPT-style pre-tokenisation: a word with its leading space, digits, punctuation runs, breaks.
_TOKEN = re.compile(r" ?[A-Za-z]+| ?[0-9]+|\s*\n+|[^\sA-Za-z0-9]+| ")


def workload_tokens(workload: str) -> list[str]:
    """The chunks a stream of ``workload`` yields, in order."""
    if workload == "story":
        text = (ROOT / "benchmarks" / "story.txt").read_text().strip()
        tokens = _TOKEN.findall(text)
        assert "".join(tokens) == text
        return tokens
    if workload == "tokens":
        rng = random.Random(1)
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
        return ["".join(rng.choice(alphabet) for _ in range(4)) for _ in range(200)]
    raise ValueError(f"unknown workload {workload!r}")


class PacedBot:
    """Yields ``workload``'s chunks on a fixed schedule, one every ``pace`` seconds from the
    start of the stream (as a provider streams: it does not wait for the server), and writes
    each chunk's scheduled time to ``<record_dir>/<room>.json`` when the stream ends (the room
    is the prompt's last word). A chunk's latency counts from its scheduled time, so a server
    too busy to take it on time pays for the delay."""

    def __init__(self, *, workload: str, pace: float, record_dir: Path) -> None:
        self.tokens = workload_tokens(workload)
        self.pace = pace
        self.record_dir = record_dir

    async def stream(self, request: Any) -> AsyncIterator[str]:
        """Yield the chunks on schedule, recording the schedule."""
        room = request.prompt.split()[-1]
        start = time.time()
        times: list[float] = []
        for i, tok in enumerate(self.tokens):
            due = start + (i + 1) * self.pace
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            times.append(due)
            yield tok
        tmp = self.record_dir / f"{room}.json.partial"
        tmp.write_text(json.dumps(times))
        tmp.rename(self.record_dir / f"{room}.json")


class LoopLag:
    """How late the event loop runs a timer: a task sleeps ``interval`` seconds again and again
    and records how much later than asked it woke. A loop busy with other callbacks, or a
    process waiting for a CPU, shows up as lag."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        #: ``(wall-clock time, lag in milliseconds)``
        self.samples: list[tuple[float, float]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start probing on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._probe())

    def stop(self) -> None:
        """Stop probing."""
        if self._task is not None:
            self._task.cancel()

    async def _probe(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(self.interval)
            lag = time.perf_counter() - t - self.interval
            self.samples.append((time.time(), lag * 1000))


def lag_stats(samples: list[tuple[float, float]], since: float, until: float) -> dict[str, float]:
    """p50/p95/p99 (ms) of the lag samples taken between ``since`` and ``until``."""
    return _percentiles(sorted(lag for t, lag in samples if since <= t <= until))


# -- the server process --------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> None:
    import logging

    import uvicorn

    logging.basicConfig(level=logging.WARNING)
    app: Any
    if args.bare:
        from benchmarks.bare_server import BareApp

        app = BareApp(workload_tokens(args.workload), args.pace, Path(args.record_dir))
    else:
        from examples.chat.app import make_backend

        from synced_store.bot import streamed_text
        from synced_store.server import create_app

        if args.step_interval is not None:
            streamed_text.STEP_INTERVAL = args.step_interval

        bot = PacedBot(workload=args.workload, pace=args.pace, record_dir=Path(args.record_dir))
        app = create_app(
            make_backend(bot),
            data_dir=args.data_dir,
            authenticate=lambda t: t or None,
            append_deltas=not args.naive,
            action_options={"concurrency": 512, "timeout": 600},
        )
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        ws="websockets-sansio",  # the implementation synced-store serve uses
        ws_max_size=16 << 20,
        ws_per_message_deflate=True,
    )

    lag = LoopLag()
    # SS_PROFILE=FILE: profile the server (cProfile, written at the end): where the time goes.
    profile_to = os.environ.get("SS_PROFILE")
    profiler: Any = None
    if profile_to:
        import cProfile

        profiler = cProfile.Profile()

    def write_lag(*_: Any) -> None:
        lag.stop()
        (Path(args.record_dir) / "server-lag.json").write_text(json.dumps(lag.samples))
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile_to)

    # uvicorn re-raises the SIGTERM it stopped on once it has shut down; this handler then
    # writes the lag samples and lets the process end normally.
    signal.signal(signal.SIGTERM, write_lag)

    async def serve() -> None:
        lag.start()
        if profiler is not None:
            profiler.enable()
        await uvicorn.Server(config).serve()

    # The event loop uvicorn would pick (uvloop when it is installed, as ``synced-store serve``).
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(serve())


_OTHER_BUILD = """
import runpy, sys, uvicorn
_config = uvicorn.Config
uvicorn.Config = lambda *a, **k: _config(*a, **{**k, "ws": "websockets-sansio"})
sys.argv[0] = "benchmarks.streaming"
runpy.run_module("benchmarks.streaming", run_name="__main__")
"""


@dataclass(frozen=True)
class ServerBuild:
    """Which server a variant runs: this tree's (``ours``), the bare baseline (``bare``, see
    benchmarks/bare_server.py), or another checkout's (its ``root`` and ``python``: an older
    build measured in the same sitting)."""

    name: str = "ours"
    root: Path = ROOT
    python: str = sys.executable
    bare: bool = False
    #: Set: ``StreamedText``'s default ``min_interval`` in the server (0.04: a commit per frame
    #: the fan-out sends; synced_store/bot/streamed_text.py).
    step_interval: float | None = None


class _Server:
    def __init__(
        self, *, naive: bool, workload: str, pace: float, build: ServerBuild = ServerBuild()
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ss-bench-stream-"))
        self.record_dir = self.dir / "emitted"
        self.record_dir.mkdir()
        self.port = free_port()
        # Another checkout's server runs its own ``--serve``, on the WebSocket implementation
        # this tree's server uses (older checkouts left uvicorn's default in place).
        entry = ["-m", "benchmarks.streaming"] if build.root == ROOT else ["-c", _OTHER_BUILD]
        self.proc = subprocess.Popen(
            [
                build.python,
                *entry,
                "--serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.dir / "data"),
                "--record-dir",
                str(self.record_dir),
                "--workload",
                workload,
                "--pace",
                str(pace),
                *(["--naive"] if naive else []),
                *(["--bare"] if build.bare else []),
                *(
                    ["--step-interval", str(build.step_interval)]
                    if build.step_interval is not None
                    else []
                ),
            ],
            cwd=build.root,
            env={**os.environ, "PYTHONPATH": str(build.root)},
        )

    async def ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:  # bounded readiness polling of the child's port
            if self.proc.poll() is not None:
                raise RuntimeError(f"benchmark server exited with {self.proc.returncode}")
            try:
                _r, w = await asyncio.open_connection("127.0.0.1", self.port)
                w.close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("benchmark server did not start") from None
                await asyncio.sleep(0.05)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> list[tuple[float, float]]:
        """Stop the server; its event loop's lag samples (see :class:`LoopLag`)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        lag_file = self.record_dir / "server-lag.json"
        lag = json.loads(lag_file.read_text()) if lag_file.exists() else []
        shutil.rmtree(self.dir, ignore_errors=True)
        return lag


# -- clients -------------------------------------------------------------------------------


class _CountingConnector:
    """Opens real WebSocket connections and counts the bytes read from the socket."""

    def __init__(self, url: str, *, deflate: bool) -> None:
        self.url = url
        self.deflate = deflate
        self.received = 0
        self.frames = 0

    async def connect(self) -> Any:
        import websockets
        from websockets.asyncio.client import connect as ws_connect

        from synced_store.client.transport import ConnectionLost

        ws = await ws_connect(
            self.url,
            max_size=64 << 20,
            open_timeout=30,
            ping_interval=None,
            compression="deflate" if self.deflate else None,
        )
        real = ws.data_received
        outer = self

        def counted(data: bytes) -> None:
            outer.received += len(data)
            real(data)

        ws.data_received = counted  # type: ignore[method-assign]

        class Conn:
            async def send(self, frame: str | bytes) -> None:
                try:
                    await ws.send(frame, text=True)
                except websockets.ConnectionClosed as exc:
                    raise ConnectionLost(1006, str(exc)) from exc

            async def recv(self) -> str:
                outer.frames += 1
                try:
                    msg = await ws.recv()
                except websockets.ConnectionClosed as exc:
                    code = exc.rcvd.code if exc.rcvd else 1006
                    raise ConnectionLost(code, str(exc)) from exc
                return msg if isinstance(msg, str) else msg.decode()

            async def close(self) -> None:
                await ws.close()

        return Conn()


@dataclass
class _Subscriber:
    connector: _CountingConnector
    room: str
    client: Any = None
    #: ``(text length, wall-clock time)`` each time the reply grew.
    seen: list[tuple[int, float]] = field(default_factory=list)
    final_text: str = ""
    done: asyncio.Future[None] | None = None


def _latencies(
    seen: list[tuple[int, float]], tokens: list[str], emitted: list[float]
) -> list[float]:
    """Per chunk: when the subscriber's text first covered it, minus when the bot yielded it
    (milliseconds)."""
    lengths = [n for n, _ in seen]
    out = []
    end = 0
    for tok, t_emit in zip(tokens, emitted, strict=True):
        end += len(tok)
        i = bisect.bisect_left(lengths, end)
        if i < len(seen):
            out.append((seen[i][1] - t_emit) * 1000)
    return out


def _pct(sorted_ms: list[float], p: float) -> float:
    return round(percentile(sorted_ms, p), 2)


def _percentiles(sorted_ms: list[float]) -> dict[str, float]:
    return {"p50": _pct(sorted_ms, 50), "p95": _pct(sorted_ms, 95), "p99": _pct(sorted_ms, 99)}


@functools.cache
def _chat_backend() -> Any:
    """One chat backend for every client of a process (clients only run its mutators)."""
    from examples.chat.app import make_backend

    from synced_store.bot import BotConfig

    return make_backend(BotConfig(pace=0, words=1))  # clients run the mutators only


async def _open(url: str, room: str, user: str, connector: Any, gate: asyncio.Semaphore) -> Any:
    from synced_store.client import connect

    async with gate:
        c = await connect(
            url, _chat_backend(), instance_id=room, token=user, user_id=user, connector=connector
        )
        await c.wait_for_server_data(120)
        return c


async def _subscribers(
    conn: Any,
    url: str,
    rooms: list[str],
    n: int,
    deflate: bool,
    workload: str,
    record_dir: str,
    timeout: float,
) -> None:
    """One load-generator process: ``n`` subscribers in each of ``rooms``."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(64)
    subs = [
        _Subscriber(_CountingConnector(f"{url}/sync/{room}", deflate=deflate), room)
        for room in rooms
        for _ in range(n)
    ]
    clients = await asyncio.gather(
        *(_open(url, s.room, f"sub{i}", s.connector, gate) for i, s in enumerate(subs))
    )

    def watch(s: _Subscriber) -> None:
        s.done = loop.create_future()

        def on_value(v: Any) -> None:
            if not v:
                return
            text = v["text"]
            if not s.seen or len(text) > s.seen[-1][0]:
                s.seen.append((len(text), time.time()))
            if v.get("status") == "complete" and s.done is not None and not s.done.done():
                s.final_text = text
                s.done.set_result(None)

        s.client.subscribe(lambda ctx: ctx.table("messages").get("bot"), on_value)

    for s, c in zip(subs, clients, strict=True):
        s.client = c
        watch(s)
    await asyncio.sleep(0.2)  # let the first (empty) subscription results arrive
    for s in subs:
        s.connector.received = 0
        s.connector.frames = 0
    cpu0 = time.process_time()
    lag = LoopLag()
    lag.start()
    conn.send("ready")
    try:
        await asyncio.wait_for(asyncio.gather(*(s.done for s in subs if s.done)), timeout)
        cpu = time.process_time() - cpu0
        lag.stop()
        lag_ms = lag_stats(lag.samples, 0, math.inf)
        tokens = workload_tokens(workload)
        emitted = {
            room: json.loads((Path(record_dir) / f"{room}.json").read_text()) for room in rooms
        }
        conn.send(
            {
                "latencies": [x for s in subs for x in _latencies(s.seen, tokens, emitted[s.room])],
                "ratios": [s.connector.received / max(1, len(s.final_text)) for s in subs],
                "frames": sum(s.connector.frames for s in subs),
                "final": [len(s.final_text) for s in subs],
                "cpu_s": cpu,
                "loop_lag_ms": lag_ms,
            }
        )
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


def _subscriber_process(conn: Any, *args: Any) -> None:
    try:
        asyncio.run(_subscribers(conn, *args))
    except BaseException as exc:
        conn.send({"error": repr(exc)})
        raise


async def _variant(
    *,
    workload: str,
    naive: bool,
    deflate: bool,
    streams: int,
    subscribers: int,
    pace: float,
    workers: int = 2,
    build: ServerBuild = ServerBuild(),
) -> dict[str, Any]:
    import multiprocessing

    server = _Server(naive=naive, workload=workload, pace=pace, build=build)
    tokens = workload_tokens(workload)
    senders: list[Any] = []
    procs: list[Any] = []
    try:
        await server.ready()
        url = f"ws://127.0.0.1:{server.port}"
        rooms = [f"room{r:04d}" for r in range(streams)]
        timeout = 120 + len(tokens) * pace * 4
        ctx = multiprocessing.get_context("spawn")
        pipes = []
        for w in range(workers):
            parent, child = ctx.Pipe()
            p = ctx.Process(
                target=_subscriber_process,
                daemon=True,
                args=(
                    child,
                    url,
                    rooms[w::workers],
                    subscribers,
                    deflate,
                    workload,
                    str(server.record_dir),
                    timeout,
                ),
            )
            p.start()
            procs.append(p)
            pipes.append(parent)
        gate = asyncio.Semaphore(64)
        senders = list(
            await asyncio.gather(
                *(
                    _open(
                        url,
                        room,
                        f"sender-{room}",  # a user per room: within the per-user connect rate
                        _CountingConnector(f"{url}/sync/{room}", deflate=False),
                        gate,
                    )
                    for room in rooms
                )
            )
        )
        for pipe in pipes:
            msg = await asyncio.to_thread(pipe.recv)
            if msg != "ready":
                raise RuntimeError(f"subscriber process failed: {msg}")
        cpu0 = server.cpu_seconds()
        main_cpu0 = time.process_time()
        t0 = time.perf_counter()
        wall0 = time.time()
        rng = random.Random(7)

        async def start(sender: Any, room: str) -> None:
            await asyncio.sleep(rng.random() * max(pace, 0.05))  # stagger the stream starts
            await sender.mutate.sendMessage(id="user", text=f"@bot go {room}", botMessageId="bot")

        await asyncio.gather(*(start(s, room) for s, room in zip(senders, rooms, strict=True)))
        results = [await asyncio.to_thread(pipe.recv) for pipe in pipes]
        wall = time.perf_counter() - t0
        wall1 = time.time()
        cpu = server.cpu_seconds() - cpu0
        main_cpu = time.process_time() - main_cpu0
        await asyncio.gather(*(c.close() for c in senders), return_exceptions=True)
        senders = []
        server_lag = server.stop()
        for r in results:
            if "error" in r:
                raise RuntimeError(f"subscriber process failed: {r['error']}")
        lat = sorted(x for r in results for x in r["latencies"])
        ratios = sorted(x for r in results for x in r["ratios"])
        frames = max(1, sum(r["frames"] for r in results))
        gen_cpu = sum(r["cpu_s"] for r in results)
        finals = [x for r in results for x in r["final"]]
        final = sum(finals) / len(finals)
        return {
            "workload": workload,
            "variant": ("naive" if naive else "deltas") + (" + deflate" if deflate else ""),
            "server": "naive" if naive else "deltas",
            "build": build.name,
            "deflate": deflate,
            "chunks": len(tokens),
            "chunk_bytes": round(final / len(tokens), 1),
            "streams": streams,
            "subscribers_per_stream": subscribers,
            "pace_s": pace,
            "final_text_bytes": round(final, 1),
            "chunk_samples": len(lat),
            "latency_ms": {**_percentiles(lat), "max": round(lat[-1], 2) if lat else math.nan},
            "bytes_per_subscriber_over_final": {
                "mean": round(sum(ratios) / len(ratios), 2),
                "max": round(ratios[-1], 2),
            },
            "wall_s": round(wall, 2),
            "server_cpu_s": round(cpu, 2),
            "load_generator_cpu_s": [round(r["cpu_s"], 2) for r in results],
            "senders_cpu_s": round(main_cpu, 2),
            "frames_per_subscriber": round(frames / (streams * subscribers), 1),
            # Every frame a subscriber got also went to its room's sender: 1 + 1/N per frame.
            "server_cpu_us_per_frame": round(cpu / (frames * (1 + 1 / subscribers)) * 1e6, 1),
            "client_cpu_us_per_frame": round(gen_cpu / frames * 1e6, 1),
            "machine_cpu_busy": round(
                (cpu + main_cpu + gen_cpu) / (wall * (os.cpu_count() or 1)), 2
            ),
            "server_loop_lag_ms": lag_stats(server_lag, wall0, wall1),
            "load_generator_loop_lag_ms": [r["loop_lag_ms"] for r in results],
        }
    finally:
        await asyncio.gather(*(c.close() for c in senders), return_exceptions=True)
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
        server.stop()


#: ``(workload, seconds between chunks, naive server, permessage-deflate)``, in run order, at
#: 100 streams x 10 subscribers.
VARIANTS: list[tuple[str, float, bool, bool]] = [
    ("story", 0.05, False, True),
    ("story", 0.05, False, False),
    ("story", 0.05, True, True),
    ("story", 0.02, False, True),
    ("story", 0.01, False, True),
    ("tokens", 0.05, False, True),
    ("tokens", 0.05, False, False),
    ("tokens", 0.05, True, False),
]
#: Then these at 10 streams x 10 subscribers: the same engine on a machine that is not
#: saturated by the load generator.
SMALL_VARIANTS: list[tuple[str, float, bool, bool]] = [
    ("story", 0.05, False, True),
    ("story", 0.02, False, True),
    ("story", 0.01, False, True),
    ("tokens", 0.05, False, True),
]


async def _run(
    quick: bool,
    variants: list[tuple[str, float, bool, bool]],
    small: list[tuple[str, float, bool, bool]],
    repeat: int = 1,
) -> dict[str, Any]:
    plan = [(v, (10, 10) if quick else (100, 10)) for v in variants]
    plan += [(v, (10, 10)) for v in small]
    runs: list[list[dict[str, Any]]] = [[] for _ in plan]
    for i in range(repeat):  # the whole plan again: slow drift of the box hits every variant
        for j, ((workload, pace, naive, deflate), (streams, subscribers)) in enumerate(plan):
            r = await _variant(
                workload=workload,
                naive=naive,
                deflate=deflate,
                streams=streams,
                subscribers=subscribers,
                pace=pace,
            )
            print(f"run {i + 1}/{repeat} {_row(r)}", flush=True)
            runs[j].append(r)
    return {
        "benchmark": "streaming",
        "quick": quick,
        "repeat": repeat,
        "targets": {"latency_p95_ms": 50, "bytes_per_subscriber_over_final": 1.5},
        "results": [_median_run(rs) for rs in runs],
    }


def _median_run(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median p95 latency, with every run's p95 and bytes ratio beside it."""
    ordered = sorted(rs, key=lambda r: r["latency_ms"]["p95"])
    out = dict(ordered[(len(ordered) - 1) // 2])
    out["runs"] = len(rs)
    out["p95_ms_each_run"] = [r["latency_ms"]["p95"] for r in rs]
    out["ratio_each_run"] = [r["bytes_per_subscriber_over_final"]["mean"] for r in rs]
    return out


def _row(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    ratio = r["bytes_per_subscriber_over_final"]["mean"]
    p95: Any = lat["p95"]
    if len(r.get("p95_ms_each_run", ())) > 1:
        each = r["p95_ms_each_run"]
        p95 = f"{lat['p95']} ({min(each):.1f}–{max(each):.1f})"
    return (
        f"| {r['streams']} × {r['subscribers_per_stream']} | {r['workload']} | "
        f"{round(1 / r['pace_s'])} | {r['variant']} | {r['chunk_bytes']} | "
        f"{r['final_text_bytes']:.0f} | {lat['p50']} | {p95} | {lat['p99']} | "
        f"{ratio} | {r['server_cpu_s']} | {sum(r['load_generator_cpu_s']):.2f} | {r['wall_s']} |"
    )


def summary(out: dict[str, Any]) -> str:
    """A markdown table of :func:`run`'s results (for docs/benchmarks.md)."""
    lines = [
        "| streams × subs | workload | chunks/s | variant | chunk B | final B | p50 ms | p95 ms | "
        "p99 ms | bytes/sub ÷ final | server CPU s | clients CPU s | wall s |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [_row(r) for r in out["results"]]
    return "\n".join(lines)


def load_summary(out: dict[str, Any]) -> str:
    """Where the time goes, per variant: frames, CPU per frame, the server's event-loop lag."""
    lines = [
        "| streams × subs | workload | chunks/s | variant | frames/sub | server µs/frame | "
        "client µs/frame | server loop lag p50 / p95 ms | machine CPU busy |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in out["results"]:
        lag = r.get("server_loop_lag_ms") or {}
        lines.append(
            f"| {r['streams']} × {r['subscribers_per_stream']} | {r['workload']} | "
            f"{round(1 / r['pace_s'])} | {r['variant']} | {r.get('frames_per_subscriber', '–')} | "
            f"{r.get('server_cpu_us_per_frame', '–')} | {r.get('client_cpu_us_per_frame', '–')} | "
            f"{lag.get('p50', '–')} / {lag.get('p95', '–')} | "
            f"{round(100 * r['machine_cpu_busy']) if 'machine_cpu_busy' in r else '–'} % |"
        )
    return "\n".join(lines)


def _met(r: dict[str, Any]) -> tuple[bool, bool]:
    return (
        r["latency_ms"]["p95"] <= 50,
        r["bytes_per_subscriber_over_final"]["mean"] <= 1.5,
    )


def doc_section(out: dict[str, Any], command: str) -> str:
    """The streaming section of docs/benchmarks.md (issue 3's targets)."""
    streams = out["results"][0]["streams"] if out["results"] else 0
    subs = out["results"][0]["subscribers_per_stream"] if out["results"] else 0
    lines = [
        "## Streaming: bot replies through ordinary rows (issue 3)",
        "",
        out.get("facts") or run_facts(command),
        "",
        f"{streams} concurrent streams × {subs} subscribers each (and a smaller 10 × 10 run).",
        "Each stream is the chat example's `callBot` action: a benchmark bot yields chunks on a",
        "fixed schedule (as a provider does: it does not wait for the server), and the action",
        'commits the text so far with `ctx.mutate("updateMessage")` once per step — one chunk',
        "when commits keep up, several when they do not (`StreamedText`). A chunk's latency",
        "runs from its scheduled time to the moment a subscriber's query first shows it.",
        "Every subscriber is a real client in one of two load-generator processes. `story` is",
        "a 2.6 KB English story cut like an LLM tokenizer cuts it (573 chunks, 4.6 B each);",
        "`tokens` is 200 chunks of 4 random characters (incompressible). `deltas` is the",
        "server as shipped (append deltas, append frames, 40 ms per-row window); `naive` the",
        "full-row rewrite baseline (`create_app(append_deltas=False)`), in the same sitting.",
        "`+ deflate`: the client negotiated permessage-deflate, as browsers always do (Python",
        'clients: `connect(..., compression="deflate")`).',
        "Bytes are WebSocket bytes off the socket, frame headers included, from the user's",
        "message to the reply's `complete`. Raw data:",
        "`benchmarks/results/streaming-last-run.json`.",
        *(
            [
                "",
                f"The whole plan ran {out['repeat']} times, one variant after another; each row",
                "is the run with the median p95, and the p95 column shows the range over the",
                "runs in brackets (the second table is from that same run). At 100 × 10 the",
                "machine is saturated and the tail moves a lot from run to run.",
            ]
            if out.get("repeat", 1) > 1
            else []
        ),
        "",
        summary(out),
        "",
        "Where the time goes: frames each subscriber received; server CPU per frame sent (every",
        "frame also goes to the room's sender); load-generator CPU per frame received; how late",
        "the server's event loop ran a 10 ms timer (`LoopLag`); CPU used by the server, the load",
        "generators and the senders' process over the machine's capacity.",
        "",
        load_summary(out),
        "",
        "| streams × subs | workload | chunks/s | variant | p95 ≤ 50 ms | bytes ≤ 1.5 × final |",
        "| :-- | :-- | --: | :-- | :-- | :-- |",
    ]
    for r in out["results"]:
        lat_ok, bytes_ok = _met(r)
        lines.append(
            f"| {r['streams']} × {r['subscribers_per_stream']} | {r['workload']} | "
            f"{round(1 / r['pace_s'])} | {r['variant']} | "
            f"{'**yes**' if lat_ok else '**no**'} | {'**yes**' if bytes_ok else '**no**'} |"
        )
    lines += ["", *STREAMING_NOTES]
    return "\n".join(lines)


STREAMING_NOTES = [
    "Where the bytes go: a token-sized chunk sent on its own costs at least the 2-byte",
    "WebSocket header plus its envelope. As an ordinary poke the envelope is ~110 bytes; as",
    "an append frame (`[check, cookie_delta, handle, suffix]`, docs/protocol.md) about 12;",
    "with permessage-deflate the repeated parts of consecutive frames compress to a few",
    "bytes and English text itself compresses. Chunks that arrive within a row's 40 ms",
    "window, or while the action's previous commit is in flight, share one frame. So the",
    "ratio falls with deflate, with faster streams and with compressible text. One chunk",
    "per frame cannot reach 1.5×: the 2 header bytes plus deflate's fixed-code literals",
    "(8–9 bits a character) already make about 1.5× of a 4.6-byte chunk. At 20 chunks/s a",
    "chunk has its own frame unless it waits for the next one (50 ms), so there p95 ≤ 50 ms",
    "and ≤ 1.5× exclude each other; from 50 chunks/s the 40 ms window carries 2–4 chunks",
    "a frame and both can hold, as the 10 × 10 rows show.",
    "",
    "Where the latency goes at 100 × 10: the machine is saturated. p95 ≤ 50 ms means a",
    "row's frames go out at most ~40 ms apart, so each of the 1,100 connections (10",
    "subscribers and the sender per room) gets 20–25 frames a second: 20,000–27,000 frames",
    "a second in all. The second table shows the cost: 31–49 µs of server CPU per frame",
    "(about a third is the commit, the session's merge and websockets' framing and deflate:",
    "~15 µs a frame measured in-process without sockets; the rest is Starlette and uvicorn,",
    "the socket write and the kernel's loopback TCP), and 48–53 µs per frame in a Python",
    "client. That is 0.8–0.9 of a core for the server process and about one more for the",
    "1,000 subscriber clients: the two cores are 88–94 % busy in every 100 × 10 variant,",
    "the server's event loop runs 15–44 ms late at p50 with deflate, and chunks queue. One",
    "run with the server pinned to its own core (story at 100/s) used 93 % of that core and",
    "p95 rose to 150 ms: a single server process is itself at its limit here. Without",
    "deflate the server's loop lag drops to a few ms, yet the tail stays long, set by the",
    "load generators and the box (tokens at 20/s: p95 73 ms with deltas, 50 ms naive —",
    "whose full rows are encoded once per commit for all connections — ranging 48–126 and",
    "18–68 ms over three runs, at 4.7× and 146× the bytes). At 10 × 10 the same code keeps",
    "up (loop lag p95 ~1 ms): story at 100 chunks/s meets both targets (1.18×, p95 40.6 ms),",
    "where p95 is the 40 ms window itself, and at 50 chunks/s p95 is met with 1.54×.",
    "",
    "Changes measured along the way (paired runs, 100 × 10 story at 20/s): committing an",
    "action's mutation in its own task when the writer is idle, and sending a commit from",
    "inside its fan-out when a connection is idle (no task switch per connection), cut p50",
    "from ~70 to ~50 ms and p95 from ~150 to ~115 ms. Tried and dropped: uvloop for the",
    "server (p95 1.3–2.3× higher), raising the GC thresholds (p99 better, p95 unchanged),",
    "sharing one merge per commit across connections (no measurable change), and pacing",
    "`StreamedText` steps 40 ms apart (7–10 % less server CPU at 50–100 chunks/s, but the",
    "10 × 10 p95 at 100 chunks/s rose from 40.5 to 54 ms).",
    "",
    "Earlier runs of this benchmark (before append frames) used a bot that slept a fixed",
    "time *after* each commit, so a busy server slowed the stream down instead of letting",
    "chunks wait; those latencies (p95 25 ms at 100 × 10) left the backlog out. The fixed",
    "schedule above counts it.",
]


def run(
    quick: bool, *, variants: list[tuple[str, float, bool, bool]] | None = None, repeat: int = 1
) -> dict[str, Any]:
    """Run the variants (100 streams x 10 subscribers, or 10 x 10 when ``quick``); returns the
    numbers as a dict. ``variants``: ``(workload, pace, naive, deflate)`` tuples, default
    :data:`VARIANTS`."""
    if variants is None:
        return asyncio.run(_run(quick, VARIANTS, [] if quick else SMALL_VARIANTS, repeat))
    return asyncio.run(_run(quick, variants, [], repeat))


def _main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="10 streams x 10 subscribers")
    p.add_argument(
        "--only",
        action="append",
        default=None,
        metavar="WORKLOAD:CHUNKS_PER_S:SERVER[:deflate]",
        help="run only this variant, e.g. story:50:deltas:deflate (repeatable)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run the whole plan N times; each row is the run with the median p95",
    )
    p.add_argument("--write-doc", action="store_true", help="update docs/benchmarks.md")
    p.add_argument(
        "--from-raw",
        action="store_true",
        help="with --write-doc: re-render the section from the last run's raw JSON, no run",
    )
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--data-dir", default="", help=argparse.SUPPRESS)
    p.add_argument("--record-dir", default="", help=argparse.SUPPRESS)
    p.add_argument("--workload", default="story", help=argparse.SUPPRESS)
    p.add_argument("--pace", type=float, default=0.02, help=argparse.SUPPRESS)
    p.add_argument("--naive", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--step-interval", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        _serve(args)
        return
    if args.from_raw:
        out = json.loads(RAW.read_text())
        write_section(
            "streaming", doc_section(out, out.get("command", "python -m benchmarks.streaming"))
        )
        print(summary(out))
        print(load_summary(out))
        return
    variants = None
    if args.only:
        variants = []
        for spec in args.only:
            parts = spec.split(":")
            if len(parts) not in (3, 4) or parts[2] not in ("deltas", "naive"):
                p.error(f"bad --only {spec!r}")
            deflate = len(parts) == 4 and parts[3] == "deflate"
            variants.append((parts[0], 1 / float(parts[1]), parts[2] == "naive", deflate))
    out = run(args.quick, variants=variants, repeat=max(1, args.repeat))
    out["command"] = " ".join(["python -m benchmarks.streaming", *sys.argv[1:]])
    out["facts"] = run_facts(out["command"])
    print(json.dumps(out, indent=2))
    print(summary(out))
    print(load_summary(out))
    if args.write_doc:
        RAW.parent.mkdir(parents=True, exist_ok=True)
        RAW.write_text(json.dumps(out, indent=1))
        write_section("streaming", doc_section(out, out["command"]))


if __name__ == "__main__":
    _main()
