"""Searchable tables through a real server and clients: the index follows every write in the
writer's transaction, ``store.search`` and ``ctx.search`` see what a pull would, hostile
queries get clear errors (server/search.py, storage/sqlite_search.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from synced_store import (
    ActionError,
    MutationFailedError,
    UnknownNameError,
    ValidationError,
    define_backend_config,
    define_migration,
    define_schema,
    table,
)
from synced_store.core.search import MAX_LIMIT, MAX_QUERY_CHARS, MAX_TERMS
from synced_store.testing import create_test_harness

pytestmark = pytest.mark.e2e


class Message(BaseModel):
    text: str
    createdAt: float = 0


class Send(BaseModel):
    id: str
    text: str
    at: float = 0
    where: str = "public"  # public | private | server | other:<user>
    fail: bool = False


class Key(BaseModel):
    id: str


class Find(BaseModel):
    query: str
    limit: int = 20


class Found(BaseModel):
    keys: list[str]


TABLES = {
    "messages": table(Message, searchable={"text_field": "text", "timestamp_field": "createdAt"})
}


async def send(ctx: Any, m: Send) -> None:
    value = {"text": m.text, "createdAt": m.at}
    if m.where == "public":
        t = ctx.table("messages")
    elif m.where == "private":
        t = ctx.private_of_user(ctx.user_id).table("messages")
    elif not ctx.is_server:
        return
    elif m.where == "server":
        t = ctx.server_only().table("messages")
    else:
        t = ctx.private_of_user(m.where.removeprefix("other:")).table("messages")
    await t.set(m.id, value)
    if m.fail and ctx.is_server:  # the client's optimistic pass keeps it
        raise ValueError("refused after writing")


async def remove(ctx: Any, k: Key) -> None:
    await ctx.table("messages").delete(k.id)


async def find(ctx: Any, f: Find) -> dict[str, Any]:
    hits = await ctx.search("messages", f.query, limit=f.limit)
    return {"keys": [h["key"] for h in hits]}


schema = define_schema(
    1,
    tables=TABLES,
    mutators={"send": {"input": Send}, "remove": {"input": Key}},
    actions={"find": {"input": Find, "output": Found}},
)
backend = define_backend_config(schema, {"send": send, "remove": remove}, {"find": find})


def keys(hits: list[dict[str, Any]]) -> list[str]:
    return [h["key"] for h in hits]


def indexed(path: Path) -> dict[str, str]:
    """What the instance file's index holds: ``{item: text}``."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT d.item, f.body FROM search_docs d JOIN search_fts f ON f.rowid = d.id"
        ).fetchall()
    finally:
        conn.close()
    return dict(rows)


async def test_search_sees_what_a_pull_sees_newest_first(tmp_path: Path) -> None:
    async with await create_test_harness(backend, data_dir=tmp_path) as h:
        alice = await h.create_client("alice")
        bob = await h.create_client("bob")
        for i, (where, text) in enumerate(
            [
                ("public", "the quick brown fox"),
                ("public", "a quick Brown dog"),
                ("private", "alice's quick secret"),
                ("server", "server-only quick note"),
                ("other:bob", "a quick note for bob"),
                ("public", "nothing to see here"),
            ]
        ):
            await alice.mutate.send({"id": f"m{i}", "text": text, "at": i, "where": where})
        await alice.wait_for_sync()
        got = await alice.search("messages", "QUICK")
        assert keys(got) == ["m2", "m1", "m0"]  # newest first; not m3 (server), not m4 (bob's)
        assert got[0]["private"] is True
        assert got[1]["private"] is False
        assert got[1]["value"] == {"text": "a quick Brown dog", "createdAt": 1.0}
        assert got[1]["score"] is None  # ordered newest first: no relevance score
        assert keys(await bob.search("messages", "quick")) == ["m4", "m1", "m0"]
        assert keys(await alice.search("messages", "quick brown")) == ["m1", "m0"]
        assert keys(await alice.search("messages", "quick", limit=1)) == ["m2"]
        assert await alice.search("messages", "elephant") == []
        # accents and case do not matter; whole words only
        await alice.mutate.send({"id": "m9", "text": "Crème BRÛLÉE", "at": 9})
        await alice.wait_for_sync()
        assert keys(await bob.search("messages", "creme brulee")) == ["m9"]
        assert await bob.search("messages", "brul") == []


