"""Writing frames to one client's WebSocket: at once when the socket can take them, or waiting.

The fan-out (fanout.py) writes a commit's frame to every connection that is keeping up from
inside the commit, without a task switch or an ``await`` per connection: :meth:`Wire.try_write`
puts the frame into the connection's transport buffer, or says it cannot (the transport asked
for a pause: the client reads slower than the server writes), and then the session sends from
its own task, waiting (:meth:`Wire.write`).

:class:`UvicornWire` writes through uvicorn's sans-I/O WebSocket protocol object (the one
``synced-store serve`` runs, reached from the raw ASGI ``send`` kept in the scope, see
endpoint.py): websockets frames the message (and compresses it, with permessage-deflate) and
the bytes go to the transport, as uvicorn's own ``send`` does, without the ASGI message and
the framework's wrappers. A connection without extensions takes a frame that was framed once
for every such connection (:class:`SharedFrame`). :class:`AsgiWire` is the fallback for any
other server: it never writes at once and awaits the framework's ``send_text``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.protocol import State

__all__ = ["AsgiWire", "SharedFrame", "UvicornWire", "Wire", "wire_for"]


class SharedFrame:
    """A frame's payload (JSON text) and, made once on first use, its unmasked, uncompressed
    WebSocket frame, written as is to every connection without extensions."""

    __slots__ = ("_framed", "payload")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self._framed: bytes | None = None

    def framed(self) -> bytes:
        """The whole WebSocket text frame (header and payload)."""
        if self._framed is None:
            self._framed = Frame(Opcode.TEXT, self.payload).serialize(mask=False)
        return self._framed


class Wire(Protocol):
    """How a session writes frames to its client."""

    #: True if :meth:`try_write` can ever write at once.
    direct: bool

    def try_write(self, frame: SharedFrame) -> bool:
        """Write now, without waiting; False if the socket cannot take it now (paused) or is
        closing (nothing was written)."""

    async def write(self, payload: bytes) -> None:
        """Write, waiting until the socket can take it; raises ``ConnectionError`` if it
        closed."""


class UvicornWire:
    """Writes through uvicorn's ``WebSocketsSansIOProtocol`` (see the module doc)."""

    direct = True

    def __init__(self, proto: Any) -> None:
        self._proto = proto
        #: The connection negotiated no extension: shared framed bytes can be written as is.
        self.plain = not proto.conn.extensions

    def try_write(self, frame: SharedFrame) -> bool:
        p = self._proto
        if not p.writable.is_set() or p.close_sent or p.transport.is_closing():
            return False
        if self.plain:
            p.transport.write(frame.framed())
            return True
        try:
            p.conn.send_text(frame.payload)
        except InvalidState:
            return False
        p.transport.write(b"".join(p.conn.data_to_send()))
        return True

    async def write(self, payload: bytes) -> None:
        frame = SharedFrame(payload)
        p = self._proto
        while not self.try_write(frame):
            if p.close_sent or p.transport.is_closing() or p.conn.state is not State.OPEN:
                raise ConnectionError("the connection is closing")
            await p.writable.wait()


class AsgiWire:
    """Writes with the framework's ``send_text`` (any ASGI server): never at once."""

    direct = False

    def __init__(self, send_text: Callable[[str], Awaitable[None]]) -> None:
        self._send_text = send_text

    def try_write(self, frame: SharedFrame) -> bool:
        return False

    async def write(self, payload: bytes) -> None:
        await self._send_text(payload.decode())


def wire_for(raw_send: Any, send_text: Callable[[str], Awaitable[None]]) -> Wire:
    """The fastest wire for a WebSocket: :class:`UvicornWire` when the raw ASGI ``send`` belongs
    to uvicorn's websockets sans-I/O protocol (the one ``synced-store serve`` runs), else
    :class:`AsgiWire` (any other implementation, such as uvicorn's wsproto one)."""
    proto = getattr(raw_send, "__self__", None)
    if isinstance(proto, WebSocketsSansIOProtocol):
        return UvicornWire(proto)
    return AsgiWire(send_text)
