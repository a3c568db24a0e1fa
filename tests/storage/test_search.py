"""The full-text index, on every backend: kept in the writer's transaction (savepoints and
rollbacks included; at once, or queued for ``index_search``), built and dropped by
``configure_search``, searched by words that are never query syntax; and a property test that
a search never returns a row its user may not see (storage/sqlite_search.py,
storage/postgres_search.py, server/search.py)."""

from __future__ import annotations

import asyncio
import re
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synced_store import define_schema, table
from synced_store.storage.base import InstanceStore, StorageBackend, WriterTx
from synced_store.storage.postgres import PostgresBackend
from synced_store.storage.postgres_schema import upgrade
from synced_store.storage.sqlite_backend import SqliteBackend
from synced_store.testing.postgres import ADMIN_DSN, database_dsn

from ..server.test_search import Message
from .helpers import delete, in_tx, key, put

SEARCH = {"t": ("text", "at")}


def msg(text: Any, at: Any = 0) -> dict[str, Any]:
    return {"text": text, "at": at}


async def found(
    store: InstanceStore,
    words: list[str],
    namespaces: tuple[str, ...] = ("",),
    *,
    table: str = "t",
    newest_first: bool = True,
    limit: int = 100,
    index: bool = True,
) -> list[str]:
    """What a search finds, after indexing what is queued (as the server does before every
    search: server/search_indexer.py) unless ``index`` is False."""
    if index:
        await index_all(store)
    reader = store.reader()
    try:
        hits = await reader.search(table, words, namespaces, limit, newest_first=newest_first)
    finally:
        await reader.close()
    return [h.item for h in hits]


async def index_all(store: InstanceStore) -> int:
    """Index every queued row, a batch per transaction; how many transactions it took."""
    n = 1
    while await in_tx(store, lambda tx: tx.index_search()):
        n += 1
    return n


async def configure(store: InstanceStore, tables: dict[str, tuple[str, str | None]]) -> list[str]:
    out: list[str] = await in_tx(store, lambda tx: tx.configure_search(tables))
    return out


async def test_the_index_follows_writes_in_the_writers_transaction(store: InstanceStore) -> None:
    assert await configure(store, SEARCH) == ["t"]
    await put(store, "a", msg("hello brave world", 1))
    await put(store, "b", msg("Hello there", 2))
    await put(store, "c", msg("hello", 3), table="other")  # not searchable
    await put(store, "d", msg(42, 4))  # no text: not indexed
    assert await found(store, ["hello"]) == ["b", "a"]
    assert await found(store, ["hello", "world"]) == ["a"]
    assert await found(store, ["hello"], table="other") == []

    async def steps(tx: WriterTx) -> None:
        v = tx.version + 1
        await tx.savepoint()
        await tx.write(key("e"), "", orjson.dumps(msg("hello undone", 5)), v)
        await tx.remove(key("a"), v)
        await tx.rollback_savepoint()
        await tx.savepoint()
        await tx.write(key("f"), "", orjson.dumps(msg("hello kept", 6)), v)
        await tx.write(key("b"), "", orjson.dumps(msg("goodbye now", 2)), v)
        await tx.release()
        assert await found(store, ["kept"], index=False) == []  # not committed yet

    await in_tx(store, steps, bump=True)
    assert await found(store, ["hello"]) == ["f", "a"]
    assert await found(store, ["goodbye"]) == ["b"]

    tx = await store.begin()
    await tx.write(key("g"), "", orjson.dumps(msg("hello rolled back", 7)), tx.version + 1)
    await tx.remove(key("f"), tx.version + 1)
    await tx.index_search()  # indexes the uncommitted rows in the transaction: rolled back too
    await tx.rollback()
    assert await found(store, ["hello"]) == ["f", "a"]
    await delete(store, "f")
    assert await found(store, ["hello"]) == ["a"]
    await put(store, "f", msg("hello again", 8))  # a revived tombstone
    assert await found(store, ["hello"]) == ["f", "a"]


