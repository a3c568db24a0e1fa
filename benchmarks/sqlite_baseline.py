"""Mutations/s of one instance's writer, next to raw sqlite3 doing the same row writes.

* **instance writer**: a real :class:`synced_store.server.instance.Instance` on a fresh SQLite
  file (WAL, ``synchronous=NORMAL``, as served), fed pushes from 10 sessions of 100 mutations
  each (``insert_msg``, one row per mutation) and fanning every commit out to those 10
  :class:`~synced_store.server.session.Session` objects, whose sockets discard the frames. No
  network and no clients: this is what the server process can do per instance.
* **raw sqlite3 A**: the same rows upserted into the same ``rows`` table (same indexes, same
  pragmas), one transaction per row write.
* **raw sqlite3 B**: the same, batched like our group commit: one transaction per batch of the
  writer's mean mutations per commit.

Values are JSON-encoded before the raw loops (their cost is the SQLite work only).
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from synced_store.protocol.messages import Mutation
from synced_store.server.instance import Instance
from synced_store.server.session import Session
from synced_store.storage.base import InstanceStore
from synced_store.storage.sqlite import SqliteInstanceStore

from .app import backend
from .common import progress

__all__ = ["instance_writer", "raw_sqlite", "rows_for", "run_capacity"]

BODY = "x" * 32
UPSERT = (
    "INSERT INTO rows (ns, tbl, item, sk, value, version, deleted) "
    "VALUES (?, ?, ?, ?, ?, ?, 0) ON CONFLICT (ns, tbl, item) DO UPDATE SET "
    "sk = excluded.sk, value = excluded.value, version = excluded.version, deleted = 0"
)


def rows_for(n: int, clients: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"c{i % clients:03d}-{i // clients:08d}",
            "room": "cap",
            "client": i % clients,
            "seq": i // clients,
            "t": 1.7e12 + i,
            "body": BODY,
        }
        for i in range(n)
    ]


async def instance_writer(
    base: Path,
    n: int,
    clients: int = 10,
    push: int = 100,
    *,
    store: InstanceStore | None = None,
    count: Callable[[], Awaitable[int]] | None = None,
) -> dict[str, Any]:
    """The writer of one instance fed ``n`` mutations (``store``: another backend's instance,
    whose rows ``count()`` counts afterwards; default a fresh SQLite file under ``base``)."""
    store = store or SqliteInstanceStore(base / "instance.sqlite3")
    inst = Instance("cap", store, backend)
    sent = [0]

    class CountingWire:
        """A socket that takes every frame at once."""

        direct = True

        def try_write(self, frame: Any) -> bool:
            sent[0] += 1
            return True

        async def write(self, payload: bytes) -> None:
            sent[0] += 1

    async def close(code: int, reason: str) -> None:
        pass

    sessions = []
    for c in range(clients):
        s = Session(
            wire=CountingWire(),
            fanout=inst.fanout,
            close=close,
            store=store,
            user_id=f"u{c}",
            client_id=f"client{c}",
            cookie=None,
            known_lmid=0,
        )
        await inst.attach(s)
        sessions.append(s)
    senders = [asyncio.create_task(s.run_sender()) for s in sessions]
    await asyncio.sleep(0.05)  # the initial (empty) pulls
    rows = rows_for(n, clients)
    pushes: list[tuple[Session, list[Mutation]]] = []
    per_client: list[list[Mutation]] = [[] for _ in range(clients)]
    for r in rows:
        m = per_client[r["client"]]
        m.append(Mutation(id=len(m) + 1, name="insert_msg", args=r))
    for c in range(clients):
        for i in range(0, len(per_client[c]), push):
            pushes.append((sessions[c], per_client[c][i : i + push]))
    # Interleave the clients' pushes as they would arrive.
    pushes.sort(key=lambda p: p[1][0].id)
    writer = asyncio.create_task(inst.run())
    v0 = store.version
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    for s, muts in pushes:
        inst.submit_push(s, muts)
    while inst.mutations_processed < n:  # noqa: ASYNC110 (polling keeps the writer unchanged)
        await asyncio.sleep(0.001)
    # Let the senders drain their last pokes.
    while any(s._pending for s in sessions):  # noqa: ASYNC110
        await asyncio.sleep(0.001)
    dt = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    commits = store.version - v0
    inst.stop()
    await writer
    for t in senders:
        t.cancel()
    await asyncio.gather(*senders, return_exceptions=True)
    await inst.close()
    if count is not None:
        rows = await count()
    else:
        with sqlite3.connect(base / "instance.sqlite3") as conn:
            rows = conn.execute("SELECT count(*) FROM rows").fetchone()[0]
    if rows != n:
        raise AssertionError(f"instance wrote {rows} rows, expected {n}")
    return {
        "mutations": n,
        "seconds": dt,
        "cpu_s": cpu,
        "mutations_per_s": n / dt,
        "commits": commits,
        "mutations_per_commit": n / commits,
        "frames_sent": sent[0],
    }


def _raw_db(path: Path) -> sqlite3.Connection:
    # The same table, indexes and pragmas as the instance store, created by it.
    SqliteInstanceStore(path).conn.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def raw_sqlite(base: Path, n: int, batch: int, clients: int = 10) -> dict[str, Any]:
    path = base / f"raw-{batch}.sqlite3"
    conn = _raw_db(path)
    params = [("", "msgs", r["id"], "", orjson.dumps(r).decode(), 0) for r in rows_for(n, clients)]
    t0 = time.perf_counter()
    for version, i in enumerate(range(0, n, batch), start=1):
        conn.execute("BEGIN IMMEDIATE")
        for p in params[i : i + batch]:
            conn.execute(UPSERT, (*p[:5], version))
        conn.execute("COMMIT")
    dt = time.perf_counter() - t0
    count = conn.execute("SELECT count(*) FROM rows").fetchone()[0]
    conn.close()
    if count != n:
        raise AssertionError(f"raw sqlite wrote {count} rows, expected {n}")
    return {"rows": n, "batch": batch, "seconds": dt, "rows_per_s": n / dt}


async def run_capacity(quick: bool) -> dict[str, Any]:
    """Instance writer, raw A and raw B in one go (same machine, same minute)."""
    n = 20_000 if quick else 200_000
    base = Path(tempfile.mkdtemp(prefix="synced-store-capacity-"))
    try:
        progress(f"instance writer: {n} mutations from 10 sessions, in-process, no network")
        inst = await instance_writer(base, n)
        progress(
            f"  {inst['mutations_per_s']:.0f} mutations/s, "
            f"{inst['mutations_per_commit']:.0f} per commit"
        )
        n_a = n // 4
        progress(f"raw sqlite3 A: {n_a} rows, one transaction per row")
        a = raw_sqlite(base, n_a, 1)
        progress(f"  {a['rows_per_s']:.0f} rows/s")
        b_size = max(1, round(inst["mutations_per_commit"]))
        progress(f"raw sqlite3 B: {n} rows, transactions of {b_size} rows (our mean batch)")
        b = raw_sqlite(base, n, b_size)
        progress(f"  {b['rows_per_s']:.0f} rows/s")
        return {"instance": inst, "raw_a": a, "raw_b": b}
    finally:
        shutil.rmtree(base, ignore_errors=True)
