"""The test app used across the suite: counters, lists with sort keys, private notes.

Importable as ``appdefs:backend`` by server subprocesses (tests dir on PYTHONPATH).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from synced_store import define_backend_config, define_schema, table


class Counter(BaseModel):
    value: int


class Item(BaseModel):
    id: str
    text: str


class Note(BaseModel):
    text: str


class Inc(BaseModel):
    key: str
    amount: int = 1


class SetValue(BaseModel):
    key: str
    value: int


class Key(BaseModel):
    key: str


class AddItem(BaseModel):
    id: str
    text: str = Field(max_length=2_000_000)


class SumInto(BaseModel):
    prefix: str
    target: str


class NoteIn(BaseModel):
    text: str
    user: str | None = None


class Blob(BaseModel):
    key: str
    data: Any


schema = define_schema(
    schema_version=1,
    tables={
        "counters": {"schema": table(Counter)},
        "items": table(Item),
        "notes": table(Note),
        "blobs": table(),
    },
    mutators={
        "increment": {"description": "add amount to a counter", "input": Inc},
        "setValue": {"input": SetValue},
        "deleteKey": {"input": Key},
        "addItem": {"input": AddItem},
        "sumInto": {"description": "state-dependent: sum counters with a prefix", "input": SumInto},
        "setNote": {"input": NoteIn},
        "serverFails": {"input": Key},
        "alwaysFails": {"input": Key},
        "setBlob": {"input": Blob},
        "markServer": {"input": Key},
    },
)


async def increment(ctx: Any, input: Inc) -> None:
    cur = await ctx.table("counters").get(input.key)
    await ctx.table("counters").set(
        input.key, {"value": (cur["value"] if cur else 0) + input.amount}
    )


async def set_value(ctx: Any, input: SetValue) -> None:
    await ctx.table("counters").set(input.key, {"value": input.value})


async def delete_key(ctx: Any, input: Key) -> None:
    await ctx.table("counters").delete(input.key)


async def add_item(ctx: Any, input: AddItem) -> None:
    sk = await ctx.get_next_sort_key("items")
    await ctx.table("items").set(input.id, {"id": input.id, "text": input.text}, sort_key=sk)


async def sum_into(ctx: Any, input: SumInto) -> None:
    total = 0
    for key, value in await ctx.table("counters").scan(prefix=input.prefix).entries():
        if key.item_key != input.target:
            total += value["value"]
    await ctx.table("counters").set(input.target, {"value": total})


async def set_note(ctx: Any, input: NoteIn) -> None:
    user = input.user or ctx.user_id
    await ctx.private_of_user(user).table("notes").set("note", {"text": input.text})


async def server_fails(ctx: Any, input: Key) -> None:
    await ctx.table("counters").set(input.key, {"value": -1})
    if ctx.is_server:
        raise RuntimeError("rejected by the server")


async def always_fails(ctx: Any, input: Key) -> None:
    raise ValueError("bad call")


async def set_blob(ctx: Any, input: Blob) -> None:
    await ctx.table("blobs").set(input.key, input.data)


async def mark_server(ctx: Any, input: Key) -> None:
    """Optimistic value 1, server-verified value 2 (spec: optimistic vs server-verified)."""
    await ctx.table("counters").set(input.key, {"value": 2 if ctx.is_server else 1})
    if ctx.is_server:
        await ctx.server_only().table("counters").set(input.key, {"value": 99})


backend = define_backend_config(
    schema=schema,
    mutators={
        "increment": increment,
        "setValue": set_value,
        "deleteKey": delete_key,
        "addItem": add_item,
        "sumInto": sum_into,
        "setNote": set_note,
        "serverFails": server_fails,
        "alwaysFails": always_fails,
        "setBlob": set_blob,
        "markServer": mark_server,
    },
)


async def get_counter(ctx: Any, key: str) -> int | None:
    v = await ctx.table("counters").get(key)
    return None if v is None else int(v["value"])
