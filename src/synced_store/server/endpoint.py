"""The WebSocket sync endpoint: handshake, then pumps frames between the socket and a session.

Every frame is untrusted. Each way a connection can end is decided in one place,
:func:`_outcome`: a close code and a one-line log entry (a traceback only for our own bugs).

Before the upgrade is accepted: the ``Origin`` allow-list (403) and the connection cap (503).
Then the handshake, in order: instance id (4004), the ``connect`` frame within the handshake
timeout (4003), protocol version (4002), ``authenticate`` (4001), schema version (4005),
``authorize`` — open, and create if missing (4001, nothing created) — opening the instance
(1011 while it is failed, 1013 at the open-instance cap), membership with ``members_only``
(4001, nothing registered or sent), and binding the client id to its
user (4003 if another user owns it). After it, each frame is rate limited (slowed, then 1008).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..errors import (
    OverloadedError,
    ProtocolError,
    QuotaExceededError,
    StorageError,
    SyncedStoreError,
)
from ..protocol.codec import decode_client_message, encode
from ..protocol.codes import END_REASONS, CloseCode, ErrorKind
from ..protocol.messages import (
    Action,
    ClientMessage,
    Connect,
    Connected,
    Error,
    Pull,
    Push,
    action_failed,
)
from ..protocol.version import MAX_PROTOCOL_VERSION, MIN_PROTOCOL_VERSION
from ..storage.ids import validate_instance_id
from . import queries
from .auth import (
    Access,
    Authenticator,
    Authorizer,
    Identity,
    authenticate_token,
    authorize_instance,
    open_authorize,
)
from .instance import Instance
from .limits import ServerLimits
from .members import admit
from .rates import TokenBucket
from .registry import InstanceRegistry
from .session import Session
from .web_security import websocket_origin_allowed
from .wire import wire_for

__all__ = ["RawSendMiddleware", "SyncEndpoint"]

log = logging.getLogger("synced_store.server")
#: Seconds a closing handshake may take before the socket is dropped.
CLOSE_TIMEOUT = 2.0
#: Users whose rate buckets are kept (least recently seen ones are forgotten).
MAX_RATED_USERS = 10_000


class _Close(Exception):
    """Ends a connection with ``code`` (None: the client is gone, nothing to send)."""

    def __init__(self, code: int | None, reason: str = "", *, hard: bool = False) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        #: Drop the socket without a closing handshake (the client does not read).
        self.hard = hard


class _Connection:
    """One accepted WebSocket: a way to end it from anywhere (a session, a timer, the
    supervisor), and a hard abort that does not wait for a client that never reads."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self._ending: _Close | None = None
        self._ended = asyncio.Event()

    def end(self, code: int | None, reason: str = "", *, hard: bool = False) -> None:
        """Ask the connection to end (the first request wins)."""
        if self._ending is None:
            self._ending = _Close(code, reason, hard=hard)
            self._ended.set()

    def abort(self, code: int, reason: str) -> None:
        """End at once without a closing handshake (a session's send timed out)."""
        self.end(code, reason, hard=True)
        self.drop()

    async def watch(self) -> None:
        """Raise the requested :class:`_Close` when :meth:`end` is called."""
        await self._ended.wait()
        assert self._ending is not None
        raise self._ending

    def drop(self) -> None:
        """Drop the TCP connection now (uvicorn's transport), discarding unsent data."""
        send = self.ws.scope.get(RAW_SEND_KEY)
        transport = getattr(getattr(send, "__self__", None), "transport", None)
        if transport is None or transport.is_closing():
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:  # reset, so the kernel drops the unsent data too (no orphan)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()


#: Where :class:`RawSendMiddleware` leaves the server's own ``send`` in a WebSocket's scope.
RAW_SEND_KEY = "synced_store.raw_send"


