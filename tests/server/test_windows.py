"""Windowed sync through a real server and real clients: a new client receives only the window,
pages back to the first row without a gap or a duplicate while rows change, keeps within its
storage budget, and a mutator reading outside the window converges with the server."""

from __future__ import annotations

import asyncio
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from synced_store import EntryKey, define_backend_config, define_schema, table
from synced_store.client import SyncedStoreClient
from synced_store.testing import TestHarness, create_test_harness, wait_for

pytestmark = pytest.mark.e2e

WINDOW = 5
TESTS_DIR = str(Path(__file__).resolve().parents[1])


class Msg(BaseModel):
    text: str


class Send(BaseModel):
    id: str
    sk: str
    text: str


class Edit(BaseModel):
    id: str
    more: str


class Count(BaseModel):
    pass


async def send(ctx: Any, inp: Send) -> None:
    await ctx.table("messages").set(inp.id, {"text": inp.text}, sort_key=inp.sk)


async def edit(ctx: Any, inp: Edit) -> None:
    """Append to a message: reads the row (it may be outside a client's window)."""
    row = await ctx.table("messages").get(inp.id)
    if row is None:
        return
    sk = next(k.sort_key for k in await ctx.table("messages").keys() if k.item_key == inp.id)
    await ctx.table("messages").set(inp.id, {"text": row["text"] + inp.more}, sort_key=sk)


async def delete(ctx: Any, inp: Edit) -> None:
    await ctx.table("messages").delete(inp.id)


async def mark(ctx: Any, inp: Edit) -> None:
    """Reads one message by key (a point read) and notes its text."""
    row = await ctx.table("messages").get(inp.id)
    await ctx.table("meta").set("marked", {"text": None if row is None else row["text"]})


async def count(ctx: Any, inp: Count) -> None:
    """Counts every message it can see: on a windowed client, only the rows it holds."""
    n = len(await ctx.table("messages").keys())
    await ctx.table("meta").set("count", {"n": n})


def make_backend(**opts: Any) -> Any:
    schema = define_schema(
        1,
        tables={"messages": table(Msg), "meta": table()},
        mutators={
            "send": {"input": Send},
            "edit": {"input": Edit},
            "delete": {"input": Edit},
            "count": {"input": Count},
            "mark": {"input": Edit},
        },
        pull_windows={"messages": WINDOW},
        **opts,
    )
    return define_backend_config(
        schema, {"send": send, "edit": edit, "delete": delete, "count": count, "mark": mark}
    )


backend = make_backend()


def sk(i: int) -> str:
    return f"{i:08d}"


def seed_rows(n: int) -> dict[str, Any]:
    return {
        "messages": {EntryKey(sk(i), f"m{i}"): {"text": f"message {i}"} for i in range(n)},
        "meta": {"title": {"name": "room"}, "topic": {"name": "windows"}},
    }


def held(c: SyncedStoreClient) -> dict[str, tuple[str, str]]:
    """The messages a client holds: item key -> (sort key, text)."""
    return {
        key.item: (sk_, v["text"])
        for key, sk_, v in c.engine.snapshot_rows()
        if key.table == "messages"
    }


async def server_rows(h: TestHarness) -> dict[str, tuple[str, str]]:
    """Every message the server holds, read through the storage layer."""
    inst = h.app.state.registry.instances[h.instance_id]
    reader = inst.store.reader()
    try:
        rows = await reader.scan("", "messages", None, exclusive=False, reverse=False, limit=10**6)
    finally:
        await reader.close()
    return {ek.item_key: (ek.sort_key, v["text"]) for ek, v in rows}


async def test_a_new_client_receives_only_the_window(tmp_path: Path) -> None:
    async with await create_test_harness(backend, data_dir=tmp_path) as h:
        await h.seed_instance(seed_rows(200))
        c = await h.create_client("alice")
        got = held(c)
        assert sorted(got) == sorted(f"m{i}" for i in range(195, 200))
        # Rows of tables that are not windowed travel whole.
        meta = await c.query(lambda ctx: ctx.table("meta").keys())
        assert [k.item_key for k in meta] == ["title", "topic"]
        assert c.has_older("messages")
        # New rows arrive at the top of the window.
        await c.mutate.send(id="new", sk=sk(500), text="hello")
        other = await h.create_client("bob")
        await wait_for(other, lambda ctx: ctx.table("messages").get("new"), description="new")
        assert len(held(other)) == WINDOW + 1 or "new" in held(other)


