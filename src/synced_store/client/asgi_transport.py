"""A connector to an ASGI app in the same process: the sync endpoint without a socket.

The server uses it to be a client of itself, for example the MCP endpoint feeding resource
subscriptions from a store's own subscriptions. Frames go through the app exactly as over a
WebSocket (handshake, authentication, authorization, rate limits), only the network is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from ..errors import ConnectionLost

__all__ = ["AsgiConnector"]

#: Seconds :meth:`_AsgiConnection.close` waits for the app to finish before cancelling it.
CLOSE_TIMEOUT = 2.0


class _AsgiConnection:
    def __init__(self) -> None:
        self._to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.accepted = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self._connected = False
        self.lost: ConnectionLost | None = None

    # -- the app's side ----------------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        if not self._connected:
            self._connected = True
            return {"type": "websocket.connect"}
        return await self._to_app.get()

    async def send(self, message: dict[str, Any]) -> None:
        t = message["type"]
        if t == "websocket.accept":
            self.accepted.set()
        elif t == "websocket.send":
            frame = message.get("text")
            if frame is None:
                frame = message.get("bytes") or b""
            self._from_app.put_nowait({"frame": frame})
        elif t == "websocket.close":
            self._end(ConnectionLost(int(message.get("code", 1000)), message.get("reason") or ""))
        elif t == "websocket.http.response.start":  # a refusal before the upgrade
            self._end(ConnectionLost(1006, f"handshake refused: HTTP {message.get('status')}"))

    def _end(self, lost: ConnectionLost) -> None:
        if self.lost is None:
            self.lost = lost
            self._from_app.put_nowait({"lost": lost})
            self.accepted.set()

    def app_done(self, task: asyncio.Task[None]) -> None:
        exc = None if task.cancelled() else task.exception()
        self._end(ConnectionLost(1006, f"the app failed: {exc!r}" if exc else "no close frame"))

    # -- the client's side (client.transport.Connection) -------------------------------------

    async def send_frame(self, frame: bytes) -> None:
        if self.lost is not None:
            raise self.lost
        self._to_app.put_nowait({"type": "websocket.receive", "text": frame.decode()})

    async def recv(self) -> str | bytes:
        msg = await self._from_app.get()
        if "lost" in msg:
            self._from_app.put_nowait(msg)  # every later recv raises too
            raise msg["lost"]
        frame: str | bytes = msg["frame"]
        return frame

    async def close(self) -> None:
        if self.lost is None:
            self._to_app.put_nowait({"type": "websocket.disconnect", "code": 1000})
            self._end(ConnectionLost(1000, "closed by the client"))
        task = self.task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), CLOSE_TIMEOUT)
            except (TimeoutError, Exception):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task


class _Connection:
    """The :class:`~synced_store.client.transport.Connection` over an :class:`_AsgiConnection`."""

    def __init__(self, conn: _AsgiConnection) -> None:
        self._conn = conn

    async def send(self, frame: bytes) -> None:
        """Send a frame (UTF-8 JSON) to the app as a text message."""
        await self._conn.send_frame(frame)

    async def recv(self) -> str | bytes:
        """The app's next frame."""
        return await self._conn.recv()

    async def close(self) -> None:
        """Disconnect (the app sees the client go away)."""
        await self._conn.close()


class AsgiConnector:
    """Opens WebSocket sessions on ``app`` at ``path`` (``/sync/{instance_id}``), in process.

    ``headers`` are sent with the handshake (lower-case names). The app must be running (its
    lifespan started).
    """

    def __init__(self, app: Any, path: str, *, headers: Sequence[tuple[str, str]] = ()) -> None:
        self.app = app
        self.path = path
        self.headers = [(k.lower().encode(), v.encode()) for k, v in headers]

    async def connect(self) -> _Connection:
        """Run the app's WebSocket route in a task; return once it accepted."""
        conn = _AsgiConnection()
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "ws",
            "path": self.path,
            "raw_path": self.path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": self.headers,
            "client": ("127.0.0.1", 0),
            "server": ("127.0.0.1", 0),
            "subprotocols": [],
            "extensions": {},
        }
        conn.task = asyncio.get_running_loop().create_task(
            self.app(scope, conn.receive, conn.send), name="synced-store-asgi-client"
        )
        conn.task.add_done_callback(conn.app_done)
        await conn.accepted.wait()
        if conn.lost is not None:
            await conn.close()
            raise conn.lost
        return _Connection(conn)
