"""Subscriptions of the client engine: queries re-run only when a row they read changes, and
whole-table subscriptions maintained incrementally.

A subscription's first result is computed when it is registered and delivered by
``deliver_first()`` (the I/O layer calls it "a moment later", as the spec's microtask). Changes
that land before that update its state silently, so the first callback is always the complete
current result and no change is ever reported twice.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from ..types import EntryKey, RowKey
from .context import ReadContext, copy_json
from .patch import json_equal
from .readset import ReadSet
from .store import MemoryStore

__all__ = ["Subscription", "Subscriptions", "TableCallback", "TableSubscription"]

log = logging.getLogger("synced_store.client")
Row = tuple[str, Any]
TableCallback = Callable[[list[tuple[EntryKey, Any]], dict[str, list[str]]], None]
_ABSENT: Any = object()


class Subscription:
    """A query whose callback runs when its result changes."""

    __slots__ = ("active", "callback", "delivered", "fn", "reads", "result")

    def __init__(
        self,
        fn: Callable[[ReadContext], Any],
        callback: Callable[[Any], None],
        *,
        delivered: bool = True,
    ) -> None:
        self.fn = fn
        self.callback = callback
        self.reads = ReadSet()
        self.result: Any = _ABSENT
        self.active = True
        #: True once the first result is the caller's (changes call the callback from then).
        self.delivered = delivered

    def deliver_first(self) -> None:
        """Call the callback with the current result (once; later changes call it again)."""
        if self.active and not self.delivered:
            self.delivered = True
            try:
                self.callback(self.result)
            except Exception:
                log.exception("synced-store: subscription callback raised")


def _entry_key(entry: tuple[EntryKey, Any]) -> EntryKey:
    return entry[0]


class TableSubscription:
    """A whole-table subscription maintained incrementally: each update costs the rows that
    changed, not the size of the table (what a UI list or a room view needs)."""

    __slots__ = ("active", "callback", "delivered", "ns", "ordered", "rows", "table")

    def __init__(
        self, ns: str, table: str, callback: TableCallback, *, delivered: bool = True
    ) -> None:
        self.ns = ns
        self.table = table
        self.callback = callback
        self.active = True
        #: True once the first result is the caller's (changes call the callback from then).
        self.delivered = delivered
        #: item key -> (sort key, a private copy of the value)
        self.rows: dict[str, Row] = {}
        #: ``(EntryKey, value)`` in scan order (the same value objects as ``rows``)
        self.ordered: list[tuple[EntryKey, Any]] = []

    def entries(self) -> list[tuple[EntryKey, Any]]:
        """The current rows in scan order, as ``(EntryKey, value)`` (a new list)."""
        return self.ordered.copy()

    def deliver_first(self) -> None:
        """Call the callback with every current row "added" (once)."""
        if self.active and not self.delivered:
            self.delivered = True
            entries = self.entries()
            added = [k.item_key for k, _ in entries]
            try:
                self.callback(entries, {"added": added, "modified": [], "removed": []})
            except Exception:
                log.exception("synced-store: table subscription callback raised")

    def _index(self, sort_key: str, item: str) -> int:
        return bisect_left(self.ordered, EntryKey(sort_key, item), key=_entry_key)

    def apply(self, item: str, new: Row | None) -> str | None:
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

    def rebuild(self, store: MemoryStore) -> dict[str, list[str]]:
        """Re-read the whole table in one ordered pass (resets, large updates); unchanged rows
        keep their copies. Returns the diff."""
        old = self.rows
        rows: dict[str, Row] = {}
        ordered: list[tuple[EntryKey, Any]] = []
        added: list[str] = []
        modified: list[str] = []
        for ek, value in store.iterate(self.ns, self.table, None, exclusive=False, reverse=False):
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
        self.rows = rows
        self.ordered = ordered
        return {"added": added, "modified": modified, "removed": removed}


Changes = dict[RowKey, tuple[str | None, ...]]


class Subscriptions:
    """Every subscription of an engine, indexed by the rows and ranges they read."""

    def __init__(
        self, store: MemoryStore, query: Callable[[Callable[[ReadContext], Any], ReadSet], Any]
    ) -> None:
        self._store = store
        self._query = query
        self._subs: set[Subscription] = set()
        self._point_index: dict[RowKey, set[Subscription]] = {}
        self._range_index: dict[tuple[str, str], set[Subscription]] = {}
        self._table_subs: dict[tuple[str, str], set[TableSubscription]] = {}

    def subscribe(
        self,
        fn: Callable[[ReadContext], Any],
        callback: Callable[[Any], None],
        *,
        deferred: bool = False,
    ) -> Subscription:
        """Register a query; its first ``result`` is computed now. With ``deferred`` the
        callback waits for ``sub.deliver_first()`` (see the module doc); otherwise the caller
        takes ``sub.result`` and the callback runs on every change from now on."""
        sub = Subscription(fn, callback, delivered=not deferred)
        self._subs.add(sub)
        self._run(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop a subscription."""
        sub.active = False
        self._subs.discard(sub)
        self._unindex(sub)

    def subscribe_table(
        self, ns: str, table: str, callback: TableCallback, *, deferred: bool = False
    ) -> TableSubscription:
        """Watch every row of one table (first result: ``sub.entries()``; ``deferred`` as for
        :meth:`subscribe`)."""
        sub = TableSubscription(ns, table, callback, delivered=not deferred)
        sub.rebuild(self._store)
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

    def _run(self, sub: Subscription) -> bool:
        """Re-run a subscription; True if its result changed."""
        self._unindex(sub)
        reads = ReadSet()
        try:
            result = self._query(sub.fn, reads)
        except Exception as exc:
            # A failing query must not break the mutation or update that triggered it.
            log.error("synced-store: error in subscription query: %r", exc)
            result = exc
        sub.reads = reads
        for key in reads.points:
            self._point_index.setdefault(key, set()).add(sub)
        for tk in reads.ranges:
            self._range_index.setdefault(tk, set()).add(sub)
        changed = sub.result is _ABSENT or not (sub.result is result or sub.result == result)
        sub.result = result
        return changed

    def notify(self, changes: Changes, everything: bool) -> None:
        """Re-run the subscriptions that read a changed row (all of them if ``everything``)
        and call back those whose result changed."""
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
            if sub.active and self._run(sub) and sub.delivered:
                try:
                    sub.callback(sub.result)
                except Exception:
                    log.exception("synced-store: subscription callback raised")

    def _notify_tables(self, changes: Changes, everything: bool) -> None:
        store = self._store
        for (ns, table), subs in list(self._table_subs.items()):
            keys = [] if everything else [k for k in changes if k.ns == ns and k.table == table]
            if not everything and not keys:
                continue
            for sub in list(subs):
                if everything or len(keys) > 64 + len(sub.rows) // 8:
                    diff = sub.rebuild(store)
                else:
                    diff = {"added": [], "modified": [], "removed": []}
                    for key in keys:
                        kind = sub.apply(key.item, store.get(key))
                        if kind is not None:
                            diff[kind].append(key.item)
                if (
                    sub.active
                    and sub.delivered
                    and (diff["added"] or diff["modified"] or diff["removed"])
                ):
                    try:
                        sub.callback(sub.entries(), diff)
                    except Exception:
                        log.exception("synced-store: table subscription callback raised")
