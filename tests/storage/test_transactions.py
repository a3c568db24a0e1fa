"""Contract: versions and the writer's transaction — commit, rollback, savepoints, a failed
statement, one writer at a time, and what other readers see meanwhile."""

from __future__ import annotations

import pytest

from synced_store.errors import StorageError
from synced_store.storage.base import InstanceStore, StorageBackend

from .conftest import Backend
from .helpers import in_tx, key, put


async def test_a_new_instance_starts_at_version_zero(store: InstanceStore) -> None:
    assert (store.version, store.horizon, store.schema_version) == (0, 0, None)
    tx = await store.begin()
    assert tx.version == 0
    assert tx.broken is None
    await tx.rollback()


async def test_a_commit_records_its_version_and_survives_reopening(
    storage: StorageBackend, store: InstanceStore
) -> None:
    tx = await store.begin()
    await tx.write(key("a"), "", b'{"v":1}', 7)
    await tx.set_schema_version(3)
    await tx.commit(7)
    assert store.version == 7
    assert store.schema_version == 3
    await store.close()
    again = await storage.open_instance("room")
    try:
        assert (again.version, again.schema_version) == (7, 3)
        tx = await again.begin()
        assert tx.version == 7
        assert await tx.read(key("a")) == ("", {"v": 1})
        await tx.rollback()
    finally:
        await again.close()


async def test_a_commit_may_keep_the_version(store: InstanceStore) -> None:
    v = await put(store, "a")
    await in_tx(store, lambda tx: tx.add_job("act", {}, "u", 0.0))
    assert store.version == v


async def test_a_rollback_leaves_no_trace(store: InstanceStore) -> None:
    await put(store, "a", {"v": 1})
    tx = await store.begin()
    await tx.write(key("a"), "", b'{"v":2}', 2)
    await tx.write(key("b"), "", b'{"v":2}', 2)
    await tx.set_client("c", "alice", 5, 2)
    assert await tx.read(key("a")) == ("", {"v": 2})  # its own writes, at once
    await tx.rollback()
    await tx.rollback()  # harmless twice
    assert store.version == 1
    assert await store.client("c") is None
    tx = await store.begin()
    assert await tx.read(key("a")) == ("", {"v": 1})
    assert await tx.read(key("b")) is None
    assert tx.version == 1
    await tx.rollback()


async def test_a_savepoint_rolls_back_alone(store: InstanceStore) -> None:
    tx = await store.begin()
    await tx.write(key("kept"), "", b"1", 1)
    await tx.savepoint()
    await tx.write(key("undone"), "", b"2", 1)
    await tx.remove(key("kept"), 1)
    await tx.rollback_savepoint()
    await tx.savepoint()
    await tx.write(key("released"), "", b"3", 1)
    await tx.release()
    await tx.commit(1)
    reader = store.reader()
    try:
        assert await reader.read(key("kept")) == ("", 1)
        assert await reader.read(key("undone")) is None
        assert await reader.read(key("released")) == ("", 3)
    finally:
        await reader.close()


async def test_a_failed_statement_breaks_the_transaction(backend: Backend) -> None:
    store = await backend.storage.open_instance("damaged")
    try:
        await put(store, "a", {"v": 1})
        await backend.damage("damaged")
        tx = await store.begin()
        await tx.write(key("a"), "", b'{"v":2}', 2)
        with pytest.raises(StorageError) as failed:
            await tx.add_job("act", {}, "u", 0.0)
        assert not failed.value.transient  # a broken database: retrying cannot help
        assert tx.broken is failed.value
        with pytest.raises(StorageError):
            await tx.commit(2)  # nothing of it may be committed
        await tx.rollback()
        assert store.version == 1
        reader = store.reader()
        try:
            assert await reader.read(key("a")) == ("", {"v": 1})
        finally:
            await reader.close()
        tx = await store.begin()  # the next transaction starts clean
        assert tx.broken is None
        await tx.write(key("a"), "", b'{"v":3}', 2)
        await tx.commit(2)
        assert store.version == 2
    finally:
        await store.close()


async def test_a_second_writer_waits_then_fails_transiently(
    storage: StorageBackend, store: InstanceStore
) -> None:
    other = await storage.open_instance("room", lock_timeout=0.05)
    try:
        tx = await store.begin()
        with pytest.raises(StorageError) as busy:
            await other.begin()
        assert busy.value.transient
        await tx.commit(tx.version)
        tx2 = await other.begin()  # free again
        await tx2.rollback()
    finally:
        await other.close()


async def test_readers_see_only_committed_data(store: InstanceStore) -> None:
    await put(store, "a", {"v": 1})
    tx = await store.begin()
    await tx.write(key("a"), "", b'{"v":2}', 2)
    await tx.set_client("c", "alice", 4, 2)
    reader = store.reader()
    try:
        assert await reader.read(key("a")) == ("", {"v": 1})
        assert await store.client("c") is None
        await tx.commit(2)
        assert await reader.read(key("a")) == ("", {"v": 2})
        assert await store.client("c") == ("alice", 4)
    finally:
        await reader.close()
