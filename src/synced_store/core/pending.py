"""Pending mutations and the transaction they run in on the client.

A :class:`PendingMutation` records what it read (a :class:`ReadSet`) and what it wrote, so a
rebase can re-apply its writes without running it again when nothing it read changed.
:class:`ClientTx` runs a mutator or a query over the engine's in-memory store and keeps what
is needed to undo it and to restore the server snapshot.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from ..types import EntryKey, RowKey
from .readset import ReadSet
from .store import MemoryStore

__all__ = ["ClientTx", "PendingMutation", "Row", "gc_paused"]

Row = tuple[str, Any]


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


class ClientTx:
    """A transaction over the engine's store: records reads, writes and undo information.

    ``originals`` is the engine's map of each row's snapshot value before the pending overlay
    (the first write of a row records it); ``old_view`` (when given) collects each touched
    row's value before this transaction, for the subscriptions' diff.
    """

    copy_on_read = True
    is_async: Literal[False] = False
    __slots__ = ("_originals", "_store", "old_view", "reads", "undo", "writes")

    def __init__(
        self,
        store: MemoryStore,
        originals: dict[RowKey, Row | None],
        reads: ReadSet,
        old_view: dict[RowKey, Any] | None,
    ) -> None:
        self._store = store
        self._originals = originals
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
            if key not in self._originals:
                self._originals[key] = prev
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

    def replay(self, writes: dict[RowKey, Row | None], only: set[RowKey] | None = None) -> None:
        """Apply recorded writes again (of the rows in ``only``, when given)."""
        for key, w in writes.items():
            if only is not None and key not in only:
                continue
            if w is None:
                self.remove(key)
            else:
                self.write(key, w[0], w[1], b"")

    def rollback(self) -> None:
        """Undo this transaction's writes (entries it added to ``originals`` then equal the
        store again, which is harmless)."""
        store = self._store
        for key, prev in self.undo.items():
            if prev is None:
                store.delete(key)
            else:
                store.put(key, prev[0], prev[1])
        self.writes.clear()
