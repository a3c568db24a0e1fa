"""Windowed resets: what a catch-up from nothing sends of the tables a schema windows.

A schema's ``pull_windows`` (``{table: N}``) makes a client's first catch-up carry only the
latest N rows of each windowed table (by ``(sort_key, item_key)``), within a byte budget,
instead of every row; older rows are read on demand (the server's ``$scan`` query). Both
backends' catch-ups use a :class:`WindowPlan`: they skip the windowed tables while they read
every other row, then read each window newest first with one indexed query per table and
namespace. The plan records, per window that did not hold the whole table, the oldest row it
sent (:attr:`WindowPlan.floors`): the server leaves out of the same catch-up any change below
it, so what a client holds of a windowed table is always one run of rows up to the newest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from ..types import EntryKey
from .records import OpEncoder

__all__ = ["WindowPlan", "after_table", "text_bytes", "within_budget"]

_R = TypeVar("_R", bound=Sequence[Any])


def text_bytes(text: str) -> int:
    """UTF-8 bytes of ``text`` (a stored value's JSON)."""
    return len(text) if text.isascii() else len(text.encode())


def within_budget(rows: Iterable[_R], value_at: int, max_bytes: int) -> list[_R]:
    """The first of ``rows`` while their values (``row[value_at]``, JSON text) come to less
    than ``max_bytes``: it stops after the row that reaches it (at least one row), and never
    pulls a row after that one from ``rows`` (an SQLite cursor: those are never read)."""
    out: list[_R] = []
    size = 0
    for row in rows:
        out.append(row)
        size += text_bytes(row[value_at])
        if size >= max_bytes:
            break
    return out


def after_table(table: str) -> tuple[str, str]:
    """A ``(tbl, item)`` position after every row of ``table`` and before the next table's
    (table names are ``[A-Za-z0-9_.-]``; U+0001 sorts below all of them, and PostgreSQL's
    text cannot hold U+0000)."""
    return table + "\x01", ""


class WindowPlan:
    """The windows one reset reads, and what it sent of them."""

    def __init__(
        self, namespaces: Sequence[str], windows: Mapping[str, int] | None, max_bytes: int
    ) -> None:
        self.windows = dict(windows or {})
        #: (namespace, table, N) still to read.
        self.todo = [(ns, t, n) for ns in namespaces for t, n in sorted(self.windows.items())]
        self.max_bytes = max_bytes
        self.used = 0
        #: (namespace, table) -> the oldest row sent, for windows that left older rows out.
        self.floors: dict[tuple[str, str], EntryKey] = {}

    def remaining(self) -> int:
        """Bytes of values the next window may read (at least 1: one row per window)."""
        return max(1, self.max_bytes - self.used)

    def first_windowed(self, rows: Sequence[Any]) -> int | None:
        """Index of the first of ``rows`` (``(table, ...)``, read in key order) of a windowed
        table, or None."""
        windows = self.windows
        if not windows:
            return None
        for i, r in enumerate(rows):
            if r[0] in windows:
                return i
        return None

    def take(
        self, ns: str, table: str, n: int, rows: Sequence[tuple[str, str, Any]], enc: OpEncoder
    ) -> list[str]:
        """Encode a window's rows (``(item, sort_key, value)``, newest first, at most ``n``)
        while the byte budget lasts (at least one row per window); note its floor."""
        out: list[str] = []
        last: EntryKey | None = None
        for item, sk, value in rows:
            if out and self.used >= self.max_bytes:
                break
            op = enc(ns, table, item, sk, value, False)
            out.append(op)
            self.used += len(op)
            last = EntryKey(sk, item)
        # ``rows`` may stop short of ``n`` at the byte budget (read with :func:`within_budget`):
        # then ``used`` reached it, and older rows may exist.
        if last is not None and (
            len(out) < len(rows) or len(rows) >= n or self.used >= self.max_bytes
        ):
            self.floors[(ns, table)] = last
        return out
