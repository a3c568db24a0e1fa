"""Schema and mutators: what both sides run (stdlib, pydantic and synced_store only)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from synced_store import define_schema, table


class Item(BaseModel):
    text: str


class AddItem(BaseModel):
    id: str
    text: str


class Done(BaseModel):
    ok: bool


schema = define_schema(
    schema_version=1,
    tables={"items": table(Item)},
    mutators={"addItem": {"input": AddItem}},
    actions={"shout": {"input": AddItem, "output": Done}},
)


async def add_item(ctx: Any, input: AddItem) -> None:
    await ctx.table("items").set(input.id, {"text": input.text})
    ctx.enqueue_action("shout", input)


MUTATORS = {"addItem": add_item}
