"""The client's sync engine, without I/O: frames in, frames and events out.

The engine keeps one ordered in-memory store holding the **view**: the last server snapshot
with every pending mutation applied on top. ``_originals`` remembers the snapshot's value of
each row a pending mutation changed, so the snapshot can be restored exactly.

On a server update (a poke) the engine:

1. restores the snapshot (undoes the pending overlay),
2. applies the server patch and advances its cookie,
3. drops the pending mutations the server has processed (``id <= last_mutation_id``),
4. replays the rest: a mutation whose read set touches nothing that changed is not re-run,
   its recorded writes are re-applied; the others run again against the new state,
5. compares old and new values of every row that may have changed, and re-runs only the
   subscriptions whose read sets touch a row that really changed.

It is the only receive path of every client (the asyncio facade, the browser's Pyodide worker):
:meth:`ClientEngine.receive` takes each frame as it arrives and handles every message — append
frames, multi-part pokes, the server having lost this client's history, action results, error
kinds. Usage contract for the I/O layer around it: start each connection with
:meth:`connect_frame`, feed every frame to :meth:`receive`, send everything from
:meth:`frames_to_send` after any call, handle everything from :meth:`events_received`, and call
:meth:`disconnected` when the connection ends. ``receive`` raising :class:`ProtocolError` means
"reconnect" (a malformed or out-of-sequence frame, or the server asked to push again).
"""

from __future__ import annotations

import inspect
import logging
import secrets
from collections.abc import Callable
from typing import Any

from ..app_config import ClientConfig
from ..errors import MutatorError, ProtocolError, SyncedStoreError
from ..protocol.append import AppendDecoder
from ..protocol.codec import decode_server_message, encode, push_frames
from ..protocol.codes import RECONNECT_ERROR_KINDS
from ..protocol.messages import (
    SKIP,
    Action,
    ActionResult,
    Connect,
    Connected,
    Error,
    Mutation,
    MutationErrorReport,
    PatchOp,
    Poke,
    PushResponse,
)
from ..protocol.version import PROTOCOL_VERSION
from ..types import RowKey
from .context import MutationContext, ReadContext, json_input, run_sync
from .events import (
    ActionCompleted,
    Confirmed,
    EngineEvent,
    MutationRejected,
    ServerError,
    SessionStarted,
    SnapshotUpdated,
    StartedOver,
)
from .pending import ClientTx, PendingMutation, Row, gc_paused
from .readset import ReadSet
from .rebase import apply_rows, restore_snapshot, rows_after_patch, snapshot_rows
from .store import MemoryStore
from .subscriptions import Subscription, Subscriptions, TableCallback, TableSubscription
from .window import ClientWindows

__all__ = [
    "SKIP",
    "ActionCompleted",
    "ClientEngine",
    "Confirmed",
    "EngineEvent",
    "MutationRejected",
    "PendingMutation",
    "ServerError",
    "SessionStarted",
    "SnapshotUpdated",
    "StartedOver",
    "Subscription",
    "TableSubscription",
    "gc_paused",
]

log = logging.getLogger("synced_store.client")
#: Server updates with at least this many ops run with the cyclic GC paused (see gc_paused).
BULK_OPS = 1000
#: Frames at least this large are decoded and applied with the cyclic GC paused.
BULK_FRAME_BYTES = 256 * 1024
#: Mutations per push frame, and about how many bytes.
PUSH_FRAME_MUTATIONS = 500
PUSH_FRAME_BYTES = 1 << 20


def _new_client_id() -> str:
    return secrets.token_hex(8)


