"""The Python client's local cache: snapshot, cookie and pending mutations in one SQLite file
(``connect(..., persist_path=...)``; the browser keeps the same in IndexedDB).

Pending mutations are written when they are made (so a crash loses none); the snapshot is
updated incrementally after each server update. It lives in storage/ with every other SQL
statement; nothing else in storage/ uses it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson

from ..types import RowKey

__all__ = ["LocalState", "Persistence"]

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rows (
    ns TEXT NOT NULL, tbl TEXT NOT NULL, item TEXT NOT NULL, sk TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (ns, tbl, item)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, args TEXT NOT NULL, v INTEGER, k TEXT);
"""


class LocalState:
    """What a persisted client had when it closed."""

    def __init__(self) -> None:
        self.meta: dict[str, Any] = {}
        self.rows: list[tuple[RowKey, str, Any]] = []
        self.pending: list[tuple[int, str, Any, int | None, str | None]] = []


class Persistence:
    """The client's local database."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(_DDL)

    def load(self) -> LocalState:
        """Read everything back."""
        st = LocalState()
        st.meta = {k: orjson.loads(v) for k, v in self.conn.execute("SELECT key, value FROM meta")}
        st.rows = [
            (RowKey(ns, t, i), sk, orjson.loads(v))
            for ns, t, i, sk, v in self.conn.execute("SELECT ns, tbl, item, sk, value FROM rows")
        ]
        st.pending = [
            (i, n, orjson.loads(a), v, k)
            for i, n, a, v, k in self.conn.execute(
                "SELECT id, name, args, v, k FROM pending ORDER BY id"
            )
        ]
        return st

    def set_meta(self, **values: Any) -> None:
        """Store meta values (client id, cookie, ...)."""
        self.conn.executemany(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)",
            [(k, orjson.dumps(v).decode()) for k, v in values.items()],
        )

    def add_pending(
        self,
        mutation_id: int,
        name: str,
        args: Any,
        schema_version: int,
        dedupe_key: str | None = None,
        **meta: Any,
    ) -> None:
        """Record a new pending mutation (durably, before the call returns)."""
        self.conn.execute("BEGIN")
        self.conn.execute(
            "INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?, ?)",
            (mutation_id, name, orjson.dumps(args).decode(), schema_version, dedupe_key),
        )
        self.set_meta(**meta)
        self.conn.execute("COMMIT")

    def save_update(
        self,
        *,
        reset: bool,
        rows: list[tuple[RowKey, tuple[str, Any] | None]],
        last_mutation_id: int,
        cookie: int | None,
        **meta: Any,
    ) -> None:
        """Apply a server update to the persisted snapshot and drop confirmed mutations."""
        c = self.conn
        c.execute("BEGIN")
        if reset:
            c.execute("DELETE FROM rows")
        for key, row in rows:
            if row is None:
                c.execute("DELETE FROM rows WHERE ns = ? AND tbl = ? AND item = ?", key)
            else:
                c.execute(
                    "INSERT OR REPLACE INTO rows VALUES (?, ?, ?, ?, ?)",
                    (key.ns, key.table, key.item, row[0], orjson.dumps(row[1]).decode()),
                )
        c.execute("DELETE FROM pending WHERE id <= ?", (last_mutation_id,))
        self.set_meta(cookie=cookie, last_mutation_id=last_mutation_id, **meta)
        c.execute("COMMIT")

    def replace_pending(self, pending: list[tuple[int, str, Any, int | None, str | None]]) -> None:
        """Rewrite the pending mutations (after they were renumbered)."""
        c = self.conn
        c.execute("BEGIN")
        c.execute("DELETE FROM pending")
        c.executemany(
            "INSERT INTO pending VALUES (?, ?, ?, ?, ?)",
            [(i, n, orjson.dumps(a).decode(), v, k) for i, n, a, v, k in pending],
        )
        c.execute("COMMIT")

    def clear(self) -> None:
        """Forget everything (schema version mismatch)."""
        self.conn.executescript("DELETE FROM rows; DELETE FROM pending; DELETE FROM meta;")

    def close(self) -> None:
        """Close the file."""
        self.conn.close()