async def test_a_deferring_store_indexes_queued_rows_in_batches(store: InstanceStore) -> None:
    """With ``deferred_search``, writes are queued in their transaction and indexed (their
    latest value, once) by ``index_search``, a bounded batch per call; otherwise every write is
    indexed at once and nothing is ever queued."""
    from synced_store.storage.sqlite_search import INDEX_BATCH

    await configure(store, SEARCH)
    await put(store, "a", msg("first words", 1))
    await put(store, "a", msg("first words grown longer", 1))
    now = await found(store, ["grown"], index=False)
    assert now == ([] if store.deferred_search else ["a"])
    assert await found(store, ["grown"]) == ["a"]
    assert not await in_tx(store, lambda tx: tx.index_search())  # nothing left

    async def many(tx: WriterTx) -> None:
        for i in range(INDEX_BATCH + 10):
            await tx.write(key(f"r{i:04d}"), "", orjson.dumps(msg("bulk words", i)), 1)
        await tx.remove(key("a"), 1)

    await in_tx(store, many, bump=True)
    batches = await index_all(store)
    assert batches == (2 if store.deferred_search else 1)
    assert len(await found(store, ["bulk"], limit=100)) == 100
    assert await found(store, ["first"]) == []  # the tombstone left the index


async def test_ordering_namespaces_and_limits(store: InstanceStore) -> None:
    await configure(store, {"t": ("text", "at"), "r": ("text", None)})
    await put(store, "old", msg("apple pie", 1))
    await put(store, "new", msg("apple tart", 9))
    await put(store, "none", msg("apple", "not a number"))
    await put(store, "mine", msg("apple crumble", 5), ns="u:alice")
    await put(store, "theirs", msg("apple", 6), ns="u:bob")
    await put(store, "server", msg("apple", 7), ns="s")
    assert await found(store, ["apple"]) == ["new", "old", "none"]  # no stamp: last
    assert await found(store, ["apple"], ("", "u:alice")) == ["new", "mine", "old", "none"]
    assert await found(store, ["apple"], ("", "u:alice"), limit=2) == ["new", "mine"]
    assert await found(store, ["apple"], ()) == []
    await put(store, "x", msg("pear pear pear pear", 0), table="r")
    await put(store, "y", msg("pear and a very long text about many other things", 9), table="r")
    assert await found(store, ["pear"], table="r", newest_first=False) == ["x", "y"]
    reader = store.reader()
    try:
        ranked = await reader.search("r", ["pear"], ("",), 10, newest_first=False)
        newest = await reader.search("t", ["apple"], ("",), 10, newest_first=True)
    finally:
        await reader.close()
    assert ranked[0].score is not None
    assert ranked[1].score is not None
    assert ranked[0].score > ranked[1].score > 0
    assert {h.score for h in newest} == {None}


async def test_words_are_never_query_syntax(store: InstanceStore) -> None:
    await configure(store, SEARCH)
    await put(store, "a", msg('she said "or" and NOT near (x) * y: z'))
    for words in [['"or"'], ['or"'], ["NOT"], ["near"], ["(x)"], ["*"], ["y:"], ["and", "x"]]:
        got = await found(store, words)
        assert got in (["a"], []), words
    assert await found(store, ["or", "not", "near"]) == ["a"]
    assert await found(store, ["OR"]) == ["a"]


async def test_configure_indexes_stored_rows_and_drops_old_tables(store: InstanceStore) -> None:
    await put(store, "a", msg("before the index"))
    await put(store, "p", msg("private before", 2), ns="u:alice")
    await put(store, "gone", msg("before but deleted"))
    await delete(store, "gone")
    assert await found(store, ["before"]) == []
    assert await configure(store, SEARCH) == ["t"]
    assert await configure(store, SEARCH) == []  # unchanged: nothing rebuilt
    assert await found(store, ["before"], ("", "u:alice")) == ["p", "a"]
    assert await configure(store, {"t": ("title", None)}) == ["t"]  # another field
    assert await found(store, ["before"]) == []
    await put(store, "b", {"title": "title words"})
    assert await found(store, ["title"]) == ["b"]
    assert await configure(store, {}) == []
    assert await found(store, ["title"]) == []
    await put(store, "c", {"title": "title again"})
    assert await configure(store, {"t": ("title", None)}) == ["t"]
    assert sorted(await found(store, ["title"])) == ["b", "c"]


