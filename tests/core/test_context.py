"""Mutation and read contexts, and table handles, over a tiny in-memory Tx."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from synced_store import (
    EntryKey,
    KeyTooLargeError,
    MutatorError,
    PermissionDeniedError,
    UnknownNameError,
    ValidationError,
    ValueTooLargeError,
)
from synced_store.core import context
from synced_store.core.context import MutationContext, ReadContext, copy_json, run_sync
from synced_store.core.keys import MAX_KEY_BYTES, MAX_VALUE_BYTES
from synced_store.types import RowKey

from .app import (
    AsyncMemoryTx,
    CounterRow,
    MemoryTx,
    connected_engine,
    make_app,
    pub,
    schema,
    sent,
)


@pytest.fixture
def tx() -> MemoryTx:
    return MemoryTx()


@pytest.fixture
def ctx(tx: MemoryTx) -> MutationContext:
    return MutationContext(schema, tx, "alice", is_server=False)


@pytest.fixture
def server_ctx(tx: MemoryTx) -> MutationContext:
    return MutationContext(schema, tx, "alice", is_server=True)


@pytest.fixture(params=["sync", "async"])
def scan_ctx(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> MutationContext:
    """A client's context over a synchronous Tx, or the server's over an asynchronous one
    that is read in pages of 2 rows (so every scan below spans several pages)."""
    if request.param == "sync":
        return MutationContext(schema, MemoryTx(), "alice", is_server=False)
    monkeypatch.setattr(context, "SCAN_PAGE", 2)
    return MutationContext(schema, AsyncMemoryTx(), "alice", is_server=True)


async def fill_items(ctx: MutationContext) -> None:
    """Items in scan order: (a1,'') (b1,'') (a2,'s1') (b2,'s1') (a3,'s2') (c1,'t1')."""
    t = ctx.table("items")
    for ik, sk in [("a3", "s2"), ("b2", "s1"), ("c1", "t1"), ("a1", ""), ("a2", "s1"), ("b1", "")]:
        await t.set(ik, {"text": ik}, sort_key=sk)


# -- get / has / set / delete -----------------------------------------------------------------


async def test_get_has_set_delete(ctx: MutationContext, tx: MemoryTx) -> None:
    t = ctx.table("counters")
    assert await t.get("a") is None
    assert not await t.has("a")
    await t.set("a", {"value": 1})
    assert await t.get("a") == {"value": 1}
    assert await t.has("a")
    assert tx.store.get(pub("counters", "a")) == ("", {"value": 1})
    assert tx.encoded[pub("counters", "a")] == b'{"value":1}'
    await t.delete("a")
    assert await t.get("a") is None
    assert not await t.has("a")
    await t.delete("a")  # absent: no error


async def test_reads_are_recorded(ctx: MutationContext, tx: MemoryTx) -> None:
    t = ctx.table("counters")
    await t.get("a")
    await t.has("b")
    assert tx.reads.points == {pub("counters", "a"), pub("counters", "b")}


@pytest.mark.parametrize(
    ("call", "expected_sk"),
    [
        (lambda t: t.set("k", {"text": "v"}), ""),
        (lambda t: t.set("k", {"text": "v"}, sort_key="s"), "s"),
        (lambda t: t.set(EntryKey("s", "k"), {"text": "v"}), "s"),
        (lambda t: t.set(EntryKey("s", "k"), {"text": "v"}, sort_key="o"), "o"),
        (lambda t: t.set({"item_key": "k", "value": {"text": "v"}}), ""),
        (lambda t: t.set({"item_key": "k", "value": {"text": "v"}, "sort_key": "s"}), "s"),
        (lambda t: t.set({"itemKey": "k", "value": {"text": "v"}, "sortKey": "s"}), "s"),
        (lambda t: t.set({"itemKey": "k", "value": {"text": "v"}}, sort_key="o"), "o"),
    ],
    ids=[
        "positional",
        "sort_key-kw",
        "EntryKey",
        "EntryKey+kw",
        "dict-snake",
        "dict-snake-sk",
        "dict-camel",
        "dict-camel+kw",
    ],
)
async def test_set_call_forms(
    ctx: MutationContext, tx: MemoryTx, call: Any, expected_sk: str
) -> None:
    await call(ctx.table("items"))
    assert tx.store.get(pub("items", "k")) == (expected_sk, {"text": "v"})


async def test_set_accepts_a_model_instance(ctx: MutationContext, tx: MemoryTx) -> None:
    await ctx.table("counters").set("a", CounterRow(value=3))
    assert tx.store.get(pub("counters", "a")) == ("", {"value": 3})


@pytest.mark.parametrize(
    "key",
    ["k", EntryKey("s", "k"), ("s", "k"), {"item_key": "k"}, {"itemKey": "k"}],
    ids=["str", "EntryKey", "tuple", "dict-snake", "dict-camel"],
)
async def test_key_forms_for_get_has_delete(ctx: MutationContext, key: Any) -> None:
    t = ctx.table("items")
    await t.set("k", {"text": "v"}, sort_key="s")
    assert await t.get(key) == {"text": "v"}
    assert await t.has(key)
    await t.delete(key)
    assert not await t.has("k")


@pytest.mark.parametrize("key", [1, None, ("a", "b", "c"), {"item_key": 5}, {"x": "k"}])
async def test_bad_keys_raise_validation_error(ctx: MutationContext, key: Any) -> None:
    with pytest.raises(ValidationError, match="key must be"):
        await ctx.table("items").get(key)


async def test_set_rejects_non_string_keys(ctx: MutationContext) -> None:
    with pytest.raises(ValidationError, match="item key must be a string"):
        await ctx.table("items").set(5, {"text": "v"})
    with pytest.raises(ValidationError, match="sort key must be a string"):
        await ctx.table("items").set("k", {"text": "v"}, sort_key=5)  # type: ignore[arg-type]


async def test_unknown_table(ctx: MutationContext) -> None:
    with pytest.raises(UnknownNameError, match="unknown table 'nope'"):
        ctx.table("nope")


# -- entries / keys / values / scan -----------------------------------------------------------


async def test_entries_keys_values_in_scan_order(scan_ctx: MutationContext) -> None:
    await fill_items(scan_ctx)
    t = scan_ctx.table("items")
    order = ["a1", "b1", "a2", "b2", "a3", "c1"]
    assert [k.item_key for k in await t.keys()] == order
    assert await t.keys() == [
        EntryKey("", "a1"),
        EntryKey("", "b1"),
        EntryKey("s1", "a2"),
        EntryKey("s1", "b2"),
        EntryKey("s2", "a3"),
        EntryKey("t1", "c1"),
    ]
    assert await t.values() == [{"text": k} for k in order]
    assert [(k.item_key, v) for k, v in await t.entries()] == [(k, {"text": k}) for k in order]


def items_of(rows: list[tuple[EntryKey, Any]]) -> list[str]:
    return [k.item_key for k, _ in rows]


@pytest.mark.parametrize(
    ("opts", "expected"),
    [
        ({}, ["a1", "b1", "a2", "b2", "a3", "c1"]),
        ({"prefix": "a"}, ["a1", "a2", "a3"]),
        ({"prefix": "b"}, ["b1", "b2"]),
        ({"prefix": "zz"}, []),
        ({"prefix": {"sort_key": "s"}}, ["a2", "b2", "a3"]),
        ({"prefix": {"sortKey": "s1"}}, ["a2", "b2"]),
        ({"prefix": {"sort_key": "s", "item_key": "b"}}, ["b2"]),
        ({"prefix": {"sortKey": "s", "itemKey": "a"}}, ["a2", "a3"]),
        ({"prefix": {"sort_key": "t"}}, ["c1"]),
        ({"prefix": {"sort_key": "u"}}, []),
        ({"prefix": {"item_key": "c"}}, ["c1"]),
        ({"prefix": {}}, ["a1", "b1", "a2", "b2", "a3", "c1"]),
        ({"limit": 2}, ["a1", "b1"]),
        ({"limit": 0}, []),
        ({"limit": 100}, ["a1", "b1", "a2", "b2", "a3", "c1"]),
        ({"prefix": "a", "limit": 2}, ["a1", "a2"]),
        ({"cursor": EntryKey("s1", "a2")}, ["b2", "a3", "c1"]),  # exclusive
        ({"cursor": ("s1", "a2")}, ["b2", "a3", "c1"]),
        ({"cursor": EntryKey("s1", "a")}, ["a2", "b2", "a3", "c1"]),  # between rows
        ({"cursor": EntryKey("s1", "a2"), "limit": 1}, ["b2"]),
        ({"cursor": EntryKey("s1", "a2"), "prefix": "a"}, ["a3"]),
        ({"reverse": True}, ["c1", "a3", "b2", "a2", "b1", "a1"]),
        ({"reverse": True, "limit": 2}, ["c1", "a3"]),
        ({"reverse": True, "prefix": "b"}, ["b2", "b1"]),
        ({"reverse": True, "prefix": {"sort_key": "s"}}, ["a3", "b2", "a2"]),
        ({"reverse": True, "prefix": {"sort_key": "s1"}, "limit": 1}, ["b2"]),
        ({"reverse": True, "cursor": EntryKey("s1", "b2")}, ["a2", "b1", "a1"]),  # exclusive
        ({"reverse": True, "cursor": EntryKey("s1", "b2"), "limit": 2}, ["a2", "b1"]),
        ({"prefix": {"sort_key": "s"}, "cursor": EntryKey("", "a1")}, ["a2", "b2", "a3"]),
        (
            {"prefix": {"sort_key": "s"}, "cursor": EntryKey("t1", "c1"), "reverse": True},
            ["a3", "b2", "a2"],
        ),
        ({"prefix": {"sort_key": "s"}, "cursor": EntryKey("", "b1"), "reverse": True}, []),
        ({"cursor": "$last"}, []),
        ({"cursor": "$last", "reverse": True}, ["c1", "a3", "b2", "a2", "b1", "a1"]),
        ({"cursor": "$last", "reverse": True, "limit": 1}, ["c1"]),
    ],
)
async def test_scan(scan_ctx: MutationContext, opts: dict[str, Any], expected: list[str]) -> None:
    await fill_items(scan_ctx)
    t = scan_ctx.table("items")
    r = t.scan(**opts)
    entries = await r.entries()
    assert items_of(entries) == expected
    assert [k.item_key for k in await r.keys()] == expected
    assert await r.values() == [{"text": k} for k in expected]
    assert [k.item_key async for k, _ in t.scan(**opts)] == expected


async def test_reverse_sort_key_prefix_scan_sees_every_matching_row(
    scan_ctx: MutationContext,
) -> None:
    t = scan_ctx.table("items")
    for sk in ["s", "s\U0010ffff", "s\U0010ffffz", "t"]:
        await t.set(sk, {"text": sk}, sort_key=sk)
    forward = await t.scan(prefix={"sort_key": "s"}).keys()
    assert [k.sort_key for k in forward] == ["s", "s\U0010ffff", "s\U0010ffffz"]
    backward = await t.scan(prefix={"sort_key": "s"}, reverse=True).keys()
    assert backward == forward[::-1]


async def test_scan_pages_with_cursor_cover_every_row_once(scan_ctx: MutationContext) -> None:
    await fill_items(scan_ctx)
    t = scan_ctx.table("items")
    for reverse in (False, True):
        seen: list[str] = []
        cursor: Any = "$last" if reverse else None
        while True:
            page = await t.scan(limit=2, cursor=cursor, reverse=reverse).entries()
            if not page:
                break
            seen.extend(items_of(page))
            cursor = page[-1][0]
        expected = ["a1", "b1", "a2", "b2", "a3", "c1"]
        assert seen == (expected[::-1] if reverse else expected)


@pytest.mark.parametrize(
    ("opts", "match"),
    [
        ({"limit": -1}, "limit"),
        ({"limit": 1.5}, "limit"),
        ({"cursor": "abc"}, "cursor"),
        ({"cursor": ("a", "b", "c")}, "cursor"),
        ({"prefix": 5}, "prefix"),
    ],
)
async def test_scan_rejects_bad_options(
    scan_ctx: MutationContext, opts: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValidationError, match=match):
        await scan_ctx.table("items").scan(**opts).entries()


async def test_an_async_tx_is_awaited_and_scanned_in_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(context, "SCAN_PAGE", 3)
    tx = AsyncMemoryTx()
    ctx = MutationContext(schema, tx, "alice", is_server=True)
    await fill_items(ctx)
    t = ctx.table("items")
    assert await t.get("a2") == {"text": "a2"}
    assert await t.has("c1")
    await t.delete("c1")
    assert not await t.has("c1")
    tx.pages.clear()
    assert [k.item_key for k in await t.keys()] == ["a1", "b1", "a2", "b2", "a3"]
    assert tx.pages == [3, 3]  # the second page was short: the end
    tx.pages.clear()
    assert items_of(await t.scan(limit=2).entries()) == ["a1", "b1"]
    assert tx.pages == [2]  # never more rows than the limit needs
    tx.pages.clear()
    assert items_of(await t.scan(prefix="b", limit=1).entries()) == ["b1"]
    assert tx.pages == [3]  # an item prefix skips rows: full pages
    assert await ctx.get_next_sort_key("m") == "m/000000000001"
    assert await ctx.get_next_sort_key("m") == "m/000000000002"
    reader = ReadContext(schema, tx, "alice", is_server=True)
    assert await reader.table("items").get("a1") == {"text": "a1"}
    with pytest.raises(PermissionDeniedError):
        await reader.table("items").set("z", {"text": "z"})


async def test_scan_records_the_range_it_depended_on(ctx: MutationContext, tx: MemoryTx) -> None:
    await fill_items(ctx)
    t = ctx.table("items")
    tx.reads = type(tx.reads)()
    await t.scan(limit=2).entries()
    assert tx.reads.ranges == {("", "items"): [(None, EntryKey("", "b1"))]}
    tx.reads = type(tx.reads)()
    await t.scan(reverse=True, limit=2).entries()
    assert tx.reads.ranges == {("", "items"): [(EntryKey("s2", "a3"), None)]}
    tx.reads = type(tx.reads)()
    await t.scan(prefix="a").entries()  # ran to the end: unbounded above
    assert tx.reads.ranges == {("", "items"): [(None, None)]}
    tx.reads = type(tx.reads)()
    await t.scan(prefix={"sort_key": "s1"}).entries()  # stopped at the first row past it
    assert tx.reads.ranges == {("", "items"): [(EntryKey("s1", ""), EntryKey("s2", "a3"))]}


async def test_scans_of_other_namespaces_are_separate(ctx: MutationContext) -> None:
    await fill_items(ctx)
    mine = ctx.private_of_user("alice").table("items")
    await mine.set("p", {"text": "private"})
    assert items_of(await mine.entries()) == ["p"]
    assert "p" not in items_of(await ctx.table("items").entries())


# -- validation, copies, limits -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "value"),
    [
        ("counters", {"value": "not a number"}),
        ("counters", {}),
        ("counters", [1]),
        ("counters", None),
        ("items", {"text": 5}),
        ("any", {"x": object()}),
    ],
)
async def test_set_validates_against_the_model(
    ctx: MutationContext, tx: MemoryTx, table: str, value: Any
) -> None:
    with pytest.raises(ValidationError, match=f"invalid value for {table}/k"):
        await ctx.table(table).set("k", value)
    assert tx.store.count() == 0


async def test_untyped_table_takes_any_json(ctx: MutationContext) -> None:
    t = ctx.table("any")
    for v in [None, 1, 1.5, "s", True, [1, {"a": None}], {"nested": {"x": [1, 2]}}]:
        await t.set("k", v)
        assert await t.get("k") == v


async def test_reads_return_copies(ctx: MutationContext, tx: MemoryTx) -> None:
    t = ctx.table("any")
    await t.set("k", {"list": [1, 2], "obj": {"x": 1}})
    got = await t.get("k")
    got["list"].append(3)
    got["obj"]["x"] = 99
    got["new"] = True
    (await t.values())[0]["list"].append(4)
    (await t.entries())[0][1]["obj"]["y"] = 1
    (await t.scan().values())[0]["new"] = 1
    assert tx.store.get(pub("any", "k")) == ("", {"list": [1, 2], "obj": {"x": 1}})
    assert await t.get("k") == {"list": [1, 2], "obj": {"x": 1}}


async def test_set_stores_a_copy_of_the_value(ctx: MutationContext, tx: MemoryTx) -> None:
    value = {"list": [1, 2], "obj": {"x": 1}}
    await ctx.table("any").set("k", value)
    value["list"].append(3)
    value["obj"]["x"] = 2
    assert tx.store.get(pub("any", "k")) == ("", {"list": [1, 2], "obj": {"x": 1}})
    item = {"text": "v"}
    await ctx.table("items").set("k", item)
    item["text"] = "changed"
    assert await ctx.table("items").get("k") == {"text": "v"}


def test_copy_json_is_deep() -> None:
    v = {"a": [1, {"b": [2]}], "c": "s"}
    c = copy_json(v)
    assert c == v
    c["a"][1]["b"].append(3)
    assert v == {"a": [1, {"b": [2]}], "c": "s"}
    assert copy_json("s") == "s"
    assert copy_json([[1]]) == [[1]]


async def test_key_size_limit(ctx: MutationContext) -> None:
    t = ctx.table("any")  # 3 bytes of table name
    ok = "k" * (MAX_KEY_BYTES - 3)
    await t.set(ok, 1)
    assert await t.get(ok) == 1
    with pytest.raises(KeyTooLargeError, match="longer than 256 bytes"):
        await t.set(ok + "k", 1)
    with pytest.raises(KeyTooLargeError):
        await t.delete(ok + "k")


async def test_key_size_limit_counts_utf8_bytes(ctx: MutationContext) -> None:
    t = ctx.table("any")  # 3 + 3 * 84 = 255 bytes; one more euro sign is 258
    await t.set("€" * 84, 1)
    with pytest.raises(KeyTooLargeError):
        await t.set("€" * 85, 1)
    with pytest.raises(KeyTooLargeError):
        await t.set("€" * 64 + "€" * 21, 1)


async def test_sort_key_size_limit(ctx: MutationContext) -> None:
    t = ctx.table("any")
    await t.set("k", 1, sort_key="s" * MAX_KEY_BYTES)
    with pytest.raises(KeyTooLargeError, match="sort key"):
        await t.set("k", 1, sort_key="s" * (MAX_KEY_BYTES + 1))
    with pytest.raises(KeyTooLargeError, match="sort key"):
        await t.set("k", 1, sort_key="é" * 129)


async def test_value_size_limit(ctx: MutationContext, tx: MemoryTx) -> None:
    t = ctx.table("any")
    exactly = "x" * (MAX_VALUE_BYTES - 2)  # plus two quotes: exactly 1 MiB
    await t.set("k", exactly)
    assert len(tx.encoded[pub("any", "k")]) == MAX_VALUE_BYTES
    with pytest.raises(ValueTooLargeError, match="limit 1048576"):
        await t.set("big", exactly + "x")
    assert not await t.has("big")
    with pytest.raises(ValueTooLargeError):
        await ctx.table("items").set("big", {"text": "x" * MAX_VALUE_BYTES})


# -- singleton tables ---------------------------------------------------------------------------


async def test_singleton_table_items(ctx: MutationContext) -> None:
    t = ctx.table("settings")
    await t.set("theme", {"name": "dark"})
    await t.set("count", 3)
    assert await t.get("theme") == {"name": "dark"}
    assert await t.get("count") == 3
    assert await t.get("other") is None


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("nope", {"name": "dark"}, "no item 'nope'"),
        ("theme", 3, "settings/theme"),
        ("theme", {"name": 1}, "settings/theme"),
        ("count", {"name": "dark"}, "settings/count"),
        ("count", "many", "settings/count"),
    ],
)
async def test_singleton_table_validates_per_key(
    ctx: MutationContext, key: str, value: Any, match: str
) -> None:
    with pytest.raises(ValidationError, match=match):
        await ctx.table("settings").set(key, value)


# -- permissions ---------------------------------------------------------------------------------


async def test_read_context_refuses_writes(tx: MemoryTx) -> None:
    rctx = ReadContext(schema, tx, "alice", is_server=False)
    t = rctx.table("counters")
    with pytest.raises(PermissionDeniedError, match="read-only"):
        await t.set("a", {"value": 1})
    with pytest.raises(PermissionDeniedError, match="read-only"):
        await t.delete("a")
    with pytest.raises(PermissionDeniedError, match="read-only"):
        await rctx.private_of_user("alice").table("counters").set("a", {"value": 1})
    assert await t.get("a") is None
    assert tx.store.count() == 0


async def test_private_rows_of_self(ctx: MutationContext, tx: MemoryTx) -> None:
    await ctx.private_of_user("alice").table("counters").set("a", {"value": 1})
    assert tx.store.get(RowKey("u:alice", "counters", "a")) == ("", {"value": 1})
    assert await ctx.table("counters").get("a") is None


@pytest.mark.parametrize("is_server", [False, True])
@pytest.mark.parametrize("bad", ["", "a/b", "x" * 129])
async def test_private_of_user_rejects_invalid_user_ids(
    tx: MemoryTx, is_server: bool, bad: str
) -> None:
    ctx = MutationContext(schema, tx, "alice", is_server=is_server)
    with pytest.raises(PermissionDeniedError, match="invalid user id"):
        ctx.private_of_user(bad)


async def test_client_may_not_touch_other_users_or_server_rows(ctx: MutationContext) -> None:
    with pytest.raises(PermissionDeniedError, match="'bob'"):
        ctx.private_of_user("bob")
    with pytest.raises(PermissionDeniedError, match="server_only"):
        ctx.server_only()
    rctx = ReadContext(schema, ctx.tx, "alice", is_server=False)
    with pytest.raises(PermissionDeniedError):
        rctx.private_of_user("bob")
    with pytest.raises(PermissionDeniedError):
        rctx.server_only()


async def test_server_may_touch_other_users_and_server_rows(
    server_ctx: MutationContext, tx: MemoryTx
) -> None:
    await server_ctx.private_of_user("bob").table("counters").set("a", {"value": 2})
    await server_ctx.server_only().table("counters").set("a", {"value": 3})
    assert tx.store.get(RowKey("u:bob", "counters", "a")) == ("", {"value": 2})
    assert tx.store.get(RowKey("s", "counters", "a")) == ("", {"value": 3})
    assert await server_ctx.server_only().table("counters").get("a") == {"value": 3}


async def test_context_attributes(ctx: MutationContext, server_ctx: MutationContext) -> None:
    assert ctx.user_id == "alice"
    assert not ctx.is_server
    assert server_ctx.is_server
    assert ctx.source == {"type": "user", "user_id": "alice"}
    other = MutationContext(schema, ctx.tx, "alice", is_server=True, source={"type": "action"})
    assert other.source == {"type": "action"}


def test_platform_call_raises_on_clients(ctx: MutationContext) -> None:
    with pytest.raises(PermissionDeniedError, match=r"platform\.call\('bot\.stream'\)"):
        ctx.platform.call("bot.stream", {})


def test_platform_call_uses_the_given_platform(tx: MemoryTx) -> None:
    class Echo:
        def call(self, name: str, input: Any) -> Any:
            return (name, input)

    ctx = MutationContext(schema, tx, "alice", is_server=True, platform=Echo())
    assert ctx.platform.call("svc", 1) == ("svc", 1)


# -- enqueue_action -----------------------------------------------------------------------------


def test_enqueue_action_is_a_validated_no_op_on_clients(ctx: MutationContext) -> None:
    ctx.enqueue_action("notify", {"msg": "hi"})
    assert ctx.enqueued == []
    with pytest.raises(UnknownNameError, match="unknown action 'nope'"):
        ctx.enqueue_action("nope", {})
    with pytest.raises(ValidationError, match="input for action 'notify'"):
        ctx.enqueue_action("notify", {"msg": 5})
    assert ctx.enqueued == []


def test_enqueue_action_records_jobs_on_the_server(server_ctx: MutationContext) -> None:
    server_ctx.enqueue_action("notify", {"msg": "hi"})
    server_ctx.enqueue_action("notify", {"msg": "again"})
    assert server_ctx.enqueued == [("notify", {"msg": "hi"}), ("notify", {"msg": "again"})]
    with pytest.raises(UnknownNameError):
        server_ctx.enqueue_action("nope", {})
    with pytest.raises(ValidationError):
        server_ctx.enqueue_action("notify", {})
    assert len(server_ctx.enqueued) == 2


# -- get_next_sort_key ---------------------------------------------------------------------------


async def test_get_next_sort_key_increases_and_is_zero_padded(ctx: MutationContext) -> None:
    keys = [await ctx.get_next_sort_key("msgs") for _ in range(12)]
    assert keys[0] == "msgs/000000000001"
    assert keys[11] == "msgs/000000000012"
    assert keys == sorted(keys)
    assert len(set(keys)) == 12
    assert await ctx.get_next_sort_key("other") == "other/000000000001"
    assert await ctx.get_next_sort_key("msgs") == "msgs/000000000013"
    # The counter is an ordinary row; a read-only handle can see it.
    assert await ctx.table("$seq").get("msgs") == 13
    with pytest.raises(PermissionDeniedError):
        await ctx.table("$seq").set("msgs", 1)


async def test_get_next_sort_key_continues_from_the_stored_counter(
    ctx: MutationContext, tx: MemoryTx
) -> None:
    tx.store.put(RowKey("", "$seq", "n"), "", 999)
    assert await ctx.get_next_sort_key("n") == "n/000000001000"
    assert RowKey("", "$seq", "n") in tx.reads.points


@pytest.mark.parametrize("bad", ["", 5, "x" * 65])
async def test_get_next_sort_key_validates_the_namespace(ctx: MutationContext, bad: Any) -> None:
    with pytest.raises(ValidationError, match="namespace"):
        await ctx.get_next_sort_key(bad)


# -- mutators must not do real I/O ------------------------------------------------------------


async def test_mutator_awaiting_real_io_raises_and_leaves_no_writes() -> None:
    app = make_app()
    engine = connected_engine(
        app, rows=[{"op": "set", "t": "counters", "k": "s", "v": {"value": 1}}]
    )
    with pytest.raises(MutatorError, match="awaited something other than a table operation"):
        engine.mutate("sleeper", {"key": "s"})
    assert app.calls["sleeper", "s"] == 1
    assert engine.query(lambda ctx: ctx.table("counters").get("s")) == {"value": 1}
    assert engine.pending == []
    assert engine.next_mutation_id == 1
    assert sent(engine) == []
    assert engine.snapshot_rows() == [(pub("counters", "s"), "", {"value": 1})]


async def test_run_sync() -> None:
    async def fine() -> int:
        return 7

    async def sleeps() -> None:
        await asyncio.sleep(0.01)

    assert run_sync(fine()) == 7
    with pytest.raises(MutatorError):
        run_sync(sleeps())


async def test_query_awaiting_real_io_raises() -> None:
    engine = connected_engine(make_app())

    async def q(ctx: Any) -> None:
        await asyncio.sleep(0)

    with pytest.raises(MutatorError):
        engine.query(q)
