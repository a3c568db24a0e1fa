"""The bare baseline of the streaming benchmark: the least a server can do to deliver a stream.

A raw ASGI app under uvicorn (no Starlette, no storage, no instances, no sessions), with the
same WebSocket implementation and permessage-deflate setting as ``synced-store serve``. It
speaks just enough of the sync protocol for the benchmark's real clients: ``connected`` and an
empty reset poke on connect; when a room's sender pushes its message, the room's "bot" row
(bound to append handle 0) and then, on the same fixed schedule as
:class:`benchmarks.streaming.PacedBot`, one append frame per chunk, built once and sent to
every socket of the room with an ordinary ASGI ``websocket.send``; finally ``complete``.

That is one frame per chunk per client, of the sizes the real server sends in steady state
(a few bytes of envelope around the chunk), through the same transport: the server CPU per
delivered frame it costs is the floor the real server is compared with (docs/benchmarks.md,
"Fan-out"). Run by ``python -m benchmarks.streaming --bare`` (as the server process).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

__all__ = ["BareApp"]

_PLACEHOLDER = {"id": "bot", "text": "", "role": "assistant", "senderId": "bot"}


class _Room:
    def __init__(self) -> None:
        self.sends: list[Any] = []
        self.started = False
        #: The socket that pushed the user's message, and the id it pushed (confirmed to it
        #: in the stream's first poke, as the real server does).
        self.pusher: Any = None
        self.pushed_id = 0


class BareApp:
    """The ASGI app: ``/sync/<room>`` WebSockets; streams ``tokens`` every ``pace`` seconds."""

    def __init__(self, tokens: list[str], pace: float, record_dir: Path) -> None:
        self.tokens = tokens
        self.pace = pace
        self.record_dir = record_dir
        self.rooms: dict[str, _Room] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "websocket":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        room_id = scope["path"].rsplit("/", 1)[-1]
        room = self.rooms.setdefault(room_id, _Room())
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        hello = json.loads((await receive())["text"])
        await _send(
            send,
            {
                "type": "connected",
                "client_id": hello["client_id"],
                "user_id": hello.get("token") or "anonymous",
                "last_mutation_id": 0,
                "instance_id": room_id,
                "schema_version": hello["schema_version"],
            },
        )
        await _send(
            send,
            {
                "type": "poke",
                "final": True,
                "reset": True,
                "base_cookie": None,
                "cookie": 1,
                "last_mutation_id": 0,
                "patch": [],
            },
        )
        room.sends.append(send)
        try:
            while True:
                msg = await receive()
                if msg["type"] == "websocket.disconnect":
                    return
                frame = json.loads(msg.get("text") or msg.get("bytes") or b"{}")
                if frame.get("type") == "push" and not room.started:
                    room.started = True
                    room.pusher = send
                    room.pushed_id = frame["mutations"][-1]["id"]
                    asyncio.get_running_loop().create_task(self._stream(room_id, room))
        finally:
            room.sends.remove(send)

    async def _stream(self, room_id: str, room: _Room) -> None:
        bind = {
            "type": "poke",
            "base_cookie": 1,
            "cookie": 2,
            "patch": [
                {
                    "op": "set",
                    "t": "messages",
                    "k": "bot",
                    "v": {**_PLACEHOLDER, "status": "incomplete"},
                }
            ],
            "bind": [[0, "", "messages", "bot", "text", ""]],
        }
        await self._broadcast(
            room,
            json.dumps(bind, separators=(",", ":")),
            own=json.dumps({**bind, "last_mutation_id": room.pushed_id}, separators=(",", ":")),
            to=room.pusher,
        )
        cookie = 2
        start = time.time()
        times: list[float] = []
        text = ""
        for i, tok in enumerate(self.tokens):
            due = start + (i + 1) * self.pace
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            times.append(due)
            text += tok
            frame = json.dumps([cookie % 10, 1, 0, tok], separators=(",", ":"))
            cookie += 1
            await self._broadcast(room, frame)
        done = {
            "type": "poke",
            "base_cookie": cookie,
            "cookie": cookie + 1,
            "patch": [{"op": "merge", "t": "messages", "k": "bot", "set": {"status": "complete"}}],
        }
        await self._broadcast(room, json.dumps(done, separators=(",", ":")))
        tmp = self.record_dir / f"{room_id}.json.partial"
        tmp.write_text(json.dumps(times))
        tmp.rename(self.record_dir / f"{room_id}.json")

    @staticmethod
    async def _broadcast(room: _Room, text: str, own: str = "", to: Any = None) -> None:
        for send in list(room.sends):
            with contextlib.suppress(Exception):  # the client went away
                await send({"type": "websocket.send", "text": own if send is to else text})


async def _send(send: Any, msg: dict[str, Any]) -> None:
    await send({"type": "websocket.send", "text": json.dumps(msg, separators=(",", ":"))})