# -- the property: a search never returns a row its user may not see ---------------------

USERS = ["alice", "bob", "carol"]
NAMESPACES = ["", "s", *(f"u:{u}" for u in USERS)]
WORDS = ["red", "green", "blue", "cat", "dog"]

rows_st = st.lists(
    st.tuples(
        st.sampled_from(NAMESPACES),
        st.sampled_from(["t", "plain"]),
        st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join),
        st.integers(0, 50),  # timestamp
        st.booleans(),  # deleted afterwards
    ),
    max_size=40,
)
query_st = st.tuples(
    st.sampled_from([*USERS, "mallory"]),
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=2),
    st.integers(1, 25),  # limit
)
search_schema = define_schema(
    1,
    tables={
        "t": table(Message, searchable={"text_field": "text", "timestamp_field": "createdAt"}),
        "plain": table(Message),
    },
)


async def _check_visibility(
    storage: StorageBackend, rows: list[tuple[str, str, str, int, bool]], queries: Any
) -> None:
    from synced_store.server.search import search_config, search_rows

    await storage.start()
    try:
        store = await storage.open_instance(f"room{secrets.token_hex(4)}")
        try:
            await configure(store, search_config(search_schema))
            live: dict[tuple[str, str, str], tuple[str, int]] = {}

            async def write(tx: WriterTx) -> None:
                v = tx.version + 1
                for i, (ns, tbl, text, at, deleted) in enumerate(rows):
                    k = key(f"r{i}", tbl, ns)
                    await tx.write(k, f"{at:04d}", orjson.dumps({"text": text, "createdAt": at}), v)
                    if deleted:
                        await tx.remove(k, v)
                    else:
                        live[(ns, tbl, f"r{i}")] = (text, at)

            await in_tx(store, write, bump=True)
            await index_all(store)
            reader = store.reader()
            try:
                for user, words, limit in queries:
                    got = await search_rows(
                        reader, search_schema, user, "t", " ".join(words), limit
                    )
                    want = {
                        item: at
                        for (ns, tbl, item), (text, at) in live.items()
                        if tbl == "t"
                        and ns in ("", f"u:{user}")
                        and set(words) <= set(re.findall(r"\w+", text))
                    }
                    keys = {h["key"] for h in got}
                    assert keys <= set(want), (user, words)
                    assert len(got) == min(limit, len(want)), (user, words, limit)
                    if got:  # the newest ones: none left out is newer than one returned
                        oldest = min(h["value"]["createdAt"] for h in got)
                        assert {k for k, at in want.items() if at > oldest} <= keys
                    for h in got:  # never another user's private row, nor a server-only one
                        ns = f"u:{user}" if h["private"] else ""
                        assert live[(ns, "t", h["key"])][0] == h["value"]["text"]
                    stamps = [h["value"]["createdAt"] for h in got]
                    assert stamps == sorted(stamps, reverse=True)
            finally:
                await reader.close()
        finally:
            await store.close()
    finally:
        await storage.close()


@settings(max_examples=60, deadline=None)
@given(rows=rows_st, queries=st.lists(query_st, min_size=1, max_size=6))
def test_sqlite_search_never_shows_a_row_its_user_may_not_see(
    rows: list[tuple[str, str, str, int, bool]], queries: Any
) -> None:
    with tempfile.TemporaryDirectory() as d:
        asyncio.run(_check_visibility(SqliteBackend(Path(d)), rows, queries))


@pytest.fixture(scope="module")
def pg_dsn() -> Iterator[str]:
    """One database for every example of the property test (each uses a new instance)."""
    name = f"synced_store_test_{secrets.token_hex(6)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def schema(dsn: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await upgrade(conn)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    dsn = database_dsn(ADMIN_DSN, name)
    try:
        asyncio.run(schema(dsn))
        yield dsn
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=rows_st, queries=st.lists(query_st, min_size=1, max_size=6))
def test_postgres_search_never_shows_a_row_its_user_may_not_see(
    pg_dsn: str, rows: list[tuple[str, str, str, int, bool]], queries: Any
) -> None:
    asyncio.run(_check_visibility(PostgresBackend(pg_dsn, pool_size=2), rows, queries))


