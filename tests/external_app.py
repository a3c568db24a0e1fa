"""The app of the cross-instance tests: rooms that register in a lobby with
``mutate_external`` and read it with ``external_store``.

Importable as ``external_app:backend`` by server subprocesses (tests dir on PYTHONPATH).
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

from synced_store import define_backend_config, define_schema, table


class Room(BaseModel):
    id: str
    title: str
    source: dict[str, Any] | None = None
    is_system: bool | None = None


class Note(BaseModel):
    text: str


class Count(BaseModel):
    n: int


class AddRoom(BaseModel):
    id: str
    title: str


class CreateRoom(BaseModel):
    lobby: str
    id: str
    title: str
    times: int = 1
    mutator: str = "addRoom"
    fail: bool = False


class Lobby(BaseModel):
    lobby: str


class NoteIn(BaseModel):
    key: str
    text: str
    private: bool = False
    secret: bool = False


class Boom(BaseModel):
    id: str


class FromAction(BaseModel):
    lobby: str
    id: str


schema = define_schema(
    schema_version=1,
    tables={"rooms": table(Room), "notes": table(Note), "counts": table(Count)},
    mutators={
        "addRoom": {"input": AddRoom},
        "createRoom": {"input": CreateRoom},
        "readLobby": {"input": Lobby},
        "setNote": {"input": NoteIn},
        "explode": {"input": Boom},
        "chain": {"input": Lobby},
        "slowRoom": {"input": AddRoom},
    },
    actions={
        "registerFromAction": {"input": FromAction, "output": dict[str, Any]},
        "park": {"input": Lobby, "output": dict[str, Any]},
        "registerFlaky": {"input": FromAction, "output": dict[str, Any]},
    },
)


async def add_room(ctx: Any, input: AddRoom) -> None:
    """In the lobby: one row per room, and a counter of applications (exactly once)."""
    row = {**input.model_dump(), "source": ctx.source, "is_system": ctx.is_system}
    await ctx.table("rooms").set(input.id, row)
    n = await ctx.table("counts").get("rooms")
    await ctx.table("counts").set("rooms", {"n": (n["n"] if n else 0) + 1})


async def create_room(ctx: Any, input: CreateRoom) -> None:
    await ctx.table("notes").set("created", {"text": input.title})
    for i in range(input.times):
        rid = input.id if input.times == 1 else f"{input.id}-{i}"
        args: dict[str, Any] = {"id": rid, "title": input.title}
        if input.mutator == "explode":
            args = {"id": rid}
        elif input.mutator == "chain":
            args = {"lobby": input.lobby}
        await ctx.mutate_external(input.lobby, input.mutator, args)
    if input.fail and ctx.is_server:
        raise ValueError("the caller fails after mutate_external")


async def read_lobby_impl(ctx: Any, input: Lobby) -> None:
    """Record what this user sees of the lobby (server pass only: a client pass sees nothing)."""
    ext = ctx.external_store(input.lobby)
    rooms = [k.item_key for k in await ext.table("rooms").keys()]
    public = [k.item_key for k in await ext.table("notes").keys()]
    mine = [k.item_key for k in await ext.private_of_user(ctx.user_id).table("notes").keys()]
    refused = []
    for what, fn in (
        ("other", lambda: ext.private_of_user("bob" if ctx.user_id != "bob" else "alice")),
        ("server", lambda: ext.server_only()),
    ):
        try:
            fn()
        except Exception as exc:
            refused.append(f"{what}:{type(exc).__name__}")
    seen = {"rooms": rooms, "public": public, "mine": mine, "refused": refused}
    key = "seen-server" if ctx.is_server else "seen-client"
    await ctx.private_of_user(ctx.user_id).table("notes").set(key, {"text": repr(seen)})


async def set_note(ctx: Any, input: NoteIn) -> None:
    if input.secret:
        if ctx.is_server:
            await ctx.server_only().table("notes").set(input.key, {"text": input.text})
    elif input.private:
        await ctx.private_of_user(ctx.user_id).table("notes").set(input.key, {"text": input.text})
    else:
        await ctx.table("notes").set(input.key, {"text": input.text})


async def explode(ctx: Any, input: Boom) -> None:
    await ctx.table("notes").set(input.id, {"text": "never committed"})
    if ctx.is_server:
        raise RuntimeError(f"explode {input.id}")


async def chain(ctx: Any, input: Lobby) -> None:
    await ctx.mutate_external(input.lobby, "addRoom", {"id": "chained", "title": "x"})


async def register_from_action(ctx: Any, input: FromAction) -> dict[str, Any]:
    rooms = await ctx.external_store(input.lobby).table("rooms").keys()
    await ctx.mutate_external(input.lobby, "addRoom", {"id": input.id, "title": "from action"})
    return {"rooms_before": len(rooms)}


#: Set by a test: the ``park`` action waits until it is set (a job that stays unfinished).
PARK: asyncio.Event | None = None


async def park(ctx: Any, input: Lobby) -> dict[str, Any]:
    if PARK is not None:
        await PARK.wait()
    return {}


#: Seconds ``slowRoom`` takes on the server (longer than a test's delivery timeout).
SLOW = 0.3


async def slow_room(ctx: Any, input: AddRoom) -> None:
    """``addRoom`` that takes ``SLOW`` seconds on the server (it holds the writer)."""
    if ctx.is_server:
        await asyncio.sleep(SLOW)
    await add_room(ctx, input)


#: Attempts of ``registerFlaky`` that fail after their ``mutate_external`` (then it succeeds).
FLAKY_FAILURES = [0]


async def register_flaky(ctx: Any, input: FromAction) -> dict[str, Any]:
    await ctx.mutate_external(input.lobby, "addRoom", {"id": input.id, "title": "flaky"})
    if FLAKY_FAILURES[0] > 0:
        FLAKY_FAILURES[0] -= 1
        raise RuntimeError("flaky action fails after its mutate_external")
    return {}


MUTATORS = {
    "addRoom": add_room,
    "createRoom": create_room,
    "readLobby": read_lobby_impl,
    "setNote": set_note,
    "explode": explode,
    "chain": chain,
    "slowRoom": slow_room,
}
ACTIONS = {
    "registerFromAction": register_from_action,
    "park": park,
    "registerFlaky": register_flaky,
}

backend = define_backend_config(schema=schema, mutators=MUTATORS, actions=ACTIONS)
#: The same app where only an instance's members may open it.
members_backend = define_backend_config(schema, MUTATORS, ACTIONS, members_only=True)


async def on_init(ctx: Any) -> None:
    """Records who created the instance, and whether rooms were there before (none)."""
    rooms = await ctx.table("rooms").keys()
    text = f"{ctx.user_id} {len(rooms)} {ctx.is_system}"
    await ctx.table("notes").set("init", {"text": text})


#: The same app with an ``on_init`` hook.
hooks_backend = define_backend_config(schema, MUTATORS, ACTIONS, hooks={"on_init": on_init})