class RawSendMiddleware:
    """Outermost middleware: keeps the ASGI server's ``send`` of each WebSocket in its scope,
    before the framework wraps it, so that :meth:`_Connection.drop` can reach the transport
    (uvicorn's protocol object) and drop a client that does not read."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope[RAW_SEND_KEY] = send
        await self.app(scope, receive, send)


class _UserRates:
    """Token buckets of one user: frames, pushed mutations, new connections."""

    __slots__ = ("connects", "frames", "mutations")

    def __init__(self, limits: ServerLimits, now: float) -> None:
        self.frames = TokenBucket(limits.frames_per_second, limits.frame_burst, now)
        self.mutations = TokenBucket(limits.mutations_per_second, limits.mutation_burst, now)
        self.connects = TokenBucket(limits.connects_per_second, limits.connect_burst, now)


class SyncEndpoint:
    """Serves ``/sync/{instance_id}``."""

    def __init__(
        self,
        registry: InstanceRegistry,
        authenticate: Authenticator,
        actions: Any = None,
        *,
        authorize: Authorizer | None = None,
        limits: ServerLimits | None = None,
        allowed_origins: Sequence[str] = (),
    ) -> None:
        self.registry = registry
        self.authenticate = authenticate
        self.authorize: Authorizer = authorize or open_authorize
        self.actions = actions
        self.limits = limits or registry.limits
        self.allowed_origins = tuple(allowed_origins)
        #: WebSocket connections being served now.
        self.connections = 0
        self._rates: OrderedDict[str, _UserRates] = OrderedDict()

    async def handle(self, ws: WebSocket) -> None:
        """The Starlette WebSocket endpoint."""
        origin = ws.headers.get("origin")
        if not websocket_origin_allowed(ws.scope, self.allowed_origins):
            log.info("refused a sync connection from origin %s", origin)
            await self._deny(ws, 403, "origin not allowed")
            return
        if self.connections >= self.registry.max_connections:
            log.warning("refused a sync connection: %d connections open", self.connections)
            await self._deny(ws, 503, "too many connections; try again later")
            return
        self.connections += 1
        try:
            await ws.accept()
            conn = _Connection(ws)
            try:
                await self._serve(ws, conn)
            except* Exception as eg:
                outcome = _outcome(eg)
            else:
                outcome = _Close(None)
            await self._finish(conn, outcome)
        finally:
            self.connections -= 1

    @staticmethod
    async def _deny(ws: WebSocket, status: int, text: str) -> None:
        try:
            await ws.send_denial_response(PlainTextResponse(text, status_code=status))
        except RuntimeError:  # the server has no denial responses: a bare refusal (403)
            await ws.close(CloseCode.POLICY_VIOLATION)

    async def _finish(self, conn: _Connection, outcome: _Close) -> None:
        if outcome.hard:
            conn.drop()
            return
        if outcome.code is None:
            return
        if outcome.code == CloseCode.POLICY_VIOLATION:
            log.info("closing a client: %s", outcome.reason)
        try:
            await asyncio.wait_for(
                self._close(conn.ws, outcome.code, outcome.reason), CLOSE_TIMEOUT
            )
        except TimeoutError:
            log.info("closing handshake timed out; dropping the connection")
            conn.drop()

    async def _close(self, ws: WebSocket, code: int, reason: str) -> None:
        try:
            kind = END_REASONS.get(CloseCode(code), CloseCode(code).name.lower())
            await ws.send_text(encode(Error(kind=kind, message=reason)).decode())
            await ws.close(code, reason[:120])
        except Exception:
            log.debug("close failed", exc_info=True)

    async def _serve(self, ws: WebSocket, conn: _Connection) -> None:
        instance_id = ws.path_params.get("instance_id", "")
        try:
            validate_instance_id(instance_id)
        except SyncedStoreError as exc:
            raise _Close(CloseCode.BAD_INSTANCE, str(exc)) from None
        try:
            message = await asyncio.wait_for(ws.receive(), self.limits.handshake_timeout)
        except TimeoutError:
            raise _Close(CloseCode.BAD_MESSAGE, "no connect message in time") from None
        hello = self._decode(message)
        if type(hello) is not Connect:
            raise _Close(CloseCode.BAD_MESSAGE, "the first message must be 'connect'")
        pv = hello.protocol_version
        if not MIN_PROTOCOL_VERSION <= pv <= MAX_PROTOCOL_VERSION:
            raise _Close(
                CloseCode.VERSION_MISMATCH,
                f"protocol version {pv} not supported "
                f"({MIN_PROTOCOL_VERSION}..{MAX_PROTOCOL_VERSION}); reload",
            )
        identity = await authenticate_token(self.authenticate, hello.token)
        if identity is None:
            raise _Close(CloseCode.AUTH_FAILED, "authentication failed")
        if identity.expires_at is not None and identity.expires_at <= time.time():
            raise _Close(CloseCode.AUTH_FAILED, "token expired")
        user_id = identity.user_id
        schema = self.registry.config.schema
        schema_version = schema.schema_version
        if hello.schema_version != schema_version and not schema.can_migrate_from(
            hello.schema_version
        ):
            raise _Close(
                CloseCode.SCHEMA_MISMATCH,
                f"schema version {hello.schema_version} != server's "
                f"{schema_version}; clear local data and reload",
            )
        access = await authorize_instance(self.authorize, identity, instance_id)
        if access is Access.DENY:
            log.info("refused %s: not authorized to open %s", user_id, instance_id)
            raise _Close(CloseCode.AUTH_FAILED, f"not authorized to open {instance_id}")
        if access is Access.OPEN and not await self.registry.exists(instance_id):
            log.info("refused %s: not authorized to create %s", user_id, instance_id)
            raise _Close(
                CloseCode.AUTH_FAILED,
                f"instance {instance_id} does not exist (not authorized to create it)",
            )
        rates = self._rates_of(user_id)
        if rates.connects.take(1, asyncio.get_running_loop().time()) > 0:
            raise _Close(CloseCode.POLICY_VIOLATION, "too many new connections; slow down")
        async with self.registry.hold(instance_id) as instance:
            if not await admit(instance, identity, access):  # members_only (members.py)
                log.info("refused %s: not a member of %s", user_id, instance_id)
                raise _Close(CloseCode.AUTH_FAILED, f"{user_id} is not a member of {instance_id}")
            await self._run_session(ws, conn, instance, hello, identity, rates)

    async def _run_session(
        self,
        ws: WebSocket,
        conn: _Connection,
        instance: Instance,
        hello: Connect,
        identity: Identity,
        rates: _UserRates,
    ) -> None:
        user_id = identity.user_id
        client_id = hello.client_id
        told = hello.last_mutation_id or 0
        owner, server_lmid = await instance.register_client(client_id, user_id, told)
        if owner != user_id:
            raise _Close(CloseCode.BAD_MESSAGE, "client id belongs to another user")
        if hello.cookie is not None:  # from another process, it may be ahead of this one
            await instance.follower.reach(hello.cookie)
        session = Session(
            wire=wire_for(ws.scope.get(RAW_SEND_KEY), ws.send_text),
            fanout=instance.fanout,
            close=self._kick(conn),
            store=instance.store,
            user_id=user_id,
            client_id=client_id,
            cookie=hello.cookie,
            known_lmid=min(told, server_lmid),
            schema_version=hello.schema_version,
            limits=self.limits,
            lmid_of=lambda: instance.committed_lmid(client_id),
            abort=conn.abort,
            end=conn.end,
            windows=instance.config.schema.pull_windows,
            window_bytes=instance.config.schema.initial_pull_max_bytes,
        )
        expiry: asyncio.TimerHandle | None = None
        if identity.expires_at is not None:
            expiry = asyncio.get_running_loop().call_later(
                identity.expires_at - time.time(), conn.end, CloseCode.AUTH_FAILED, "token expired"
            )
        await instance.attach(session)
        try:
            connected = Connected(
                client_id=client_id,
                user_id=user_id,
                last_mutation_id=server_lmid,
                instance_id=instance.instance_id,
                schema_version=self.registry.config.schema.schema_version,
            )
            await ws.send_text(encode(connected).decode())
            async with asyncio.TaskGroup() as tg:
                tg.create_task(session.run_sender())
                tg.create_task(self._read_loop(ws, conn, instance, session, tg, rates))
                tg.create_task(conn.watch())
        finally:
            session.closed = True
            if expiry is not None:
                expiry.cancel()
            instance.detach(session)

    def _rates_of(self, user_id: str) -> _UserRates:
        """The rate buckets of a user, shared by all their connections (so reconnecting does
        not refill them); the least recently seen users are forgotten past ``MAX_RATED_USERS``."""
        rates = self._rates.get(user_id)
        if rates is None:
            rates = self._rates[user_id] = _UserRates(
                self.limits, asyncio.get_running_loop().time()
            )
            if len(self._rates) > MAX_RATED_USERS:
                self._rates.popitem(last=False)
        else:
            self._rates.move_to_end(user_id)
        return rates

    @staticmethod
    def _kick(conn: _Connection) -> Any:
        async def close(code: int, reason: str) -> None:
            conn.end(code, reason)

        return close

    def _decode(self, message: Any) -> ClientMessage:
        """The one decoding path of client frames: any failure is a :class:`ProtocolError`."""
        if message["type"] == "websocket.disconnect":
            raise _Close(None)
        data = message.get("text")
        if data is None:
            raw = message.get("bytes")
            if raw is None:
                raise ProtocolError("empty WebSocket message")
            try:
                data = raw.decode()
            except UnicodeDecodeError:
                raise ProtocolError("binary frame is not UTF-8 JSON") from None
        if len(data) > self.limits.max_message_bytes:
            raise ProtocolError(f"frame exceeds {self.limits.max_message_bytes} bytes")
        return decode_client_message(data)

    async def _read_loop(
        self,
        ws: WebSocket,
        conn: _Connection,
        instance: Instance,
        session: Session,
        tg: asyncio.TaskGroup,
        rates: _UserRates,
    ) -> None:
        limits = self.limits
        loop = asyncio.get_running_loop()
        frames, mutations = rates.frames, rates.mutations
        throttled_since: float | None = None
        while not session.closed:
            msg = self._decode(await ws.receive())
            now = loop.time()
            wait = frames.take(1, now)
            if type(msg) is Push:
                wait = max(wait, mutations.take(len(msg.mutations), now))
            if wait > 0:
                throttled_since = throttled_since or now
                if now + wait - throttled_since > limits.throttle_close_after:
                    raise _Close(
                        CloseCode.POLICY_VIOLATION,
                        f"rate limit exceeded ({limits.frames_per_second:g} frames/s, "
                        f"{limits.mutations_per_second:g} mutations/s)",
                    )
                await asyncio.sleep(wait)
            else:
                throttled_since = None
            if type(msg) is Push:
                instance.submit_push(session, msg.mutations)
                await instance.wait_for_room()
            elif type(msg) is Action:
                self._start_action(instance, session, msg, tg)
            elif type(msg) is Pull:
                session.request_pull()
            else:
                raise ProtocolError("'connect' may only be the first message")
        conn.end(None)

    def _start_action(
        self, instance: Instance, session: Session, msg: Action, tg: asyncio.TaskGroup
    ) -> None:
        cap = self.limits.max_actions_per_connection
        if session.actions_in_flight >= cap:
            error = f"more than {cap} actions in flight on this connection"
            kind = ErrorKind.ACTION_FAILED
        elif self.actions is None and not queries.is_query(msg.name):
            error, kind = "this server runs no actions", ErrorKind.UNKNOWN_NAME
        else:
            # Counted now, not when the task first runs: a burst of frames read in one loop
            # turn must not start more than the cap.
            session.actions_in_flight += 1
            tg.create_task(self._run_action(instance, session, msg))
            return
        session.send_message(action_failed(msg.request_id, kind, error))

    async def _run_action(self, instance: Instance, session: Session, msg: Action) -> None:
        try:
            if queries.is_query(msg.name):
                session.send_message(await queries.call(instance, session, msg))
            elif self.actions is not None:
                await self.actions.call_from_client(instance, session, msg)
        finally:
            session.actions_in_flight -= 1


def _outcome(eg: BaseExceptionGroup[Exception] | Exception) -> _Close:
    """How a connection ends, from what ended it (see the module doc)."""
    excs = list(_leaves(eg))
    for exc in excs:  # an explicit close wins over what it caused
        if isinstance(exc, _Close):
            return exc
    for exc in excs:
        # The client went away (uvicorn raises its ClientDisconnected, an OSError).
        if isinstance(exc, WebSocketDisconnect | OSError):
            return _Close(None)
    exc = excs[0]
    if isinstance(exc, ProtocolError):
        log.info("closing a client: bad frame: %s", exc)
        return _Close(CloseCode.BAD_MESSAGE, str(exc))
    if isinstance(exc, QuotaExceededError):
        log.info("refusing a client: %s", exc)
        return _Close(CloseCode.POLICY_VIOLATION, str(exc))
    if isinstance(exc, OverloadedError):
        log.warning("refusing a client: %s", exc)
        return _Close(CloseCode.TRY_AGAIN_LATER, str(exc))
    if isinstance(exc, StorageError):
        log.info("closing a client: %s", exc)  # the instance's failure is logged once, itself
        reason = str(exc) if exc.transient else "instance unavailable; reconnect later"
        return _Close(CloseCode.INTERNAL_ERROR, reason)
    log.error("sync connection failed", exc_info=exc)
    return _Close(CloseCode.INTERNAL_ERROR, "internal error")


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for e in exc.exceptions:
            out.extend(_leaves(e))
        return out
    return [exc]
