"""The client's sync engine, without I/O.

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

Usage contract for the I/O layer around it: after calling any method, send everything from
:meth:`ClientEngine.messages_to_send` and handle everything from :meth:`events_received`.
"""

from __future__ import annotations

import gc
import inspect
import logging
from bisect import bisect_left
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..errors import MutatorError, ProtocolError, SyncedStoreError
from ..protocol.version import PROTOCOL_VERSION
from ..schema import BackendConfig
from ..types import EntryKey, RowKey
from .context import MutationContext, ReadContext, copy_json, json_input, run_sync
from .patch import json_equal, op_key, op_row
from .readset import ReadSet
from .sequencing import SKIP
from .store import MemoryStore

__all__ = [
    "ClientEngine",
    "Confirmed",
    "EngineEvent",
    "MutationRejected",
    "PendingMutation",
    "ServerError",
    "Subscription",
    "TableSubscription",
]

log = logging.getLogger("synced_store.client")
Row = tuple[str, Any]
_ABSENT: Any = object()
#: Server updates with at least this many ops run with the cyclic GC paused (see gc_paused).
BULK_OPS = 1000


@contextmanager
def gc_paused(active: bool = True) -> Iterator[None]:
    """Pause CPython's cyclic garbage collector for a bulk load.

    Loading many rows allocates many long-lived, acyclic objects, which triggers full
    collections that traverse the whole (growing) store again and again; with the collector
    paused a 50,000-row initial sync takes about half the time. Nothing collectable is created,
    and the collector runs as usual afterwards. Nested uses are no-ops.
    """
    if not active or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@dataclass
class PendingMutation:
    """A mutation applied locally and not yet confirmed by the server."""

    id: int
    name: str
    args: Any
    reads: ReadSet = field(default_factory=ReadSet)
    #: The rows this mutation wrote, in order of first write: RowKey -> (sk, value) or None.
    writes: dict[RowKey, Row | None] = field(default_factory=dict)
    #: Schema version it was made under, when older than the current one (restored from disk).
    schema_version: int | None = None
    #: ``pending_mutation_dedupe_key``: of several unsent mutations with the same key, only the
    #: first and the latest run on the server (last-value-wins setters: cursors, drafts).
    dedupe_key: str | None = None


@dataclass(frozen=True)
class Confirmed:
    """Event: mutations up to ``last_mutation_id`` are confirmed (applied and rebased)."""

    mutation_ids: tuple[int, ...]


@dataclass(frozen=True)
class MutationRejected:
    """Event: the server rejected a mutation permanently; its effects were rolled back."""

    mutation_id: int
    name: str
    kind: str
    message: str


@dataclass(frozen=True)
class ServerError:
    """Event: the server sent an ``error`` frame."""

    kind: str
    message: str


EngineEvent = Confirmed | MutationRejected | ServerError


class Subscription:
    """A query whose callback runs when its result changes."""

    __slots__ = ("active", "callback", "fn", "reads", "result")

    def __init__(self, fn: Callable[[ReadContext], Any], callback: Callable[[Any], None]) -> None:
        self.fn = fn
        self.callback = callback
        self.reads = ReadSet()
        self.result: Any = _ABSENT
        self.active = True


def _entry_key(entry: tuple[EntryKey, Any]) -> EntryKey:
    return entry[0]


