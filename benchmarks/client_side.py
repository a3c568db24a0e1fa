"""Client-side workloads of ``/work/shared/peers/replicache/WORKLOAD.md`` on our Python engine.

The client is :class:`synced_store.core.client_engine.ClientEngine` with no server and no
network: it is the sans-I/O engine every ``SyncedStoreClient`` wraps, so mutations stay pending
for the life of an instance, the store is in memory, and subscription callbacks run
synchronously inside ``mutate()``.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from synced_store import define_backend_config, define_schema, table
from synced_store.core.client_engine import ClientEngine
from synced_store.types import EntryKey

from .common import LatencyStats, latency_stats, make_value, progress

__all__ = ["ITER", "run_client_side"]

KB = 1024
MiB = 1024 * 1024
TABLE = "kv"

ITER_FULL = {
    "reactive": 2000,
    "reactive_warm": 500,
    "write": 5000,
    "write_warm": 500,
    "read": 5000,
    "read_warm": 500,
    "scan": 200,
    "scan_warm": 20,
    "populate10k": 30,
    "populate10k_warm": 3,
    "populate1k": 200,
    "populate1k_warm": 20,
}
ITER_QUICK = {
    "reactive": 200,
    "reactive_warm": 50,
    "write": 500,
    "write_warm": 100,
    "read": 500,
    "read_warm": 100,
    "scan": 20,
    "scan_warm": 3,
    "populate10k": 5,
    "populate10k_warm": 1,
    "populate1k": 20,
    "populate1k_warm": 3,
}
ITER = ITER_FULL


# -- schema -----------------------------------------------------------------------------------


class Value(BaseModel):
    """The row model: exactly the six fields of ``make_value``."""

    id: int
    rev: int
    flag: bool
    score: float
    nil: None
    text: str


class SetOne(BaseModel):
    key: str
    value: Value


class SetMany(BaseModel):
    entries: list[tuple[str, Value]]


class Populate(BaseModel):
    prefix: str
    values: list[Value]


async def set_one(ctx: Any, input: SetOne) -> None:
    await ctx.table(TABLE).set(input.key, input.value)


async def set_many(ctx: Any, input: SetMany) -> None:
    t = ctx.table(TABLE)
    for key, value in input.entries:
        await t.set(key, value)


async def populate(ctx: Any, input: Populate) -> None:
    t = ctx.table(TABLE)
    prefix = input.prefix
    for i, value in enumerate(input.values):
        await t.set(f"{prefix}{i:05d}", value)


SCHEMA = define_schema(
    schema_version=1,
    tables={TABLE: {"schema": table(Value)}},
    mutators={
        "set_one": {"description": "set one key", "input": SetOne},
        "set_many": {"description": "set each entry in order", "input": SetMany},
        "populate": {"description": "set prefix + zero_pad(i, 5) to values[i]", "input": Populate},
    },
)
BACKEND = define_backend_config(
    schema=SCHEMA, mutators={"set_one": set_one, "set_many": set_many, "populate": populate}
)


def new_engine() -> ClientEngine:
    """A fresh, empty, never-connected client engine."""
    return ClientEngine(BACKEND, user_id="bench", client_id="bench-client")


def load(engine: ClientEngine, prefix: str, n: int, size: int, width: int = 5) -> None:
    """Untimed loading with set_many, at most 4,096 entries per mutation."""
    for start in range(0, n, 4096):
        entries = [
            [f"{prefix}{i:0{width}d}", make_value(i, 0, size)]
            for i in range(start, min(n, start + 4096))
        ]
        engine.mutate("set_many", {"entries": entries})


def _get_query(key: str) -> Callable[[Any], Any]:
    async def q(ctx: Any) -> Any:
        return await ctx.table(TABLE).get(key)

    return q


def _scan_query(cursor: EntryKey | None) -> Callable[[Any], Any]:
    async def q(ctx: Any) -> Any:
        return await ctx.table(TABLE).scan(cursor=cursor, limit=16).values()

    return q


# -- a: reactive loop -------------------------------------------------------------------------


class _Counter:
    """Counts callbacks carrying the current rev and stamps the 5th."""

    __slots__ = ("bad", "count", "rev", "t5")

    def __init__(self) -> None:
        self.rev = -1
        self.count = 0
        self.t5 = 0.0
        self.bad = 0


async def reactive(variant: str) -> list[tuple[str, LatencyStats]]:
    """One of a1..a5: [(label, stats to the 5th callback), (label, stats to mutate returned)]."""
    engine = new_engine()
    filler = {"a1": 0, "a2": 16384, "a3": 16384, "a4": 65536, "a5": 0}[variant]
    if filler:
        load(engine, "fill/", filler, KB, width=6)
    counter = _Counter()
    pc = time.perf_counter_ns

    def make_cb(is_scan: bool) -> Callable[[Any], None]:
        def cb(result: Any) -> None:
            rev = result[0]["rev"] if is_scan else result["rev"]
            if rev != counter.rev:
                counter.bad += 1
                return
            counter.count += 1
            if counter.count == 5:
                counter.t5 = pc()

        return cb

    if variant in ("a1", "a2"):
        load(engine, "hot/", 20, 10 * KB, width=3)
        for i in range(100):
            engine.subscribe(_get_query(f"hot/{i // 5:03d}"), make_cb(False))
    elif variant in ("a3", "a4"):
        load(engine, "hot/", 100, 10 * KB, width=3)
        for i in range(100):
            engine.subscribe(_get_query(f"hot/{i:03d}"), make_cb(False))
    else:
        load(engine, "s/", 16384, KB)
        for i in range(128):
            # Our scan has no inclusive start key: the cursor is exclusive, so start after the
            # key just before s/{128i} (no key lies between them). See docs/benchmarks.md.
            cursor = None if i == 0 else EntryKey("", f"s/{128 * i - 1:05d}")
            engine.subscribe(_scan_query(cursor), make_cb(True))
    # Initial results are computed synchronously by subscribe(); nothing else to wait for.
    assert all(s.result is not None for s in engine.subscriptions._subs)

    warm, meas = ITER["reactive_warm"], ITER["reactive"]
    to_cb: list[float] = []
    to_res: list[float] = []
    gc.collect()
    t_start = time.perf_counter()
    for j in range(warm + meas):
        rev = j + 1
        if variant in ("a1", "a2"):
            k = j % 20
            name, args = "set_one", {"key": f"hot/{k:03d}", "value": make_value(k, rev, 10 * KB)}
        elif variant in ("a3", "a4"):
            ks = [(j + 20 * m) % 100 for m in range(5)]
            name = "set_many"
            args = {"entries": [[f"hot/{k:03d}", make_value(k, rev, 10 * KB)] for k in ks]}
        else:
            ks = [128 * ((j + 25 * m) % 128) for m in range(5)]
            name = "set_many"
            args = {"entries": [[f"s/{k:05d}", make_value(k, rev, KB)] for k in ks]}
        counter.rev = rev
        counter.count = 0
        if j == warm:
            gc.collect()
            t_start = time.perf_counter()
        t0 = pc()
        engine.mutate(name, args)
        t_res = pc()
        if counter.count != 5 or counter.bad:
            raise AssertionError(
                f"{variant} iteration {j}: {counter.count} callbacks with rev {rev}, "
                f"{counter.bad} with another rev (want exactly 5)"
            )
        if j >= warm:
            to_cb.append((counter.t5 - t0) / 1e6)
            to_res.append((t_res - t0) / 1e6)
        await asyncio.sleep(0)
    wall = time.perf_counter() - t_start
    ops = meas / wall
    pending = len(engine.pending)
    return [
        ("to 5th callback", latency_stats(to_cb, ops_per_s=ops, pending_at_end=pending)),
        ("to mutate returned", latency_stats(to_res, ops_per_s=ops, pending_at_end=pending)),
    ]


# -- b, c, d ----------------------------------------------------------------------------------


async def write_read_scan() -> dict[str, LatencyStats]:
    out: dict[str, LatencyStats] = {}
    # b: single write + commit on a fresh instance with dataset D.
    engine = new_engine()
    load(engine, "k/", 10_000, KB)
    warm, meas = ITER["write_warm"], ITER["write"]
    samples: list[float] = []
    pc = time.perf_counter_ns
    gc.collect()
    t_start = time.perf_counter()
    last = None
    for j in range(warm + meas):
        i = j % 1000
        key = f"w/{i:03d}"
        args = {"key": key, "value": make_value(i, j + 1, 128)}
        if j == warm:
            gc.collect()
            t_start = time.perf_counter()
        t0 = pc()
        engine.mutate("set_one", args)
        t1 = pc()
        if j >= warm:
            samples.append((t1 - t0) / 1e6)
        last = (key, j + 1)
        await asyncio.sleep(0)
    wall = time.perf_counter() - t_start
    assert last is not None
    got = engine.query(_get_query(last[0]))
    if got["rev"] != last[1]:
        raise AssertionError(f"b: read back rev {got['rev']} != {last[1]}")
    out["b"] = latency_stats(samples, ops_per_s=meas / wall, pending_at_end=len(engine.pending))
    del engine

    # c: single read on an instance with dataset D.
    engine = new_engine()
    load(engine, "k/", 10_000, KB)
    queries = [_get_query(f"k/{i:05d}") for i in range(10000)]
    warm, meas = ITER["read_warm"], ITER["read"]
    samples = []
    gc.collect()
    t_start = time.perf_counter()
    for j in range(warm + meas):
        i = (j * 7919) % 10000
        q = queries[i]
        if j == warm:
            gc.collect()
            t_start = time.perf_counter()
        t0 = pc()
        value = engine.query(q)
        t1 = pc()
        if value["id"] != i:
            raise AssertionError(f"c: got id {value['id']} for {i}")
        if j >= warm:
            samples.append((t1 - t0) / 1e6)
        await asyncio.sleep(0)
    out["c"] = latency_stats(samples, ops_per_s=meas / (time.perf_counter() - t_start))

    # d: scan throughput, same instance, after c.
    async def scan_all(ctx: Any) -> tuple[int, int]:
        n = 0
        total = 0
        async for _ek, value in ctx.table(TABLE).scan(prefix="k/"):
            n += 1
            total += len(value["text"])
        return n, total

    warm, meas = ITER["scan_warm"], ITER["scan"]
    samples = []
    gc.collect()
    for j in range(warm + meas):
        if j == warm:
            gc.collect()
        t0 = pc()
        n, _total = engine.query(scan_all)
        t1 = pc()
        if n != 10_000:
            raise AssertionError(f"d: scan saw {n} entries")
        if j >= warm:
            samples.append((t1 - t0) / 1e6)
        await asyncio.sleep(0)
    st = latency_stats(samples)
    st.extra["mib_s_p50"] = 10_240_000 / MiB / (st.p50 / 1000)
    st.extra["mib_s_mean"] = 10_240_000 / MiB / (st.mean / 1000)
    out["d"] = st
    return out


# -- e: populate ------------------------------------------------------------------------------


async def populate_bench(n: int, warm: int, meas: int) -> LatencyStats:
    samples: list[float] = []
    pc = time.perf_counter_ns
    for j in range(warm + meas):
        values = [make_value(i, j + 1, KB) for i in range(n)]
        engine = new_engine()
        gc.collect()
        t0 = pc()
        engine.mutate("populate", {"prefix": "k/", "values": values})
        t1 = pc()
        got = engine.query(_get_query(f"k/{n - 1:05d}"))
        if got["rev"] != j + 1:
            raise AssertionError(f"e: rev {got['rev']} != {j + 1}")
        if j >= warm:
            samples.append((t1 - t0) / 1e6)
        del engine, values
        await asyncio.sleep(0)
    st = latency_stats(samples)
    st.extra["mib_s_p50"] = n * KB / MiB / (st.p50 / 1000)
    st.extra["mib_s_mean"] = n * KB / MiB / (st.mean / 1000)
    return st


# -- all --------------------------------------------------------------------------------------

#: (our id, Replicache JSON row id, display name)
ROWS = [
    ("a1/cb", "a-1key-0", "a1 reactive: 1 key -> 5 of 100 subs, 10 KB [to 5th callback]"),
    ("a1/res", "a-1key-0-resolve", "a1 reactive [to mutate returned]"),
    ("a2/cb", "a-1key-16", "a2 reactive: as a1 + 16 MiB [to 5th callback]"),
    ("a2/res", "a-1key-16-resolve", "a2 reactive [to mutate returned]"),
    (
        "a3/cb",
        "a-5keys-16",
        "a3 reactive: 5 keys -> 5 of 100 subs, 10 KB, +16 MiB [to 5th callback]",
    ),
    ("a3/res", "a-5keys-16-resolve", "a3 reactive [to mutate returned]"),
    ("a4/cb", "a-5keys-64", "a4 reactive: as a3, +64 MiB [to 5th callback]"),
    ("a4/res", "a-5keys-64-resolve", "a4 reactive [to mutate returned]"),
    (
        "a5/cb",
        "a-scan16-0",
        "a5 reactive: 5 keys -> 5 of 128 scan subs, 16 x 1 KB [to 5th callback]",
    ),
    ("a5/res", "a-scan16-0-resolve", "a5 reactive [to mutate returned]"),
    ("b", "b", "b write+commit: 1 x 128 B (store 10k x 1 KB)"),
    ("c", "c", "c read: get 1 x 1 KB (store 10k x 1 KB)"),
    ("d", "d", "d scan: 10k x 1 KB in key order"),
    ("e10k", "e-10k", "e populate: 10k x 1 KB, one mutation"),
    ("e1k", "e-1k", "e populate: 1k x 1 KB, one mutation"),
]
THROUGHPUT_ROWS = {"d", "e10k", "e1k"}


async def run_client_side(quick: bool, only: set[str] | None = None) -> dict[str, LatencyStats]:
    """Run a1..a5, b, c, d, e; returns our row id -> stats."""
    global ITER
    ITER = ITER_QUICK if quick else ITER_FULL
    results: dict[str, LatencyStats] = {}
    for v in ("a1", "a2", "a3", "a4", "a5"):
        if only and v not in only:
            continue
        progress(f"client-side {v} (reactive loop, {ITER['reactive']} iterations)")
        (_, cb), (_, res) = await reactive(v)
        results[f"{v}/cb"], results[f"{v}/res"] = cb, res
        progress(f"  {v}: p50 {cb.p50:.3f} ms, p95 {cb.p95:.3f} ms to 5th callback")
        gc.collect()
    if not only or only & {"b", "c", "d"}:
        progress("client-side b (write+commit), c (read), d (scan)")
        results.update(await write_read_scan())
        gc.collect()
    if not only or "e" in only:
        progress(f"client-side e populate 10k x {ITER['populate10k']}")
        results["e10k"] = await populate_bench(
            10_000, ITER["populate10k_warm"], ITER["populate10k"]
        )
        progress(f"client-side e populate 1k x {ITER['populate1k']}")
        results["e1k"] = await populate_bench(1_000, ITER["populate1k_warm"], ITER["populate1k"])
    return results
