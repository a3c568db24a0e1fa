"""Reading rows of an SQLite instance: point reads and scans, for the writer and for readers."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

from ..types import EntryKey, RowKey
from .errors import storage_error
from .records import ChangedRow, Changes, HistoryCompactedError, Row, ScanRow
from .search_index import SearchHit
from .sqlite_search import search
from .sqlite_searches import RunningSearches
from .windows import within_budget

__all__ = ["SqliteReader", "changes_since", "read_row", "scan_rows"]

_READ = "SELECT sk, value FROM rows WHERE ns = ? AND tbl = ? AND item = ? AND deleted = 0"


def read_row(conn: sqlite3.Connection, key: RowKey) -> Row | None:
    """``(sort_key, value)`` of a live row (raises sqlite3 errors)."""
    r = conn.execute(_READ, key).fetchone()
    return None if r is None else (r[0], orjson.loads(r[1]))


def scan_rows(
    conn: sqlite3.Connection,
    ns: str,
    table: str,
    start: EntryKey | None,
    *,
    exclusive: bool,
    reverse: bool,
    limit: int,
    max_bytes: int | None = None,
) -> list[ScanRow]:
    """One page of live rows in scan order (raises sqlite3 errors); with ``max_bytes``, it
    stops after the row whose value brings the values read to ``max_bytes`` (the rows after
    it are never read)."""
    args: tuple[str, ...]
    if start is None:
        where, args = "", ()
    else:
        op = ("<" if exclusive else "<=") if reverse else (">" if exclusive else ">=")
        where, args = f" AND (sk, item) {op} (?, ?)", (start[0], start[1])
    order = "DESC" if reverse else "ASC"
    cur = conn.execute(
        "SELECT sk, item, value FROM rows WHERE ns = ? AND tbl = ? AND deleted = 0"
        f"{where} ORDER BY sk {order}, item {order} LIMIT ?",
        (ns, table, *args, limit),
    )
    try:
        # The cursor steps one row at a time: a budget stops it before the rows past it.
        rows = cur.fetchall() if max_bytes is None else within_budget(cur, 2, max_bytes)
    finally:
        cur.close()
    loads = orjson.loads
    return [(EntryKey(sk, item), loads(value)) for sk, item, value in rows]


def changes_since(conn: sqlite3.Connection, after: int, upto: int | None, limit: int) -> Changes:
    """Rows (and clients) changed after version ``after`` up to ``upto`` (None: the committed
    version), in one read transaction of ``conn`` (raises sqlite3 errors, and
    HistoryCompactedError)."""
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if int(meta.get("horizon", 0)) > after:
            raise HistoryCompactedError(f"tombstones after version {after} were forgotten")
        end = int(meta["version"]) if upto is None else upto
        rows = conn.execute(
            "SELECT version, ns, tbl, item, sk, value, deleted FROM rows "
            "WHERE version > ? AND version <= ? ORDER BY version LIMIT ?",
            (after, end, limit + 1),
        ).fetchall()
        clients = {
            cid: int(lmid)
            for cid, lmid in conn.execute(
                "SELECT client_id, last_mutation_id FROM clients "
                "WHERE version > ? AND version <= ?",
                (after, end),
            )
        }
    finally:
        if own:
            conn.execute("COMMIT")
    if len(rows) > limit:
        return Changes(end, None, clients)
    changed = [
        ChangedRow(int(v), ns, t, i, sk, None if d else val) for v, ns, t, i, sk, val, d in rows
    ]
    return Changes(end, changed, clients)


def open_reader(path: Path, *, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """A read-only connection to an instance file that exists (raises sqlite3 errors)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA query_only=1")
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    except sqlite3.Error:
        conn.close()
        raise
    return conn


class SqliteReader:
    """Committed rows of an instance through a connection of its own (an action's context).
    The connection opens on the first read, so an action that reads nothing costs none.

    ``idle_writer`` returns the writer's connection when no transaction is open on it (else
    None): a point read then uses it, whose page cache is warm, where a connection of its own
    would re-read from the write-ahead log every page the writer changed since (an action
    streaming a reply reads its row between commits). Both read committed data, on the event
    loop thread."""

    def __init__(
        self, path: Path, idle_writer: Callable[[], sqlite3.Connection | None] | None = None
    ) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._idle_writer = idle_writer
        self._searches = RunningSearches(open_reader, path)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = open_reader(self._path)
        return self._conn

    async def read(self, key: RowKey) -> Row | None:
        conn = self._idle_writer() if self._idle_writer is not None else None
        try:
            return read_row(conn or self._connection(), key)
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc

    async def scan(
        self,
        ns: str,
        table: str,
        start: EntryKey | None,
        *,
        exclusive: bool,
        reverse: bool,
        limit: int,
        max_bytes: int | None = None,
    ) -> list[ScanRow]:
        try:
            return scan_rows(
                self._connection(),
                ns,
                table,
                start,
                exclusive=exclusive,
                reverse=reverse,
                limit=limit,
                max_bytes=max_bytes,
            )
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc

    async def search(
        self,
        table: str,
        words: Sequence[str],
        namespaces: Sequence[str],
        limit: int,
        *,
        newest_first: bool,
    ) -> list[SearchHit]:
        """Committed rows matching every word (sqlite_search.py), in a search thread on a
        connection of its own (sqlite_searches.py): a search that matches many rows does not
        hold up the event loop, and closing the reader meanwhile interrupts it."""
        try:
            return await self._searches.run(
                lambda conn: search(
                    conn, table, words, namespaces, limit, newest_first=newest_first
                )
            )
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc

    async def close(self) -> None:
        """Close the read connection and interrupt the searches in progress (each closes
        its own connection in its thread)."""
        self._searches.interrupt_all()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
