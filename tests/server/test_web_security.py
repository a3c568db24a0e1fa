"""The browser-facing defences (issue 9, item 8): the WebSocket ``Origin`` allow-list (cross-site
WebSocket hijacking, DNS rebinding) and the security headers on every response.

The function's edge cases first, then a real server process on 127.0.0.1: a foreign origin
gets HTTP 403 and opens nothing (no instance file), the server's own origin, loopback pages
and clients without ``Origin`` get in.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from synced_store.server.web_security import (
    DEFAULT_CSP,
    SecurityHeadersMiddleware,
    is_loopback_host,
    normalize_origin,
    normalize_origins,
    origin_allowed,
    websocket_origin_allowed,
)
from tests.server.test_http_limits import LimitedServer


def allowed(origin: str | None, host: str | None = "chat.example.com", **kw: Any) -> bool:
    return origin_allowed(origin, host=host, **kw)


# -- origin_allowed --------------------------------------------------------------------------


def test_clients_without_origin_are_not_browsers_and_pass() -> None:
    assert allowed(None)
    assert allowed(None, host=None)


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost:8000",
        "http://localhost",
        "https://localhost:1",
        "HTTP://LOCALHOST:8000",
        "http://localhost.:8000",
        "http://app.localhost:3000",
        "http://127.0.0.1:8000",
        "http://127.0.0.2:9",
        "http://[::1]:8000",
        "http://[0:0:0:0:0:0:0:1]:8000",
        "http://[::ffff:127.0.0.1]:8000",
        "http://127.0.0.1:8000/",
    ],
)
def test_loopback_pages_on_any_port_pass(origin: str) -> None:
    assert allowed(origin, host="chat.example.com")
    assert allowed(origin, host=None)


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "http://evil.example:8000",
        "http://127.0.0.1.evil.example",
        "http://localhost.evil.example",
        "http://chat.example.com.evil.example",
        "http://evilchat.example.com",
        "http://sub.chat.example.com",
        "null",
        "NULL",
        "",
        " ",
        "file://",
        "file:///etc/passwd",
        "chrome-extension://abcdef",
        "ws://127.0.0.1:8000",  # not a page's origin
        "http://",
        "http://:8000",
        "http://127.0.0.1:0",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:80x",
        "http://127.0.0.1/path",
        "http://127.0.0.1?q",
        "http://127.0.0.1#f",
        "http://evil.example@127.0.0.1",
        "http://127.0.0.1 http://evil.example",
        "http://127.0.0.1, http://evil.example",
        "http://[::1",
        "http://[fe80::1%25eth0]",
        "http://127.0.0.1\r\nX: y",
        "http://chat..example.com",
    ],
)
def test_foreign_and_malformed_origins_are_refused(origin: str) -> None:
    assert not allowed(origin, host="chat.example.com")


@pytest.mark.parametrize(
    ("origin", "host", "ok"),
    [
        ("https://chat.example.com", "chat.example.com", True),
        ("https://chat.example.com:443", "chat.example.com", True),
        ("https://chat.example.com", "chat.example.com:443", True),
        ("http://chat.example.com", "chat.example.com", True),
        ("http://chat.example.com", "chat.example.com:80", True),
        ("http://chat.example.com:8000", "chat.example.com:8000", True),
        ("HTTP://Chat.Example.COM:8000/", "CHAT.example.com:8000", True),
        ("http://chat.example.com.:8000", "chat.example.com:8000", True),
        ("http://chat.example.com", "chat.example.com:8000", False),
        ("http://chat.example.com:8000", "chat.example.com", False),
        ("http://chat.example.com:8001", "chat.example.com:8000", False),
        ("https://chat.example.com", "chat.example.com:80", False),
        ("http://chat.example.com:443", "chat.example.com", False),
        ("http://[2001:DB8:0::1]:8000", "[2001:db8::1]:8000", True),
        ("http://[2001:db8::1]", "[2001:db8::1]:8000", False),
        ("http://[2001:db8::2]:8000", "[2001:db8::1]:8000", False),
        ("http://10.0.0.5:8000", "10.0.0.5:8000", True),
        ("http://chat.example.com", "", False),
        ("http://chat.example.com", "chat.example.com:99999", False),
        ("http://chat.example.com", "chat.example.com/x", False),
        ("http://chat.example.com", None, False),
    ],
)
def test_own_origin_is_the_host_header_with_its_port(
    origin: str, host: str | None, ok: bool
) -> None:
    assert allowed(origin, host=host) is ok


def test_a_plain_http_page_may_not_use_the_tls_server() -> None:
    host = "chat.example.com"
    assert not allowed("http://chat.example.com", host=host, scheme="wss")
    assert not allowed("http://chat.example.com", host=host, scheme="https")
    assert allowed("https://chat.example.com", host=host, scheme="wss")
    # TLS ended at a proxy: the page is https, the connection reaches us as ws.
    assert allowed("https://chat.example.com", host=host, scheme="ws")
    assert allowed("http://chat.example.com", host=host, scheme="ws")
    # Loopback pages are this machine's own, whatever the scheme.
    assert allowed("http://localhost:8000", host=host, scheme="wss")


def test_a_foreign_name_resolving_to_loopback_is_dns_rebinding() -> None:
    # The page of rebind.example, whose name now resolves to 127.0.0.1, opens a socket to
    # "its own" host: Origin and Host agree, but the server was reached on loopback.
    origin, host = "http://rebind.example:8000", "rebind.example:8000"
    for local in ("127.0.0.1", "::1", "127.0.1.1"):
        assert not allowed(origin, host=host, local_host=local)
    assert allowed(origin, host=host, allowed=["http://rebind.example:8000"], local_host="::1")
    assert allowed(origin, host=host, local_host="10.0.0.5")  # reached on a public address
    assert allowed(origin, host=host)  # local address unknown
    # Loopback names on loopback are fine.
    assert allowed("http://localhost:8000", host="localhost:8000", local_host="127.0.0.1")


def test_the_allow_list_is_normalized_and_exact() -> None:
    entries = ["HTTPS://App.Example.com:443/", "http://[2001:db8::1]:8080", "capacitor://localhost"]
    assert normalize_origins(entries) == (
        "https://app.example.com",
        "http://[2001:db8::1]:8080",
        "capacitor://localhost",
    )
    assert allowed("https://app.example.com", allowed=entries)
    assert allowed("https://APP.example.com:443", allowed=entries)
    assert allowed("http://[2001:db8:0:0::1]:8080", allowed=entries)
    assert allowed("capacitor://localhost", allowed=entries)  # an app's origin, listed
    assert not allowed("http://app.example.com", allowed=entries)  # scheme
    assert not allowed("https://app.example.com:8443", allowed=entries)  # port
    assert not allowed("https://x.app.example.com", allowed=entries)  # no wildcards
    assert not allowed("null", allowed=entries)
    assert allowed("null", allowed=["*"])
    assert allowed("https://anything.example", allowed=["*"])


@pytest.mark.parametrize(
    "entry", ["null", "https://app.example.com/path", "app.example.com", "https://a.com:0", ""]
)
def test_bad_allow_list_entries_are_refused_up_front(entry: str) -> None:
    with pytest.raises(ValueError, match=r"origin|null"):
        normalize_origin(entry)


def test_a_bad_entry_at_run_time_only_refuses_more(caplog: pytest.LogCaptureFixture) -> None:
    assert not allowed("https://app.example.com", allowed=["app.example.com"])
    assert allowed("https://b.example", allowed=["app.example.com", "https://b.example"])


def test_is_loopback_host() -> None:
    for host in ("localhost", "LOCALHOST.", "a.localhost", "127.0.0.1", "127.9.9.9", "::1"):
        assert is_loopback_host(host), host
    for host in ("[::1]", "::ffff:127.0.0.1", "[0:0:0:0:0:0:0:1]"):
        assert is_loopback_host(host), host
    for host in ("localhost.evil", "10.0.0.1", "::", "0.0.0.0", "::ffff:10.0.0.1", "example"):
        assert not is_loopback_host(host), host


def _scope(headers: list[tuple[bytes, bytes]], **kw: Any) -> dict[str, Any]:
    return {"type": "websocket", "headers": headers, "scheme": "ws", **kw}


def test_websocket_origin_allowed_reads_the_scope() -> None:
    host = (b"host", b"chat.example.com:8000")
    own = (b"origin", b"http://chat.example.com:8000")
    public = {"server": ("10.0.0.5", 8000)}
    assert websocket_origin_allowed(_scope([host]))
    assert websocket_origin_allowed(_scope([host, own], **public))
    assert not websocket_origin_allowed(_scope([host, own], server=("127.0.0.1", 8000)))
    assert not websocket_origin_allowed(_scope([host, own], scheme="wss", **public))
    evil = (b"origin", b"https://evil.example")
    assert not websocket_origin_allowed(_scope([host, evil], **public))
    assert websocket_origin_allowed(_scope([host, evil], **public), ["https://evil.example"])
    # Two Origin (or Host) headers: which one would a proxy have checked? Neither passes.
    loop = (b"origin", b"http://127.0.0.1:8000")
    assert not websocket_origin_allowed(_scope([host, loop, evil], **public))
    assert not websocket_origin_allowed(_scope([host, host, own], **public))
    assert websocket_origin_allowed(_scope([loop], server=None))


# -- the headers middleware ------------------------------------------------------------------


def _app(csp: str | None = DEFAULT_CSP) -> Any:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket

    async def page(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hi")

    async def framable(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hi", headers={"X-Frame-Options": "SAMEORIGIN"})

    async def refuse(ws: WebSocket) -> None:
        await ws.send_denial_response(PlainTextResponse("no", status_code=403))

    return Starlette(
        routes=[Route("/", page), Route("/framable", framable), WebSocketRoute("/ws", refuse)],
        middleware=[Middleware(SecurityHeadersMiddleware, csp=csp)],
    )


async def _call(app: Any, scope_type: str, path: str) -> dict[str, Any]:
    """Run one request through the ASGI app; the response start message it sent."""
    scope: dict[str, Any] = {
        "type": scope_type,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "scheme": "http" if scope_type == "http" else "ws",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1234),
        "method": "GET",
        "http_version": "1.1",
        "asgi": {"version": "3.0"},
        "extensions": {"websocket.http.response": {}},
    }
    incoming = [
        {"type": "http.request", "body": b""}
        if scope_type == "http"
        else {"type": "websocket.connect"}
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop() if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return next(m for m in sent if m["type"].endswith("response.start"))


def _headers(start: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in start["headers"]:
        out.setdefault(bytes(k).decode().lower(), []).append(bytes(v).decode())
    return out


async def test_every_response_gets_the_headers_unless_it_sets_its_own() -> None:
    app = _app()
    for path in ("/", "/missing"):
        h = _headers(await _call(app, "http", path))
        assert h["content-security-policy"] == [DEFAULT_CSP]
        assert h["x-content-type-options"] == ["nosniff"]
        assert h["x-frame-options"] == ["DENY"]
        assert h["referrer-policy"] == ["no-referrer"]
    h = _headers(await _call(app, "http", "/framable"))
    assert h["x-frame-options"] == ["SAMEORIGIN"]
    denied = await _call(app, "websocket", "/ws")  # passes through, untouched
    assert denied["type"] == "websocket.http.response.start"
    assert denied["status"] == 403
    assert "content-security-policy" not in _headers(denied)
    # No CSP: the other headers still go out.
    h = _headers(await _call(_app(csp=None), "http", "/"))
    assert "content-security-policy" not in h
    assert h["x-content-type-options"] == ["nosniff"]


def test_allowed_origin_option_is_checked_and_normalized() -> None:
    import click
    from click.testing import CliRunner

    from synced_store.cli.serving import connection_options

    @click.command()
    @connection_options
    def cmd(allowed_origins: tuple[str, ...], **kwargs: Any) -> None:
        click.echo(json.dumps(allowed_origins))

    ok = CliRunner().invoke(
        cmd, ["--allowed-origin", "HTTPS://App.Example.com/", "--allowed-origin", "*"]
    )
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output) == ["https://app.example.com", "*"]
    bad = CliRunner().invoke(cmd, ["--allowed-origin", "app.example.com"])
    assert bad.exit_code == 2
    assert "is not an origin" in bad.output


# -- a real server ---------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Any]:
    started: list[LimitedServer] = []

    def start(**options: Any) -> LimitedServer:
        s = LimitedServer(tmp_path / f"s{len(started)}", **options)
        s.data_dir.parent.mkdir(parents=True, exist_ok=True)
        started.append(s)
        return s.start()

    yield start
    for s in started:
        s.stop()


def _hello(user: str) -> bytes:
    """A masked text frame carrying a ``connect`` message of the todo app."""
    from synced_store.protocol import PROTOCOL_VERSION

    body = json.dumps(
        {
            "type": "connect",
            "protocol_version": PROTOCOL_VERSION,
            "schema_version": 1,
            "client_id": f"c-{user}",
            "token": user,
            "cookie": None,
            "last_mutation_id": 0,
        }
    ).encode()
    assert len(body) < 65536
    return bytes([0x81, 0x80 | 126]) + len(body).to_bytes(2, "big") + b"\0\0\0\0" + body


async def handshake(
    port: int, instance: str, *, origin: str | None, host: str | None = None
) -> tuple[int, bytes, dict[str, Any] | None]:
    """Upgrade with these headers: (status, response head and body, the first message if
    the upgrade succeeded and ``connect`` was answered)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET /sync/{instance} HTTP/1.1",
        f"Host: {host or f'127.0.0.1:{port}'}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    try:
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split()[1])
            if status != 101:
                return status, head + await reader.read(), None
            writer.write(_hello("alice"))
            _, b1 = await reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(await reader.readexactly(2), "big")
            elif n == 127:
                n = int.from_bytes(await reader.readexactly(8), "big")
            return status, head, json.loads(await reader.readexactly(n))
    finally:
        writer.close()


