"""Contract: what changed since a version (how a process takes in commits it did not make),
read committed or inside the writer's transaction; the schema version a transaction sees."""

from __future__ import annotations

import pytest

from synced_store.storage.base import InstanceStore, StorageBackend, WriterTx
from synced_store.storage.records import ChangedRow, HistoryCompactedError

from .helpers import delete, in_tx, key, put


async def test_changes_since_a_version(store: InstanceStore) -> None:
    v0 = await put(store, "kept", {"n": 0})
    await put(store, "a", {"n": 1}, sk="s1")
    await put(store, "a", {"n": 2}, sk="s2")  # only its latest change is listed
    await put(store, "mine", {"n": 3}, ns="u:alice")
    await put(store, "b")
    await in_tx(store, lambda tx: tx.set_client("c1", "alice", 7, tx.version + 1), bump=True)
    v = await delete(store, "b")
    got = await store.changes_since(v0, limit=100)
    assert got.clients == {"c1": 7}  # its push was committed in these versions
    assert got.upto == v == store.version
    assert got.rows is not None
    assert sorted(got.rows) == sorted(
        [
            ChangedRow(3, "", "t", "a", "s2", '{"n":2}'),
            ChangedRow(4, "u:alice", "t", "mine", "", '{"n":3}'),
            ChangedRow(7, "", "t", "b", "", None),
        ]
    )
    assert (await store.changes_since(v, limit=100)).rows == []
    assert (await store.changes_since(v0, limit=2)).rows is None  # more than the limit
    assert (await store.changes_since(v - 1, limit=100)).clients == {}


async def test_changes_since_inside_the_writer(store: InstanceStore) -> None:
    v0 = await put(store, "a", {"n": 1})
    await put(store, "b", {"n": 2})
    tx = await store.begin()
    try:
        await tx.write(key("c"), "", b"3", tx.version + 1)  # its own writes are not listed
        got = await tx.changes_since(v0, limit=100)
        assert got.upto == tx.version
        assert got.rows == [ChangedRow(2, "", "t", "b", "", '{"n":2}')]
    finally:
        await tx.rollback()


async def test_changes_across_forgotten_tombstones_are_refused(store: InstanceStore) -> None:
    v0 = await put(store, "a")
    await delete(store, "a")
    await in_tx(store, lambda tx: tx.compact_tombstones(tx.version))
    with pytest.raises(HistoryCompactedError):
        await store.changes_since(v0, limit=100)
    tx = await store.begin()
    try:
        with pytest.raises(HistoryCompactedError):
            await tx.changes_since(v0, limit=100)
    finally:
        await tx.rollback()


async def test_a_transaction_sees_the_schema_version(
    storage: StorageBackend, store: InstanceStore
) -> None:
    tx = await store.begin()
    assert tx.schema_version is None
    await tx.set_schema_version(4)
    assert tx.schema_version == 4
    await tx.commit(tx.version)
    tx = await store.begin()
    assert tx.schema_version == 4
    await tx.rollback()


T0 = 1_000_000.0


async def test_instances_with_due_jobs(storage: StorageBackend) -> None:
    for iid, due in (("now", T0), ("later", T0 + 60), ("none", None)):
        store = await storage.open_instance(iid)
        try:
            if due is not None:

                async def add(tx: WriterTx, due: float = due) -> None:
                    jid = await tx.add_job("act", {}, "u", T0)
                    await tx.finish_job(jid, "pending", now=T0, next_run_at=due)

                await in_tx(store, add)
        finally:
            await store.close()
    assert await storage.instances_with_due_jobs(T0) == ["now"]
    assert await storage.instances_with_due_jobs(T0 + 60) == ["later", "now"]


async def test_a_renewed_lease_keeps_a_running_job(
    storage: StorageBackend, store: InstanceStore
) -> None:
    (jid,) = await in_tx(store, lambda tx: _one_job(tx))
    [job] = await in_tx(store, lambda tx: tx.claim_jobs(T0, 10, lease=10.0))
    await store.renew_jobs([job["id"]], now=T0 + 5, lease=10.0)
    # After the first lease, before the renewed one: nobody takes it.
    assert await in_tx(store, lambda tx: tx.claim_jobs(T0 + 12, 10, lease=10.0)) == []
    assert await storage.instances_with_due_jobs(T0 + 12) == []
    later = await in_tx(store, lambda tx: tx.claim_jobs(T0 + 16, 10, lease=10.0))
    if storage.shared:
        # Its process stopped renewing (died): another claims it again, at least once.
        assert [(j["id"], j["attempts"]) for j in later] == [(jid, 2)]
    else:
        assert later == []  # one process per instance: re-queued when it opens again


async def _one_job(tx: WriterTx) -> list[int]:
    return [await tx.add_job("act", {"x": 1}, "u", T0)]
