"""Read sets: what a query or a mutation read, to decide what a change invalidates."""

from __future__ import annotations

from collections.abc import Mapping

from ..types import EntryKey, RowKey

__all__ = ["Changes", "ReadSet"]

#: Changed rows: RowKey -> the sort keys the row had before and after (None: absent).
Changes = Mapping[RowKey, tuple[str | None, ...]]


class ReadSet:
    """Points (rows read by key) and ranges (scanned intervals of one table, inclusive)."""

    __slots__ = ("points", "ranges")

    def __init__(self) -> None:
        self.points: set[RowKey] = set()
        #: (ns, table) -> list of (low, high) bounds in scan order; None means unbounded.
        self.ranges: dict[tuple[str, str], list[tuple[EntryKey | None, EntryKey | None]]] = {}

    def add_range(self, ns: str, table: str, low: EntryKey | None, high: EntryKey | None) -> None:
        """Record that every position between ``low`` and ``high`` (inclusive) was read."""
        self.ranges.setdefault((ns, table), []).append((low, high))

    def __bool__(self) -> bool:
        return bool(self.points or self.ranges)

    def intersects(self, changes: Changes) -> bool:
        """True if any changed row was read, or moved into or out of a scanned range."""
        points = self.points
        ranges = self.ranges
        for key, sks in changes.items():
            if key in points:
                return True
            if ranges:
                bounds = ranges.get((key.ns, key.table))
                if bounds:
                    for sk in sks:
                        if sk is None:
                            continue
                        pos = EntryKey(sk, key.item)
                        for low, high in bounds:
                            if (low is None or low <= pos) and (high is None or pos <= high):
                                return True
        return False
