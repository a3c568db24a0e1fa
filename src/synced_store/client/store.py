"""``SyncedStoreClient``: the asyncio client (``synced_store.client.connect``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..app_config import ClientConfig
from ..core.client_engine import ClientEngine
from ..core.context import ReadContext, json_input
from ..core.events import (
    ActionCompleted,
    Confirmed,
    MutationRejected,
    ServerError,
    SessionStarted,
    SnapshotUpdated,
    StartedOver,
)
from ..core.keys import PUBLIC, private_ns, unique_id
from ..core.search import search_args
from ..core.system_tables import SYSTEM_TABLES
from ..errors import (
    ActionError,
    ClientClosedError,
    ConnectionEndedError,
    MutationFailedError,
    OfflineError,
    ProtocolError,
    SyncedStoreError,
)
from ..protocol.codes import END_REASONS, TERMINAL_CODES, CloseCode
from ..storage.client_cache import Persistence
from ..types import ConnectionStatus, EntryKey
from .external import ExternalStoreView, close_views, open_view
from .paging import WindowedReads
from .proxies import ActionProxy, MutateProxy, MutationResult
from .transport import Connection, ConnectionLost, Connector, WebSocketConnector, sync_url

__all__ = ["MutationResult", "SyncedStoreClient", "connect"]

log = logging.getLogger("synced_store.client")
#: Close codes after which the client waits at least ``BACK_OFF_MIN`` seconds and keeps its
#: backoff until a connection has lasted ``BACK_OFF_HOLD`` seconds: the server said "too fast"
#: (1008: rate limit, or this client did not read in time) or "too busy" (1013).
BACK_OFF_CODES = frozenset({CloseCode.POLICY_VIOLATION, CloseCode.TRY_AGAIN_LATER})
BACK_OFF_MIN = 1.0
BACK_OFF_HOLD = 10.0


class SyncedStoreClient(WindowedReads):
    """A local-first client of one instance. Create it with :func:`connect`."""

    def __init__(
        self,
        config: ClientConfig,
        connector: Connector,
        *,
        token: str | None,
        user_id: str,
        client_id: str,
        persistence: Persistence | None = None,
        reconnect_min: float = 0.05,
        reconnect_max: float = 5.0,
    ) -> None:
        self.config = config
        self.connector = connector
        self.token = token
        self.engine = ClientEngine(config, user_id=user_id, client_id=client_id)
        self.client_id = client_id
        self.persistence = persistence
        self.mutate = MutateProxy(self)
        self.action = ActionProxy(self)
        #: ``"disconnected"``, ``"connecting"`` or ``"connected"`` (a :class:`ConnectionStatus`).
        self.connection_status = ConnectionStatus.DISCONNECTED
        self.end_reason: str | None = None
        self.is_bootstrapped = False
        self.has_server_data = False
        self._reconnect = (reconnect_min, reconnect_max)
        self._futures: dict[int, asyncio.Future[None]] = {}
        self._actions: dict[str, asyncio.Future[Any]] = {}
        self._failed_cbs: list[Callable[[MutationFailedError], None]] = []
        self._status_cbs: list[Callable[[str], None]] = []
        self._end_cbs: list[Callable[[str], None]] = []
        self._pending_cbs: list[Callable[[list[dict[str, Any]]], None]] = []
        self._last_pending_ids: tuple[int, ...] = ()
        self._changed = asyncio.Event()
        self._out = asyncio.Event()
        self._conn: Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._unique = 0
        self._ended = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------------

    def _restore(self) -> None:
        if self.persistence is None:
            return
        st = self.persistence.load()
        self._unique = int(st.meta.get("unique_counter", 0))
        if st.rows or st.pending or st.meta.get("cookie") is not None:
            self.engine.restore(
                cookie=st.meta.get("cookie"),
                last_mutation_id=int(st.meta.get("last_mutation_id", 0)),
                rows=st.rows,
                pending=st.pending,
                schema_version=st.meta.get("schema_version"),
            )
            self.is_bootstrapped = st.meta.get("cookie") is not None
            for m in self.engine.pending:
                self._futures[m.id] = self._new_future()

    def _start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="synced-store")

    async def close(self) -> None:
        """Close the connection and the local database. Pending mutations stay persisted."""
        if self._closed:
            return
        self._closed = True
        await close_views(self)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        for fut in list(self._futures.values()) + list(self._actions.values()):
            if not fut.done():
                fut.set_exception(ClientClosedError("client closed"))
        self._set_status(ConnectionStatus.DISCONNECTED)
        if self.persistence is not None:
            self.persistence.close()
        self._pulse()

    async def __aenter__(self) -> SyncedStoreClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- state -----------------------------------------------------------------------------

    @property
    def user_id(self) -> str:
        """The user this client acts as."""
        return self.engine.user_id

    @property
    def is_online(self) -> bool:
        """True while connected to the server."""
        return self.connection_status == ConnectionStatus.CONNECTED

    @property
    def pending_count(self) -> int:
        """Number of mutations not yet confirmed by the server."""
        return len(self.engine.pending)

    @property
    def cookie(self) -> int | None:
        """The server version this client's snapshot reflects."""
        return self.engine.cookie

    def is_ended(self) -> bool:
        """True once the server ended the session for good or the client was closed."""
        return self.end_reason is not None or self._closed

    def _pulse(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(
        self, predicate: Callable[[], bool], *, timeout: float | None = None
    ) -> None:
        """Wait (without polling) until ``predicate()`` holds; re-checked on every change."""

        async def loop() -> None:
            while not predicate():
                if self.end_reason is not None:
                    raise ConnectionEndedError(self.end_reason)
                if self._closed:
                    raise ClientClosedError("client closed")
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout)

    async def wait_for_server_data(self, timeout: float | None = None) -> None:
        """Wait for the first server data of this session."""
        await self.wait_until(lambda: self.has_server_data, timeout=timeout)

    async def wait_for_bootstrap(self, timeout: float | None = None) -> None:
        """Wait until data to render is available (local cache or server)."""
        await self.wait_until(lambda: self.is_bootstrapped, timeout=timeout)

    async def wait_for_sync(self, timeout: float | None = None) -> None:
        """Wait until every pending mutation is confirmed."""
        await self.wait_until(lambda: not self.engine.pending, timeout=timeout)

    # -- reading ---------------------------------------------------------------------------

    async def query(self, fn: Callable[[ReadContext], Any]) -> Any:
        """Run a read-only query ``fn(ctx)`` against the local view; returns its result."""
        return self.engine.query(fn)

    def subscribe(
        self, fn: Callable[[ReadContext], Any], callback: Callable[[Any], None]
    ) -> Callable[[], None]:
        """Call ``callback(result)`` now (soon) and whenever ``fn``'s result changes.

        ``fn`` is re-run only when a row or range it read changes. Returns ``unsubscribe()``.
        """
        sub = self.engine.subscribe(fn, callback, deferred=True)
        asyncio.get_running_loop().call_soon(sub.deliver_first)
        return lambda: self.engine.unsubscribe(sub)

    def subscribe_to_table(
        self,
        name: str,
        callback: Callable[[list[tuple[EntryKey, Any]], dict[str, list[str]]], None],
        *,
        private: bool = False,
    ) -> Callable[[], None]:
        """``callback(entries, changes)`` with the table's rows and
        ``{"added": [...], "modified": [...], "removed": [...]}`` item keys (first call: all
        added). ``private=True`` watches this user's private rows of the table.

        Maintained incrementally: an update costs the rows it changed plus building the
        ``entries`` list, not a re-run of a whole-table query.
        """
        if name not in SYSTEM_TABLES:  # ``$users`` and ``$user_info`` are readable too
            self.config.schema.table_def(name)
        ns = private_ns(self.engine.user_id) if private else PUBLIC
        sub = self.engine.subscribe_table(ns, name, callback, deferred=True)
        asyncio.get_running_loop().call_soon(sub.deliver_first)
        return lambda: self.engine.unsubscribe_table(sub)

    async def external_store(self, instance_id: str) -> ExternalStoreView:
        """A live, read-only view (query, subscribe) of another instance of this server, over
        a second connection as this store's user; closed with this store (client/external.py)."""
        return await open_view(self, instance_id)

    # -- writing ---------------------------------------------------------------------------

    def _new_future(self) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Mark exceptions as retrieved: nobody has to await ``confirmed``.
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        return fut

    def _mutate(self, name: str, args: Any, dedupe_key: str | None = None) -> MutationResult:
        if self._closed:
            raise ClientClosedError("client closed")
        if self.end_reason is not None:
            raise ConnectionEndedError(self.end_reason)
        m = self.engine.mutate(name, args, dedupe_key=dedupe_key)
        fut = self._futures[m.id] = self._new_future()
        if self.persistence is not None:
            self.persistence.add_pending(
                m.id,
                m.name,
                m.args,
                self.config.schema.schema_version,
                dedupe_key,
                next_mutation_id=self.engine.next_mutation_id,
            )
        self._after_engine()
        return MutationResult(m.id, name, fut)

    def on_failed_mutation(
        self, callback: Callable[[MutationFailedError], None]
    ) -> Callable[[], None]:
        """Call ``callback(error)`` when the server rejects a mutation. Returns unsubscribe."""
        self._failed_cbs.append(callback)
        return lambda: self._failed_cbs.remove(callback)

    def on_connection_status(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(status)`` on every connection status change. Returns unsubscribe."""
        self._status_cbs.append(callback)
        return lambda: self._status_cbs.remove(callback)

    def on_ended(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(end_reason)`` when the server ends the session for good (kicked,
        auth_failed, version_mismatch, schema_version_mismatch, ...). Returns unsubscribe."""
        self._end_cbs.append(callback)
        return lambda: self._end_cbs.remove(callback)

    def on_schema_version_mismatch(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` when the server refuses this client's schema version (the local
        data has been cleared; reload the app). Returns unsubscribe."""

        def on_end(reason: str) -> None:
            if reason == "schema_version_mismatch":
                callback()

        return self.on_ended(on_end)

    def get_pending_mutations(self) -> list[dict[str, Any]]:
        """The pending mutations, oldest first: ``[{"id", "name", "args"}, ...]``."""
        return [{"id": m.id, "name": m.name, "args": m.args} for m in self.engine.pending]

    def on_pending_mutations_changed(
        self, callback: Callable[[list[dict[str, Any]]], None]
    ) -> Callable[[], None]:
        """Call ``callback(pending)`` whenever the set of pending mutations changes (a
        "saving..." indicator). Returns unsubscribe."""
        self._pending_cbs.append(callback)
        return lambda: self._pending_cbs.remove(callback)

    @property
    def state(self) -> str:
        """``"initializing"`` until bootstrapped, ``"ready"``, then ``"ended"`` for good."""
        if self.is_ended():
            return "ended"
        return "ready" if self.is_bootstrapped else "initializing"

    async def wait_for_local_data(self) -> None:
        """Local (persisted) data is loaded when :func:`connect` returns: returns at once."""
        return None

    async def make_unique_id(self) -> str:
        """A unique id such as ``"3f9a1c2b7d4e8a01-a7"``: this client's ids sort in the order
        they were made (:func:`~synced_store.core.keys.unique_id`)."""
        self._unique += 1
        if self.persistence is not None:
            self.persistence.set_meta(unique_counter=self._unique)
        return unique_id(self.client_id, self._unique)

    async def _action(self, name: str, args: Any) -> Any:
        adef = self.config.schema.action(name)
        wire = json_input(adef.input_encode, args, f"input for action {name!r}")
        if not self.is_online:
            raise OfflineError(f"action {name!r} needs the server and this client is offline")
        await self.wait_for_sync()
        if not self.is_online or self._conn is None:
            raise OfflineError(f"action {name!r} needs the server and this client is offline")
        return await self._await_result(self.engine.call_action(name, wire))

    async def _query(self, name: str, args: Any) -> Any:
        """Call the server's built-in query ``name`` (``"$..."``) with JSON ``args``; returns
        its output or raises :class:`ActionError` (:class:`OfflineError` when offline)."""
        if not self.is_online or self._conn is None:
            raise OfflineError(f"{name!r} needs the server and this client is offline")
        return await self._await_result(self.engine.call_query(name, args))

    async def search(self, table: str, query: str, limit: int = 20) -> list[dict[str, Any]]:
        """Rows of searchable ``table`` whose text holds every word of ``query`` (plain words;
        nothing in it is operator syntax), searched on the server (``$search``) over the rows
        this user may see: ``[{"key", "sort_key", "value", "private", "score"}]``, newest
        first by the table's ``timestamp_field`` (else by relevance), at most ``limit``
        (1-100). Raises :class:`ValidationError` for a bad query at once,
        :class:`OfflineError` when offline."""
        args = search_args(self.config.schema, table, query, limit)
        out: list[dict[str, Any]] = await self._query("$search", args)
        return out

    async def _await_result(self, rid: str) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._actions[rid] = fut
        self._out.set()
        try:
            return await fut
        finally:
            self._actions.pop(rid, None)

    # -- engine plumbing -------------------------------------------------------------------

    def _after_engine(self) -> None:
        """Handle what the engine produced: frames to send, events."""
        engine = self.engine
        self._out.set()
        for ev in engine.events_received():
            if isinstance(ev, Confirmed):
                for mid in ev.mutation_ids:
                    fut = self._futures.pop(mid, None)
                    if fut is not None and not fut.done():
                        fut.set_result(None)
            elif isinstance(ev, SnapshotUpdated):
                self.has_server_data = True
                self.is_bootstrapped = True
                if self.persistence is not None:
                    self.persistence.save_update(
                        reset=ev.reset,
                        rows=ev.rows,
                        last_mutation_id=ev.last_mutation_id,
                        cookie=ev.cookie,
                        schema_version=self.config.schema.schema_version,
                    )
            elif isinstance(ev, MutationRejected):
                self._rejected(ev)
            elif isinstance(ev, ActionCompleted):
                fut = self._actions.get(ev.request_id)
                if fut is not None and not fut.done():
                    if ev.ok:
                        fut.set_result(ev.output)
                    else:
                        fut.set_exception(ActionError(str(ev.error)))
            elif isinstance(ev, SessionStarted):
                if self.persistence is not None:
                    self.persistence.set_meta(user_id=ev.user_id)
                self._set_status(ConnectionStatus.CONNECTED)
            elif isinstance(ev, StartedOver):
                self._started_over(ev)
            elif isinstance(ev, ServerError):
                log.warning("synced-store: server error %s: %s", ev.kind, ev.message)
        if self._pending_cbs:
            ids = tuple(m.id for m in engine.pending)
            if ids != self._last_pending_ids:
                self._last_pending_ids = ids
                pending = self.get_pending_mutations()
                for pcb in list(self._pending_cbs):
                    try:
                        pcb(pending)
                    except Exception:
                        log.exception("synced-store: on_pending_mutations_changed callback raised")
        self._pulse()

    def _rejected(self, ev: MutationRejected) -> None:
        err = MutationFailedError(ev.mutation_id, ev.name, ev.kind, ev.message)
        log.warning("synced-store: mutation failed: %s", err)
        fut = self._futures.pop(ev.mutation_id, None)
        if fut is not None and not fut.done():
            fut.set_exception(err)
        for cb in list(self._failed_cbs):
            try:
                cb(err)
            except Exception:
                log.exception("synced-store: on_failed_mutation callback raised")

    def _set_status(self, status: ConnectionStatus) -> None:
        if status != self.connection_status:
            self.connection_status = status
            for cb in list(self._status_cbs):
                try:
                    cb(status)
                except Exception:
                    log.exception("connection status callback raised")
            self._pulse()

    def _on_frame(self, frame: str | bytes) -> None:
        try:
            self.engine.receive(frame)
        finally:
            self._after_engine()

    async def _run(self) -> None:
        delay = self._reconnect[0]
        loop = asyncio.get_running_loop()
        #: After a 1008/1013 (rate limit, slow reading, server at capacity) the backoff is at
        #: least 1 s and is not reset until a connection has lasted this long.
        penalty_until = 0.0
        while not self._closed:
            self._set_status(ConnectionStatus.CONNECTING)
            try:
                conn = await self.connector.connect()
            except (OSError, ConnectionLost, TimeoutError, SyncedStoreError) as exc:
                log.debug("connect failed: %r", exc)
                self._set_status(ConnectionStatus.DISCONNECTED)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._reconnect[1])
                continue
            self._conn = conn
            code = 1006
            reason = ""
            try:
                await conn.send(self.engine.connect_frame(self.token))
                async with asyncio.TaskGroup() as tg:
                    writer = tg.create_task(self._writer(conn))
                    try:
                        while True:
                            text = await conn.recv()
                            self._on_frame(text)
                            if self.connection_status == ConnectionStatus.CONNECTED and (
                                loop.time() >= penalty_until
                            ):
                                delay = self._reconnect[0]
                    finally:
                        writer.cancel()
            except* ConnectionLost as eg:
                lost = eg.exceptions[0]
                assert isinstance(lost, ConnectionLost)
                code, reason = lost.code, lost.reason
            except* ProtocolError as eg:
                log.warning("reconnecting: %s", eg.exceptions[0])
            except* Exception as eg:
                # A bug must not silently kill syncing: log it, reconnect and pull again.
                log.error("synced-store: client error; reconnecting", exc_info=eg.exceptions[0])
            finally:
                self._conn = None
                self.engine.disconnected()
                self._after_engine()
                try:
                    await conn.close()
                except Exception:
                    log.debug("close failed", exc_info=True)
                for fut in self._actions.values():
                    if not fut.done():
                        fut.set_exception(OfflineError("connection lost during the action"))
            self._set_status(ConnectionStatus.DISCONNECTED)
            if code in TERMINAL_CODES:
                self._end(CloseCode(code), reason)
                return
            if code in BACK_OFF_CODES:
                log.warning("synced-store: server asked to back off (%s): %s", code, reason)
                delay = max(delay, BACK_OFF_MIN)
                penalty_until = loop.time() + delay + BACK_OFF_HOLD
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._reconnect[1])

    def _started_over(self, ev: StartedOver) -> None:
        """The engine continues as a new client (the server lost this one's history)."""
        self.client_id = ev.client_id
        self._futures = {ev.renumbered.get(k, k): f for k, f in self._futures.items()}
        if self.persistence is not None:
            self.persistence.replace_pending(
                [
                    (m.id, m.name, m.args, m.schema_version, m.dedupe_key)
                    for m in self.engine.pending
                ]
            )
            self.persistence.set_meta(
                client_id=ev.client_id,
                cookie=None,
                last_mutation_id=0,
                next_mutation_id=self.engine.next_mutation_id,
            )

    def _end(self, code: CloseCode, reason: str) -> None:
        self.end_reason = END_REASONS.get(code, "application")
        log.error("synced-store: session ended by the server (%s): %s", self.end_reason, reason)
        if code == CloseCode.SCHEMA_MISMATCH and self.persistence is not None:
            self.persistence.clear()
        err = ConnectionEndedError(self.end_reason, reason)
        for fut in list(self._futures.values()):
            if not fut.done():
                fut.set_exception(err)
        for cb in list(self._end_cbs):
            try:
                cb(self.end_reason)
            except Exception:
                log.exception("on_ended callback raised")
        self._pulse()

    async def _writer(self, conn: Connection) -> None:
        while True:
            await self._out.wait()
            self._out.clear()
            for frame in self.engine.frames_to_send():
                await conn.send(frame)


async def connect(
    url: str,
    backend_or_config: ClientConfig,
    *,
    instance_id: str,
    token: str | None = None,
    persist_path: str | Path | None = None,
    user_id: str | None = None,
    connector: Connector | None = None,
    compression: str | None = None,
    reconnect_delay: tuple[float, float] = (0.05, 5.0),
) -> SyncedStoreClient:
    """Open a client of ``instance_id`` on the server at ``url`` (``ws://host:port``).

    Returns at once (local data, if persisted, is loaded); syncing runs in the background.
    ``user_id`` is the user to act as before the server confirms it (default: the persisted
    one, else the token, as in the development authentication scheme). ``compression="deflate"``
    negotiates permessage-deflate. ``reconnect_delay`` is the (first, longest) wait between
    reconnect attempts; it doubles after each failure.
    """
    persistence = Persistence(persist_path) if persist_path is not None else None
    meta: dict[str, Any] = {}
    if persistence is not None:
        meta = persistence.load().meta
    client_id = str(meta.get("client_id") or secrets.token_hex(8))
    uid = user_id or meta.get("user_id") or token or "anonymous"
    if persistence is not None and "client_id" not in meta:
        persistence.set_meta(client_id=client_id, user_id=uid)
    client = SyncedStoreClient(
        backend_or_config,
        connector or WebSocketConnector(sync_url(url, instance_id), compression=compression),
        token=token,
        user_id=str(uid),
        client_id=client_id,
        persistence=persistence,
        reconnect_min=reconnect_delay[0],
        reconnect_max=reconnect_delay[1],
    )
    client._restore()
    client._start()
    return client
