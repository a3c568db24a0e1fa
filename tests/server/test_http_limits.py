"""uvicorn runs within the server's limits, not its defaults (issue 9, item 9): slowloris heads
are closed after the header timeout, oversized heads get 431, a WebSocket message above the
limit is refused with 1009 before it is buffered (also deflated, with the server's memory
bounded), and over the connection cap the server answers 503 and keeps serving.

Each attack runs against a real server process on 127.0.0.1 started the way the command line
starts it (``run_server`` with ``limits``): this file is also that child process
(``python test_http_limits.py --port P --data-dir D --limits JSON``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


# -- the server process ----------------------------------------------------------------------


def _serve_main() -> None:
    """The child: ``run_server`` (what ``synced-store serve`` runs) with the given limits."""
    import argparse

    sys.path.insert(0, str(REPO))
    from examples.todo import backend

    from synced_store.cli.serving import run_server
    from synced_store.server import create_app
    from synced_store.server.limits import ServerLimits

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--limits", default="{}")
    p.add_argument("--allowed-origin", action="append", default=[])
    args = p.parse_args()
    limits = ServerLimits(**json.loads(args.limits))
    run_server(
        lambda: create_app(
            backend,
            data_dir=args.data_dir,
            authenticate=lambda t: t or None,
            limits=limits,
            allowed_origins=args.allowed_origin,
        ),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        limits=limits,
    )


class LimitedServer:
    """The child process above, on a free port."""

    def __init__(
        self, tmp_path: Path, *, allowed_origins: tuple[str, ...] = (), **limits: Any
    ) -> None:
        from synced_store.testing.server_process import free_port

        self.port = free_port()
        self.data_dir = tmp_path / "data"
        self.limits = limits
        self.allowed_origins = allowed_origins
        self.log = tmp_path / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LimitedServer:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "src")]))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                    "--limits",
                    json.dumps(self.limits),
                    *(f"--allowed-origin={o}" for o in self.allowed_origins),
                ],
                env=env,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()}")
            try:
                if httpx.get(self.http + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)  # readiness polling of a child process, bounded

    def status_mb(self, field: str) -> float:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
        raise AssertionError(field)

    def reset_peak(self) -> None:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/clear_refs", "w") as f:
            f.write("5")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    started: list[LimitedServer] = []

    def start(**options: Any) -> LimitedServer:
        server = LimitedServer(tmp_path / f"s{len(started)}", **options)
        server.data_dir.parent.mkdir(parents=True, exist_ok=True)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


# -- raw clients -----------------------------------------------------------------------------


async def _read_until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends until it closes (bounded by ``timeout``)."""
    out = b""
    async with asyncio.timeout(timeout):
        while chunk := await reader.read(65536):
            out += chunk
    return out


RESET = b"<reset>"


async def _refusal(reader: asyncio.StreamReader) -> bytes:
    """What the server answered before closing, or :data:`RESET`: a server that closes with
    the rest of a head unread in its socket buffer makes the kernel answer the next segments
    with a reset, which may overtake the answer already sent."""
    try:
        return await _read_until_closed(reader, 10)
    except ConnectionResetError:
        return RESET


async def slow_head(
    port: int, *, pace: float = 0.25, give_up: float = 15.0, first: bytes = b""
) -> tuple[float, bytes]:
    """Open a connection, send ``first`` then an unfinished head one byte per ``pace`` s until
    the server closes; return (seconds from the start of the unfinished head, what it sent)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if first:
            writer.write(first)
            await writer.drain()
            await _read_response(reader)
        start = time.monotonic()
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        drip = b"X-Slow: 1\r\n"
        i = 0
        while time.monotonic() - start < give_up:
            try:
                got = await asyncio.wait_for(reader.read(65536), pace)
            except TimeoutError:
                try:
                    writer.write(drip[i % len(drip) : i % len(drip) + 1])
                    await writer.drain()
                except OSError:
                    return time.monotonic() - start, b""
                i += 1
                continue
            took = time.monotonic() - start
            if got:
                got += await _read_until_closed(reader, 5)
            return took, got
        return float("inf"), b""
    finally:
        writer.close()


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


async def ws_upgrade(port: int, instance: str = "raw") -> tuple[Any, Any, bytes]:
    """A raw WebSocket upgrade of ``/sync/<instance>``: (reader, writer, response head)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /sync/{instance} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return reader, writer, head


def frame_head(length: int, opcode: int = 0x1) -> bytes:
    """The header of one masked, final client frame announcing ``length`` payload bytes."""
    return struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length) + b"\0\0\0\0"  # zero mask