class ClientEngine:
    """Optimistic mutations, rebase on server updates, and fine-grained subscriptions."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        user_id: str,
        client_id: str,
        next_mutation_id: int = 1,
        new_client_id: Callable[[], str] = _new_client_id,
    ) -> None:
        self.config = config
        self.schema = config.schema
        self.user_id = user_id
        self.client_id = client_id
        self.store = MemoryStore()
        #: The server cookie of the snapshot; None until the first server data.
        self.cookie: int | None = None
        #: Highest mutation id whose effects are in the snapshot.
        self.last_mutation_id = next_mutation_id - 1
        self.next_mutation_id = next_mutation_id
        self.pending: list[PendingMutation] = []
        self.subscriptions = Subscriptions(self.store, self.query)
        self.has_server_data = False
        self._new_client_id = new_client_id
        self._originals: dict[RowKey, Row | None] = {}
        self._frames: list[bytes] = []
        self._events: list[EngineEvent] = []
        self._connected = False
        self._sent_upto = 0
        self._parts: list[Poke] = []
        self._append = AppendDecoder()
        self._action_ids = 0
        self.windows = ClientWindows(self) if self.schema.pull_windows else None  # window.py

    # -- outputs ---------------------------------------------------------------------------

    def frames_to_send(self) -> list[bytes]:
        """Frames for the server (JSON text), oldest first; the list is cleared. Pushes queued
        back to back travel merged, at most 500 mutations (about 1 MiB) per frame."""
        out, self._frames = self._frames, []
        return out

    def events_received(self) -> list[EngineEvent]:
        """Events for the I/O layer (confirmations, rejections, errors, action results,
        snapshot updates to persist); the list is cleared."""
        out, self._events = self._events, []
        return out

    # -- connection ------------------------------------------------------------------------

    def connect_frame(self, token: str | None) -> bytes:
        """The first frame of a new connection (forgets the previous one's append handles)."""
        self._append = AppendDecoder()
        self._parts.clear()
        return encode(
            Connect(
                protocol_version=PROTOCOL_VERSION,
                schema_version=self.schema.schema_version,
                client_id=self.client_id,
                token=token,
                cookie=self.cookie,
                last_mutation_id=self.last_mutation_id,
            )
        )

    def disconnected(self) -> None:
        """The connection dropped: stop pushing until the next ``connected``."""
        self._connected = False
        self._parts.clear()
        self._frames.clear()

    @property
    def connected(self) -> bool:
        """True between a ``connected`` message and :meth:`disconnected`."""
        return self._connected

    def _push_pending(self) -> None:
        if not self._connected:
            return
        unsent = [m for m in self.pending if m.id > self._sent_upto]
        if not unsent:
            return
        # Of unsent mutations sharing a dedupe key, the middle ones travel as no-op markers
        # (ids must stay consecutive); their effects are superseded by the latest one.
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        for m in unsent:
            if m.dedupe_key is not None:
                first.setdefault(m.dedupe_key, m.id)
                last[m.dedupe_key] = m.id
        muts: list[Mutation] = []
        for m in unsent:
            k = m.dedupe_key
            if k is not None and m.id not in (first[k], last[k]):
                muts.append(Mutation(id=m.id, name=SKIP, args=None))
            else:
                muts.append(Mutation(id=m.id, name=m.name, args=m.args, v=m.schema_version))
        self._frames.extend(
            push_frames(muts, max_mutations=PUSH_FRAME_MUTATIONS, max_bytes=PUSH_FRAME_BYTES)
        )
        self._sent_upto = muts[-1].id

    def call_action(self, name: str, args: Any) -> str:
        """Queue a call of action ``name``; returns its request id. The result arrives as an
        :class:`ActionCompleted` event. Raises (and queues nothing) if ``args`` is invalid."""
        adef = self.schema.action(name)
        wire = json_input(adef.input_encode, args, f"input for action {name!r}")
        self._action_ids += 1
        rid = f"a{self._action_ids}"
        self._frames.append(encode(Action(request_id=rid, name=name, input=wire)))
        return rid

    def call_query(self, name: str, args: Any) -> str:
        """Queue a call of the server's built-in query ``name`` (``"$..."``, e.g. a search or a
        page of older rows); returns its request id. The result arrives as an
        :class:`ActionCompleted` event, like an action's. ``args`` must be JSON already."""
        if not name.startswith("$"):
            raise ValueError(f"a built-in query's name starts with '$': {name!r}")
        self._action_ids += 1
        rid = f"a{self._action_ids}"
        self._frames.append(encode(Action(request_id=rid, name=name, input=args)))
        return rid

    # -- reading ---------------------------------------------------------------------------

    def _tx(self, reads: ReadSet, old_view: dict[RowKey, Any] | None) -> ClientTx:
        return ClientTx(self.store, self._originals, reads, old_view)

    def query(self, fn: Callable[[ReadContext], Any], reads: ReadSet | None = None) -> Any:
        """Run a read-only query ``fn(ctx)`` (sync, or async without real awaits)."""
        tx = self._tx(reads if reads is not None else ReadSet(), None)
        ctx = ReadContext(self.schema, tx, self.user_id, is_server=False)
        result = fn(ctx)
        if inspect.iscoroutine(result):
            result = run_sync(result)
        return result

    def subscribe(
        self,
        fn: Callable[[ReadContext], Any],
        callback: Callable[[Any], None],
        *,
        deferred: bool = False,
    ) -> Subscription:
        """Register a query; returns the subscription with its first ``result`` computed.

        The callback runs on every change of the result. With ``deferred`` it waits until the
        caller delivers the first result (``sub.deliver_first()``), and the changes that land
        before that only update ``sub.result``: the first callback is always the whole
        current result (subscriptions.py).
        """
        return self.subscriptions.subscribe(fn, callback, deferred=deferred)

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop a subscription."""
        self.subscriptions.unsubscribe(sub)

    def subscribe_table(
        self, ns: str, table: str, callback: TableCallback, *, deferred: bool = False
    ) -> TableSubscription:
        """Watch every row of one table; ``callback(entries, changes)`` runs on each change
        with ``changes = {"added": [...], "modified": [...], "removed": [...]}`` (item keys).

        The first result is in ``sub.entries()``; ``deferred`` as for :meth:`subscribe`
        (``sub.deliver_first()`` reports every row as added).
        """
        return self.subscriptions.subscribe_table(ns, table, callback, deferred=deferred)

    def unsubscribe_table(self, sub: TableSubscription) -> None:
        """Stop a table subscription."""
        self.subscriptions.unsubscribe_table(sub)

    # -- writing ---------------------------------------------------------------------------

    def mutate(self, name: str, args: Any, *, dedupe_key: str | None = None) -> PendingMutation:
        """Run mutator ``name`` optimistically and queue it for the server.

        Raises (and queues nothing) if the input is invalid (:class:`ValueTooDeepError` when it
        nests more than ``MAX_VALUE_DEPTH`` levels: the server would refuse it) or the mutator
        raises.
        """
        mdef = self.schema.mutator(name)
        # Validated, plain JSON, and no deeper than the server accepts (ValueTooDeepError).
        wire_args = json_input(mdef.input_encode, args, f"input for mutator {name!r}")
        handler = self.config.mutators[name]
        m = PendingMutation(
            id=self.next_mutation_id, name=name, args=wire_args, dedupe_key=dedupe_key
        )
        old_view: dict[RowKey, Any] = {}
        self._run(m, handler, old_view, raise_errors=True)
        self.next_mutation_id += 1
        self.pending.append(m)
        self._push_pending()
        self.subscriptions.notify(self._diff(old_view), False)
        return m

    def _run(
        self,
        m: PendingMutation,
        handler: Any,
        old_view: dict[RowKey, Any] | None,
        *,
        raise_errors: bool,
    ) -> None:
        reads = ReadSet()
        tx = self._tx(reads, old_view)
        try:
            if m.schema_version is None:
                ctx = MutationContext(self.schema, tx, self.user_id, is_server=False)
                run_sync(handler(ctx, self.schema.mutators[m.name].parse_input(m.args)))
            else:
                # Made under an older schema: replay what the migration turns it into.
                calls = self.schema.migrate_mutation(m.name, m.args, m.schema_version)
                for name, args in calls:
                    ctx = MutationContext(self.schema, tx, self.user_id, is_server=False)
                    fn: Any = self.config.mutators[name]
                    run_sync(fn(ctx, self.schema.mutator(name).parse_input(args)))
        except Exception as exc:
            tx.rollback()
            if raise_errors:
                raise
            detail = str(exc) if isinstance(exc, SyncedStoreError | MutatorError) else repr(exc)
            log.warning("synced-store: error rebasing mutation %s (%s): %s", m.id, m.name, detail)
        m.reads = reads
        m.writes = tx.writes

    def _diff(self, old_view: dict[RowKey, Any]) -> dict[RowKey, tuple[str | None, ...]]:
        changes: dict[RowKey, tuple[str | None, ...]] = {}
        get = self.store.get
        for key, old in old_view.items():
            new = get(key)
            if old is new or old == new:
                continue
            changes[key] = (None if old is None else old[0], None if new is None else new[0])
        return changes

    # -- server messages -------------------------------------------------------------------

    def receive(self, frame: str | bytes) -> None:
        """Handle one frame from the server.

        Raises :class:`ProtocolError` when the connection must be made again: a malformed or
        out-of-sequence frame, an ``error`` of a kind that asks for it (the server could not
        process a push), or the server having lost this client's history (the engine has then
        started over as a new client, see :class:`StartedOver`). Events queued before the
        error stay queued.
        """
        with gc_paused(len(frame) >= BULK_FRAME_BYTES):
            msg = decode_server_message(frame)
            if type(msg) is list:  # an append frame: a poke of streamed text
                self._on_poke(self._append.expand(msg, self.cookie))
            elif type(msg) is Poke:
                if msg.bind:
                    self._append.observe(msg)
                self._on_poke(msg)
            elif type(msg) is Connected:
                self._on_connected(msg)
            elif type(msg) is ActionResult:
                self._events.append(
                    ActionCompleted(msg.request_id, msg.ok, msg.output, msg.kind, msg.error)
                )
            elif type(msg) is Error:
                self._events.append(ServerError(msg.kind, msg.message))
                if msg.kind in RECONNECT_ERROR_KINDS:
                    # Unprocessed pushes: reconnect, learn the server's last_mutation_id and
                    # push again from there.
                    raise ProtocolError(f"the server could not process a push ({msg.kind})")
            else:
                assert type(msg) is PushResponse  # an acknowledgement: pokes confirm

    def _on_connected(self, msg: Connected) -> None:
        if msg.last_mutation_id < self.last_mutation_id:
            self._start_over()
            raise ProtocolError(
                "the server lost this client's history; reconnecting as a new client"
            )
        if msg.user_id:
            self.user_id = msg.user_id
        self._connected = True
        self._sent_upto = max(msg.last_mutation_id, self.last_mutation_id)
        self._events.append(SessionStarted(self.user_id, self.client_id, msg.last_mutation_id))
        self._push_pending()

    def _on_poke(self, msg: Poke) -> None:
        if msg.final is False:
            self._parts.append(msg)
            return
        first = self._parts[0] if self._parts else msg
        if not first.reset and msg.base_cookie is not None and msg.base_cookie != self.cookie:
            # A lost, duplicated or reordered poke: the caller must reconnect (and re-pull).
            self._parts.clear()
            raise ProtocolError(
                f"out-of-sequence poke (base {msg.base_cookie}, have {self.cookie})"
            )
        if msg.cookie is None:
            self._parts.clear()
            raise ProtocolError("a final poke without a cookie")
        if self._parts:
            # A multi-part poke: the parts' patches and rejected-mutation reports (``errors``
            # may come in any part) apply together, with the final part.
            parts, self._parts = self._parts, []
            patch: list[PatchOp] = [op for p in (*parts, msg) for op in p.patch]
            errors: list[MutationErrorReport] = [e for p in (*parts, msg) for e in p.errors or ()]
            reset = parts[0].reset
        else:
            patch = msg.patch
            errors = msg.errors or []
            reset = msg.reset
        if reset and self.windows is not None:  # which windows the reset cut short
            self.windows.cut = msg.windows
        self.apply_server_update(
            cookie=msg.cookie,
            patch=patch,
            last_mutation_id=msg.last_mutation_id,
            errors=errors,
            reset=reset,
        )

    def apply_server_update(
        self,
        *,
        cookie: int,
        patch: list[PatchOp],
        last_mutation_id: int | None,
        errors: list[MutationErrorReport] | tuple[()] = (),
        reset: bool = False,
    ) -> None:
        """Rebase: restore the snapshot, apply ``patch``, drop confirmed mutations, replay."""
        with gc_paused(reset or len(patch) >= BULK_OPS):
            if self.windows is not None:  # windowed tables: core/window.py
                return self.windows.apply(cookie, patch, last_mutation_id, errors, reset)
            self._apply_server_update(cookie, patch, last_mutation_id, errors, reset)

    def _apply_server_update(
        self,
        cookie: int,
        patch: list[PatchOp],
        last_mutation_id: int | None,
        errors: list[MutationErrorReport] | tuple[()],
        reset: bool,
    ) -> None:
        store = self.store
        old_view: dict[RowKey, Any] = {}
        # Work out every row first, so a malformed op changes nothing (no half-applied poke).
        keys, rows_after, last = rows_after_patch(store, self._originals, patch, reset)
        lmid = max(self.last_mutation_id, last_mutation_id or 0)
        # 1. Restore the snapshot where this update can change the view: the patched rows and
        #    the rows the newly confirmed mutations wrote (every row on a reset). The other
        #    rows keep their pending overlay unless a pending mutation has to re-run (step 4).
        touched: set[RowKey] | None = None
        if not reset:
            touched = set(keys)
            for m in self.pending:
                if m.id <= lmid:
                    touched.update(m.writes)
        self._restore_snapshot(old_view, touched)
        # 2. Apply the patch.
        applied, dirty = apply_rows(store, keys, rows_after, last, reset, old_view)
        self.cookie = cookie
        self.has_server_data = True
        # 3. Drop what the server processed.
        confirmed: list[int] = []
        rejected = {e.id: e for e in errors}
        self.last_mutation_id = lmid
        keep: list[PendingMutation] = []
        for m in self.pending:
            if m.id <= self.last_mutation_id:
                confirmed.append(m.id)
                for key, w in m.writes.items():
                    cur = store.get(key)
                    dirty[key] = (
                        *dirty.get(key, ()),
                        None if w is None else w[0],
                        None if cur is None else cur[0],
                    )
            else:
                keep.append(m)
        self.pending = keep
        for mid, e in sorted(rejected.items()):
            self._events.append(MutationRejected(mid, e.name, e.kind, e.message))
        if confirmed:
            self._events.append(Confirmed(tuple(confirmed)))
        # 4. Replay pending mutations, re-running only those whose reads changed.
        if touched is not None and not any(m.reads and m.reads.intersects(dirty) for m in keep):
            # Nothing re-runs: the view changes only in the touched rows, so re-apply the
            # pending writes there (the result equals the full replay below).
            tx = self._tx(ReadSet(), old_view)
            for m in keep:
                tx.replay(m.writes, touched)
            keep = []
        elif touched is not None:
            self._restore_snapshot(old_view, None)
        for m in keep:
            if reset or (m.reads and m.reads.intersects(dirty)):
                before = m.writes
                self._run(m, self.config.mutators.get(m.name), old_view, raise_errors=False)
                for key in before.keys() | m.writes.keys():
                    b, a = before.get(key), m.writes.get(key)
                    dirty[key] = (
                        *dirty.get(key, ()),
                        None if b is None else b[0],
                        None if a is None else a[0],
                    )
            else:
                self._tx(ReadSet(), old_view).replay(m.writes)
                for key in m.writes:
                    dirty.pop(key, None)
        self._sent_upto = max(self._sent_upto, self.last_mutation_id)
        # 5. Notify subscriptions whose reads changed.
        self._events.append(SnapshotUpdated(reset, applied, cookie, self.last_mutation_id))
        self.subscriptions.notify(self._diff(old_view), reset)

    def _restore_snapshot(self, old_view: dict[RowKey, Any], only: set[RowKey] | None) -> None:
        """Undo the pending overlay on the rows in ``only`` (every row if None)."""
        self._originals = restore_snapshot(self.store, self._originals, old_view, only)

    # -- misc ------------------------------------------------------------------------------

    def _start_over(self) -> None:
        """Continue as a new client after the server lost this one's history.

        The server knows fewer of this client's mutations than it confirmed (a restored backup,
        a power loss): pending mutations are renumbered from 1 under a new client id and the
        snapshot will be replaced by a full reset (:class:`StartedOver`).
        """
        old = self.client_id
        renumbered = {}
        for n, m in enumerate(self.pending, start=1):
            renumbered[m.id] = n
            m.id = n
        self.client_id = self._new_client_id()
        self.last_mutation_id = 0
        self.next_mutation_id = len(self.pending) + 1
        self.cookie = None
        self._sent_upto = 0
        self._connected = False
        log.warning(
            "synced-store: the server knows fewer mutations of client %s than it confirmed "
            "(restored backup?); continuing as client %s with %d pending mutation(s)",
            old,
            self.client_id,
            len(self.pending),
        )
        self._events.append(StartedOver(old, self.client_id, renumbered))

    def restore(
        self,
        *,
        cookie: int | None,
        last_mutation_id: int,
        rows: list[tuple[RowKey, str, Any]],
        pending: list[tuple[Any, ...]],
        schema_version: int | None = None,
    ) -> None:
        """Load a persisted snapshot and re-apply persisted pending mutations.

        ``pending`` holds ``(id, name, args)`` or ``(id, name, args, schema_version)``. When the
        persisted ``schema_version`` is older than the schema's, the snapshot is dropped (the
        server sends everything again) and older pending mutations replay through the schema's
        migrations; the server migrates them the same way when they are pushed.
        """
        current = self.schema.schema_version
        if schema_version is not None and schema_version != current:
            if not self.schema.can_migrate_from(schema_version):
                rows, pending, cookie = [], [], None
            else:
                rows, cookie = [], None
        self.store.clear()
        self.store.load(rows)
        self._originals = {}
        self.cookie = cookie
        self.last_mutation_id = last_mutation_id
        self.pending = []
        for rec in pending:
            mid, name, args = rec[0], rec[1], rec[2]
            v = rec[3] if len(rec) > 3 else schema_version
            v = None if v is None or v == current else int(v)
            if mid <= last_mutation_id or (v is None and name not in self.config.mutators):
                continue
            key = rec[4] if len(rec) > 4 else None
            m = PendingMutation(id=mid, name=name, args=args, schema_version=v, dedupe_key=key)
            self._run(m, self.config.mutators.get(name), None, raise_errors=False)
            self.pending.append(m)
        self.next_mutation_id = max(
            [self.next_mutation_id, last_mutation_id + 1] + [m.id + 1 for m in self.pending]
        )
        self.subscriptions.notify({}, True)

    def snapshot_rows(self) -> list[tuple[RowKey, str, Any]]:
        """The server snapshot (without pending effects) as rows, for persistence."""
        return snapshot_rows(self.store, self._originals)
