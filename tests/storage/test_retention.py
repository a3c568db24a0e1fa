"""Contract: retention — checkpoints turn ages into versions; tombstones, finished jobs, old
clients and their reports go in bounded steps; the horizon only ever rises."""

from __future__ import annotations

from typing import Any

from synced_store.storage.base import InstanceStore, StorageBackend, WriterTx
from synced_store.storage.records import Compaction, InstanceSummary, JobStatus

from .helpers import DAY, delete, in_tx, put

AGES = {"tombstones": 7 * DAY, "done_jobs": DAY, "failed_jobs": 30 * DAY, "clients": 90 * DAY}


async def compact(store: InstanceStore, now: float, **over: Any) -> Compaction:
    args = {**AGES, **over}
    out: Compaction = await in_tx(store, lambda tx: tx.compact(now, **args))
    return out


async def summary(storage: StorageBackend) -> InstanceSummary:
    reader = await storage.inspect("room")
    try:
        return await reader.summary()
    finally:
        await reader.close()


async def test_tombstones_go_once_a_checkpoint_is_older_than_their_retention(
    storage: StorageBackend, store: InstanceStore
) -> None:
    t0 = 1_000_000.0
    await put(store, "a")
    await put(store, "b")
    await delete(store, "a")
    await compact(store, t0)  # records (t0, version 3); nothing is 7 days old yet
    assert (await summary(storage)).tombstones == 1
    assert store.horizon == 0
    await delete(store, "b")  # version 4, after the checkpoint
    res = await compact(store, t0 + 7 * DAY + 1)
    assert res.tombstones == 1  # only the one at or before the checkpoint's version
    assert store.horizon == 3
    assert (await summary(storage)).tombstones == 1
    res = await compact(store, t0 + 14 * DAY + 2)
    assert res.tombstones == 1
    assert store.horizon == 4
    assert (await summary(storage)).horizon == 4


async def test_compaction_steps_are_bounded(storage: StorageBackend, store: InstanceStore) -> None:
    for i in range(5):
        await put(store, f"r{i}")
    for i in range(5):
        await delete(store, f"r{i}")
    got = [await in_tx(store, lambda tx: tx.compact_tombstones(tx.version, 2)) for _ in range(4)]
    assert got == [2, 2, 1, 0]
    step = await compact(store, 5.0, tombstones=0.0, limit=1)
    assert not step.more  # nothing left: the checkpoint was the only work
    assert (await summary(storage)).tombstones == 0


async def test_the_horizon_never_goes_down(storage: StorageBackend, store: InstanceStore) -> None:
    for i in range(5):
        await put(store, f"r{i}")
    other = await storage.open_instance("room")  # another process (synced-store compact)
    try:
        await in_tx(other, lambda tx: tx.compact_tombstones(5))
    finally:
        await other.close()
    await in_tx(store, lambda tx: tx.compact_tombstones(2))  # a stale server-side value
    assert store.horizon == 5
    assert (await summary(storage)).horizon == 5


async def test_finished_jobs_and_old_clients_go_but_connected_ones_stay(
    storage: StorageBackend, store: InstanceStore
) -> None:
    t0 = 2_000_000.0

    async def setup(tx: WriterTx) -> None:
        for status, age in (("done", 2 * DAY), ("done", 0), ("failed", 31 * DAY), ("pending", 99)):
            jid = await tx.add_job("act", {}, "u", t0)
            await tx.finish_job(jid, status, now=t0 + 91 * DAY - age)
        for cid in ("old", "connected"):
            await tx.set_client(cid, "u", 3, tx.version)
            await tx.add_error(cid, {"id": 3, "name": "m", "kind": "k", "message": "no"})

    await in_tx(store, setup)
    await compact(store, t0)  # the checkpoint that dates the clients' versions
    await put(store, "new")
    await in_tx(store, lambda tx: tx.set_client("recent", "u", 1, tx.version))
    res = await compact(store, t0 + 91 * DAY, keep_clients={"connected"})
    assert (res.done_jobs, res.failed_jobs) == (1, 1)
    assert res.clients == 1
    assert res.errors == 1  # the forgotten client's report went with it
    reader = await storage.inspect("room")
    try:
        assert sorted(j.status for j in await reader.jobs()) == [JobStatus.DONE, JobStatus.PENDING]
        assert sorted(c.client_id for c in await reader.clients()) == ["connected", "recent"]
    finally:
        await reader.close()
    assert await store.errors_between("old", 0, 9) == []
    assert [e["id"] for e in await store.errors_between("connected", 0, 9)] == [3]
