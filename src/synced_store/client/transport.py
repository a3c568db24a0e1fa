"""The client's network seam: a ``Connector`` opens ``Connection``s that send and receive frames.

``WebSocketConnector`` is the real one; ``synced_store.testing`` wraps it in a controlled one.
"""

from __future__ import annotations

from typing import Protocol

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from ..errors import ConnectionLost

__all__ = ["Connection", "ConnectionLost", "Connector", "WebSocketConnector", "sync_url"]


class Connection(Protocol):
    """One open connection."""

    async def send(self, frame: bytes) -> None:
        """Send a frame (UTF-8 JSON, sent as a text frame); raises :class:`ConnectionLost` if
        closed."""

    async def recv(self) -> str | bytes:
        """Receive a frame (its UTF-8 JSON text); raises :class:`ConnectionLost` when closed."""

    async def close(self) -> None:
        """Close (idempotent)."""


class Connector(Protocol):
    """Opens connections to one sync endpoint."""

    async def connect(self) -> Connection:
        """Open a connection; raises ``OSError`` / :class:`ConnectionLost` on failure."""


def sync_url(base_url: str, instance_id: str) -> str:
    """The sync endpoint of ``instance_id`` under a server base URL (ws://, wss://, http(s)://)."""
    url = base_url.rstrip("/")
    if url.startswith("http://"):
        url = "ws://" + url[7:]
    elif url.startswith("https://"):
        url = "wss://" + url[8:]
    elif not url.startswith(("ws://", "wss://")):
        url = "ws://" + url
    return f"{url}/sync/{instance_id}"


class _WsConnection:
    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    async def send(self, frame: bytes) -> None:
        try:
            await self._ws.send(frame, text=True)
        except websockets.ConnectionClosed as exc:
            raise _lost(exc) from exc

    async def recv(self) -> str | bytes:
        try:
            return await self._ws.recv(decode=False)  # text frames too: the decoder takes bytes
        except websockets.ConnectionClosed as exc:
            raise _lost(exc) from exc

    async def close(self) -> None:
        await self._ws.close()


def _lost(exc: websockets.ConnectionClosed) -> ConnectionLost:
    rcvd = exc.rcvd
    if rcvd is None:
        return ConnectionLost(1006, "no close frame")
    return ConnectionLost(rcvd.code, rcvd.reason)


class WebSocketConnector:
    """Connects with the ``websockets`` library."""

    def __init__(
        self, url: str, *, max_size: int = 64 * 1024 * 1024, compression: str | None = None
    ) -> None:
        """``compression="deflate"`` negotiates permessage-deflate (fewer bytes on slow links,
        more CPU on both sides); the default sends frames uncompressed."""
        self.url = url
        self.max_size = max_size
        self.compression = compression

    async def connect(self) -> Connection:
        try:
            ws = await ws_connect(
                self.url,
                max_size=self.max_size,
                open_timeout=10,
                ping_interval=20,
                ping_timeout=60,
                compression=self.compression,
            )
        except websockets.InvalidHandshake as exc:
            raise ConnectionLost(1006, f"handshake failed: {exc}") from exc
        return _WsConnection(ws)
