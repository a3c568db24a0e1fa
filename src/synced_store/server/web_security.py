"""Browser-facing defences: the WebSocket ``Origin`` allow-list and security headers on every
HTTP response (pages and static files).

A browser attaches the page's origin to every WebSocket handshake, so a foreign page cannot
make a signed-in user's browser open a sync connection (cross-site WebSocket hijacking) unless
its origin is allowed. Clients that are not browsers send no ``Origin`` and are let through:
they authenticate with their token like everyone else.

Origins are compared as (scheme, host, port) after normalization: case, a trailing slash or
dot, a default port (``:80``/``:443``) and IPv6 spellings do not matter. ``Origin: null``
(sandboxed frames, ``file:`` pages, some redirects) and anything that is not an origin are
refused unless ``"*"`` is allowed.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "DEFAULT_CSP",
    "SECURITY_HEADERS",
    "SecurityHeadersMiddleware",
    "is_loopback_host",
    "normalize_origin",
    "normalize_origins",
    "origin_allowed",
    "websocket_origin_allowed",
]

log = logging.getLogger("synced_store.server")

#: The page's Content-Security-Policy. Everything comes from the server itself: the page, its
#: JS and CSS, the Pyodide runtime and wheels, the Python sources, the sync WebSocket
#: (``connect-src 'self'`` covers ``ws:``/``wss:`` to the same host in CSP Level 3). Pyodide
#: needs exactly one relaxation: ``'wasm-unsafe-eval'``, which lets the page and the engine
#: worker compile WebAssembly (``WebAssembly.compileStreaming`` / ``instantiate``) without
#: allowing JavaScript ``eval`` or ``new Function``. The engine worker is a module worker loaded
#: from the same origin (``worker-src 'self'``: no ``blob:`` URL), and it gets this same
#: policy from its own response header. The inline ``<script type="application/json">``
#: holding the page's config is data, never executed, so no ``'unsafe-inline'`` and no nonce
#: are needed; neither are inline styles (``style-src 'self'``). ``frame-ancestors 'none'``
#: (with ``X-Frame-Options: DENY`` for old browsers) forbids framing (clickjacking);
#: ``object-src 'none'`` and ``base-uri 'none'`` close plugin and ``<base>`` injection.
#: tests/web/test_csp_browser.py loads the chat page in Chromium under this policy and fails
#: on any violation, in the page or in the worker.
DEFAULT_CSP = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; style-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

#: Sent with every HTTP response (pages, static files, ``/healthz``, refusals).
SECURITY_HEADERS: tuple[tuple[str, str], ...] = (
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
)

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_SECURE = frozenset({"https", "wss"})
_WEB = frozenset({"http", "https"})
_ORIGIN_RE = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.\-]*)://(?P<host>\[[0-9a-f:.]+\]|[a-z0-9\-._~!$&'()*+,;=%]+)"
    r"(?::(?P<port>[0-9]{1,5}))?/?",
    re.IGNORECASE,
)
_HOST_RE = re.compile(
    r"(?P<host>\[[0-9a-f:.]+\]|[a-z0-9\-._~!$&'()*+,;=%]+)(?::(?P<port>[0-9]{1,5}))?",
    re.IGNORECASE,
)


class _Origin(NamedTuple):
    scheme: str
    host: str  # lower case, no trailing dot; IPv6 in brackets, compressed
    port: int | None  # None: the scheme's default port

    @property
    def text(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}"

    @property
    def effective_port(self) -> int | None:
        return self.port if self.port is not None else _DEFAULT_PORTS.get(self.scheme)


def _host(raw: str) -> str | None:
    """A normalized host name or IP literal, or None if it is not one."""
    host = raw.lower()
    if host.startswith("["):
        try:
            ip = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return None
        return f"[{ip.compressed}]"
    host = host[:-1] if host.endswith(".") else host
    if not host or host.startswith(".") or ".." in host or "%" in host:
        return None
    return host


def _hostport(m: re.Match[str]) -> tuple[str, int | None] | None:
    """The normalized host and port (None: absent) of a match, or None if invalid."""
    host = _host(m["host"])
    port = int(m["port"]) if m["port"] is not None else None
    if host is None or (port is not None and not 0 < port < 65536):
        return None
    return host, port


def _parse_origin(value: str) -> _Origin | None:
    m = _ORIGIN_RE.fullmatch(value.strip())
    hp = _hostport(m) if m is not None else None
    if m is None or hp is None:
        return None
    scheme = m["scheme"].lower()
    host, port = hp
    return _Origin(scheme, host, None if port == _DEFAULT_PORTS.get(scheme) else port)


def _parse_host_header(value: str) -> tuple[str, int | None] | None:
    m = _HOST_RE.fullmatch(value.strip())
    return _hostport(m) if m is not None else None


def is_loopback_host(host: str) -> bool:
    """Is ``host`` (a name, an IP, ``[::1]``) this machine's loopback? ``localhost`` and its
    subdomains (RFC 6761), 127.0.0.0/8, ``::1`` and IPv4-mapped loopback addresses."""
    h = host.strip().lower().rstrip(".")
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def normalize_origin(origin: str) -> str:
    """An allow-list entry in canonical form: ``"HTTPS://App.Example.com:443/"`` →
    ``"https://app.example.com"``; ``"*"`` stays ``"*"``.

    Raises:
        ValueError: not an origin (a path, a query, user info, a bad port), or ``"null"``
            (opaque origins cannot be told apart: allow them only with ``"*"``).
    """
    text = origin.strip()
    if text == "*":
        return "*"
    if text.lower() == "null":
        raise ValueError(
            "'null' cannot be allowed (every sandboxed frame and file: page sends it); "
            "allow '*' to accept any origin"
        )
    parsed = _parse_origin(text)
    if parsed is None:
        raise ValueError(
            f"{origin!r} is not an origin (scheme://host[:port], for example "
            "https://app.example.com)"
        )
    return parsed.text


def normalize_origins(origins: Iterable[str]) -> tuple[str, ...]:
    """:func:`normalize_origin` of each entry (raising ``ValueError`` on the first bad one)."""
    return tuple(normalize_origin(o) for o in origins)


@functools.lru_cache(maxsize=64)
def _allow_set(allowed: tuple[str, ...]) -> frozenset[str]:
    out = set()
    for entry in allowed:
        try:
            out.add(normalize_origin(entry))
        except ValueError as exc:  # only refuses more; create_app should have checked
            log.warning("ignoring allowed origin %r: %s", entry, exc)
    return frozenset(out)


def origin_allowed(
    origin: str | None,
    *,
    host: str | None,
    allowed: Sequence[str] = (),
    scheme: str | None = None,
    local_host: str | None = None,
) -> bool:
    """May a WebSocket handshake carrying ``Origin: origin`` proceed?

    Allowed: no ``Origin`` (not a browser); every origin in ``allowed``
    (``"https://app.example.com"``; ``"*"`` allows all, even ``null``); any ``http``/``https``
    loopback origin (``localhost``, ``127.0.0.1``, ``[::1]``, any port); and the server's own
    origin, the one whose host and port are the request's ``Host`` header (``host``).

    The own-origin match is refused when

    * ``scheme`` (the connection's: ``ws``/``wss``/``http``/``https``) is secure and the origin
      is ``http:`` — a plain-HTTP page (one a network attacker can forge) may not talk to the
      TLS server; an ``https:`` page over ``ws`` is fine (TLS ends at a proxy);
    * ``local_host`` (the address the server accepted the connection on) is loopback while
      ``Host`` names another host: a non-loopback name that resolved to this machine, the
      signature of DNS rebinding. Behind a reverse proxy on the same machine, list the public
      origin in ``allowed``.
    """
    if origin is None:
        return True
    allow = _allow_set(tuple(allowed))
    if "*" in allow:
        return True
    parsed = _parse_origin(origin)
    if parsed is None:
        return False
    if parsed.text in allow:
        return True
    if parsed.scheme not in _WEB:
        return False
    if is_loopback_host(parsed.host):
        return True
    if host is None:
        return False
    own = _parse_host_header(host)
    if own is None or own[0] != parsed.host:
        return False
    own_port = own[1] if own[1] is not None else _DEFAULT_PORTS[parsed.scheme]
    if own_port != parsed.effective_port:
        return False
    if scheme is not None and scheme.lower() in _SECURE and parsed.scheme not in _SECURE:
        return False
    return not (
        local_host is not None and is_loopback_host(local_host) and not is_loopback_host(own[0])
    )


def websocket_origin_allowed(scope: Scope, allowed: Sequence[str] = ()) -> bool:
    """:func:`origin_allowed` for an ASGI ``websocket`` (or ``http``) scope: its ``Origin``
    and ``Host`` headers, its scheme and the local address (DNS-rebinding check). A request
    carrying more than one ``Origin`` or ``Host`` header is refused."""
    origins = [v for k, v in scope.get("headers", ()) if k.lower() == b"origin"]
    hosts = [v for k, v in scope.get("headers", ()) if k.lower() == b"host"]
    if len(origins) > 1 or len(hosts) > 1:
        return False
    server = scope.get("server")
    return origin_allowed(
        origins[0].decode("latin-1") if origins else None,
        host=hosts[0].decode("latin-1") if hosts else None,
        allowed=allowed,
        scheme=scope.get("scheme"),
        local_host=server[0] if server else None,
    )


class SecurityHeadersMiddleware:
    """Adds the headers in :data:`SECURITY_HEADERS` and ``Content-Security-Policy: csp``
    (unless ``csp`` is None) to every HTTP response that does not set them itself.

    WebSocket scopes pass through untouched: wrapping their ``send`` would add a layer to
    every frame sent, and their only HTTP response is a short plain-text refusal."""

    def __init__(self, app: ASGIApp, *, csp: str | None = DEFAULT_CSP) -> None:
        self.app = app
        extra = list(SECURITY_HEADERS)
        if csp is not None:
            extra.append(("content-security-policy", csp))
        self._headers = [(k.encode(), v.encode()) for k, v in extra]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        add = self._headers

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {bytes(k).lower() for k, _ in headers}
                headers.extend((k, v) for k, v in add if k not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
