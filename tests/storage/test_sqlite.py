"""SQLite details beyond the contract: ``synced-store compact`` on a data dir (the contract's
retention cases are in test_retention.py) and the file layout's version."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from synced_store.cli import cli
from synced_store.errors import InstanceUnavailableError
from synced_store.storage.base import WriterTx
from synced_store.storage.sqlite import STORAGE_VERSION, SqliteInstanceStore, instance_path

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


def _sql(path: Path, *statements: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        out: list[tuple[object, ...]] = []
        for sql in statements:
            out = conn.execute(sql).fetchall()
        conn.commit()
        return out
    finally:
        conn.close()


async def test_a_file_of_a_newer_layout_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "room.sqlite3"
    await SqliteInstanceStore(path).close()
    _sql(path, f"UPDATE meta SET value = {STORAGE_VERSION + 1} WHERE key = 'storage_version'")
    triggers = _sql(path, "SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name")
    with pytest.raises(InstanceUnavailableError, match="newer than this synced-store knows"):
        SqliteInstanceStore(path)
    after = _sql(path, "SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name")
    assert after == triggers


async def test_a_search_queue_without_versions_is_replaced_and_the_index_rebuilt(
    tmp_path: Path,
) -> None:
    """A file from a development build queued rows without their version: its queue is
    dropped and its searchable tables forgotten, so the server's configure_search rebuilds
    the index from the rows."""
    path = tmp_path / "room.sqlite3"
    store = SqliteInstanceStore(path)
    await in_tx(store, lambda tx: tx.configure_search({"t": ("text", None)}))
    await put(store, "a", {"text": "queued words"})
    await store.close()
    _sql(
        path,
        "DROP TABLE search_queue",
        "CREATE TABLE search_queue (ns TEXT, tbl TEXT, item TEXT, PRIMARY KEY (ns, tbl, item))",
        "UPDATE meta SET value = 2 WHERE key = 'storage_version'",
    )
    store = SqliteInstanceStore(path)
    try:
        assert await in_tx(store, lambda tx: tx.configure_search({"t": ("text", None)})) == ["t"]
        assert not await in_tx(store, lambda tx: tx.index_search())
        cols = [r[1] for r in store.conn.execute("PRAGMA table_info(search_queue)")]
        assert "version" in cols
        assert store.conn.execute("SELECT item FROM search_docs").fetchall() == [("a",)]
        layout = store.conn.execute("SELECT value FROM meta WHERE key = 'storage_version'")
        assert layout.fetchone() == (STORAGE_VERSION,)
    finally:
        await store.close()