async def test_initial_pull_max_bytes_caps_the_window(tmp_path: Path) -> None:
    b = make_backend(initial_pull_max_bytes=1024)
    async with await create_test_harness(b, data_dir=tmp_path) as h:
        await h.seed_instance(
            {"messages": {EntryKey(sk(i), f"m{i}"): {"text": "x" * 400} for i in range(50)}}
        )
        c = await h.create_client("alice")
        got = held(c)
        # About 1 KiB of rows (the newest first): 3 rows of ~450 bytes, not the window of 5.
        assert sorted(got) == ["m47", "m48", "m49"]
        assert await c.load_older("messages", limit=10) == 10
        assert sorted(held(c)) == sorted(f"m{i}" for i in range(37, 50))


async def test_paging_reaches_the_first_row_without_gap_or_duplicate(tmp_path: Path) -> None:
    async with await create_test_harness(backend, data_dir=tmp_path) as h:
        await h.seed_instance(seed_rows(120))
        reader = await h.create_client("alice")
        writer = await h.create_client("bob")
        stop = asyncio.Event()

        async def churn() -> None:
            i = 0
            while not stop.is_set():
                i += 1
                # New rows at the top, edits and deletions of old rows (below the reader's
                # floor most of the time), while the reader pages.
                await writer.mutate.send(id=f"n{i}", sk=sk(1000 + i), text=f"new {i}")
                await writer.mutate.send(
                    id=f"m{(i * 7) % 120}", sk=sk((i * 7) % 120), text=f"edited {i}"
                )
                if i % 5 == 0:
                    await writer.mutate.delete(id=f"m{(i * 11) % 120}", more="")
                await asyncio.sleep(0)  # let the reader's pages interleave with the writes

        task = asyncio.create_task(churn())
        pages = 0
        try:
            while reader.has_older("messages"):
                await reader.load_older("messages", limit=7)
                pages += 1
                assert pages < 200
        finally:
            stop.set()
            await task
        await writer.wait_for_sync()
        want = await server_rows(h)
        try:
            await wait_for(
                reader,
                lambda ctx: ctx.table("messages").keys(),
                lambda keys: len(keys) == len(want),
                description="every message",
                timeout=3,
            )
        except TimeoutError:
            got = held(reader)
            print("missing", sorted(set(want) - set(got)), "extra", sorted(set(got) - set(want)))
            print("diff", [(k, got[k], want[k]) for k in set(got) & set(want) if got[k] != want[k]])
            inst = h.app.state.registry.instances[h.instance_id]
            w = reader.engine.windows
            print("win", w.complete, w.held_bytes, w.generation, w._pages, len(w._dropped))
            print(
                "status",
                reader.connection_status,
                reader.engine.cookie,
                inst.store.version,
                writer.engine.cookie,
                len(inst.sessions),
            )
            raise
        assert held(reader) == want
        assert not reader.has_older("messages")


async def test_the_client_stays_within_its_budget(tmp_path: Path) -> None:
    b = make_backend(pull_max_bytes=2048)
    async with await create_test_harness(b, data_dir=tmp_path) as h:
        await h.seed_instance(seed_rows(20))
        c, transport = await h.create_controlled_client("alice")
        w = c.engine.windows
        assert w is not None
        peak: list[int] = [0]

        def sample() -> None:
            peak[0] = max(peak[0], w.held_bytes)

        def watch(_entries: Any, _changes: Any) -> None:
            # Eviction runs right after the update that notifies: sample once it is over.
            asyncio.get_running_loop().call_soon(sample)

        c.subscribe_to_table("messages", watch)
        # A pending mutation that read a row of the window (its push held back, so it stays
        # pending while pokes arrive): that row is never evicted.
        transport.outbound.disable_auto_flush()
        await c.mutate.mark(id="m16", more="")
        writer = await h.create_client("bob")
        for i in range(150):
            await writer.mutate.send(id=f"n{i}", sk=sk(1000 + i), text=f"{i:03d}" + "y" * 90)
        await wait_for(c, lambda ctx: ctx.table("messages").get("n149"), description="n149")
        assert "m16" in held(c)  # pending mutation's read: kept
        assert "m15" not in held(c)  # below it: evicted
        assert c.pending_count == 1
        await transport.outbound.enable_auto_flush()
        await c.wait_for_sync()
        # (While m16 was protected nothing above it could go either: the rows held stay one
        # run. Now the budget holds.)
        peak[0] = 0
        for i in range(60):
            await writer.mutate.send(id=f"k{i}", sk=sk(2000 + i), text="z" * 100)
        await wait_for(c, lambda ctx: ctx.table("messages").get("k59"), description="k59")
        assert "m16" not in held(c)  # no longer read by a pending mutation: evicted
        assert 0 < peak[0] <= 2048 * 1.2
        assert w.held_bytes <= 2048 * 1.2
        rows = held(c)
        # What it holds is one run up to the newest row.
        want = await server_rows(h)
        newest = sorted(want.items(), key=lambda kv: kv[1][0])[-len(rows) :]
        assert rows == dict(newest)
        # Paging back raises the budget (a request to hold more) and keeps the run.
        assert await c.load_older("messages", limit=30) == 30
        assert c.pull_max_bytes >= w.held_bytes > 2048 * 1.2


