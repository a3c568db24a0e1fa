"""PostgreSQL beyond the contract: several processes on one database (each a backend of its
own here), news of commits and a listener that reconnects, the schema check, lost
connections, and values PostgreSQL cannot store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from synced_store.errors import InstanceUnavailableError, ValidationError
from synced_store.storage import postgres_rows
from synced_store.storage.base import WriterTx
from synced_store.storage.postgres import PostgresBackend
from synced_store.storage.postgres_schema import STORAGE_VERSION, upgrade
from synced_store.storage.records import ChangedRow, DatabaseSchemaError
from synced_store.storage.search_index import SearchHit
from synced_store.testing.postgres import temporary_database

from .helpers import in_tx, key, put


@pytest.fixture
async def dsn() -> AsyncIterator[str]:
    async with temporary_database() as d:
        yield d


@pytest.fixture
async def two(dsn: str) -> AsyncIterator[tuple[PostgresBackend, PostgresBackend]]:
    """Two "processes": backends of their own on the same database."""
    a, b = PostgresBackend(dsn), PostgresBackend(dsn)
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def _listening(*backends: PostgresBackend) -> None:
    async with asyncio.timeout(10):
        for b in backends:
            await b.wait_listening()


async def test_processes_share_versions_and_hear_of_each_others_commits(
    two: tuple[PostgresBackend, PostgresBackend],
) -> None:
    a, b = two
    await _listening(a, b)
    sa = await a.open_instance("room")
    sb = await b.open_instance("room")
    heard: asyncio.Queue[int | None] = asyncio.Queue()
    sb.watch(heard.put_nowait)
    try:
        v1 = await put(sa, "x", {"n": 1})
        assert await asyncio.wait_for(heard.get(), 5) == v1 == 1
        assert sb.version == 0  # told, not taken in: the server decides when
        got = await sb.changes_since(sb.version, limit=10)
        assert (got.upto, got.rows) == (1, [ChangedRow(1, "", "t", "x", "", '{"n":1}')])
        tx = await sb.begin()  # B's writer starts from A's version
        assert tx.version == 1
        await tx.write(key("y"), "", b"2", 2)
        await tx.commit(2)
        assert sb.version == 2
        assert (await sa.changes_since(1, limit=10)).rows == [ChangedRow(2, "", "t", "y", "", "2")]
        v3 = await put(sa, "z")  # B's own commit is not news to B; A's next one is
        assert await asyncio.wait_for(heard.get(), 5) == v3 == 3
    finally:
        await sa.close()
        await sb.close()


async def test_one_writer_across_processes(two: tuple[PostgresBackend, PostgresBackend]) -> None:
    a, b = two
    sa = await a.open_instance("room")
    sb = await b.open_instance("room", lock_timeout=5)
    try:
        tx = await sa.begin()
        waiting = asyncio.ensure_future(sb.begin())
        await asyncio.sleep(0.2)  # B must be waiting for A's lock, not past it
        assert not waiting.done()
        await tx.write(key("x"), "", b"1", 1)
        await tx.commit(1)
        other = await asyncio.wait_for(waiting, 5)
        assert other.version == 1  # it saw A's commit
        await other.rollback()
    finally:
        await sa.close()
        await sb.close()


async def test_a_reconnected_listener_tells_every_watcher_to_catch_up(
    dsn: str, two: tuple[PostgresBackend, PostgresBackend]
) -> None:
    a, b = two
    await _listening(b)
    sb = await b.open_instance("room")
    heard: asyncio.Queue[int | None] = asyncio.Queue()
    sb.watch(heard.put_nowait)
    admin = await asyncpg.connect(dsn)
    try:
        n = await admin.fetchval(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'synced-store listener'"
        )
        assert n == 2
        # Meanwhile A commits: the notification may be lost, the reconnect makes up for it.
        sa = await a.open_instance("room")
        await put(sa, "x")
        await sa.close()
        got = set()
        async with asyncio.timeout(15):
            while None not in got:
                got.add(await heard.get())
        assert (await sb.changes_since(0, limit=10)).upto == 1
    finally:
        await admin.close()
        await sb.close()


async def test_a_lost_connection_fails_the_transaction_not_the_store(dsn: str) -> None:
    storage = PostgresBackend(dsn)
    await storage.start()
    store = await storage.open_instance("room")
    admin = await asyncpg.connect(dsn)
    try:
        await put(store, "a")
        tx = await store.begin()
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'synced-store' "
            "AND state LIKE 'idle in transaction%'"
        )
        with pytest.raises(InstanceUnavailableError):
            await tx.read(key("a"))
        assert tx.broken is not None
        await tx.rollback()
        assert await put(store, "b") == 2  # the next transaction gets a working connection
    finally:
        await admin.close()
        await store.close()
        await storage.close()


async def test_values_postgresql_cannot_store_are_refused_before_anything_is_sent(
    dsn: str,
) -> None:
    storage = PostgresBackend(dsn)
    await storage.start()
    store = await storage.open_instance("room")
    try:
        tx = await store.begin()
        with pytest.raises(ValidationError):
            await tx.write(key("a\x00b"), "", b"1", 1)
        with pytest.raises(ValidationError):
            await tx.register_client("c\x00", "alice", 0)
        assert await tx.client("c\x00") is None
        assert tx.broken is None
        await tx.add_error("c", {"id": 1, "name": "m", "kind": "k", "message": "bad \x00 text"})
        await tx.write(key("ok"), "", b"1", 1)
        await tx.commit(1)
        assert [e["message"] for e in await store.errors_between("c", 0, 5)] == ["bad \ufffd text"]
    finally:
        await store.close()
        await storage.close()


async def test_a_server_refuses_a_database_without_the_schema() -> None:
    async with temporary_database(schema=False) as dsn:
        storage = PostgresBackend(dsn)
        try:
            with pytest.raises(DatabaseSchemaError, match="db upgrade"):
                await storage.start()
        finally:
            await storage.close()
        conn = await asyncpg.connect(dsn)
        try:
            assert await upgrade(conn) == (0, STORAGE_VERSION)
            assert await upgrade(conn) == (STORAGE_VERSION, STORAGE_VERSION)
            await conn.execute(
                "UPDATE synced_store.meta SET value = $1 WHERE key = 'storage_version'",
                STORAGE_VERSION + 1,
            )
        finally:
            await conn.close()
        storage = PostgresBackend(dsn)
        try:
            with pytest.raises(DatabaseSchemaError, match="newer than this synced-store"):
                await storage.start()
        finally:
            await storage.close()


async def test_jobs_are_claimed_once_across_processes(
    two: tuple[PostgresBackend, PostgresBackend],
) -> None:
    a, b = two
    sa = await a.open_instance("room")
    sb = await b.open_instance("room")
    try:

        async def add(tx: WriterTx) -> None:
            for i in range(6):
                await tx.add_job("act", {"i": i}, f"u{i}", 0.0)

        await in_tx(sa, add)
        got = await asyncio.gather(
            *(in_tx(s, lambda tx: tx.claim_jobs(1.0, 2, lease=60)) for s in (sa, sb, sa, sb))
        )
        ids = [j["id"] for claim in got for j in claim]
        assert len(ids) == len(set(ids)) == 6
        assert await a.instances_with_due_jobs(30.0) == []
        assert await b.instances_with_due_jobs(62.0) == ["room"]  # the leases ended
    finally:
        await sa.close()
        await sb.close()


async def test_a_flood_of_searches_leaves_pooled_connections_to_others(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Searches hold at most a quarter of the pool at once (``search_slots``): however many
    are in progress, a read still gets a connection at once."""
    storage = PostgresBackend(dsn, pool_size=4)
    await storage.start()
    store = await storage.open_instance("room")
    await in_tx(store, lambda tx: tx.configure_search({"docs": ("text", None)}))
    await put(store, "a", {"text": "hello"}, table="docs")
    release, entered = asyncio.Event(), asyncio.Event()
    inside: list[int] = []
    real_search = postgres_rows.search

    async def held_search(*args: Any, **kwargs: Any) -> list[SearchHit]:
        inside.append(1)
        entered.set()
        await release.wait()
        return await real_search(*args, **kwargs)

    monkeypatch.setattr(postgres_rows, "search", held_search)
    reader = store.reader()
    searches = [
        asyncio.ensure_future(reader.search("docs", ["hello"], [""], 10, newest_first=False))
        for _ in range(storage.pool_size)
    ]
    try:
        await asyncio.wait_for(entered.wait(), 10)
        row = await asyncio.wait_for(reader.read(key("a", "docs")), 5)
        assert row is not None
        assert len(inside) == 1  # the others wait for a search slot
    finally:
        release.set()
        hits = await asyncio.gather(*searches)
        await reader.close()
        await store.close()
        await storage.close()
    assert [[h.item for h in found] for found in hits] == [["a"]] * storage.pool_size
