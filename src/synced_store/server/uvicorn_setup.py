"""Running the app under uvicorn with the process's :class:`ServerLimits` instead of uvicorn's
defaults.

uvicorn's defaults do not fit a server facing the internet: WebSocket messages up to 16 MiB
(the protocol's own limit is 8 MiB), no cap on concurrent connections, and an HTTP connection
that never finishes its request head is held open for ever (its keep-alive timeout only runs
*between* requests: any byte received cancels it). :func:`uvicorn_config` builds the
``uvicorn.Config`` from the limits, with :class:`LimitedHttpProtocol` as the HTTP protocol:

* a request head (request line and headers) must be complete within ``header_timeout``
  seconds, counted from the connection's opening for the first request and from the first
  byte of each later one on a keep-alive connection (slowloris); a late head gets
  ``408 Request Timeout`` and the connection is closed;
* a head larger than ``max_header_bytes`` gets ``431`` and the connection is closed (the
  parser never buffers more than that plus one read);
* body bytes that keep trickling in after the response was sent (a request the app answered
  without reading its body) are bounded by the same ``header_timeout``;
* ``max_connections`` connections (HTTP and WebSocket together) are served at once; the next
  HTTP request *or WebSocket upgrade* gets ``503`` (uvicorn's own ``limit_concurrency`` lets
  upgrades through);
* an idle keep-alive connection is closed after ``keep_alive_timeout`` seconds;
* WebSocket messages above ``max_message_bytes`` are refused with close code 1009 as soon as a
  frame header announces more (before the payload is read) — with permessage-deflate (kept
  on), decompression stops at the limit, so a small compressed frame cannot inflate into a
  huge message (:class:`LimitedWebSocketProtocol`: websockets' sans-I/O implementation,
  pinned as the one verified, which also frees a refused message at once).

Pass the same limits to ``create_app``: the endpoint enforces the rest (handshake timeout,
rates, outbound budget) and caps WebSocket connections on its own too.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, ClassVar

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from .limits import ServerLimits

__all__ = [
    "LimitedHttpProtocol",
    "LimitedWebSocketProtocol",
    "limited_http_protocol",
    "uvicorn_config",
]

_log = logging.getLogger("synced_store.server")


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools HTTP/1.1 protocol with a head deadline, a head size limit and a
    connection cap that also covers WebSocket upgrades.

    Use :func:`limited_http_protocol` to get a subclass bound to a :class:`ServerLimits`.
    """

    limits: ClassVar[ServerLimits] = ServerLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.limits.keep_alive_timeout  # type: ignore[assignment]
        #: Armed while a request head is awaited: closes the connection when it fires.
        self._head_timer: asyncio.TimerHandle | None = None
        #: A request head is being received (or awaited on a fresh connection).
        self._head_pending = False
        self._head_bytes = 0

    # -- the head deadline ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._begin_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._begin_head()

    def on_headers_complete(self) -> None:
        self._head_pending = False
        self._cancel_head_timer()
        size = len(self.url) + sum(len(k) + len(v) + 4 for k, v in self.headers) + 16
        if size > self.limits.max_header_bytes:
            raise _Refusal(431, b"Request Header Fields Too Large")  # stops the parser
        super().on_headers_complete()

    def _begin_head(self) -> None:
        if not self._head_pending:
            self._head_pending = True
            self._head_bytes = 0
        if self._head_timer is None:  # keep an earlier deadline (from the connection's start)
            self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_late)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        self._log_refusal(408)
        self._refuse(408, b"Request Timeout")

    def data_received(self, data: bytes) -> None:
        # uvicorn's HttpToolsProtocol.data_received, plus the head checks.
        if self.parser is None:  # already lost
            return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _Refusal):
                self._log_refusal(exc.__context__.status)
                self._refuse(exc.__context__.status, exc.__context__.text)
            else:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserError:
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self.transport.is_closing():
            return
        if self._head_pending:
            # A head still incomplete: what the parser holds is bounded by the limit plus
            # one read (a long header value is buffered whole before on_header).
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._log_refusal(431)
                self._refuse(431, b"Request Header Fields Too Large")
        elif (
            self._head_timer is None
            and self.timeout_keep_alive_task is None
            and self.cycle is not None
            and self.cycle.response_complete
        ):
            # Bytes after the response (the rest of a body the app did not read) cancelled
            # uvicorn's keep-alive timer: the wait for the next head is bounded all the same.
            self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_late)

    # -- the connection cap for WebSocket upgrades ------------------------------------------

    def handle_websocket_upgrade(self) -> None:
        cap = self.limit_concurrency
        if cap is not None and (len(self.connections) >= cap or len(self.tasks) >= cap):
            self.logger.warning("Exceeded concurrency limit (WebSocket upgrade refused).")
            self._refuse(503, b"Service Unavailable")
            return
        super().handle_websocket_upgrade()

    # -- helpers ----------------------------------------------------------------------------

    def _log_refusal(self, status: int) -> None:
        why = {
            408: f"no complete request head within {self.limits.header_timeout:g}s",
            431: f"request head over {self.limits.max_header_bytes} bytes",
        }[status]
        self.logger.info("%s: closing an HTTP connection: %s", _peer(self.client), why)

    def _refuse(self, status: int, text: bytes) -> None:
        """Answer ``status`` (unless a response is under way) and close the connection."""
        if self.cycle is None or self.cycle.response_complete:
            head = [f"HTTP/1.1 {status} {text.decode()}\r\n".encode()]
            head += [k + b": " + v + b"\r\n" for k, v in self.server_state.default_headers]
            head.append(
                b"content-type: text/plain; charset=utf-8\r\n"
                b"x-content-type-options: nosniff\r\n"
                b"content-length: " + str(len(text)).encode() + b"\r\n"
                b"connection: close\r\n\r\n"
            )
            self.transport.write(b"".join(head) + text)
        if self.transport.get_write_buffer_size() > 0:
            self.transport.abort()  # the peer does not read: do not wait for it
        else:
            self.transport.close()