class TableSubscription:
    """A whole-table subscription maintained incrementally: each update costs the rows that
    changed, not the size of the table (what a UI list or a room view needs)."""

    __slots__ = ("active", "callback", "ns", "ordered", "rows", "table")

    def __init__(
        self,
        ns: str,
        table: str,
        callback: Callable[[list[tuple[EntryKey, Any]], dict[str, list[str]]], None],
    ) -> None:
        self.ns = ns
        self.table = table
        self.callback = callback
        self.active = True
        #: item key -> (sort key, a private copy of the value)
        self.rows: dict[str, Row] = {}
        #: ``(EntryKey, value)`` in scan order (the same value objects as ``rows``)
        self.ordered: list[tuple[EntryKey, Any]] = []

    def entries(self) -> list[tuple[EntryKey, Any]]:
        """The current rows in scan order, as ``(EntryKey, value)`` (a new list)."""
        return self.ordered.copy()

    def _index(self, sort_key: str, item: str) -> int:
        return bisect_left(self.ordered, EntryKey(sort_key, item), key=_entry_key)

    def _apply(self, item: str, new: Row | None) -> str | None:
        """Bring one row up to date; returns "added", "modified", "removed" or None."""
        old = self.rows.get(item)
        if new is None:
            if old is None:
                return None
            del self.rows[item]
            del self.ordered[self._index(old[0], item)]
            return "removed"
        if old is not None and old[0] == new[0] and json_equal(old[1], new[1]):
            return None
        value = copy_json(new[1])
        self.rows[item] = (new[0], value)
        entry = (EntryKey(new[0], item), value)
        if old is not None and old[0] == new[0]:
            self.ordered[self._index(old[0], item)] = entry
            return "modified"
        if old is not None:
            del self.ordered[self._index(old[0], item)]
        self.ordered.insert(self._index(new[0], item), entry)
        return "added" if old is None else "modified"


class _Tx:
    """A transaction over the engine's store: records reads, writes and undo information."""

    copy_on_read = True
    __slots__ = ("_engine", "_store", "old_view", "reads", "undo", "writes")

    def __init__(self, engine: ClientEngine, reads: ReadSet, old_view: dict[RowKey, Any] | None):
        self._engine = engine
        self._store = engine.store
        self.reads = reads
        self.writes: dict[RowKey, Row | None] = {}
        #: Value of each written row before this transaction (to roll it back on error).
        self.undo: dict[RowKey, Row | None] = {}
        self.old_view = old_view

    def read(self, key: RowKey) -> Row | None:
        return self._store.get(key)

    def iterate(
        self, ns: str, table: str, start: EntryKey | None, *, exclusive: bool, reverse: bool
    ) -> Iterator[tuple[EntryKey, Any]]:
        return self._store.iterate(ns, table, start, exclusive=exclusive, reverse=reverse)

    def note_point(self, key: RowKey) -> None:
        self.reads.points.add(key)

    def note_range(self, ns: str, table: str, low: EntryKey | None, high: EntryKey | None) -> None:
        self.reads.add_range(ns, table, low, high)

    def _before_write(self, key: RowKey) -> None:
        if key not in self.undo:
            prev = self._store.get(key)
            self.undo[key] = prev
            originals = self._engine._originals
            if key not in originals:
                originals[key] = prev
            if self.old_view is not None and key not in self.old_view:
                self.old_view[key] = prev

    def write(self, key: RowKey, sort_key: str, value: Any, encoded: bytes) -> None:
        self._before_write(key)
        self._store.put(key, sort_key, value)
        self.writes[key] = (sort_key, value)

    def remove(self, key: RowKey) -> None:
        self._before_write(key)
        self._store.delete(key)
        self.writes[key] = None

    def rollback(self) -> None:
        store = self._store
        originals = self._engine._originals
        for key, prev in self.undo.items():
            if prev is None:
                store.delete(key)
            else:
                store.put(key, prev[0], prev[1])
        # Entries this transaction added to ``originals`` now equal the store again: harmless.
        del originals
        self.writes.clear()


