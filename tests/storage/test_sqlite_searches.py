"""Cancelling a search that runs in its worker thread, through a real server process
(storage/sqlite_searches.py): a client that disconnects during ``$search`` and an action whose
``ctx.search`` times out close their reader while the search is inside ``sqlite3_step``.
Closing that connection from the event loop crashed the whole process (SIGSEGV); now the
close interrupts the search, the search's own thread closes its connection, the process
lives on and the search threads are free again.

The server process imports this module as its app. There, a search for the word ``slow``
first runs a statement of several seconds (a recursive count) on the search's connection, and
notes in the file named by ``$SLOW_SEARCH_LOG`` when it starts (the test waits for that, so it
cancels while the search is certainly running SQL) and whether it was interrupted.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from pydantic import BaseModel

from synced_store import ActionError, define_backend_config, define_schema, table
from synced_store.protocol.ops import op_text
from synced_store.storage import sqlite_rows
from synced_store.storage.search_index import SearchHit
from synced_store.storage.sqlite_backend import SqliteBackend
from synced_store.storage.sqlite_searches import SEARCH_THREADS
from synced_store.testing import ServerProcess
from synced_store.testing.seeding import seed_instance

from .helpers import in_tx, put

T = TypeVar("T")
TESTS_DIR = str(Path(__file__).resolve().parents[1])


class Doc(BaseModel):
    text: str


class Find(BaseModel):
    query: str


class Found(BaseModel):
    keys: list[str]


schema = define_schema(
    schema_version=1,
    tables={"docs": table(Doc, searchable={"text_field": "text"})},
    mutators={},
    actions={"find": {"input": Find, "output": Found}},
)


async def find(ctx: Any, i: Find) -> Found:
    return Found(keys=[h["key"] for h in await ctx.search("docs", i.query)])


backend = define_backend_config(schema, {}, actions={"find": find})

_SPIN = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 30000000) "
    "SELECT count(*) FROM c"
)


def _slow_search(
    conn: Any,
    table: str,
    words: Sequence[str],
    namespaces: Sequence[str],
    limit: int,
    *,
    newest_first: bool,
) -> list[SearchHit]:
    if "slow" in words:
        log = Path(os.environ["SLOW_SEARCH_LOG"])
        with log.open("a") as f:
            f.write("started\n")
        try:
            conn.execute(_SPIN).fetchall()
        except sqlite3.OperationalError:
            with log.open("a") as f:
                f.write("interrupted\n")
            raise
    return _real_search(conn, table, words, namespaces, limit, newest_first=newest_first)


if "SLOW_SEARCH_LOG" in os.environ:  # in the server process only
    _real_search = sqlite_rows.search
    sqlite_rows.search = _slow_search


def _noted(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


async def _wait_for_log(log: Path, server: ServerProcess, **counts: int) -> None:
    """Until the slow searches noted ``counts`` (``started=2``) in ``log``."""
    deadline = time.monotonic() + 20
    while True:
        lines = _noted(log)
        if all(lines.count(what) >= n for what, n in counts.items()):
            return
        _assert_alive(server)
        assert time.monotonic() < deadline, f"slow searches noted {lines}, not {counts}"
        await asyncio.sleep(0.01)  # polling another process's file, bounded by the deadline


def _assert_alive(server: ServerProcess) -> None:
    assert server.proc is not None
    rc = server.proc.poll()
    assert rc is None, f"the server process died (exit status {rc})"


async def _on_live_server(server: ServerProcess, call: Awaitable[T]) -> T:
    """``call``'s result; a failure of a server that died is reported as its death."""
    try:
        return await asyncio.wait_for(call, 20)
    except BaseException:
        _assert_alive(server)
        raise


@pytest.mark.e2e
async def test_cancelled_searches_do_not_crash_the_server(tmp_path: Path) -> None:
    from synced_store.client import connect

    docs = {"a": {"text": "a slow fox"}, "b": {"text": "fox"}}
    await seed_instance(backend, tmp_path, "room", rows={"docs": docs})
    log = tmp_path / "slow-searches.log"
    server = ServerProcess(
        "storage.test_sqlite_searches:backend",
        tmp_path,
        pythonpath=[TESTS_DIR],
        env={"SLOW_SEARCH_LOG": str(log)},
        actions={"timeout": 1.0},
    )
    await asyncio.to_thread(server.start)
    try:
        mallory = await connect(server.url, backend, instance_id="room", token="mallory")
        alice = await connect(server.url, backend, instance_id="room", token="alice")
        await mallory.wait_for_server_data(10)
        await alice.wait_for_server_data(10)
        # A client disconnects while its $search runs: the query is cancelled, its reader
        # closed.
        query = {"table": "docs", "query": "slow"}
        pending = asyncio.ensure_future(mallory._query("$search", query))
        await _wait_for_log(log, server, started=1)
        await mallory.close()
        pending.cancel()
        # An action's ctx.search outlives the action's timeout: its context is closed.
        with pytest.raises(ActionError, match="timed out"):
            await _on_live_server(server, alice.action.find(query="slow"))
        # Both slow searches were interrupted (not left to spin in their threads) and the
        # process lives on: searches still answer.
        await _wait_for_log(log, server, started=2, interrupted=2)
        found = await _on_live_server(server, alice.action.find(query="fox"))
        assert sorted(found["keys"]) == ["a", "b"]
        hits = await _on_live_server(server, alice._query("$search", {**query, "query": "fox"}))
        assert sorted(h["key"] for h in hits) == ["a", "b"]
        await alice.close()
        _assert_alive(server)
    finally:
        server.kill()


async def test_a_flood_of_searches_leaves_catch_ups_their_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Searches run in threads of their own (at most ``SEARCH_THREADS`` at once, the rest
    queued): however many wait, a catch-up — asyncio's default executor, one thread here —
    still reads at once."""
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(1))
    storage = SqliteBackend(tmp_path)
    await storage.start()
    store = await storage.open_instance("room")
    await in_tx(store, lambda tx: tx.configure_search({"docs": ("text", None)}))
    await put(store, "a", {"text": "hello"}, table="docs")
    assert not await in_tx(store, lambda tx: tx.index_search())  # as the server, before searching
    release = threading.Event()
    started: list[int] = []
    real_search = sqlite_rows.search

    def held_search(conn: Any, *args: Any, **kwargs: Any) -> list[SearchHit]:
        started.append(1)
        release.wait(20)
        return real_search(conn, *args, **kwargs)

    monkeypatch.setattr(sqlite_rows, "search", held_search)
    readers = [store.reader() for _ in range(2 * SEARCH_THREADS + 2)]
    searches = [
        asyncio.ensure_future(r.search("docs", ["hello"], [""], 10, newest_first=False))
        for r in readers
    ]
    try:
        deadline = time.monotonic() + 10
        while not started:
            assert time.monotonic() < deadline, "the searches did not start"
            await asyncio.sleep(0.01)  # polling worker threads, bounded by the deadline
        cu = store.catch_up(None, namespaces=("",), encode=op_text)
        try:
            part = await asyncio.wait_for(cu.next_part(1 << 20), 5)
        finally:
            await cu.close()
        assert [orjson.loads(op)["k"] for op in part] == ["a"]
        assert len(started) == SEARCH_THREADS  # the others wait for a search thread
    finally:
        release.set()
        hits = await asyncio.gather(*searches)
        for r in readers:
            await r.close()
        await store.close()
        await storage.close()
    assert [[h.item for h in found] for found in hits] == [["a"]] * len(readers)