async def test_the_index_follows_updates_deletes_and_rollbacks(tmp_path: Path) -> None:
    async with await create_test_harness(backend, data_dir=tmp_path) as h:
        c = await h.create_client("alice")
        await c.mutate.send({"id": "a", "text": "first words"})
        await c.wait_for_sync()
        assert keys(await c.search("messages", "first")) == ["a"]
        await c.mutate.send({"id": "a", "text": "second thoughts"})
        await c.wait_for_sync()
        assert await c.search("messages", "first") == []
        assert keys(await c.search("messages", "second")) == ["a"]
        await c.mutate.remove({"id": "a"})
        await c.wait_for_sync()
        assert await c.search("messages", "second") == []
        h.allowed_errors.append("refused after writing")
        failed = await c.mutate.send({"id": "b", "text": "rolled back", "fail": True})
        with pytest.raises(MutationFailedError, match="refused after writing"):
            await failed.confirmed
        assert await c.search("messages", "rolled") == []
        assert indexed(tmp_path / "test.sqlite3") == {}


async def test_search_from_an_action(tmp_path: Path) -> None:
    async with await create_test_harness(backend, data_dir=tmp_path) as h:
        alice = await h.create_client("alice")
        bob = await h.create_client("bob")
        await alice.mutate.send({"id": "p", "text": "hello world", "at": 1})
        await alice.mutate.send({"id": "s", "text": "hello mine", "at": 2, "where": "private"})
        await alice.wait_for_sync()
        assert await alice.action.find({"query": "hello"}) == {"keys": ["s", "p"]}
        assert await bob.action.find({"query": "hello"}) == {"keys": ["p"]}
        with pytest.raises(ActionError, match="at least one word"):
            await bob.action.find({"query": "***"})


HOSTILE = [
    'quick" OR "brown',
    "quick OR NOT brown",
    "NEAR(quick brown, 2)",
    "text:quick",
    "quick*",
    "^quick",
    "-quick",
    "(quick",
    "quick AND",
    "\x00quick\x00",
    "quick' ; DROP TABLE rows; --",
]


async def test_hostile_queries_are_plain_words(tmp_path: Path) -> None:
    async with await create_test_harness(backend, data_dir=tmp_path) as h:
        c = await h.create_client("alice")
        await c.mutate.send({"id": "a", "text": "quick brown", "at": 1})
        await c.mutate.send({"id": "b", "text": "Quick or not, NEAR the AND", "at": 2})
        await c.wait_for_sync()
        for q in HOSTILE:
            got = keys(await c.search("messages", q))
            assert set(got) <= {"a", "b"}, q
        assert keys(await c.search("messages", "quick OR NOT brown")) == []  # all four words
        assert keys(await c.search("messages", "or not and")) == ["b"]  # operators are words
        assert keys(await c.search("messages", '"quick"')) == ["b", "a"]
        # bad input: a clear error on the client, and the same from the server itself
        for query, limit, match in [
            ("x" * (MAX_QUERY_CHARS + 1), 20, "at most 256 characters"),
            (" ".join(f"w{i}" for i in range(MAX_TERMS + 1)), 20, "at most 16 words"),
            ("", 20, "at least one word"),
            ("*** ---", 20, "at least one word"),
            ("quick", 0, "limit"),
            ("quick", MAX_LIMIT + 1, "limit"),
            ("quick", True, "limit"),
        ]:
            with pytest.raises(ValidationError, match=match):
                await c.search("messages", query, limit)
            with pytest.raises(ActionError, match=match):
                await c._query("$search", {"table": "messages", "query": query, "limit": limit})
        for bad, match in [
            ({"table": "nope", "query": "x"}, "unknown table"),
            ({"table": "messages", "query": 5}, "is a string"),
            ({"table": "messages", "query": "x", "extra": 1}, "takes"),
            ("messages", "takes"),
            ({"table": ["messages"], "query": "x"}, "string"),
        ]:
            with pytest.raises(ActionError, match=match):
                await c._query("$search", bad)
        with pytest.raises(UnknownNameError):
            await c.search("plain", "x")


plain_schema = define_schema(
    1,
    tables={"messages": table(Message), "plain": table(Message)},
    mutators={"send": {"input": Send}, "remove": {"input": Key}},
)
plain_backend = define_backend_config(plain_schema, {"send": send, "remove": remove})
both_schema = define_schema(
    1,
    tables={**TABLES, "plain": table(Message)},
    mutators={"send": {"input": Send}, "remove": {"input": Key}},
    actions={"find": {"input": Find, "output": Found}},
)
both_backend = define_backend_config(both_schema, {"send": send, "remove": remove}, {"find": find})