async def close_code(reader: asyncio.StreamReader, timeout: float = 10) -> int:
    """The code of the close frame the server sends next (skipping other frames)."""
    async with asyncio.timeout(timeout):
        while True:
            b0, b1 = await reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", await reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await reader.readexactly(8))[0]
            payload = await reader.readexactly(n)
            if b0 & 0x0F == 0x8:
                return int(struct.unpack("!H", payload[:2])[0])


async def synced_client_works(server: LimitedServer, user: str) -> None:
    """A normal ``synced_store.client`` connects, writes and gets its write confirmed."""
    sys.path.insert(0, str(REPO))
    from examples.todo import backend

    from synced_store.client import connect

    store = await connect(server.url, backend, instance_id="todos", token=user)
    try:
        res = await store.mutate.addTodo(id=await store.make_unique_id(), text=f"from {user}")
        await asyncio.wait_for(res.confirmed, 15)
    finally:
        await store.close()


# -- slowloris and heads ---------------------------------------------------------------------


@pytest.mark.e2e
async def test_slowloris_heads_are_closed_after_the_header_timeout(serve: Any) -> None:
    server = serve(header_timeout=3.0)
    n = 200
    attack = [asyncio.create_task(slow_head(server.port, give_up=20)) for _ in range(n)]
    started = time.monotonic()
    # While the attack holds its sockets, the server serves everyone else.
    async with httpx.AsyncClient() as http:
        assert (await http.get(server.http + "/healthz")).status_code == 200
    await synced_client_works(server, "alice")
    served_after = time.monotonic() - started
    results = await asyncio.gather(*attack)
    took = sorted(t for t, _ in results)
    assert all(got.startswith(b"HTTP/1.1 408 ") for _, got in results), results[:3]
    assert took[-1] < 3.0 + 2.0, f"slowloris sockets still open after {took[-1]:.1f}s"
    assert took[0] > 3.0 - 0.5, f"closed too early: {took[0]:.2f}s"
    assert served_after < took[0], "the normal clients were not served during the attack"
    assert (await asyncio.to_thread(httpx.get, server.http + "/healthz")).status_code == 200


@pytest.mark.e2e
async def test_each_later_head_on_a_keep_alive_connection_has_its_own_deadline(
    serve: Any,
) -> None:
    server = serve(header_timeout=1.5, keep_alive_timeout=5.0)
    # The first request is answered; the second one, never finished, is closed 1.5 s after
    # its first byte (uvicorn's keep-alive timer stopped at that byte and never came back).
    first = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    took, got = await slow_head(server.port, first=first)
    assert got.startswith(b"HTTP/1.1 408 ")
    assert 1.5 - 0.3 < took < 1.5 + 1.5


@pytest.mark.e2e
async def test_idle_keep_alive_connections_close_after_the_keep_alive_timeout(
    serve: Any,
) -> None:
    server = serve(header_timeout=10.0, keep_alive_timeout=1.0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert (await _read_response(reader)).startswith(b"HTTP/1.1 200 ")
    start = time.monotonic()
    assert await _read_until_closed(reader, 10) == b""
    assert 1.0 - 0.3 < time.monotonic() - start < 1.0 + 1.5
    writer.close()


@pytest.mark.e2e
async def test_a_body_trickling_after_the_response_is_bounded_too(serve: Any) -> None:
    server = serve(header_timeout=1.5, keep_alive_timeout=5.0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n\r\n")
    assert (await _read_response(reader)).startswith(b"HTTP/1.1 405 ")  # body never read
    start = time.monotonic()
    closed = False
    while time.monotonic() - start < 10 and not closed:
        try:
            closed = await asyncio.wait_for(reader.read(65536), 0.25) == b""
        except TimeoutError:
            writer.write(b"x")  # one more byte of the body nobody reads
            await writer.drain()
    assert closed
    assert time.monotonic() - start < 1.5 + 1.5
    writer.close()


@pytest.mark.e2e
async def test_an_oversized_head_gets_431_and_a_large_one_is_served(serve: Any) -> None:
    server = serve(max_header_bytes=64 * 1024)
    for size, status in ((60_000, b"200"), (100_000, b"431"), (1_000_000, b"431")):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * size + b"\r\n"
        try:
            writer.write(head + b"Connection: close\r\n\r\n")
            await writer.drain()
        except OSError:
            pass  # the server closed while the rest of the head was on its way
        got = await _refusal(reader)
        assert got.startswith(b"HTTP/1.1 " + status) or (status == b"431" and got == RESET), (
            size,
            got[:60],
        )
        writer.close()
    # Headers many and small, arriving at once, count too.
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(20_000))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + many + b"\r\n")
    got = await _refusal(reader)
    assert got.startswith(b"HTTP/1.1 431 ") or got == RESET, got[:60]
    writer.close()
    assert (await asyncio.to_thread(httpx.get, server.http + "/healthz")).status_code == 200


