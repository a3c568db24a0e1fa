"""Transient storage errors are retried; too-old cookies get a full reset."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

from appdefs import get_counter
from synced_store.storage.sqlite import instance_path
from synced_store.testing import TestHarness, wait_for


class _Seen(logging.Handler):
    def __init__(self, needle: str) -> None:
        super().__init__(logging.WARNING)
        self.needle = needle
        self.event = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.event.set()


async def test_a_locked_database_is_retried_and_nothing_is_lost(harness: TestHarness) -> None:
    a = await harness.create_client("alice")
    await (await a.mutate.setValue({"key": "t", "value": 1})).confirmed
    seen = _Seen("transient storage error")
    logging.getLogger("synced_store.server").addHandler(seen)
    blocker = sqlite3.connect(instance_path(harness.data_dir, "test"), isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        res = await a.mutate.increment({"key": "t"})
        await asyncio.wait_for(seen.event.wait(), 10)
        assert not res.confirmed.done()
        blocker.execute("ROLLBACK")
        await asyncio.wait_for(res.confirmed, 10)
    finally:
        blocker.close()
        logging.getLogger("synced_store.server").removeHandler(seen)
    assert await a.query(lambda ctx: get_counter(ctx, "t")) == 2


async def test_a_cookie_older_than_the_tombstone_horizon_gets_a_full_reset(
    harness: TestHarness, tmp_path: Path
) -> None:
    path = tmp_path / "a.sqlite3"
    a = await harness.create_client("alice", persist_path=path)
    for k in ("x", "y", "z"):
        await (await a.mutate.setValue({"key": k, "value": 1})).confirmed
    old_cookie = a.cookie
    await a.close()
    b = await harness.create_client("bob")
    await (await b.mutate.deleteKey({"key": "y"})).confirmed
    await (await b.mutate.setValue({"key": "w", "value": 5})).confirmed
    inst = harness.app.state.registry.instances["test"]
    removed = await inst.in_writer(lambda s: s.compact_tombstones(s.version))
    assert removed == 1
    a2 = await harness.create_client("alice", persist_path=path, wait=False)
    assert a2.cookie == old_cookie
    assert await a2.query(lambda ctx: get_counter(ctx, "y")) == 1  # stale local copy
    await a2.wait_for_server_data(10)
    await wait_for(a2, lambda ctx: get_counter(ctx, "y"), lambda v: v is None)
    assert await a2.query(lambda ctx: get_counter(ctx, "w")) == 5
    keys = await a2.query(lambda ctx: ctx.table("counters").keys())
    assert [k.item_key for k in keys] == ["w", "x", "z"]


async def test_bookkeeping_batches_do_not_bump_the_version(harness: TestHarness) -> None:
    a = await harness.create_client("alice")
    await (await a.mutate.setValue({"key": "idle", "value": 1})).confirmed
    inst = harness.app.state.registry.instances["test"]
    before = inst.store.version
    for _ in range(3):  # what the action runner does every round on an idle instance
        assert await inst.in_writer(lambda s: s.claim_jobs(0.0, 10)) == []
    assert inst.store.version == before
    await (await a.mutate.setValue({"key": "idle", "value": 2})).confirmed
    assert inst.store.version == before + 1
