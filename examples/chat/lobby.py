"""The lobby: an instance (``"lobby"``) whose ``rooms`` table lists the chat rooms.

A room lists itself when it is created: the demo's backend (``make_backend(lobby=True)``) has
the ``on_init`` hook :func:`on_room_init`, which runs once per instance, in the transaction
that creates it, and calls ``ctx.mutate_external("lobby", "addRoom", {})`` — an outbox job
committed with it and delivered to the lobby exactly once. The lobby's ``addRoom`` takes the
room's id from ``ctx.source`` (the instance the call came from), so a client cannot add rooms
by hand. Clients list the rooms with ``store.external_store("lobby")`` (the terminal's
``/rooms``). The ``lobby`` instance is itself a chat room (the demo's default); it does not
list itself.

Shared with the browser (Pyodide): imports only the standard library, pydantic and synced_store.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from synced_store.errors import PermissionDeniedError

__all__ = ["LOBBY", "AddRoomInput", "Room", "add_room", "on_room_init"]

#: The instance id of the lobby.
LOBBY = "lobby"


class Room(BaseModel):
    """A row of the lobby's ``rooms`` (keyed by the room's instance id)."""

    id: str
    createdBy: str


class AddRoomInput(BaseModel):
    """``addRoom`` (delivered to the lobby by a room's ``on_init``): no fields; the room is
    ``ctx.source``'s instance and its creator the calling user."""


async def on_room_init(ctx: Any) -> None:
    """The ``on_init`` hook: list the new room in the lobby (a server effect, once)."""
    await ctx.mutate_external(LOBBY, "addRoom", {})


async def add_room(ctx: Any, input: AddRoomInput) -> None:
    """In the lobby: list the room the call came from (once)."""
    room = (ctx.source.get("store") or {}).get("instance_id")
    if ctx.source.get("type") != "external-store" or not isinstance(room, str):
        raise PermissionDeniedError("addRoom is sent by a room (mutate_external), not by clients")
    if room == LOBBY or await ctx.table("rooms").has(room):
        return
    row = {"id": room, "createdBy": ctx.user_id}
    await ctx.table("rooms").set(room, row)