# -- WebSocket messages ----------------------------------------------------------------------


@pytest.mark.e2e
async def test_a_frame_announcing_more_than_the_limit_is_refused_before_its_payload(
    serve: Any,
) -> None:
    from synced_store.protocol.codec import MAX_FRAME_BYTES

    server = serve()  # the default: the protocol's 8 MiB
    reader, writer, head = await ws_upgrade(server.port)
    assert head.startswith(b"HTTP/1.1 101 ")
    # Announce 9 MiB, send 64 KiB of it: the server refuses on the frame header alone.
    writer.write(frame_head(9 * MiB) + b"a" * 65536)
    await writer.drain()
    assert await close_code(reader) == 1009
    writer.close()
    # Exactly at the limit is no 1009 (the endpoint then judges the frame: not a connect).
    reader, writer, _ = await ws_upgrade(server.port)
    writer.write(frame_head(MAX_FRAME_BYTES) + b"a" * MAX_FRAME_BYTES)
    await writer.drain()
    assert await close_code(reader, 30) == 4003
    writer.close()


@pytest.mark.e2e
async def test_the_message_limit_is_configurable(serve: Any) -> None:
    server = serve(max_message_bytes=1 * MiB)
    for size, code in ((MiB + 1, 1009), (MiB, 4003)):
        reader, writer, _ = await ws_upgrade(server.port)
        writer.write(frame_head(size) + b"a" * min(size, 65536))
        if code != 1009:
            writer.write(b"a" * (size - 65536))
        await writer.drain()
        assert await close_code(reader) == code, size
        writer.close()


@pytest.mark.e2e
async def test_deflated_messages_over_the_limit_keep_server_memory_bounded(serve: Any) -> None:
    import websockets
    from websockets.asyncio.client import connect as ws_connect

    server = serve()
    n = 50
    before = server.status_mb("VmRSS")
    server.reset_peak()

    async def bomb() -> int | None:
        # 9 MiB of one letter deflates to a few KB: inflated whole, it would take 9 MiB each.
        async with ws_connect(
            f"{server.url}/sync/bomb", max_size=None, compression="deflate"
        ) as ws:
            await ws.send("a" * (9 * MiB))
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 20)
            return ws.close_code

    codes = await asyncio.gather(*(bomb() for _ in range(n)))
    peak = server.status_mb("VmHWM")
    after = server.status_mb("VmRSS")
    assert set(codes) == {1009}
    # Inflated whole, 50 of them would be 450 MB; websockets stops inflating at the limit
    # and the refused data is freed at once (not kept by the error's traceback).
    assert peak - before < 64, f"RSS {before:.0f} MB, peak {peak:.0f} MB, after {after:.0f} MB"
    await synced_client_works(server, "after-the-bombs")


# -- the connection cap ----------------------------------------------------------------------


@pytest.mark.e2e
async def test_over_the_connection_cap_the_server_answers_503_and_recovers(serve: Any) -> None:
    import websockets
    from websockets.asyncio.client import connect as ws_connect

    sys.path.insert(0, str(REPO))
    from examples.todo import backend

    from synced_store.client import connect

    server = serve(max_connections=3, header_timeout=2.0)
    stores = [
        await connect(server.url, backend, instance_id="cap", token=f"u{i}") for i in range(3)
    ]
    for store in stores:
        await store.wait_for_server_data(15)
    async with httpx.AsyncClient() as http:
        # Three WebSockets open: a fourth WebSocket and any HTTP request get 503.
        with pytest.raises(websockets.InvalidStatus) as refused:
            await ws_connect(f"{server.url}/sync/cap")
        assert refused.value.response.status_code == 503
        assert (await http.get(server.http + "/healthz")).status_code == 503
        # The open ones keep working.
        res = await stores[0].mutate.addTodo(id="t1", text="still served")
        await asyncio.wait_for(res.confirmed, 15)
        for store in stores:
            await store.close()
        await _until_healthy(server)
        await synced_client_works(server, "after-the-cap")

        # Silent sockets cannot hold the cap longer than the header timeout.
        silent = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
        assert (await http.get(server.http + "/healthz")).status_code == 503
        start = time.monotonic()
        for reader, _ in silent:
            assert (await _read_until_closed(reader, 10)).startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - start < 2.0 + 1.5
        await _until_healthy(server)
        for _, writer in silent:
            writer.close()


