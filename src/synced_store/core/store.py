"""An ordered in-memory row store: the client's local state (and the test server's)."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from typing import Any

from ..types import EntryKey, RowKey

__all__ = ["MemoryStore"]


class _Table:
    __slots__ = ("mods", "order", "rows")

    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, Any]] = {}
        self.order: list[EntryKey] = []
        self.mods = 0


class MemoryStore:
    """Rows keyed by :class:`RowKey`, iterable per table in ``(sort_key, item_key)`` order.

    Values are stored as given (the caller passes fresh copies and copies on read).
    """

    __slots__ = ("_tables",)

    def __init__(self) -> None:
        self._tables: dict[tuple[str, str], _Table] = {}

    def get(self, key: RowKey) -> tuple[str, Any] | None:
        """``(sort_key, value)`` of a row, or None."""
        t = self._tables.get((key.ns, key.table))
        return None if t is None else t.rows.get(key.item)

    def put(self, key: RowKey, sort_key: str, value: Any) -> None:
        """Insert or replace a row (moving it if its sort key changed)."""
        tk = (key.ns, key.table)
        t = self._tables.get(tk)
        if t is None:
            t = self._tables[tk] = _Table()
        old = t.rows.get(key.item)
        t.rows[key.item] = (sort_key, value)
        if old is not None and old[0] == sort_key:
            return
        order = t.order
        if old is not None:
            ek = EntryKey(old[0], key.item)
            del order[bisect_left(order, ek)]
        ek = EntryKey(sort_key, key.item)
        i = bisect_left(order, ek)
        order.insert(i, ek)
        t.mods += 1

    def delete(self, key: RowKey) -> None:
        """Remove a row if present."""
        t = self._tables.get((key.ns, key.table))
        if t is None:
            return
        old = t.rows.pop(key.item, None)
        if old is not None:
            ek = EntryKey(old[0], key.item)
            del t.order[bisect_left(t.order, ek)]
            t.mods += 1

    def iterate(
        self, ns: str, table: str, start: EntryKey | None, *, exclusive: bool, reverse: bool
    ) -> Iterator[tuple[EntryKey, Any]]:
        """Yield ``(EntryKey, value)`` from ``start`` in order (or reverse order).

        Safe against writes to the same table while iterating: the position is re-found by key.
        """
        t = self._tables.get((ns, table))
        if t is None:
            return
        order = t.order
        if reverse:
            if start is None:
                i = len(order) - 1
            else:
                i = (bisect_left(order, start) if exclusive else bisect_right(order, start)) - 1
            while i >= 0:
                ek = order[i]
                row = t.rows.get(ek.item_key)
                mods = t.mods
                if row is not None:
                    yield ek, row[1]
                if t.mods != mods:
                    order = t.order
                    i = bisect_left(order, ek)
                i -= 1
        else:
            if start is None:
                i = 0
            else:
                i = bisect_right(order, start) if exclusive else bisect_left(order, start)
            while i < len(order):
                ek = order[i]
                row = t.rows.get(ek.item_key)
                mods = t.mods
                if row is not None:
                    yield ek, row[1]
                if t.mods != mods:
                    order = t.order
                    i = bisect_right(order, ek) - 1
                i += 1

    def clear(self) -> None:
        """Remove every row."""
        self._tables.clear()

    def load(self, rows: Iterable[tuple[RowKey, str, Any]]) -> None:
        """Bulk-insert rows into an empty or partly filled store (sorts each table once)."""
        touched: set[tuple[str, str]] = set()
        for key, sk, value in rows:
            tk = (key.ns, key.table)
            t = self._tables.get(tk)
            if t is None:
                t = self._tables[tk] = _Table()
            old = t.rows.get(key.item)
            t.rows[key.item] = (sk, value)
            if old is None:
                t.order.append(EntryKey(sk, key.item))
            elif old[0] != sk:
                t.order.remove(EntryKey(old[0], key.item))
                t.order.append(EntryKey(sk, key.item))
            touched.add(tk)
        for tk in touched:
            t = self._tables[tk]
            t.order.sort()
            t.mods += 1

    def rows(self) -> Iterator[tuple[RowKey, str, Any]]:
        """Every row as ``(RowKey, sort_key, value)``."""
        for (ns, table), t in self._tables.items():
            for item, (sk, value) in t.rows.items():
                yield RowKey(ns, table, item), sk, value

    def count(self, ns: str | None = None, table: str | None = None) -> int:
        """Number of rows, optionally restricted to one namespace and table."""
        return sum(
            len(t.rows)
            for (tns, tname), t in self._tables.items()
            if (ns is None or tns == ns) and (table is None or tname == table)
        )
