"""Admin reads of an SQLite instance file (``synced-store inspect``, ``actions list``).

The file is opened with SQLite's ``mode=ro``: these reads never create or change it, and are
safe while a server writes to it (a busy timeout waits out its commits).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson

from .errors import storage_error
from .records import ClientInfo, InstanceSummary, JobInfo, JobStatus, StoredRow

__all__ = ["SqliteInspector", "open_read_only"]

T = TypeVar("T")


def open_read_only(path: Path, *, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """A ``mode=ro`` connection to an existing file (raises sqlite3 errors)."""
    conn = sqlite3.connect(
        f"{path.resolve().as_uri()}?mode=ro",
        uri=True,
        isolation_level=None,
        check_same_thread=False,
    )
    try:
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    except sqlite3.Error:
        conn.close()
        raise
    return conn


class SqliteInspector:
    """Read-only admin reads of one instance file (storage/base.py's ``InstanceInspector``)."""

    def __init__(self, instance_id: str, path: Path) -> None:
        self.instance_id = instance_id
        self.path = path
        try:
            self._conn = open_read_only(path)
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc

    def _snapshot(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(conn)`` inside one read transaction (one consistent snapshot)."""
        conn = self._conn
        try:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc

    async def summary(self) -> InstanceSummary:
        def read(conn: sqlite3.Connection) -> InstanceSummary:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            live, tombstones = conn.execute(
                "SELECT COALESCE(SUM(deleted = 0), 0), COALESCE(SUM(deleted = 1), 0) FROM rows"
            ).fetchone()
            tables = {
                str(t): int(n)
                for t, n in conn.execute(
                    "SELECT tbl, COUNT(*) FROM rows WHERE deleted = 0 GROUP BY tbl ORDER BY tbl"
                )
            }
            clients = int(conn.execute("SELECT COUNT(*) FROM clients").fetchone()[0])
            jobs = {str(s): 0 for s in JobStatus}
            for status, n in conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status"):
                jobs[str(status)] = int(n)
            return InstanceSummary(
                instance_id=self.instance_id,
                location=str(self.path),
                bytes=self.path.stat().st_size,
                version=int(meta.get("version", 0)),
                schema_version=None
                if meta.get("schema_version") is None
                else int(meta["schema_version"]),
                horizon=int(meta.get("horizon", 0)),
                rows=int(live),
                tombstones=int(tombstones),
                tables=tables,
                clients=clients,
                jobs=jobs,
            )

        return self._snapshot(read)

    async def rows(self, table: str | None = None) -> list[StoredRow]:
        sql = "SELECT ns, tbl, item, sk, value, version FROM rows WHERE deleted = 0"
        args: tuple[str, ...] = ()
        if table is not None:
            sql += " AND tbl = ?"
            args = (table,)
        rows = self._snapshot(
            lambda c: c.execute(sql + " ORDER BY ns, tbl, sk, item", args).fetchall()
        )
        return [
            StoredRow(ns, tbl, item, sk, int(version), orjson.loads(value))
            for ns, tbl, item, sk, value, version in rows
        ]

    async def clients(self) -> list[ClientInfo]:
        rows = self._snapshot(
            lambda c: c.execute(
                "SELECT client_id, user_id, last_mutation_id, version FROM clients "
                "ORDER BY client_id"
            ).fetchall()
        )
        return [ClientInfo(cid, uid, int(lmid), int(v)) for cid, uid, lmid, v in rows]

    async def jobs(self, status: JobStatus | None = None) -> list[JobInfo]:
        sql = (
            "SELECT id, name, input, user_id, status, attempts, next_run_at, last_error, "
            "output, created_at, updated_at FROM jobs"
        )
        args: tuple[str, ...] = ()
        if status is not None:
            sql += " WHERE status = ?"
            args = (str(status),)
        rows = self._snapshot(lambda c: c.execute(sql + " ORDER BY id", args).fetchall())
        return [_job(r) for r in rows]

    async def close(self) -> None:
        self._conn.close()


def _job(r: tuple[Any, ...]) -> JobInfo:
    (jid, name, inp, uid, status, attempts, next_run_at, last_error, output, created, updated) = r
    return JobInfo(
        id=int(jid),
        name=name,
        status=JobStatus(status),
        attempts=int(attempts),
        user_id=uid,
        input=orjson.loads(inp),
        output=None if output is None else orjson.loads(output),
        last_error=last_error,
        next_run_at=float(next_run_at),
        created_at=float(created),
        updated_at=float(updated),
    )
