"""A small app with system hooks and membership options (tests of server/members.py)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from synced_store import define_backend_config, define_schema, table


class Note(BaseModel):
    text: str


class LogRow(BaseModel):
    event: str
    count: int
    is_system: bool
    source: dict[str, Any]
    user_id: str
    users: list[str] = []


class NoteInput(BaseModel):
    id: str
    text: str


class HackInput(BaseModel):
    user_id: str


schema = define_schema(
    schema_version=1,
    tables={"notes": table(Note), "log": table(LogRow)},
    mutators={
        "addNote": {"input": NoteInput},
        "hackUsers": {"input": HackInput},
        "hackUsersOnServer": {"input": HackInput},
    },
)


async def add_note(ctx: Any, input: NoteInput) -> None:
    await ctx.table("notes").set(input.id, {"text": input.text})


async def hack_users(ctx: Any, input: HackInput) -> None:
    await ctx.table("$users").set(input.user_id, {"user_id": input.user_id, "role": "owner"})


async def hack_users_on_server(ctx: Any, input: HackInput) -> None:
    if ctx.is_server:
        await ctx.table("$users").delete(input.user_id)


async def _log(ctx: Any, event: str, users: list[str] | None = None) -> None:
    log = ctx.table("log")
    old = await log.get(event)
    count = (old["count"] if isinstance(old, dict) else 0) + 1
    row = {
        "event": event,
        "count": count,
        "is_system": ctx.is_system,
        "source": dict(ctx.source),
        "user_id": ctx.user_id,
        "users": list(users or []),
    }
    await log.set(event, row)


async def on_init(ctx: Any) -> None:
    await _log(ctx, "init")


async def on_add_users(ctx: Any, user_ids: list[str]) -> None:
    await _log(ctx, "add", user_ids)


async def on_remove_users(ctx: Any, user_ids: list[str]) -> None:
    await _log(ctx, "remove", user_ids)


MUTATORS = {"addNote": add_note, "hackUsers": hack_users, "hackUsersOnServer": hack_users_on_server}
HOOKS = {"on_init": on_init, "on_add_users": on_add_users, "on_remove_users": on_remove_users}

#: Hooks, anyone may open an instance.
backend = define_backend_config(schema, MUTATORS, hooks=HOOKS)
#: Only members open an instance; its creator is the first.
members_only = define_backend_config(schema, MUTATORS, hooks=HOOKS, members_only=True)
#: Every user who connects becomes a member.
auto_join = define_backend_config(schema, MUTATORS, hooks=HOOKS, auto_join=True)
