"""Writes sent ahead of the commit (storage/postgres_pipeline.py): the writer's transaction
keeps its meaning while finished mutations' rows are stored in the background — reads, scans,
savepoints, deletions and the commit see them in order, a send that fails breaks the
transaction like any statement, and an instance's batch keeps one savepoint per mutation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
from pydantic import BaseModel

from synced_store import define_backend_config, define_schema, table
from synced_store.errors import StorageError
from synced_store.server.instance import Instance
from synced_store.storage.postgres import PostgresBackend
from synced_store.storage.postgres_pipeline import SEND_AHEAD_ROWS
from synced_store.storage.postgres_store import PostgresInstanceStore
from synced_store.storage.postgres_tx import PostgresWriterTx
from synced_store.storage.records import StoredRow
from synced_store.testing.postgres import temporary_database

from .helpers import key

N = SEND_AHEAD_ROWS + 10


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
    async with temporary_database() as d:
        yield d


@pytest.fixture
async def storage(dsn: str) -> AsyncIterator[PostgresBackend]:
    b = PostgresBackend(dsn)
    await b.start()
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
async def store(storage: PostgresBackend) -> AsyncIterator[PostgresInstanceStore]:
    s = await storage.open_instance("room")
    assert isinstance(s, PostgresInstanceStore)
    try:
        yield s
    finally:
        await s.close()


async def _live(storage: PostgresBackend, table: str = "t") -> list[StoredRow]:
    """The committed live rows of ``table``."""
    return await (await storage.inspect("room")).rows(table)


def _item(i: int) -> str:
    return f"r{i:05d}"


async def _mutation(tx: PostgresWriterTx, i: int, version: int) -> None:
    """One mutation as the writer runs it: a savepoint, one row, released."""
    await tx.savepoint()
    await tx.write(key(_item(i)), f"{i:05d}", orjson.dumps({"i": i}), version)
    await tx.release()


def _buffered(tx: PostgresWriterTx) -> int:
    return len(tx._rows)


async def test_rows_sent_ahead_read_scan_roll_back_and_commit_in_order(
    storage: PostgresBackend, store: PostgresInstanceStore
) -> None:
    tx = await store.begin()
    assert isinstance(tx, PostgresWriterTx)
    v = tx.version + 1
    for i in range(N):
        await _mutation(tx, i, v)
    assert _buffered(tx) < N  # the first SEND_AHEAD_ROWS went ahead
    # A read of a row that went ahead comes from the database, after the send.
    assert await tx.read(key(_item(0))) == ("00000", {"i": 0})
    # A scan merges what is buffered with what was sent.
    page = await tx.scan("", "t", None, exclusive=False, reverse=False, limit=N + 5)
    assert [e.item_key for e, _ in page] == [_item(i) for i in range(N)]
    # A failing mutation after a send ahead rolls back alone (its write only buffered).
    await tx.savepoint()
    await tx.write(key(_item(0)), "x", orjson.dumps({"i": -1}), v)
    await tx.write(key("gone"), "", b"1", v)
    await tx.rollback_savepoint()
    assert await tx.read(key(_item(0))) == ("00000", {"i": 0})
    # A mutation deleting a row that went ahead, rolled back (a real savepoint), then kept.
    await tx.savepoint()
    assert await tx.remove(key(_item(1)), v)
    await tx.rollback_savepoint()
    assert await tx.read(key(_item(1))) == ("00001", {"i": 1})
    await tx.savepoint()
    assert await tx.remove(key(_item(2)), v)
    await tx.release()
    # A later write of a row sent ahead wins over the sent one.
    await _mutation(tx, 3, v)
    await tx.savepoint()
    await tx.write(key(_item(3)), "00003", orjson.dumps({"i": 33}), v)
    await tx.release()
    for i in range(N, 2 * N):  # more sends ahead after the real savepoints
        await _mutation(tx, i, v)
    await tx.commit(v)

    rows = {r.item_key: r for r in await _live(storage)}  # live rows
    assert sorted(rows) == [_item(i) for i in range(2 * N) if i != 2]  # no "gone", 2 deleted
    assert rows[_item(3)].value == {"i": 33}
    assert rows[_item(4)].value == {"i": 4}
    assert all(r.version == v for r in rows.values())
    assert store.version == v


async def test_a_send_ahead_that_fails_breaks_the_transaction(
    storage: PostgresBackend, store: PostgresInstanceStore, dsn: str
) -> None:
    tx = await store.begin()
    assert isinstance(tx, PostgresWriterTx)
    v = tx.version + 1
    for i in range(SEND_AHEAD_ROWS):
        await _mutation(tx, i, v)
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'synced-store' "
            "AND state LIKE 'idle in transaction%'"
        )
    finally:
        await admin.close()
    await _mutation(tx, SEND_AHEAD_ROWS, v)  # sends the first rows ahead, which fails
    with pytest.raises(StorageError):
        await tx.commit(v)
    assert tx.broken is not None
    await tx.rollback()
    # Nothing of it landed, and the store goes on with a working connection.
    assert await _live(storage) == []
    tx = await store.begin()
    await _mutation(tx, 0, tx.version + 1)
    await tx.commit(tx.version + 1)
    assert [r.item_key for r in await _live(storage)] == [_item(0)]


async def test_a_rollback_waits_for_the_send_in_flight(
    storage: PostgresBackend, store: PostgresInstanceStore
) -> None:
    tx = await store.begin()
    assert isinstance(tx, PostgresWriterTx)
    v = tx.version + 1
    for i in range(SEND_AHEAD_ROWS + 1):
        await _mutation(tx, i, v)
    assert tx._ahead.busy  # the first rows are on their way
    await tx.rollback()
    assert not tx._ahead.busy  # the connection went back with nothing in flight
    assert await _live(storage) == []
    tx = await store.begin()
    await _mutation(tx, 7, tx.version + 1)
    await tx.commit(tx.version + 1)
    assert [r.item_key for r in await _live(storage)] == [_item(7)]


class Put(BaseModel):
    id: str
    n: int = 0
    copy_from: str | None = None
    fail: bool = False


async def _put(ctx: Any, input: Put) -> None:
    n = input.n
    if input.copy_from is not None:
        n = (await ctx.table("entries").get(input.copy_from))["n"]
    await ctx.table("entries").set(input.id, {"n": n})
    if input.fail:
        raise ValueError("refused")


_backend = define_backend_config(
    define_schema(1, tables={"entries": table()}, mutators={"put": {"input": Put}}),
    {"put": _put},
)


async def test_a_writer_batch_with_sends_ahead_keeps_its_savepoints_and_reads(
    storage: PostgresBackend, store: PostgresInstanceStore
) -> None:
    inst = Instance("room", store, _backend)
    writer = asyncio.create_task(inst.run())
    n = 3 * SEND_AHEAD_ROWS
    fail, copy = 2 * SEND_AHEAD_ROWS + 5, 2 * SEND_AHEAD_ROWS + 6
    args = [{"id": _item(i), "n": i} for i in range(n)]
    args[fail] = {"id": _item(fail), "n": -1, "fail": True}
    args[copy] = {"id": _item(copy), "copy_from": _item(3)}  # written before a send ahead
    try:
        v0 = store.version
        results = await asyncio.gather(
            *(inst.mutate("u", "put", a) for a in args), return_exceptions=True
        )
        # The first commits alone (the writer was idle), the others queue into one batch.
        assert store.version == v0 + 2
    finally:
        inst.stop()
        await writer
    assert [i for i, r in enumerate(results) if r is not None] == [fail]
    assert isinstance(results[fail], ValueError)
    rows = {r.item_key: r.value for r in await _live(storage, "entries")}
    assert _item(fail) not in rows  # its write rolled back with its savepoint, alone
    assert rows[_item(copy)] == {"n": 3}
    assert len(rows) == n - 1
    assert all(rows[_item(i)] == {"n": i} for i in range(n) if i not in (fail, copy))
