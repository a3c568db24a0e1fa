"""Hand-made clients for hostile tests: raw ``connect`` frames, and a socket that never reads.

``StuckClient`` speaks just enough WebSocket to be served (the upgrade and one masked text
frame) and then never reads again, with a small receive buffer: the server's sends back up
exactly as they would for a client that stopped reading.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import select
import socket
import struct
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from synced_store.protocol import PROTOCOL_VERSION

__all__ = ["StuckClient", "frames_until_close", "hello", "raw", "until"]


def hello(**over: Any) -> str:
    """A ``connect`` frame (override any field)."""
    msg = {
        "type": "connect",
        "protocol_version": PROTOCOL_VERSION,
        "schema_version": 1,
        "client_id": "raw-client",
        "token": "mallory",
        "cookie": None,
        "last_mutation_id": 0,
    }
    msg.update(over)
    return json.dumps(msg)


async def raw(url: str, instance: str = "test", **kwargs: Any) -> ClientConnection:
    """A WebSocket to ``instance``'s sync endpoint (``url`` is ``ws://host:port``)."""
    return await ws_connect(f"{url}/sync/{instance}", max_size=None, **kwargs)


async def frames_until_close(
    ws: ClientConnection, timeout: float = 10
) -> tuple[list[dict[str, Any]], int]:
    """All frames received until the server closed, and the close code."""
    got: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(timeout):
            async for text in ws:
                got.append(json.loads(text))
    except websockets.ConnectionClosed:
        pass
    assert ws.close_code is not None, "connection should be closed"
    return got, ws.close_code


async def until(ws: ClientConnection, kind: str, timeout: float = 10) -> dict[str, Any]:
    """The next frame of type ``kind`` (others are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            msg = json.loads(await ws.recv())
            if isinstance(msg, dict) and msg["type"] == kind:
                return msg


def _frame(text: str) -> bytes:
    payload = text.encode()
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


class StuckClient:
    """Upgrades, sends ``connect`` (and optional more frames), then never reads."""

    def __init__(self, port: int, instance: str, first: str, *, rcvbuf: int = 4096) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /sync/{instance} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("closed during the upgrade")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.decode(errors="replace"))
        self.send(first)

    def send(self, text: str) -> None:
        """Send one text frame."""
        self.sock.sendall(_frame(text))

    def closed_by_server(self) -> bool:
        """True once the server closed or dropped the connection (without reading anything:
        reading would let the server's sends go on)."""
        p = select.poll()
        p.register(self.sock, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
        return any(ev & (select.POLLRDHUP | select.POLLHUP | select.POLLERR) for _, ev in p.poll(0))

    def close(self) -> None:
        self.sock.close()
