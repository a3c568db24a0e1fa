"""The server's config: actions and hooks, which import server-side code."""

from __future__ import annotations

from typing import Any

from synced_store import define_backend_config
from synced_store.server.members import InstanceMembers

from .shared import MUTATORS, AddItem, schema


async def shout(ctx: Any, input: AddItem) -> dict[str, bool]:
    await InstanceMembers(ctx.instance).set_user_info(ctx.user_id, display_name=input.text.upper())
    return {"ok": True}


async def on_init(ctx: Any) -> None:
    await ctx.table("items").set("welcome", {"text": "hello"})


backend = define_backend_config(
    schema, MUTATORS, actions={"shout": shout}, hooks={"on_init": on_init}
)
