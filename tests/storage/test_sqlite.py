"""SQLite details beyond the contract: ``synced-store compact`` on a data dir (the contract's
retention cases are in test_retention.py)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from click.testing import CliRunner

from synced_store.cli import cli
from synced_store.storage.base import WriterTx
from synced_store.storage.sqlite import SqliteInstanceStore, instance_path

from .helpers import delete, in_tx, key, put


async def _seed(path: Path) -> None:
    store = SqliteInstanceStore(path)
    for i in range(3):
        await put(store, f"r{i}")
    await delete(store, "r0")
    await delete(store, "r1")

    async def job(tx: WriterTx) -> None:
        jid = await tx.add_job("a", {}, "u", 0.0)
        await tx.finish_job(jid, "done", now=0.0)

    await in_tx(store, job)
    await store.close()


def test_synced_store_compact_runs_retention_on_a_data_dir(tmp_path: Path) -> None:
    path = instance_path(tmp_path, "room")
    asyncio.run(_seed(path))
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "compact",
            "--data-dir",
            str(tmp_path),
            "--tombstones",
            "0",
            "--done-jobs",
            "0",
            "--vacuum",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    [report] = json.loads(result.output)
    assert report["instance_id"] == "room"
    assert report["tombstones"] == 2
    assert report["done_jobs"] == 1
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT COUNT(*) FROM rows WHERE deleted = 1").fetchone()[0] == 0
        live = [r[0] for r in conn.execute("SELECT item FROM rows WHERE deleted = 0")]
        assert live == ["r2"]
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        assert meta["horizon"] == meta["version"] == 5
    finally:
        conn.close()

    async def read() -> object:
        store = SqliteInstanceStore(path)
        tx = await store.begin()
        try:
            return await tx.read(key("r2"))
        finally:
            await tx.rollback()
            await store.close()

    assert asyncio.run(read()) == ("", {"v": 1})
    bad = runner.invoke(cli, ["compact", "--data-dir", str(tmp_path), "--tombstones", "soon"])
    assert bad.exit_code == 2
    assert "not a duration" in bad.output