class ClientEngine:
    """Optimistic mutations, rebase on server updates, and fine-grained subscriptions."""

    def __init__(
        self,
        config: BackendConfig,
        *,
        user_id: str,
        client_id: str,
        next_mutation_id: int = 1,
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
        self._originals: dict[RowKey, Row | None] = {}
        self._outbox: list[dict[str, Any]] = []
        self._events: list[EngineEvent] = []
        self._connected = False
        self._sent_upto = 0
        self._parts: list[dict[str, Any]] = []
        self._subs: set[Subscription] = set()
        self._point_index: dict[RowKey, set[Subscription]] = {}
        self._range_index: dict[tuple[str, str], set[Subscription]] = {}
        self._table_subs: dict[tuple[str, str], set[TableSubscription]] = {}
        self.has_server_data = False
        #: Rows of the snapshot the last server update changed (for persistence).
        self.last_update: tuple[bool, list[tuple[RowKey, Row | None]]] = (False, [])

    # -- outputs ---------------------------------------------------------------------------

    def messages_to_send(self) -> list[dict[str, Any]]:
        """Messages for the server, oldest first. Send them in order; the list is cleared."""
        out, self._outbox = self._outbox, []
        return out

    def events_received(self) -> list[EngineEvent]:
        """Events for the facade (confirmations, rejections, errors); the list is cleared."""
        out, self._events = self._events, []
        return out

    # -- connection ------------------------------------------------------------------------

    def connect_message(self, token: str | None) -> dict[str, Any]:
        """The first message of a connection."""
        return {
            "type": "connect",
            "protocol_version": PROTOCOL_VERSION,
            "schema_version": self.schema.schema_version,
            "client_id": self.client_id,
            "token": token,
            "cookie": self.cookie,
            "last_mutation_id": self.last_mutation_id,
        }

    def disconnected(self) -> None:
        """The connection dropped: stop pushing until the next ``connected``."""
        self._connected = False
        self._parts.clear()

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
        muts: list[dict[str, Any]] = []
        for m in unsent:
            k = m.dedupe_key
            if k is not None and m.id not in (first[k], last[k]):
                muts.append({"id": m.id, "name": SKIP, "args": None})
                continue
            msg: dict[str, Any] = {"id": m.id, "name": m.name, "args": m.args}
            if m.schema_version is not None:
                msg["v"] = m.schema_version
            muts.append(msg)
        if muts:
            for i in range(0, len(muts), 500):
                self._outbox.append({"type": "push", "mutations": muts[i : i + 500]})
            self._sent_upto = muts[-1]["id"]

    # -- reading ---------------------------------------------------------------------------

    def query(self, fn: Callable[[ReadContext], Any], reads: ReadSet | None = None) -> Any:
        """Run a read-only query ``fn(ctx)`` (sync, or async without real awaits)."""
        tx = _Tx(self, reads if reads is not None else ReadSet(), None)
        ctx = ReadContext(self.schema, tx, self.user_id, is_server=False)
        result = fn(ctx)
        if inspect.iscoroutine(result):
            result = run_sync(result)
        return result

    def subscribe(
        self, fn: Callable[[ReadContext], Any], callback: Callable[[Any], None]
    ) -> Subscription:
        """Register a query; returns the subscription with its first ``result`` computed.

        The callback is *not* called for the first result: the caller delivers it (later, as
        the spec's "a microtask later"). It is then called on every change of the result.
        """
        sub = Subscription(fn, callback)
        self._subs.add(sub)
        self._run_sub(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop a subscription."""
        sub.active = False
        self._subs.discard(sub)
        self._unindex(sub)

    def _unindex(self, sub: Subscription) -> None:
        for key in sub.reads.points:
            s = self._point_index.get(key)
            if s is not None:
                s.discard(sub)
                if not s:
                    del self._point_index[key]
        for tk in sub.reads.ranges:
            s = self._range_index.get(tk)
            if s is not None:
                s.discard(sub)

    def _run_sub(self, sub: Subscription) -> bool:
        """Re-run a subscription; True if its result changed."""
        self._unindex(sub)
        reads = ReadSet()
        try:
            result = self.query(sub.fn, reads)
        except Exception as exc:
            # A failing query must not break the mutation or update that triggered it.
            log.error("Synced State | Error in subscription query: %r", exc)
            result = exc
        sub.reads = reads
        for key in reads.points:
            self._point_index.setdefault(key, set()).add(sub)
        for tk in reads.ranges:
            self._range_index.setdefault(tk, set()).add(sub)
        changed = sub.result is _ABSENT or not (sub.result is result or sub.result == result)
        sub.result = result
        return changed

    def subscribe_table(
        self,
        ns: str,
        table: str,
        callback: Callable[[list[tuple[EntryKey, Any]], dict[str, list[str]]], None],
    ) -> TableSubscription:
        """Watch every row of one table; ``callback(entries, changes)`` runs on each change
        with ``changes = {"added": [...], "modified": [...], "removed": [...]}`` (item keys).

        The first result is in ``sub.entries()``; the caller delivers it (all rows added).
        """
        sub = TableSubscription(ns, table, callback)
        self._rebuild_table_sub(sub)  # the first fill: every row "added"
        self._table_subs.setdefault((ns, table), set()).add(sub)
        return sub

    def unsubscribe_table(self, sub: TableSubscription) -> None:
        """Stop a table subscription."""
        sub.active = False
        subs = self._table_subs.get((sub.ns, sub.table))
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._table_subs[(sub.ns, sub.table)]

    def _notify_tables(
        self, changes: dict[RowKey, tuple[str | None, ...]], everything: bool
    ) -> None:
        store = self.store
        for (ns, table), subs in list(self._table_subs.items()):
            keys = [] if everything else [k for k in changes if k.ns == ns and k.table == table]
            if not everything and not keys:
                continue
            for sub in list(subs):
                if everything or len(keys) > 64 + len(sub.rows) // 8:
                    diff = self._rebuild_table_sub(sub)
                else:
                    diff = {"added": [], "modified": [], "removed": []}
                    for key in keys:
                        kind = sub._apply(key.item, store.get(key))
                        if kind is not None:
                            diff[kind].append(key.item)
                if sub.active and (diff["added"] or diff["modified"] or diff["removed"]):
                    try:
                        sub.callback(sub.entries(), diff)
                    except Exception:
                        log.exception("Synced State | table subscription callback raised")

    def _rebuild_table_sub(self, sub: TableSubscription) -> dict[str, list[str]]:
        """Re-read a whole table in one ordered pass (resets, large updates); unchanged rows
        keep their copies."""
        old = sub.rows
        rows: dict[str, Row] = {}
        ordered: list[tuple[EntryKey, Any]] = []
        added: list[str] = []
        modified: list[str] = []
        for ek, value in self.store.iterate(
            sub.ns, sub.table, None, exclusive=False, reverse=False
        ):
            item = ek.item_key
            prev = old.get(item)
            if prev is None:
                rows[item] = (ek.sort_key, copy_json(value))
                added.append(item)
            elif prev[0] == ek.sort_key and json_equal(prev[1], value):
                rows[item] = prev
            else:
                rows[item] = (ek.sort_key, copy_json(value))
                modified.append(item)
            ordered.append((ek, rows[item][1]))
        removed = [item for item in old if item not in rows]
        sub.rows = rows
        sub.ordered = ordered
        return {"added": added, "modified": modified, "removed": removed}

    def _notify(self, changes: dict[RowKey, tuple[str | None, ...]], everything: bool) -> None:
        if self._table_subs and (changes or everything):
            self._notify_tables(changes, everything)
        if everything:
            dirty = list(self._subs)
        else:
            if not changes or not self._subs:
                return
            dirty_set: set[Subscription] = set()
            pi = self._point_index
            ri = self._range_index
            for key in changes:
                s = pi.get(key)
                if s:
                    dirty_set.update(s)
            if ri:
                tables = {(k.ns, k.table) for k in changes}
                for tk in tables:
                    for sub in ri.get(tk, ()):
                        if sub not in dirty_set and sub.reads.intersects(changes):
                            dirty_set.add(sub)
            dirty = list(dirty_set)
        for sub in dirty:
            if sub.active and self._run_sub(sub):
                try:
                    sub.callback(sub.result)
                except Exception:
                    log.exception("Synced State | subscription callback raised")

    # -- writing ---------------------------------------------------------------------------

    def mutate(self, name: str, args: Any, *, dedupe_key: str | None = None) -> PendingMutation:
        """Run mutator ``name`` optimistically and queue it for the server.

        Raises (and queues nothing) if the input is invalid (:class:`ValueTooDeepError` when it
        nests more than ``MAX_VALUE_DEPTH`` levels: the server would refuse it) or the mutator
        raises.
        """
        mdef = self.schema.mutator(name)
        # Validated, plain JSON, and no deeper than the server accepts (ValueTooDeepError).
        wire_args = json_input(mdef.input_to_json, args, f"input for mutator {name!r}")
        handler = self.config.mutators[name]
        m = PendingMutation(
            id=self.next_mutation_id, name=name, args=wire_args, dedupe_key=dedupe_key
        )
        old_view: dict[RowKey, Any] = {}
        tx = self._run(m, handler, old_view, raise_errors=True)
        del tx
        self.next_mutation_id += 1
        self.pending.append(m)
        self._push_pending()
        self._notify(self._diff(old_view), False)
        return m

    def _run(
        self,
        m: PendingMutation,
        handler: Any,
        old_view: dict[RowKey, Any] | None,
        *,
        raise_errors: bool,
    ) -> _Tx:
        reads = ReadSet()
        tx = _Tx(self, reads, old_view)
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
            if not isinstance(exc, SyncedStoreError | MutatorError):
                log.warning("Synced State | Error rebasing mutation %s (%s): %r", m.id, m.name, exc)
            else:
                log.warning("Synced State | Error rebasing mutation %s (%s): %s", m.id, m.name, exc)
        m.reads = reads
        m.writes = tx.writes
        return tx

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

    def receive(self, msg: dict[str, Any]) -> None:
        """Handle one server message."""
        t = msg.get("type")
        if t == "poke":
            self._on_poke(msg)
        elif t == "connected":
            self._connected = True
            server_lmid = msg.get("last_mutation_id", 0)
            self._sent_upto = max(server_lmid, self.last_mutation_id)
            self._push_pending()
        elif t == "push_response":
            pass  # an acknowledgement only: confirmation comes with the poke carrying the data
        elif t == "error":
            self._events.append(ServerError(str(msg.get("kind")), str(msg.get("message"))))
        else:
            raise ProtocolError(f"unexpected server message type {t!r}")

    def _on_poke(self, msg: dict[str, Any]) -> None:
        if not msg.get("final", True):
            self._parts.append(msg)
            return
        first = self._parts[0] if self._parts else msg
        if not first.get("reset") and "base_cookie" in msg and msg["base_cookie"] != self.cookie:
            # A lost, duplicated or reordered poke: the caller must reconnect (and re-pull).
            self._parts.clear()
            raise ProtocolError(
                f"out-of-sequence poke (base {msg['base_cookie']}, have {self.cookie})"
            )
        errors: Any
        if self._parts:
            # A multi-part poke: the parts' patches and rejected-mutation reports (``errors``
            # may come in any part) apply together, with the final part.
            parts, self._parts = self._parts, []
            patch: list[dict[str, Any]] = []
            errors = []
            for p in parts:
                patch.extend(p.get("patch", ()))
                errors.extend(p.get("errors") or ())
            patch.extend(msg.get("patch", ()))
            errors.extend(msg.get("errors") or ())
            reset = bool(parts[0].get("reset"))
        else:
            patch = msg.get("patch", [])
            errors = msg.get("errors", ())
            reset = bool(msg.get("reset"))
        self.apply_server_update(
            cookie=msg["cookie"],
            patch=patch,
            last_mutation_id=msg.get("last_mutation_id"),
            errors=errors,
            reset=reset,
        )

    def apply_server_update(
        self,
        *,
        cookie: int,
        patch: list[dict[str, Any]],
        last_mutation_id: int | None,
        errors: Any = (),
        reset: bool = False,
    ) -> None:
        """Rebase: restore the snapshot, apply ``patch``, drop confirmed mutations, replay."""
        with gc_paused(reset or len(patch) >= BULK_OPS):
            self._apply_server_update(cookie, patch, last_mutation_id, errors, reset)

    def _apply_server_update(
        self,
        cookie: int,
        patch: list[dict[str, Any]],
        last_mutation_id: int | None,
        errors: Any,
        reset: bool,
    ) -> None:
        store = self.store
        old_view: dict[RowKey, Any] = {}
        keys = [op_key(op) for op in patch]
        # Work out every row first, so a malformed op changes nothing (no half-applied poke).
        rows_after: list[Row | None] = []
        scratch: dict[RowKey, Row | None] = {}
        originals = self._originals
        for key, op in zip(keys, patch, strict=True):
            if key in scratch:
                cur_row = scratch[key]
            elif reset:
                cur_row = None
            else:
                cur_row = originals[key] if key in originals else store.get(key)
            scratch[key] = op_row(op, cur_row)
            rows_after.append(scratch[key])
        lmid = self.last_mutation_id
        if last_mutation_id is not None and last_mutation_id > lmid:
            lmid = last_mutation_id
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
        dirty: dict[RowKey, tuple[str | None, ...]] = {}
        applied: list[tuple[RowKey, Row | None]] = []
        if reset:
            store.clear()
            rows = []
            for key, row in zip(keys, rows_after, strict=True):
                if row is not None:
                    rows.append((key, row[0], row[1]))
                    applied.append((key, row))
            store.load(rows)
        else:
            for key, row in zip(keys, rows_after, strict=True):
                cur = store.get(key)
                if key not in old_view:
                    old_view[key] = cur
                if row is None:
                    store.delete(key)
                else:
                    store.put(key, row[0], row[1])
                applied.append((key, row))
                dirty[key] = (None if cur is None else cur[0], None if row is None else row[0])
        self.cookie = cookie
        self.has_server_data = True
        self.last_update = (reset, applied)
        # 3. Drop what the server processed.
        confirmed: list[int] = []
        rejected = {
            e["id"]: e for e in errors if isinstance(e, dict) and isinstance(e.get("id"), int)
        }
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
            self._events.append(
                MutationRejected(
                    mid, str(e.get("name", "")), str(e.get("kind", "")), str(e.get("message", ""))
                )
            )
        if confirmed:
            self._events.append(Confirmed(tuple(confirmed)))
        # 4. Replay pending mutations, re-running only those whose reads changed.
        if touched is not None and not any(m.reads and m.reads.intersects(dirty) for m in keep):
            # Nothing re-runs: the view changes only in the touched rows, so re-apply the
            # pending writes there (the result equals the full replay below).
            tx = _Tx(self, ReadSet(), old_view)
            for m in keep:
                for key, w in m.writes.items():
                    if key in touched:
                        if w is None:
                            tx.remove(key)
                        else:
                            tx.write(key, w[0], w[1], b"")
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
                tx = _Tx(self, ReadSet(), old_view)
                for key, w in m.writes.items():
                    if w is None:
                        tx.remove(key)
                    else:
                        tx.write(key, w[0], w[1], b"")
                    dirty.pop(key, None)
        if self._sent_upto < self.last_mutation_id:
            self._sent_upto = self.last_mutation_id
        # 5. Notify subscriptions whose reads changed.
        self._notify(self._diff(old_view), reset)

    def _restore_snapshot(self, old_view: dict[RowKey, Any], only: set[RowKey] | None) -> None:
        """Undo the pending overlay on the rows in ``only`` (on every row if None), noting
        their current view values in ``old_view``."""
        store = self.store
        originals = self._originals
        if only is None:
            items = list(originals.items())
            self._originals = {}
        else:
            items = [(key, originals.pop(key)) for key in only if key in originals]
        for key, orig in items:
            old_view[key] = store.get(key)
            if orig is None:
                store.delete(key)
            else:
                store.put(key, orig[0], orig[1])

    # -- misc ------------------------------------------------------------------------------

    def start_over(self, client_id: str) -> dict[int, int]:
        """Continue as a new client after the server lost this one's history.

        The server knows fewer of this client's mutations than it confirmed (a restored backup,
        a power loss): pending mutations are renumbered from 1 under ``client_id`` and the
        snapshot will be replaced by a full reset. Returns ``{old id: new id}``.
        """
        renumbered = {}
        for n, m in enumerate(self.pending, start=1):
            renumbered[m.id] = n
            m.id = n
        self.client_id = client_id
        self.last_mutation_id = 0
        self.next_mutation_id = len(self.pending) + 1
        self.cookie = None
        self._sent_upto = 0
        self._connected = False
        return renumbered

    def pending_args(self) -> list[tuple[int, str, Any]]:
        """``(id, name, args)`` of every pending mutation (for persistence)."""
        return [(m.id, m.name, m.args) for m in self.pending]

    def pending_records(self) -> list[tuple[int, str, Any, int | None]]:
        """``(id, name, args, schema_version)`` of every pending mutation."""
        return [(m.id, m.name, m.args, m.schema_version) for m in self.pending]

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
        self._notify({}, True)

    def snapshot_rows(self) -> list[tuple[RowKey, str, Any]]:
        """The server snapshot (without pending effects) as rows, for persistence."""
        rows = []
        for key, sk, value in self.store.rows():
            if key in self._originals:
                continue
            rows.append((key, sk, value))
        for key, orig in self._originals.items():
            if orig is not None:
                rows.append((key, orig[0], orig[1]))
        return rows
