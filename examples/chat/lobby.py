"""The lobby: an instance (``"lobby"``) whose ``rooms`` table lists the chat rooms.

A room registers itself on its first message: with ``make_backend(lobby=True)`` (the demo's
backend) ``sendMessage`` is :func:`send_message_listed`, which also calls :func:`register_room`:
on the server, ``ctx.mutate_external("lobby", "addRoom", ...)`` once per room (a server-only
marker row remembers it). The lobby's ``addRoom`` takes the room's id from
``ctx.source`` (the instance the call came from), so a client cannot add rooms by hand.
Clients list the rooms with ``store.external_store("lobby")`` (the terminal's ``/rooms``).

Shared with the browser (Pyodide): imports only the standard library, pydantic and synced_store.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from synced_store.errors import PermissionDeniedError

__all__ = [
    "LOBBY",
    "AddRoomInput",
    "Room",
    "RoomMarker",
    "add_room",
    "register_room",
    "send_message_listed",
]

#: The instance id of the lobby.
LOBBY = "lobby"
#: The server-only row (table ``roomMeta``) of a room that says it is in the lobby.
_MARKER = "inLobby"


class Room(BaseModel):
    """A row of the lobby's ``rooms`` (keyed by the room's instance id)."""

    id: str
    createdBy: str
    firstMessage: str


class RoomMarker(BaseModel):
    """A server-only row of ``roomMeta`` in a room: it was added to the lobby."""

    lobby: str


class AddRoomInput(BaseModel):
    """``addRoom`` (delivered to the lobby by a room): a preview of its first message."""

    firstMessage: str = Field(max_length=200)


async def register_room(ctx: Any, first_message: str) -> None:
    """Add this room to the lobby's rooms, once. A server effect (nothing on a client pass);
    the lobby itself is not listed."""
    if not ctx.is_server or ctx.source.get("type") == "external-store":
        return
    meta = ctx.server_only().table("roomMeta")
    if await meta.has(_MARKER):
        return
    await meta.set(_MARKER, {"lobby": LOBBY})
    await ctx.mutate_external(LOBBY, "addRoom", {"firstMessage": first_message[:200]})


async def add_room(ctx: Any, input: AddRoomInput) -> None:
    """In the lobby: list the room the call came from (once)."""
    room = (ctx.source.get("store") or {}).get("instance_id")
    if ctx.source.get("type") != "external-store" or not isinstance(room, str):
        raise PermissionDeniedError("addRoom is sent by a room (mutate_external), not by clients")
    if room == LOBBY or await ctx.table("rooms").has(room):
        return
    row = {"id": room, "createdBy": ctx.user_id, "firstMessage": input.firstMessage}
    await ctx.table("rooms").set(room, row)


async def send_message_listed(ctx: Any, input: Any) -> None:
    """``sendMessage``, and the room is listed in the lobby (:func:`register_room`)."""
    from .mutators import send_message  # mutators.py imports this module

    await send_message(ctx, input)
    await register_room(ctx, input.text)