async def _until_healthy(server: LimitedServer, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as http:
        while (await http.get(server.http + "/healthz")).status_code != 200:
            assert time.monotonic() < deadline, "the server did not recover"
            await asyncio.sleep(0.05)  # polling a child process, bounded


# -- the command line ------------------------------------------------------------------------


def test_serve_options_show_the_limits_defaults() -> None:
    import dataclasses

    import click

    from synced_store.cli.serving import LIMIT_OPTIONS, connection_options
    from synced_store.server.limits import ServerLimits

    defaults = {f.name: f.default for f in dataclasses.fields(ServerLimits)}
    for name, shown in LIMIT_OPTIONS.items():
        assert float(shown) == defaults[name], name

    @click.command()
    @connection_options
    def cmd(**kwargs: Any) -> None:
        click.echo(json.dumps(kwargs, sort_keys=True))

    from click.testing import CliRunner

    out = CliRunner().invoke(cmd, ["--help"]).output
    for flag in ("--max-connections", "--max-message-bytes", "--header-timeout"):
        assert flag in out
    got = CliRunner().invoke(cmd, ["--max-connections", "7", "--header-timeout", "2.5"])
    assert json.loads(got.output) == {
        "allowed_origins": [],
        "header_timeout": 2.5,
        "keep_alive_timeout": None,
        "max_connections": 7,
        "max_message_bytes": None,
    }
    bad = CliRunner().invoke(cmd, ["--max-message-bytes", str(9 * MiB)])
    assert bad.exit_code == 2
    assert "--max-message-bytes" in bad.output


def test_server_options_offer_the_limits_only_to_commands_that_take_them() -> None:
    import click
    from click.testing import CliRunner

    from synced_store.cli.serving import server_options

    @click.command()
    @server_options
    def takes(**kwargs: Any) -> None:
        click.echo(kwargs["max_connections"])

    @click.command()
    @server_options
    def ignores(host: str, port: int, data_dir: Path, durability: str, log_level: str) -> None:
        click.echo("ran")

    assert CliRunner().invoke(takes, ["--max-connections", "5"]).output == "5\n"
    refused = CliRunner().invoke(ignores, ["--max-connections", "5"])
    assert refused.exit_code == 2  # "No such option", never silently ignored
    assert CliRunner().invoke(ignores, []).output == "ran\n"

    # Alone, on a command with its own host/port options (how `demo chat` gets them).
    from synced_store.cli import connection_options

    @click.command()
    @click.option("--port", type=int, default=1)
    @connection_options
    def demo(port: int, **kwargs: Any) -> None:
        click.echo(f"{port} {kwargs['max_connections']} {kwargs['allowed_origins']}")

    got = CliRunner().invoke(demo, ["--max-connections", "5", "--allowed-origin", "https://a.b"])
    assert got.output == "1 5 ('https://a.b',)\n"


def test_limits_from_options() -> None:
    from synced_store.cli.loading import CliError
    from synced_store.cli.serving import limits_from_options
    from synced_store.server.limits import ServerLimits

    limits = limits_from_options(
        max_connections=7, max_message_bytes=None, header_timeout=2.5, keep_alive_timeout=None
    )
    assert limits == ServerLimits(max_connections=7, header_timeout=2.5)
    with pytest.raises(CliError, match="not a server limit"):
        limits_from_options(max_conections=3)
    with pytest.raises(CliError, match="max_message_bytes"):
        limits_from_options(max_message_bytes=9 * MiB)


def test_uvicorn_config_follows_the_limits() -> None:
    from synced_store.server.limits import ServerLimits
    from synced_store.server.uvicorn_setup import (
        LimitedHttpProtocol,
        LimitedWebSocketProtocol,
        uvicorn_config,
    )

    limits = ServerLimits(max_connections=10, max_message_bytes=MiB, keep_alive_timeout=2.5)
    config = uvicorn_config(object(), limits, host="127.0.0.1", port=1)
    assert config.ws_max_size == MiB
    assert config.ws_per_message_deflate
    assert config.limit_concurrency == 11  # uvicorn counts the new connection itself
    assert config.ws is LimitedWebSocketProtocol
    assert isinstance(config.http, type)
    assert issubclass(config.http, LimitedHttpProtocol)
    assert config.http.limits is limits
    with pytest.raises(TypeError, match="ws_max_size"):
        uvicorn_config(object(), limits, ws_max_size=1)


if __name__ == "__main__":
    _serve_main()
