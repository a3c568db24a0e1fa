"""A server restored from an older backup: clients ahead of it start over and lose nothing
that is still pending."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from appdefs import get_counter
from synced_store.storage.sqlite import instance_path
from synced_store.testing import TestHarness, wait_for


def _restore(db: Path, backup: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    shutil.copy(backup, db)


async def test_client_ahead_of_a_restored_server_starts_over(
    harness: TestHarness, tmp_path: Path
) -> None:
    a, net = await harness.create_controlled_client("alice", persist_path=tmp_path / "a.sqlite3")
    await (await a.mutate.setValue({"key": "v", "value": 1})).confirmed
    db = instance_path(harness.data_dir, "test")
    backup = tmp_path / "backup.sqlite3"
    src = sqlite3.connect(db)
    dst = sqlite3.connect(backup)
    src.backup(dst)  # the operator's backup, taken now
    src.close()
    dst.close()
    await (await a.mutate.setValue({"key": "v", "value": 2})).confirmed
    await (await a.mutate.setValue({"key": "w", "value": 2})).confirmed
    old_id = a.client_id
    await net.simulate_disconnect(block_reconnect=True)
    pending = await a.mutate.increment({"key": "p", "amount": 5})  # made offline
    await harness.stop_server()
    _restore(db, backup)  # the server forgets mutations 2 and 3
    await harness.start_server()
    harness.allowed_errors.append("lost this client")
    net.simulate_reconnect()
    await a.wait_for_sync(timeout=10)
    assert a.client_id != old_id
    assert pending.confirmed.done()
    assert pending.confirmed.exception() is None
    b = await harness.create_client("bob")
    assert await b.query(lambda ctx: get_counter(ctx, "v")) == 1  # the backup's value
    assert await b.query(lambda ctx: get_counter(ctx, "w")) is None
    assert await b.query(lambda ctx: get_counter(ctx, "p")) == 5  # the pending one landed
    await wait_for(a, lambda ctx: get_counter(ctx, "v"), lambda v: v == 1)
    await wait_for(a, lambda ctx: get_counter(ctx, "w"), lambda v: v is None)
