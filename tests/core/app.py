"""A small app and helpers for the sans-I/O core tests (no server, no network).

``make_app()`` returns a fresh backend whose mutators count their invocations per
``(mutator, key)`` and read a ``flags`` dict, so tests can tell which mutations re-ran on rebase
and make a mutator fail on demand.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from synced_store import define_backend_config, define_schema, item, singleton_table, table
from synced_store.core.client_engine import ClientEngine
from synced_store.core.readset import ReadSet
from synced_store.core.store import MemoryStore
from synced_store.protocol.codec import frame_json
from synced_store.schema import BackendConfig
from synced_store.types import EntryKey, RowKey


class CounterRow(BaseModel):
    value: int


class Item(BaseModel):
    text: str


class Theme(BaseModel):
    name: str


class Inc(BaseModel):
    key: str
    amount: int = 1


class SetCounter(BaseModel):
    key: str
    value: int


class SetItem(BaseModel):
    id: str
    text: str
    sk: str = ""


class Id(BaseModel):
    id: str


class Key(BaseModel):
    key: str


class Append(BaseModel):
    id: str
    suffix: str


class Top(BaseModel):
    key: str
    limit: int = 2


class NotifyIn(BaseModel):
    msg: str


class NotifyOut(BaseModel):
    ok: bool


schema = define_schema(
    schema_version=3,
    tables={
        "counters": {"schema": table(CounterRow)},
        "items": table(Item),
        "any": table(),
        "settings": singleton_table(item("theme", Theme), item("count", int)),
    },
    mutators={
        "increment": {"description": "counter += amount", "input": Inc},
        "setCounter": {"input": SetCounter},
        "setItem": {"input": SetItem},
        "deleteItem": {"input": Id},
        "appendText": {"input": Append},
        "flaky": {"description": "reads key, raises while flags['fail']", "input": Key},
        "sleeper": {"description": "writes, then awaits real I/O", "input": Key},
        "enqueue": {"input": NotifyIn},
        "copyTop": {"description": "any[key] = ids of the first `limit` items", "input": Top},
    },
    actions={"notify": {"input": NotifyIn, "output": NotifyOut}},
)


@dataclass
class App:
    backend: BackendConfig
    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    flags: dict[str, bool] = field(default_factory=dict)


def make_app() -> App:
    calls: Counter[tuple[str, str]] = Counter()
    flags: dict[str, bool] = {}

    async def increment(ctx: Any, inp: Inc) -> None:
        calls["increment", inp.key] += 1
        t = ctx.table("counters")
        cur = await t.get(inp.key)
        await t.set(inp.key, {"value": (cur["value"] if cur else 0) + inp.amount})

    async def set_counter(ctx: Any, inp: SetCounter) -> None:
        calls["setCounter", inp.key] += 1
        await ctx.table("counters").set(inp.key, {"value": inp.value})

    async def set_item(ctx: Any, inp: SetItem) -> None:
        calls["setItem", inp.id] += 1
        await ctx.table("items").set(inp.id, {"text": inp.text}, sort_key=inp.sk)

    async def delete_item(ctx: Any, inp: Id) -> None:
        calls["deleteItem", inp.id] += 1
        await ctx.table("items").delete(inp.id)

    async def append_text(ctx: Any, inp: Append) -> None:
        calls["appendText", inp.id] += 1
        t = ctx.table("items")
        cur = await t.get(inp.id)
        if cur is not None:
            await t.set(inp.id, {"text": cur["text"] + inp.suffix})

    async def flaky(ctx: Any, inp: Key) -> None:
        calls["flaky", inp.key] += 1
        t = ctx.table("counters")
        cur = await t.get(inp.key)
        await t.set(inp.key + "-flaky", {"value": (cur["value"] if cur else 0) * 100})
        if flags.get("fail"):
            raise RuntimeError("flaky mutator failed")

    async def sleeper(ctx: Any, inp: Key) -> None:
        calls["sleeper", inp.key] += 1
        await ctx.table("counters").set(inp.key, {"value": 42})
        await asyncio.sleep(0.01)

    async def enqueue(ctx: Any, inp: NotifyIn) -> None:
        ctx.enqueue_action("notify", {"msg": inp.msg})

    async def copy_top(ctx: Any, inp: Top) -> None:
        calls["copyTop", inp.key] += 1
        keys = await ctx.table("items").scan(limit=inp.limit).keys()
        await ctx.table("any").set(inp.key, [k.item_key for k in keys])

    async def notify(ctx: Any, inp: NotifyIn) -> dict[str, Any]:
        return {"ok": True}

    backend = define_backend_config(
        schema=schema,
        mutators={
            "increment": increment,
            "setCounter": set_counter,
            "setItem": set_item,
            "deleteItem": delete_item,
            "appendText": append_text,
            "flaky": flaky,
            "sleeper": sleeper,
            "enqueue": enqueue,
            "copyTop": copy_top,
        },
        actions={"notify": notify},
    )
    return App(backend=backend, calls=calls, flags=flags)


class MemoryTx:
    """A minimal :class:`~synced_store.core.context.Tx` over a MemoryStore, recording reads."""

    copy_on_read = True

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.store = store if store is not None else MemoryStore()
        self.reads = ReadSet()
        self.encoded: dict[RowKey, bytes] = {}

    def read(self, key: RowKey) -> tuple[str, Any] | None:
        return self.store.get(key)

    def iterate(
        self, ns: str, table: str, start: EntryKey | None, *, exclusive: bool, reverse: bool
    ) -> Iterator[tuple[EntryKey, Any]]:
        return self.store.iterate(ns, table, start, exclusive=exclusive, reverse=reverse)

    def write(self, key: RowKey, sort_key: str, value: Any, encoded: bytes) -> None:
        self.store.put(key, sort_key, value)
        self.encoded[key] = encoded

    def remove(self, key: RowKey) -> None:
        self.store.delete(key)

    def note_point(self, key: RowKey) -> None:
        self.reads.points.add(key)

    def note_range(self, ns: str, table: str, low: EntryKey | None, high: EntryKey | None) -> None:
        self.reads.add_range(ns, table, low, high)


class AsyncMemoryTx:
    """A minimal :class:`~synced_store.core.context.AsyncTx` over a MemoryStore: the server's
    shape (coroutines, scans in pages, no read recording)."""

    copy_on_read = True
    is_async = True

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.store = store if store is not None else MemoryStore()
        #: The ``limit`` of every page a scan asked for.
        self.pages: list[int] = []

    async def read(self, key: RowKey) -> tuple[str, Any] | None:
        return self.store.get(key)

    async def scan(
        self,
        ns: str,
        table: str,
        start: EntryKey | None,
        *,
        exclusive: bool,
        reverse: bool,
        limit: int,
    ) -> list[tuple[EntryKey, Any]]:
        self.pages.append(limit)
        rows = self.store.iterate(ns, table, start, exclusive=exclusive, reverse=reverse)
        return list(itertools.islice(rows, limit))

    async def write(self, key: RowKey, sort_key: str, value: Any, encoded: bytes) -> None:
        self.store.put(key, sort_key, value)

    async def remove(self, key: RowKey) -> None:
        self.store.delete(key)


def pub(table: str, item: str) -> RowKey:
    """The RowKey of a public row."""
    return RowKey("", table, item)


def set_op(table: str, key: str, value: Any, sk: str = "", ns: str = "") -> dict[str, Any]:
    op: dict[str, Any] = {"op": "set", "t": table, "k": key, "v": value}
    if sk:
        op["sk"] = sk
    if ns:
        op["ns"] = ns
    return op


def del_op(table: str, key: str) -> dict[str, Any]:
    return {"op": "del", "t": table, "k": key}


def poke(
    base: int | None,
    cookie: int,
    patch: list[dict[str, Any]],
    lmid: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "poke", "base_cookie": base, "cookie": cookie, "patch": patch}
    if lmid is not None:
        msg["last_mutation_id"] = lmid
    msg.update(extra)
    return msg


def feed(engine: ClientEngine, msg: Any) -> None:
    """Hand the engine a server message written as a dict (a ``connected`` gets the fields
    a test does not care about)."""
    if isinstance(msg, dict) and msg.get("type") == "connected":
        msg = {
            "client_id": engine.client_id,
            "user_id": engine.user_id,
            "instance_id": "test",
            "schema_version": engine.schema.schema_version,
            **msg,
        }
    engine.receive(json.dumps(msg))


def sent(engine: ClientEngine) -> list[Any]:
    """The frames the engine wants to send, as dicts (the list is cleared)."""
    return [frame_json(f) for f in engine.frames_to_send()]


def connected_engine(
    app: App, *, user_id: str = "alice", rows: list[dict[str, Any]] | None = None
) -> ClientEngine:
    """An engine that is connected and has received a first snapshot (cookie 1)."""
    engine = ClientEngine(app.backend, user_id=user_id, client_id="c1")
    feed(engine, {"type": "connected", "last_mutation_id": 0})
    feed(engine, poke(None, 1, rows or [], 0))
    assert sent(engine) == []
    engine.events_received()
    return engine