async def test_an_existing_instance_is_indexed_when_its_table_becomes_searchable(
    tmp_path: Path,
) -> None:
    async with await create_test_harness(plain_backend, data_dir=tmp_path) as h:
        c = await h.create_client("alice")
        await c.mutate.send({"id": "old", "text": "written before search", "at": 1})
        await c.mutate.send({"id": "mine", "text": "private before search", "where": "private"})
        await c.wait_for_sync()
        with pytest.raises(ActionError, match="not searchable"):
            await c._query("$search", {"table": "messages", "query": "before"})
    assert indexed(tmp_path / "test.sqlite3") == {}
    async with await create_test_harness(both_backend, data_dir=tmp_path) as h:
        alice = await h.create_client("alice")
        bob = await h.create_client("bob")
        assert keys(await alice.search("messages", "before")) == ["old", "mine"]
        assert keys(await bob.search("messages", "before")) == ["old"]
        assert await alice.action.find({"query": "search"}) == {"keys": ["old", "mine"]}
        with pytest.raises(ValidationError, match="not searchable"):
            await alice.search("plain", "x")
        with pytest.raises(ActionError, match="not searchable"):
            await alice._query("$search", {"table": "plain", "query": "x"})
    # and a table that stops being searchable loses its entries
    async with await create_test_harness(plain_backend, data_dir=tmp_path) as h:
        await h.create_client("alice")
    assert indexed(tmp_path / "test.sqlite3") == {}


def test_searchable_declarations() -> None:
    from synced_store.errors import SchemaError

    t = table(Message, searchable={"textField": "text"})
    assert t.searchable is not None
    assert t.searchable.timestamp_field is None
    s = define_schema(1, tables={"m": t})
    assert s.tables["m"].searchable == t.searchable
    for bad in [{"text_field": "nope"}, {"text_field": 'te"xt'}, {"text_field": ""}, "text"]:
        with pytest.raises(SchemaError):
            table(Message, searchable=bad)


async def rewrite(ctx: Any) -> None:
    for key, m in await ctx.table("messages").entries():
        await ctx.table("messages").set(key.item_key, {**m, "text": m["text"] + " migrated"})


v2_schema = define_schema(
    2,
    tables=TABLES,
    mutators={"send": {"input": Send}, "remove": {"input": Key}},
    actions={"find": {"input": Find, "output": Found}},
    migrations={"1to2": define_migration(migrate_data=rewrite)},
)
v2_backend = define_backend_config(v2_schema, {"send": send, "remove": remove}, {"find": find})


async def test_rows_a_migration_rewrites_are_reindexed(tmp_path: Path) -> None:
    async with await create_test_harness(backend, data_dir=tmp_path) as h:
        c = await h.create_client("alice")
        await c.mutate.send({"id": "a", "text": "original words", "at": 1})
        await c.wait_for_sync()
    async with await create_test_harness(v2_backend, data_dir=tmp_path) as h:
        c = await h.create_client("alice")
        assert keys(await c.search("messages", "original migrated")) == ["a"]
    assert indexed(tmp_path / "test.sqlite3") == {"a": "original words migrated"}


async def test_ctx_search_in_the_local_runner_follows_the_same_rules() -> None:
    from synced_store.testing import create_local_runner

    runner = create_local_runner(backend, user_id="alice")
    await runner.mutate("send", {"id": "p", "text": "Crème brûlée", "at": 1})
    await runner.mutate("send", {"id": "s", "text": "creme for me", "at": 2, "where": "private"})
    await runner.mutate("send", {"id": "b", "text": "creme", "at": 3, "where": "other:bob"})
    await runner.mutate("send", {"id": "x", "text": "creme", "at": 4, "where": "server"})
    assert await runner.action("find", {"query": "CREME"}) == {"keys": ["s", "p"]}
    assert await runner.action("find", {"query": "creme"}, user_id="bob") == {"keys": ["b", "p"]}
    assert await runner.action("find", {"query": "creme", "limit": 1}) == {"keys": ["s"]}
    with pytest.raises(ValidationError, match="at least one word"):
        await runner.action("find", {"query": "--"})