@pytest.mark.e2e
async def test_a_foreign_origin_is_refused_with_403_and_opens_nothing(server: Any) -> None:
    from synced_store.storage.sqlite import instance_path

    s = server()
    for i, origin in enumerate(
        [
            "https://evil.example",
            f"http://evil.example:{s.port}",
            f"http://127.0.0.1.evil.example:{s.port}",
            "null",
            "file://",
        ]
    ):
        status, head, msg = await handshake(s.port, f"victim{i}", origin=origin)
        assert status == 403, (origin, head)
        assert msg is None
        assert b"origin not allowed" in head
        assert not instance_path(s.data_dir, f"victim{i}").exists()
    assert not any(s.data_dir.glob("victim*"))


@pytest.mark.e2e
async def test_own_origin_loopback_pages_and_non_browsers_get_in(server: Any) -> None:
    from synced_store.storage.sqlite import instance_path

    s = server()
    for i, (origin, host) in enumerate(
        [
            (None, None),  # the Python client, curl, ...: no Origin
            (f"http://127.0.0.1:{s.port}", None),  # the page served by this server
            (f"http://localhost:{s.port}", f"localhost:{s.port}"),
            (f"http://[::1]:{s.port}", None),
            ("http://localhost:3000", None),  # a dev server on this machine
        ]
    ):
        status, head, msg = await handshake(s.port, f"room{i}", origin=origin, host=host)
        assert status == 101, (origin, head)
        assert msg is not None
        assert msg["type"] == "connected", msg
        assert instance_path(s.data_dir, f"room{i}").exists()


@pytest.mark.e2e
async def test_allowed_origins_get_in_and_others_stay_out(server: Any) -> None:
    s = server(allowed_origins=("https://app.example.com",))
    status, _, msg = await handshake(s.port, "room", origin="https://app.example.com")
    assert status == 101
    assert msg is not None
    assert msg["type"] == "connected"
    status, _, _ = await handshake(s.port, "room", origin="https://app.example.com.evil")
    assert status == 403


@pytest.mark.e2e
async def test_dns_rebinding_is_refused_unless_the_origin_is_listed(server: Any) -> None:
    # A page of rebind.example, whose name was made to resolve to 127.0.0.1: its Origin and
    # the Host its browser sends agree, but the server is reached on loopback.
    s = server()
    name = f"rebind.example:{s.port}"
    status, head, _ = await handshake(s.port, "room", origin=f"http://{name}", host=name)
    assert status == 403, head
    s2 = server(allowed_origins=("http://rebind.example",))  # a public name behind a proxy
    name = "rebind.example"
    status, _, msg = await handshake(s2.port, "room", origin=f"http://{name}", host=name)
    assert status == 101
    assert msg is not None
    assert msg["type"] == "connected"