class _Refusal(Exception):
    """Raised in a parser callback to stop parsing and answer ``status``."""

    def __init__(self, status: int, text: bytes) -> None:
        super().__init__(status, text)
        self.status = status
        self.text = text


class LimitedWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol on websockets' sans-I/O implementation, whose size limit
    holds per message across fragments and while inflating permessage-deflate data (the
    implementation the tests verify), with one fix: the error that refused a message (1009,
    or any other parse error) no longer keeps the data it was decoding alive. websockets keeps
    the exception, and its traceback held the partly inflated message (up to the limit) until
    the connection object went away: 50 connections refused at once pinned 50 times 8 MiB."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        exc: BaseException | None = self.conn.parser_exc
        while exc is not None and exc.__traceback__ is not None:
            exc.__traceback__ = None
            exc = exc.__context__

    def send_receive_event_to_app(self) -> None:
        """As uvicorn's, but a text message that is not UTF-8 is refused with 1007 and one
        line of log (uvicorn logs a traceback for each, which a client can send in a loop)."""
        if self.curr_msg_data_type == "text" and not self.close_sent:
            data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
            try:
                data.decode()
            except UnicodeDecodeError:
                self.frames = []
                _log.info(
                    "%s - refused a text message that is not UTF-8 (1007)", _peer(self.client)
                )
                self.conn.send_close(1007)
                self.handle_parser_exception()
                return
        super().send_receive_event_to_app()

    async def send(self, message: Any) -> None:
        """As uvicorn's; after a denial response (a refused Origin, the connection cap) the
        handshake counts as complete, so uvicorn does not log an error for each refusal."""
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            self.handshake_complete = True


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "client"


def limited_http_protocol(limits: ServerLimits) -> type[LimitedHttpProtocol]:
    """A :class:`LimitedHttpProtocol` subclass enforcing ``limits``."""

    class Bound(LimitedHttpProtocol):
        pass

    Bound.limits = limits
    Bound.__name__ = Bound.__qualname__ = "LimitedHttpProtocol"
    return Bound


def uvicorn_config(app: Any, limits: ServerLimits | None = None, **options: Any) -> uvicorn.Config:
    """The ``uvicorn.Config`` serving ``app`` within ``limits``.

    ``options`` are passed to ``uvicorn.Config`` (``host``, ``port``, ``log_level``, ...)
    and may not override the settings derived from the limits.
    """
    limits = limits or ServerLimits()
    derived: dict[str, Any] = {
        "http": limited_http_protocol(limits),
        "ws": LimitedWebSocketProtocol,
        "ws_max_size": limits.max_message_bytes,
        "ws_per_message_deflate": True,
        # uvicorn answers 503 once len(connections) >= limit_concurrency, counting the new
        # connection itself: + 1 serves exactly max_connections at once.
        "limit_concurrency": limits.max_connections + 1,
        # An int for uvicorn's signature; the protocol uses the exact (float) value.
        "timeout_keep_alive": max(1, math.ceil(limits.keep_alive_timeout)),
        "h11_max_incomplete_event_size": limits.max_header_bytes,
    }
    clash = sorted(set(derived) & set(options))
    if clash:
        raise TypeError(f"set by the limits, not as options: {', '.join(clash)}")
    return uvicorn.Config(app, **derived, **options)
