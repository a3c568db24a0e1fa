"""Contract: the backend level — instance ids, existence, listing, opening without creating,
instances with unfinished jobs — and the admin reads behind ``synced-store inspect`` and
``actions list``."""

from __future__ import annotations

import pytest

from synced_store.errors import InstanceUnavailableError, ValidationError
from synced_store.storage.base import InstanceStore, StorageBackend, WriterTx
from synced_store.storage.records import JobStatus

from .helpers import delete, in_tx, put


@pytest.mark.parametrize("bad", ["", "../etc", ".hidden", "-x", "_x", "a/b", "a" * 129, "a..b"])
def test_invalid_instance_ids_are_refused(storage: StorageBackend, bad: str) -> None:
    with pytest.raises(ValidationError):
        storage.validate_instance_id(bad)


def test_valid_instance_ids(storage: StorageBackend) -> None:
    for good in ("room1", "a", "A.b-c_d", "x" * 128):
        assert storage.validate_instance_id(good) == good


async def test_instances_exist_once_opened(storage: StorageBackend) -> None:
    assert await storage.list_instances() == []
    assert not await storage.exists("b")
    with pytest.raises(InstanceUnavailableError):
        await storage.open_instance("b", create=False)
    with pytest.raises(InstanceUnavailableError):
        await storage.inspect("b")
    assert not await storage.exists("b")  # neither created it
    for iid in ("b", "a"):
        await (await storage.open_instance(iid)).close()
    assert await storage.exists("b")
    assert await storage.list_instances() == ["a", "b"]
    again = await storage.open_instance("b", create=False)
    await again.close()
    assert storage.location("a") != storage.location("b")
    assert await storage.check() is None


async def test_instances_with_unfinished_jobs(storage: StorageBackend) -> None:
    for iid, status in (("idle", None), ("waiting", "pending"), ("busy", "running")):
        store = await storage.open_instance(iid)
        try:
            if status is not None:
                await in_tx(store, lambda tx: tx.add_job("act", {}, "u", 0.0))
            if status == "running":
                await in_tx(store, lambda tx: tx.claim_jobs(0.0, 1))
        finally:
            await store.close()
    assert await storage.instances_with_unfinished_jobs() == ["busy", "waiting"]


async def test_admin_reads(storage: StorageBackend, store: InstanceStore) -> None:
    await put(store, "t1", {"title": "one"}, table="tasks", sk="b")
    await put(store, "t2", {"title": "two"}, table="tasks", sk="a")
    await put(store, "gone", table="tasks")
    await delete(store, "gone", table="tasks")
    await put(store, "note", {"text": "secret"}, table="notes", ns="u:alice")

    async def setup(tx: WriterTx) -> None:
        await tx.set_schema_version(2)
        await tx.set_client("c2", "bob", 1, tx.version)
        await tx.set_client("c1", "alice", 4, tx.version)
        done = await tx.add_job("export", {"id": 1}, "alice", 10.0)
        await tx.add_job("export", {"id": 2}, "alice", 11.0)
        await tx.finish_job(done, JobStatus.DONE, now=12.0, output={"ok": True})

    await in_tx(store, setup)
    reader = await storage.inspect("room")
    try:
        s = await reader.summary()
        assert (s.instance_id, s.version, s.schema_version, s.horizon) == ("room", 5, 2, 0)
        assert (s.rows, s.tombstones, s.clients) == (3, 1, 2)
        assert s.tables == {"notes": 1, "tasks": 2}
        assert s.jobs == {"pending": 1, "running": 0, "done": 1, "failed": 0}
        assert s.location == storage.location("room")
        rows = await reader.rows()
        assert [(r.ns, r.table, r.item_key, r.sort_key) for r in rows] == [
            ("", "tasks", "t2", "a"),
            ("", "tasks", "t1", "b"),
            ("u:alice", "notes", "note", ""),
        ]
        assert rows[0].value == {"title": "two"}
        assert rows[0].version == 2
        assert [r.item_key for r in await reader.rows("notes")] == ["note"]
        clients = await reader.clients()
        assert [(c.client_id, c.user_id, c.last_mutation_id) for c in clients] == [
            ("c1", "alice", 4),
            ("c2", "bob", 1),
        ]
        jobs = await reader.jobs()
        assert [(j.name, j.input, j.status, j.output) for j in jobs] == [
            ("export", {"id": 1}, JobStatus.DONE, {"ok": True}),
            ("export", {"id": 2}, JobStatus.PENDING, None),
        ]
        assert (jobs[0].created_at, jobs[0].updated_at) == (10.0, 12.0)
        assert [j.input for j in await reader.jobs(JobStatus.PENDING)] == [{"id": 2}]
    finally:
        await reader.close()