async def test_replay_of_a_mutator_reading_outside_the_window_converges(tmp_path: Path) -> None:
    async with await create_test_harness(backend, data_dir=tmp_path) as h:
        await h.seed_instance(seed_rows(40))
        c = await h.create_client("alice")
        # m3 is outside the window: the client's optimistic pass finds nothing to edit, the
        # server edits it.
        r = await c.mutate.edit(id="m3", more=" (edited)")
        await r.confirmed
        assert "m3" not in held(c)
        # The count mutator sees 5 rows on the client, 40 on the server: the server wins.
        r = await c.mutate.count()
        await r.confirmed
        assert await c.query(lambda ctx: ctx.table("meta").get("count")) == {"n": 40}
        while c.has_older("messages"):
            await c.load_older("messages", limit=20)
        assert held(c)["m3"] == (sk(3), "message 3 (edited)")
        assert held(c) == await server_rows(h)


async def test_deltas_of_rows_the_client_does_not_hold_are_dropped(tmp_path: Path) -> None:
    async with await create_test_harness(backend, data_dir=tmp_path) as h:
        await h.seed_instance(seed_rows(30))
        c = await h.create_client("alice")
        statuses: list[str] = []
        c.on_connection_status(statuses.append)
        writer = await h.create_client("bob")
        # Many small appends to an old row: the fan-out sends merges and append frames, for a
        # row the windowed client does not hold.
        for i in range(40):
            await writer.mutate.edit(id="m2", more=f" {i}")
        await writer.mutate.send(id="last", sk=sk(999), text="done")
        await wait_for(c, lambda ctx: ctx.table("messages").get("last"), description="last")
        assert "m2" not in held(c)
        assert statuses == []  # never reconnected (no protocol error)
        while c.has_older("messages"):
            await c.load_older("messages", limit=50)
        assert held(c)["m2"][1] == "message 2" + "".join(f" {i}" for i in range(40))


async def test_reconnect_with_a_cookie_sends_only_the_changes(tmp_path: Path) -> None:
    async with await create_test_harness(backend, data_dir=tmp_path) as h:
        await h.seed_instance(seed_rows(500))
        c, transport = await h.create_controlled_client("alice")
        await c.load_older("messages", limit=20)
        before = held(c)
        assert len(before) == WINDOW + 20
        await transport.simulate_disconnect()
        writer = await h.create_client("bob")
        for i in range(3):
            await writer.mutate.send(id=f"n{i}", sk=sk(1000 + i), text="new")
        await writer.mutate.edit(id="m1", more="!")  # far below the floor
        transport.simulate_reconnect()
        await wait_for(c, lambda ctx: ctx.table("messages").get("n2"), description="n2")
        after = held(c)
        assert set(after) == set(before) | {"n0", "n1", "n2"}
        assert "m1" not in after


async def test_subscribe_to_scan_entries_pulls_what_it_lacks(tmp_path: Path) -> None:
    async with await create_test_harness(backend, data_dir=tmp_path) as h:
        await h.seed_instance(seed_rows(60))
        c = await h.create_client("alice")
        calls: list[tuple[list[str], dict[str, list[str]]]] = []
        done = asyncio.Event()

        def cb(entries: list[tuple[EntryKey, Any]], changes: dict[str, list[str]]) -> None:
            calls.append(([ek.item_key for ek, _ in entries], changes))
            if len(entries) == 12:
                done.set()

        unsub = c.subscribe_to_scan_entries("messages", cb, limit=12, reverse=True)
        await asyncio.wait_for(done.wait(), 10)
        keys, _ = calls[-1]
        assert keys == [f"m{i}" for i in range(59, 47, -1)]
        assert calls[0][1]["added"] == [f"m{i}" for i in range(59, 54, -1)]
        await c.mutate.send(id="z", sk=sk(100), text="top")
        await wait_for(c, lambda ctx: ctx.table("messages").get("z"), description="z")
        assert calls[-1][1] == {"added": ["z"], "modified": [], "removed": ["m48"]}
        unsub()


