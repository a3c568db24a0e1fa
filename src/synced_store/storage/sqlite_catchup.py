"""Catch-ups read in bounded parts: what one client must receive to reach a version.

A :class:`SqliteCatchUp` answers one question — "every row change in these namespaces, from a
cookie (or from nothing: a reset) up to version ``upto``" — in parts of at most ``max_bytes``,
so a catch-up of a large instance never sits whole in memory. It holds no transaction between
parts: each part is one short read, and rows changed *after* ``upto`` are left out of every
part (the server queues those commits for the client and sends them after, or with, the last
part). So the parts together are exactly the instance at ``upto``, however long the client
takes to read them, and nothing pins the WAL meanwhile. Each row read becomes text through
the caller's encoder (the server's builds patch ops: storage knows nothing of the wire).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import StorageError
from .errors import storage_error
from .parts import fill_part
from .records import HistoryCompactedError, OpEncoder
from .windows import WindowPlan, after_table, within_budget

__all__ = ["SqliteCatchUp"]

#: Rows read per query at most; fewer when rows are large (about one part's worth).
_BATCH = 512
_MAX = "\U0010ffff"
#: Page cache of a catch-up's read connection, in KiB.
CACHE_KIB = 128


class SqliteCatchUp:
    """Parts of a catch-up to version ``upto`` of the rows in ``namespaces`` (module doc).

    ``base`` is the client's cookie (None, older than the tombstone horizon or newer than the
    instance: a reset, every live row). The horizon is read from the database by the first
    part (``synced-store compact`` may have raised it behind the server's back), so
    :attr:`reset` is final only after the first :meth:`next_part`, which reads in a worker
    thread.
    """

    def __init__(
        self,
        path: Path,
        *,
        base: int | None,
        upto: int,
        horizon: int,
        namespaces: Sequence[str],
        encode: OpEncoder,
        windows: Mapping[str, int] | None = None,
        window_bytes: int = 1 << 20,
    ) -> None:
        self.upto = upto
        #: A reset's windowed tables (storage/windows.py): what it sent of them.
        self.windows = WindowPlan(namespaces, windows, window_bytes)
        self._base = base
        self._decide(horizon)
        self._checked = False
        self._encode = encode
        self._visible = frozenset(namespaces)
        self._conn: sqlite3.Connection | None = None
        self._path = path
        # Reset: each namespace's rows in key order, one namespace after the other.
        # Incremental: every change after the base in version order (rows of other namespaces
        # are skipped).
        self._ns = list(namespaces)
        self._pos: tuple[Any, ...] | None = None
        self._pending: list[str] = []
        self._batch = 16  # rows per query, adapted to the row sizes seen (about one part)
        self.done = False
        self._busy = threading.Lock()
        self._closed = False

    def _decide(self, horizon: int) -> None:
        base = self._base
        self.reset = base is None or base > self.upto or base < horizon
        self.base = None if self.reset else base

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA query_only=1")
                conn.execute("PRAGMA busy_timeout=5000")
                # One pass in key order reuses no page: a small cache (SQLite's default is
                # 2 MB per connection, one connection per catch-up in progress).
                conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            except sqlite3.Error as exc:
                raise storage_error(exc) from exc
            self._conn = conn
        return self._conn

    async def next_part(self, max_bytes: int) -> list[str]:
        """The next encoded rows, about ``max_bytes`` of text (at least one row, so one row
        larger than ``max_bytes`` still travels). Empty once :attr:`done`. Reads in a worker
        thread."""
        return await asyncio.to_thread(self._next_part_locked, max_bytes)

    def _next_part_locked(self, max_bytes: int) -> list[str]:
        with self._busy:
            if self._closed:
                raise StorageError("catch-up closed", transient=False)
            try:
                return self._next_part(max_bytes)
            finally:
                if self._closed:  # close() was called meanwhile: it left the closing to us
                    self._close_connection()

    def _next_part(self, max_bytes: int) -> list[str]:
        out: list[str] = []
        size = 0
        batch, self._pending = self._pending, []
        try:
            while True:
                size, self._pending = fill_part(batch, out, size, max_bytes)
                if self._pending:
                    return out
                if self.done or size >= max_bytes:
                    return out
                batch = self._read_batch()
                if not batch:
                    self.done = True
                    return out
                mean = max(1, sum(len(op) for op in batch) // len(batch))
                self._batch = max(1, min(_BATCH, max_bytes // mean))
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc

    def _read_batch(self) -> list[str]:
        conn = self._connection()
        if not self._checked:
            self._checked = True
            r = conn.execute("SELECT value FROM meta WHERE key = 'horizon'").fetchone()
            self._decide(int(r[0]) if r is not None else 0)
        upto = self.upto
        if self.reset:
            while self._ns:
                ns = self._ns[0]
                tbl, item = self._pos if self._pos is not None else ("", "")
                rows = conn.execute(
                    "SELECT tbl, item, sk, value FROM rows WHERE ns = ? AND deleted = 0 "
                    "AND version <= ? AND (tbl, item) > (?, ?) ORDER BY tbl, item LIMIT ?",
                    (ns, upto, tbl, item, self._batch),
                ).fetchall()
                if rows:
                    self._pos = (rows[-1][0], rows[-1][1])
                    j = self.windows.first_windowed(rows)
                    if j is not None:  # a windowed table: skip it (read below, windowed)
                        self._pos = after_table(rows[j][0])
                        rows = rows[:j]
                        if not rows:
                            continue
                    enc = self._encode
                    return [enc(ns, t, i, sk, v, False) for t, i, sk, v in rows]
                self._ns.pop(0)
                self._pos = None
            plan = self.windows
            while plan.todo:
                ns, t, n = plan.todo.pop(0)
                cur = conn.execute(
                    "SELECT item, sk, value FROM rows INDEXED BY rows_in_order WHERE ns = ? "
                    "AND tbl = ? AND deleted = 0 AND version <= ? "
                    "ORDER BY sk DESC, item DESC LIMIT ?",
                    (ns, t, upto, n),
                )
                try:  # rows past the byte budget are never read
                    latest = within_budget(cur, 2, plan.remaining())
                finally:
                    cur.close()
                ops = plan.take(ns, t, n, latest, self._encode)
                if ops:
                    return ops
            return []
        pos = self._pos if self._pos is not None else (self.base, _MAX, _MAX, _MAX)
        while True:
            # Compaction raises the horizon before it forgets tombstones: checked after each
            # read, a horizon above the base means deletions may be missing from this read.
            rows = conn.execute(
                "SELECT version, ns, tbl, item, sk, value, deleted FROM rows "
                "INDEXED BY rows_by_version WHERE version <= ? "
                "AND (version, ns, tbl, item) > (?, ?, ?, ?) "
                "ORDER BY version, ns, tbl, item LIMIT ?",
                (upto, *pos, self._batch),
            ).fetchall()
            r = conn.execute("SELECT value FROM meta WHERE key = 'horizon'").fetchone()
            if r is not None and self.base is not None and int(r[0]) > self.base:
                raise HistoryCompactedError(
                    "history compacted during a catch-up (tombstones forgotten); reconnect"
                )
            if not rows:
                return []
            last = rows[-1]
            pos = self._pos = (last[0], last[1], last[2], last[3])
            visible = self._visible
            enc = self._encode
            ops = [enc(ns, t, i, sk, v, bool(d)) for _, ns, t, i, sk, v, d in rows if ns in visible]
            if ops:
                return ops

    async def close(self) -> None:
        """Release the read connection (also after a failure). Safe to call while
        :meth:`next_part` runs in its thread (a cancelled catch-up): that read then closes
        the connection when it is done with it."""
        self._closed = True
        self._pending = []
        if self._busy.acquire(blocking=False):
            try:
                self._close_connection()
            finally:
                self._busy.release()

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
