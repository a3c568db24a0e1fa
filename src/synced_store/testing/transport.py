"""A controllable network between a client and the real server.

``ControlledConnector`` wraps the real WebSocket connector. Frames in each direction go through a
:class:`MessageQueue`: with auto-flush on (the default) they pass straight through; with it off
they are held until the test flushes, reorders, duplicates or drops them. The transport can also
cut the connection and block reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from ..client.transport import Connection, ConnectionLost, Connector
from ..protocol.codec import frame_json

__all__ = ["ControlledConnector", "ControlledTransport", "MessageQueue", "has_inbound_type"]

#: Called with a parsed frame: a message object, or (server to client) an append frame's list.
Predicate = Callable[[Any], bool]


def has_inbound_type(kind: str) -> Predicate:
    """A predicate matching messages whose ``type`` is ``kind`` (an append frame is a poke)."""

    def match(msg: Any) -> bool:
        if type(msg) is list:
            return kind == "poke"
        return bool(msg.get("type") == kind)

    return match


class MessageQueue:
    """Frames travelling one way. ``queue`` holds the frames not yet delivered (parsed)."""

    def __init__(self, deliver: Callable[[Any], Awaitable[None]]) -> None:
        self._deliver = deliver
        self._held: list[Any] = []
        self.auto_flush = True
        #: Set whenever a frame is held (so pumps can wait for work instead of polling).
        self.arrived = asyncio.Event()

    @property
    def queue(self) -> list[Any]:
        """Held frames, parsed, oldest first."""
        return [frame_json(t) for t in self._held]

    def disable_auto_flush(self) -> None:
        """Hold frames until flushed."""
        self.auto_flush = False

    async def enable_auto_flush(self) -> None:
        """Deliver held frames, then pass frames straight through."""
        self.auto_flush = True
        await self.flush_all()

    async def _push(self, text: Any) -> None:
        if self.auto_flush and not self._held:
            await self._send(text)
        else:
            self._held.append(text)
            self.arrived.set()

    async def _send(self, text: Any) -> None:
        await self._deliver(text)

    async def flush_one(self) -> bool:
        """Deliver the oldest held frame; False if none."""
        if not self._held:
            return False
        await self._send(self._held.pop(0))
        return True

    async def flush_all(self) -> int:
        """Deliver every held frame in order; returns how many."""
        n = 0
        while self._held:
            await self._send(self._held.pop(0))
            n += 1
        return n

    async def flush_matching(self, predicate: Predicate) -> bool:
        """Deliver the first held frame matching ``predicate``, keeping the rest in order."""
        for i, text in enumerate(self._held):
            if predicate(frame_json(text)):
                del self._held[i]
                await self._send(text)
                return True
        return False

    async def wait_for_held(
        self, predicate: Predicate | None = None, *, count: int = 1, timeout: float = 10.0
    ) -> list[Any]:
        """Wait until at least ``count`` held frames match ``predicate``; returns them."""
        async with asyncio.timeout(timeout):
            while True:
                self.arrived.clear()
                got = [m for m in self.queue if predicate is None or predicate(m)]
                if len(got) >= count:
                    return got
                await self.arrived.wait()

    def remove(self, predicate: Predicate) -> int:
        """Drop held frames matching ``predicate`` (message loss); returns how many."""
        keep = [t for t in self._held if not predicate(frame_json(t))]
        n = len(self._held) - len(keep)
        self._held = keep
        return n

    def duplicate(self, predicate: Predicate) -> int:
        """Hold a second copy, right after it, of each held frame matching ``predicate``."""
        out: list[Any] = []
        n = 0
        for t in self._held:
            out.append(t)
            if predicate(frame_json(t)):
                out.append(t)
                n += 1
        self._held = out
        return n

    def reverse(self) -> None:
        """Reverse the order of the held frames."""
        self._held.reverse()

    def _reset(self) -> None:
        self._held = []


class ControlledTransport:
    """The test's handle on a client's network. Survives reconnects."""

    def __init__(self, real: Connector) -> None:
        self._real = real
        self._conn: Connection | None = None
        self._incoming: asyncio.Queue[str | bytes | ConnectionLost] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None
        self.blocked = False
        self.connections = 0
        self.outbound = MessageQueue(self._to_server)
        self.inbound = MessageQueue(self._to_client)
        self._consumed = asyncio.Event()

    async def _to_server(self, text: bytes) -> None:
        if self._conn is not None:
            with contextlib.suppress(ConnectionLost):
                await self._conn.send(text)

    async def _to_client(self, text: str | bytes) -> None:
        self._consumed.clear()
        await self._incoming.put(text)
        # Return once the client has handled it (it asks for the next frame).
        if self._conn is not None:
            await self._consumed.wait()

    async def _open(self) -> _ControlledConnection:
        if self.blocked:
            raise ConnectionLost(1006, "network blocked by the test")
        conn = await self._real.connect()
        self._conn = conn
        self.connections += 1
        self._incoming = asyncio.Queue()
        self.inbound._reset()
        self.outbound._reset()
        self._pump = asyncio.get_running_loop().create_task(self._read(conn))
        return _ControlledConnection(self, conn)

    async def _read(self, conn: Connection) -> None:
        try:
            while True:
                text = await conn.recv()
                await self.inbound._push(text)
        except ConnectionLost as exc:
            if self._conn is conn:
                await self._incoming.put(exc)
        except asyncio.CancelledError:
            raise

    async def simulate_disconnect(self, *, block_reconnect: bool = True) -> None:
        """Cut the connection: held frames are lost; with ``block_reconnect`` the client cannot
        connect again until :meth:`simulate_reconnect`."""
        self.blocked = block_reconnect
        conn, self._conn = self._conn, None
        self.inbound._reset()
        self.outbound._reset()
        if self._pump is not None:
            self._pump.cancel()
        await self._incoming.put(ConnectionLost(1006, "disconnected by the test"))
        self._consumed.set()
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    def simulate_reconnect(self) -> None:
        """Allow the client to reconnect (it retries on its own backoff)."""
        self.blocked = False

    async def step(self) -> None:
        """One round trip: deliver held outbound frames, then held inbound frames."""
        await self.outbound.flush_all()
        await self.inbound.flush_all()

    async def flush_until(self, awaitable: Awaitable[Any], *, timeout: float = 10.0) -> Any:
        """Deliver held frames in both directions until ``awaitable`` completes."""
        task = asyncio.ensure_future(awaitable)

        async def pump() -> None:
            while not task.done():
                self.outbound.arrived.clear()
                self.inbound.arrived.clear()
                moved = await self.outbound.flush_all() + await self.inbound.flush_all()
                if not moved:
                    waits = {
                        asyncio.ensure_future(self.outbound.arrived.wait()),
                        asyncio.ensure_future(self.inbound.arrived.wait()),
                    }
                    await asyncio.wait({task, *waits}, return_when=asyncio.FIRST_COMPLETED)
                    for w in waits:
                        w.cancel()

        async with asyncio.timeout(timeout):
            await pump()
            return await task


class _ControlledConnection:
    def __init__(self, transport: ControlledTransport, conn: Connection) -> None:
        self._t = transport
        self._conn = conn

    async def send(self, text: bytes) -> None:
        if self._t._conn is not self._conn:
            raise ConnectionLost(1006, "disconnected by the test")
        await self._t.outbound._push(text)

    async def recv(self) -> str | bytes:
        self._t._consumed.set()
        item = await self._t._incoming.get()
        if isinstance(item, ConnectionLost):
            raise item
        return item

    async def close(self) -> None:
        self._t._consumed.set()
        if self._t._conn is self._conn:
            self._t._conn = None
        if self._t._pump is not None:
            self._t._pump.cancel()
        await self._conn.close()


class ControlledConnector:
    """A ``Connector`` whose connections the test controls through :attr:`transport`."""

    def __init__(self, real: Connector) -> None:
        self.transport = ControlledTransport(real)

    async def connect(self) -> Connection:
        return await self.transport._open()
