"""Deferred full-text indexing (server/search_indexer.py): a row streamed in many commits is
indexed from its latest value, not once per commit, yet every search sees every commit before
it; queued rows are indexed soon after a commit without any search, and at the next opening
if the server stopped first."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from synced_store.server import search_indexer
from synced_store.server.search_indexer import SearchIndexer
from synced_store.testing import create_test_harness
from synced_store.types import RowKey

from .test_search import backend, indexed, keys

pytestmark = pytest.mark.e2e


async def test_every_search_sees_the_commits_before_it_while_a_row_streams(
    tmp_path: Path,
) -> None:
    async with await create_test_harness(backend, data_dir=tmp_path) as h:
        c = await h.create_client("alice")
        text = "start"
        for i in range(30):
            text += f" w{i}"
            await c.mutate.send({"id": "reply", "text": text, "at": 1})
            await c.wait_for_sync()
            if i % 7 == 0:  # a search mid-stream sees the latest chunk
                assert keys(await c.search("messages", f"w{i}")) == ["reply"]
        # Between searches the chunks were only queued: the index holds the value of the
        # last search, not of the last commit.
        assert indexed(tmp_path / "test.sqlite3") == {"reply": text.split(" w29")[0]}
        assert keys(await c.search("messages", "w29")) == ["reply"]
        assert indexed(tmp_path / "test.sqlite3") == {"reply": text}


async def test_queued_rows_are_indexed_soon_without_a_search_and_at_the_next_opening(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_indexer, "INDEX_DELAY", 3600.0)  # never, in this harness
    async with await create_test_harness(backend, data_dir=tmp_path) as h:
        c = await h.create_client("alice")
        await c.mutate.send({"id": "a", "text": "queued words", "at": 1})
        await c.wait_for_sync()
    assert indexed(tmp_path / "test.sqlite3") == {}  # stopped before indexing: still queued
    async with await create_test_harness(backend, data_dir=tmp_path) as h:
        await h.create_client("alice")  # opens the instance, which indexes the queue
        assert indexed(tmp_path / "test.sqlite3") == {"a": "queued words"}

    monkeypatch.setattr(search_indexer, "INDEX_DELAY", 0.0)
    async with await create_test_harness(backend, data_dir=tmp_path) as h:
        c = await h.create_client("alice")
        inst = h.app.state.registry.instances[h.instance_id]
        done = asyncio.get_running_loop().create_future()
        real = inst.search_index._ended

        def ended(run: Any) -> None:
            real(run)
            if not done.done():
                done.set_result(None)

        monkeypatch.setattr(inst.search_index, "_ended", ended)
        await c.mutate.send({"id": "b", "text": "indexed by the timer", "at": 2})
        await c.wait_for_sync()
        await asyncio.wait_for(done, 10)
        assert not inst.search_index.pending
        assert indexed(tmp_path / "test.sqlite3")["b"] == "indexed by the timer"


async def test_the_indexer_runs_one_pass_at_a_time_and_catches_up_to_the_call() -> None:
    """Unit: concurrent searches share one indexing pass; a pass that ends with rows committed
    meanwhile leaves them for the next; a failed pass raises in the searches waiting on it."""
    calls: list[int] = []
    version = 0
    gate = asyncio.Event()
    fail = False

    async def in_writer(fn: Any) -> Any:
        calls.append(version)
        began = version  # the transaction's version: the one committed when it began
        await gate.wait()
        if fail:
            raise OSError("disk gone")

        class Tx:
            pass

        tx: Any = Tx()
        tx.version = began

        async def index_search(upto: int | None = None) -> bool:
            return False

        tx.index_search = index_search
        return await fn(tx)

    ix = SearchIndexer("room", in_writer, ["messages"], enabled=True, delay=3600)
    assert not ix.pending
    await ix.catch_up()  # nothing queued: no pass
    assert calls == []
    version = 5
    ix.committed(5, [RowKey("", "other", "x")])
    assert not ix.pending  # not a searchable table
    ix.committed(5, [RowKey("", "messages", "m")])
    assert ix.pending
    searches = [asyncio.ensure_future(ix.catch_up()) for _ in range(3)]
    for _ in range(10):  # a few loop turns: the searches start their (shared) pass
        await asyncio.sleep(0)
    assert calls == [5]
    version = 6
    ix.committed(6, [RowKey("", "messages", "m")])
    gate.set()
    await asyncio.gather(*searches)
    assert calls == [5]  # one pass for the three
    assert ix.pending  # version 6 came after the pass began
    await ix.catch_up()
    assert calls == [5, 6]
    assert not ix.pending
    version = 7
    fail = True
    ix.committed(7, [RowKey("", "messages", "m")])
    with pytest.raises(OSError, match="disk gone"):
        await ix.catch_up()
    assert ix.pending
    ix.close()
    disabled = SearchIndexer("room", in_writer, ["messages"], enabled=False)
    disabled.committed(8, [RowKey("", "messages", "m")])
    assert not disabled.pending


async def test_a_search_right_after_a_pass_ends_starts_a_new_one_without_spinning() -> None:
    """Regression: a commit and a search in the loop turn in which a pass finishes (an action
    committing inline, then searching) must start a new pass, not spin on the finished one."""
    loop = asyncio.get_running_loop()
    passes: list[int | None] = []
    outcome: list[str] = []
    ix: SearchIndexer

    async def in_writer(fn: Any) -> Any:
        class Tx:
            pass

        tx: Any = Tx()

        async def index_search(upto: int | None = None) -> bool:
            passes.append(upto)
            return False

        tx.index_search = index_search

        def action_step() -> None:  # runs in the same loop turn as the pass's end
            if len(passes) > 1:
                return
            ix.committed(2, [RowKey("", "t", "x")])
            step = ix.catch_up().__await__()
            try:
                next(step)
                outcome.append("waits for a new pass")
            except StopIteration:
                outcome.append("returned")

        loop.call_soon(action_step)
        return await fn(tx)

    ix = SearchIndexer("r", in_writer, ["t"], enabled=True, delay=3600)
    ix.committed(1, [RowKey("", "t", "a")])
    await asyncio.wait_for(ix.catch_up(), 5)
    for _ in range(10):
        await asyncio.sleep(0)
    assert outcome == ["waits for a new pass"]
    await asyncio.wait_for(ix.catch_up(), 5)
    assert passes == [1, 2]
    assert not ix.pending


async def test_a_pass_indexes_only_rows_queued_before_it(tmp_path: Path) -> None:
    """Storage: ``index_search(upto)`` takes the rows queued at versions up to ``upto``, oldest
    first, so rows committed during a pass (a bulk import) never keep a search waiting."""
    from synced_store.storage.sqlite import SqliteInstanceStore
    from synced_store.storage.sqlite_search import INDEX_BATCH

    from ..storage.helpers import in_tx, put

    store = SqliteInstanceStore(tmp_path / "room.sqlite3")
    try:
        await in_tx(store, lambda tx: tx.configure_search({"t": ("text", None)}))
        first = await put(store, "old", {"text": "early words"})
        for i in range(INDEX_BATCH + 5):  # newer rows, queued after ``first``
            await put(store, f"new{i:04d}", {"text": "late words"})
        assert not await in_tx(store, lambda tx: tx.index_search(first))  # one batch: done
        conn = store.conn
        queued = conn.execute("SELECT COUNT(*), MIN(version) FROM search_queue").fetchone()
        assert queued == (INDEX_BATCH + 5, first + 1)
        assert conn.execute("SELECT item FROM search_docs").fetchall() == [("old",)]
    finally:
        await store.close()