async def test_a_common_word_is_answered_from_the_newest_rows(
    store: InstanceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite probes the newest rows first for a common word (sqlite_search.NEWEST_WINDOW);
    the answer is the same as ordering every match."""
    from synced_store.storage import sqlite_search

    await configure(store, SEARCH)

    async def write(tx: WriterTx) -> None:
        for i in range(60):
            ns = ("", "u:alice", "u:bob", "s")[i % 4]
            text = "apple pie" if i % 3 else "apple tart"
            at: Any = None if i % 7 == 0 else i // 2  # ties, and rows without a stamp
            await tx.write(key(f"r{i:02d}", ns=ns), "", orjson.dumps(msg(text, at)), 1)

    await in_tx(store, write, bump=True)
    for words, limit in [(["apple"], 5), (["apple"], 20), (["tart"], 3), (["apple", "pie"], 15)]:
        probed = await found(store, words, ("", "u:alice"), limit=limit)
        monkeypatch.setattr(sqlite_search, "NEWEST_WINDOW", 0)
        sorted_ = await found(store, words, ("", "u:alice"), limit=limit)
        monkeypatch.undo()
        assert probed == sorted_, (words, limit)
        assert len(probed) == limit


async def test_db_copy_to_postgres_copies_rows_and_the_server_indexes_them(
    tmp_path: Path,
) -> None:
    """``db copy`` copies no index: the copy is indexed when it is first configured (opened by
    a server); ``--replace`` leaves no index of the replaced instance behind."""
    from synced_store.storage.postgres_copy import copy_sqlite_instance
    from synced_store.testing.postgres import temporary_database

    src_storage = SqliteBackend(tmp_path)
    await src_storage.start()
    src = await src_storage.open_instance("room")
    await configure(src, SEARCH)
    await put(src, "a", msg("copied words", 1))
    await src.close()
    await src_storage.close()
    async with temporary_database() as dsn:
        pg = PostgresBackend(dsn, pool_size=2)
        await pg.start()
        try:
            await copy_sqlite_instance(src_storage.path("room"), "room", pg)
            store = await pg.open_instance("room", create=False)
            assert await found(store, ["copied"]) == []
            assert await configure(store, SEARCH) == ["t"]
            assert await found(store, ["copied"]) == ["a"]
            await store.close()
            await copy_sqlite_instance(src_storage.path("room"), "room", pg, replace=True)
            async with pg.connection() as conn:
                assert await conn.fetchval("SELECT count(*) FROM synced_store.search_docs") == 0
                assert await conn.fetchval("SELECT count(*) FROM synced_store.search_tables") == 0
        finally:
            await pg.close()


async def test_db_upgrade_from_layout_1_adds_the_index_to_a_database_with_data() -> None:
    """A database of layout 1 (before search) upgrades to 2; its rows get indexed when the
    schema declares their table searchable."""
    from synced_store.storage.postgres_schema import STEPS, STORAGE_VERSION
    from synced_store.testing.postgres import temporary_database

    async with temporary_database(schema=False) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(STEPS[0])
            await conn.execute("INSERT INTO synced_store.meta VALUES ('storage_version', 1)")
            await conn.execute("INSERT INTO synced_store.instances (id, version) VALUES ('r', 1)")
            await conn.execute(
                "INSERT INTO synced_store.rows VALUES "
                "((SELECT key FROM synced_store.instances), '', 't', 'a', '', $1, 1, false)",
                orjson.dumps(msg("older words", 1)).decode(),
            )
            assert await upgrade(conn) == (1, STORAGE_VERSION)
        finally:
            await conn.close()
        pg = PostgresBackend(dsn, pool_size=2)
        await pg.start()
        try:
            store = await pg.open_instance("r", create=False)
            assert await configure(store, SEARCH) == ["t"]
            assert await found(store, ["older"]) == ["a"]
            await store.close()
        finally:
            await pg.close()