async def test_a_window_holding_the_whole_table_takes_every_new_row(tmp_path: Path) -> None:
    async with await create_test_harness(backend, data_dir=tmp_path) as h:
        await h.seed_instance(seed_rows(3))  # fewer rows than the window: the reset says so
        c = await h.create_client("alice")
        assert not c.has_older("messages")
        writer = await h.create_client("bob")
        await writer.mutate.send(id="a", sk="", text="sorts before every row")
        await wait_for(c, lambda ctx: ctx.table("messages").get("a"), description="a")
        assert sorted(held(c)) == ["a", "m0", "m1", "m2"]


async def test_paging_across_processes_on_postgres(tmp_path: Path, pg_dsn: str) -> None:
    """The reader's process fans out another process's commits through its follower: a page
    read from the shared database may be newer than what that process sent the client, and the
    page must still join without a gap, a duplicate or a delta against the wrong value."""
    from synced_store.client import connect
    from synced_store.testing import ServerProcess

    tests_dir = TESTS_DIR
    servers = [
        ServerProcess(
            "server.test_windows:backend",
            tmp_path / f"unused{i}",
            pythonpath=[tests_dir],
            database=pg_dsn,
        )
        for i in range(2)
    ]
    await asyncio.gather(*(asyncio.to_thread(s.start) for s in servers))
    writer = await connect(servers[0].url, backend, instance_id="room", token="bob")
    try:
        await writer.wait_for_server_data(10)
        for i in range(60):
            await writer.mutate.send(id=f"m{i}", sk=sk(i), text=f"message {i}")
        await writer.wait_for_sync(20)
        reader = await connect(servers[1].url, backend, instance_id="room", token="alice")
        await reader.wait_for_server_data(10)
        stop = asyncio.Event()

        async def churn() -> None:
            i = 0
            while not stop.is_set():
                i += 1
                await writer.mutate.edit(id=f"m{(i * 7) % 60}", more="+")  # merges, old rows
                await writer.mutate.send(id=f"n{i}", sk=sk(1000 + i), text=f"new {i}")
                await asyncio.sleep(0.002)

        task = asyncio.create_task(churn())
        try:
            while reader.has_older("messages"):
                await reader.load_older("messages", limit=4)
        finally:
            stop.set()
            await task
        await writer.wait_for_sync(20)
        truth = await connect(servers[0].url, backend, instance_id="room", token="carol")
        try:
            await truth.wait_for_server_data(10)
            while truth.has_older("messages"):
                await truth.load_older("messages", limit=500)
            want = held(truth)
            await wait_for(
                reader,
                lambda ctx: ctx.table("messages").values(),
                lambda values: (
                    sorted(v["text"] for v in values) == sorted(t for _, t in want.values())
                ),
                description="the reader converges",
                timeout=15,
            )
            assert held(reader) == want
        finally:
            await truth.close()
        await reader.close()
    finally:
        await writer.close()
        for s in servers:
            s.kill()


async def test_a_scan_of_large_rows_reads_only_up_to_its_byte_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``$scan`` applies SCAN_MAX_BYTES while storage reads: a page of large rows with a large
    limit neither returns nor reads (decodes, holds in memory) every row up to the limit."""
    from synced_store.server.windows import SCAN_MAX_BYTES
    from synced_store.storage.sqlite_rows import SqliteReader

    read: list[int] = []
    scan = SqliteReader.scan

    async def spy(self: SqliteReader, *args: Any, **kwargs: Any) -> Any:
        rows = await scan(self, *args, **kwargs)
        read.append(len(rows))
        return rows

    monkeypatch.setattr(SqliteReader, "scan", spy)
    big = "x" * 400_000  # 40 rows of 400 kB: 16 MB in all, about 3 rows fill the cap
    async with await create_test_harness(backend, data_dir=tmp_path) as h:
        await h.seed_instance(
            {"messages": {EntryKey(sk(i), f"m{i}"): {"text": big} for i in range(40)}}
        )
        c = await h.create_client("alice")
        tracemalloc.start()
        try:
            out = await c._query("$scan", {"table": "messages", "limit": 500})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert [r[1] for r in out["rows"]] == ["m39", "m38", "m37"]
        assert out["more"] is True
        assert read == [3]  # storage stopped at the row that reached the cap
        # Everything the query allocated (server and client): a few copies of the page (about
        # 7 MB), not of the 40 rows (16 MB, twice over as text and as decoded values).
        assert peak < 16 * SCAN_MAX_BYTES
        # Paging on from the last row reaches the first without a gap.
        seen = [r[1] for r in out["rows"]]
        while out["more"]:
            last = out["rows"][-1]
            out = await c._query(
                "$scan", {"table": "messages", "limit": 500, "before": [last[0], last[1]]}
            )
            seen += [r[1] for r in out["rows"]]
        assert seen == [f"m{i}" for i in range(39, -1, -1)]
