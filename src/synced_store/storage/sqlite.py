"""SQLite storage: one WAL database file per instance.

Tables: ``meta`` (version, tombstone horizon), ``rows`` (every row with the version that last
changed it; deletes keep a tombstone), ``clients`` (last_mutation_id per client, written in the
same transaction as the mutations), ``mutation_errors`` (permanent failures reported to their
client), ``jobs`` (the durable action outbox).

Durability: WAL with ``synchronous=NORMAL`` survives a killed process (kill -9) with every
committed transaction; ``durability="full"`` (``synchronous=FULL``) also survives power loss.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from ..errors import PermissionDeniedError, StorageError, ValidationError
from ..types import EntryKey, RowKey
from .base import PullResult, Row

__all__ = [
    "SqliteInstanceStore",
    "SqliteReader",
    "instance_path",
    "storage_error",
    "validate_instance_id",
]

STORAGE_VERSION = 1
_INSTANCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rows (
    ns TEXT NOT NULL, tbl TEXT NOT NULL, item TEXT NOT NULL, sk TEXT NOT NULL,
    value TEXT, version INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (ns, tbl, item)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rows_by_version ON rows (version);
CREATE INDEX IF NOT EXISTS rows_in_order ON rows (ns, tbl, sk, item);
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY, user_id TEXT NOT NULL,
    last_mutation_id INTEGER NOT NULL, version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mutation_errors (
    client_id TEXT NOT NULL, mutation_id INTEGER NOT NULL, name TEXT NOT NULL,
    kind TEXT NOT NULL, message TEXT NOT NULL, PRIMARY KEY (client_id, mutation_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, input TEXT NOT NULL,
    user_id TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_run_at REAL NOT NULL DEFAULT 0, last_error TEXT, output TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, next_run_at);
"""


def validate_instance_id(instance_id: str) -> str:
    """Return ``instance_id`` if it is 1-128 chars of ``[A-Za-z0-9_.-]`` not starting with a
    dot, dash or underscore; raise :class:`ValidationError` otherwise (no path tricks)."""
    if (
        not isinstance(instance_id, str)
        or not _INSTANCE_RE.match(instance_id)
        or ".." in instance_id
    ):
        raise ValidationError(f"invalid instance id {instance_id!r:.80}")
    return instance_id


def instance_path(data_dir: Path, instance_id: str) -> Path:
    """The database file of an instance."""
    return Path(data_dir) / f"{validate_instance_id(instance_id)}.sqlite3"


def storage_error(exc: sqlite3.Error) -> StorageError:
    """The :class:`StorageError` for a sqlite3 error; ``transient`` when a retry may succeed
    (busy, locked, I/O, interrupted)."""
    msg = str(exc)
    transient = isinstance(exc, sqlite3.OperationalError) and any(
        w in msg for w in ("locked", "busy", "disk I/O", "interrupted")
    )
    return StorageError(f"sqlite: {msg}", transient=transient)


class _RowReader:
    """Reading rows through ``self.conn`` (the writer's connection or a reader's own)."""

    conn: sqlite3.Connection

    def read(self, key: RowKey) -> Row | None:
        r = self.conn.execute(
            "SELECT sk, value FROM rows WHERE ns = ? AND tbl = ? AND item = ? AND deleted = 0",
            key,
        ).fetchone()
        return None if r is None else (r[0], orjson.loads(r[1]))

    def iterate(
        self, ns: str, table: str, start: EntryKey | None, *, exclusive: bool, reverse: bool
    ) -> Iterator[tuple[EntryKey, Any]]:
        pos = start
        excl = exclusive
        while True:
            args: tuple[str, ...]
            if pos is None:
                where, args = "", ()
            else:
                op = ("<" if excl else "<=") if reverse else (">" if excl else ">=")
                where, args = f" AND (sk, item) {op} (?, ?)", (pos[0], pos[1])
            order = "DESC" if reverse else "ASC"
            rows = self.conn.execute(
                "SELECT sk, item, value FROM rows WHERE ns = ? AND tbl = ? AND deleted = 0"
                f"{where} ORDER BY sk {order}, item {order} LIMIT 128",
                (ns, table, *args),
            ).fetchall()
            for sk, item, value in rows:
                pos = EntryKey(sk, item)
                yield pos, orjson.loads(value)
            if len(rows) < 128:
                return
            excl = True


class SqliteInstanceStore(_RowReader):
    """The database of one instance. The writer methods run on the event loop thread."""

    def __init__(self, path: Path | str, *, durability: str = "normal") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        sync = {"normal": "NORMAL", "full": "FULL", "off": "OFF"}[durability]
        self._sync = sync
        self.conn = self._open()
        self.conn.executescript(_DDL)
        cur = self.conn.execute("SELECT key, value FROM meta")
        meta = dict(cur.fetchall())
        if not meta:
            self.conn.execute(
                "INSERT INTO meta VALUES ('version', 0), ('horizon', 0), ('storage_version', ?)",
                (STORAGE_VERSION,),
            )
            meta = {"version": 0, "horizon": 0}
        #: Schema version of the stored data; None for a new database (the server's applies).
        self.schema_version: int | None = (
            int(meta["schema_version"]) if "schema_version" in meta else None
        )
        self.version: int = int(meta["version"])
        self.horizon: int = int(meta.get("horizon", 0))
        self._in_tx = False

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, cached_statements=512
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._sync}")
        # The writer runs on the event loop: never block it long on a lock. A busy database is
        # a transient error; the instance retries the batch with asynchronous backoff.
        conn.execute("PRAGMA busy_timeout=20")
        return conn

    # -- writer transaction ----------------------------------------------------------------

    def begin(self) -> None:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc
        self._in_tx = True

    def commit(self, version: int) -> None:
        """Record ``version`` as committed and commit (a transaction that keeps the version,
        such as job bookkeeping on an idle instance, rewrites no meta row)."""
        try:
            if version != self.version:
                self.conn.execute("UPDATE meta SET value = ? WHERE key = 'version'", (version,))
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc
        self._in_tx = False
        self.version = version

    def rollback(self) -> None:
        if self._in_tx:
            self.conn.execute("ROLLBACK")
            self._in_tx = False

    def savepoint(self) -> None:
        self.conn.execute("SAVEPOINT m")

    def release(self) -> None:
        self.conn.execute("RELEASE m")

    def rollback_savepoint(self) -> None:
        self.conn.execute("ROLLBACK TO m")
        self.conn.execute("RELEASE m")

    # -- rows ------------------------------------------------------------------------------

    def write(self, key: RowKey, sort_key: str, encoded: bytes, version: int) -> None:
        self.conn.execute(
            "INSERT INTO rows (ns, tbl, item, sk, value, version, deleted) "
            "VALUES (?, ?, ?, ?, ?, ?, 0) ON CONFLICT (ns, tbl, item) DO UPDATE SET "
            "sk = excluded.sk, value = excluded.value, version = excluded.version, deleted = 0",
            (key.ns, key.table, key.item, sort_key, encoded.decode(), version),
        )

    def remove(self, key: RowKey, version: int) -> bool:
        cur = self.conn.execute(
            "UPDATE rows SET deleted = 1, value = NULL, version = ? "
            "WHERE ns = ? AND tbl = ? AND item = ? AND deleted = 0",
            (version, key.ns, key.table, key.item),
        )
        return cur.rowcount > 0

    # -- clients ---------------------------------------------------------------------------

    def client(self, client_id: str) -> tuple[str, int] | None:
        """``(user_id, last_mutation_id)`` of a known client."""
        r = self.conn.execute(
            "SELECT user_id, last_mutation_id FROM clients WHERE client_id = ?", (client_id,)
        ).fetchone()
        return None if r is None else (r[0], int(r[1]))

    def set_client(self, client_id: str, user_id: str, lmid: int, version: int) -> None:
        """Upsert a client's last_mutation_id (inside the writer transaction)."""
        self.conn.execute(
            "INSERT INTO clients VALUES (?, ?, ?, ?) ON CONFLICT (client_id) DO UPDATE SET "
            "last_mutation_id = excluded.last_mutation_id, version = excluded.version",
            (client_id, user_id, lmid, version),
        )

    def add_error(self, client_id: str, err: dict[str, Any]) -> None:
        """Record a permanent mutation failure for its client (inside the writer transaction)."""
        self.conn.execute(
            "INSERT OR REPLACE INTO mutation_errors VALUES (?, ?, ?, ?, ?)",
            (client_id, err["id"], err["name"], err["kind"], err["message"][:2000]),
        )

    # -- jobs (the action outbox) ----------------------------------------------------------

    def add_job(self, name: str, input: Any, user_id: str, now: float) -> int:
        """Insert a pending job (inside the writer transaction); returns its id."""
        cur = self.conn.execute(
            "INSERT INTO jobs (name, input, user_id, status, created_at, updated_at) "
            "VALUES (?, ?, ?, 'pending', ?, ?)",
            (name, orjson.dumps(input).decode(), user_id, now, now),
        )
        return int(cur.lastrowid or 0)

    def set_schema_version(self, version: int) -> None:
        """Record the schema version of the stored data (inside the writer transaction)."""
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (version,))
        self.schema_version = version

    def compact_tombstones(self, before_version: int) -> int:
        """Forget deletions older than ``before_version`` (inside the writer transaction).

        Clients whose cookie is older than the new horizon get a full reset on their next pull.
        Returns how many tombstones were removed.
        """
        n = self.conn.execute(
            "DELETE FROM rows WHERE deleted = 1 AND version <= ?", (before_version,)
        ).rowcount
        horizon = max(self.horizon, before_version)
        self.conn.execute("UPDATE meta SET value = ? WHERE key = 'horizon'", (horizon,))
        self.horizon = horizon
        return int(n)

    def requeue_running(self) -> int:
        """Put jobs left ``running`` by a previous process back to ``pending`` (at least once)."""
        return self.conn.execute(
            "UPDATE jobs SET status = 'pending', next_run_at = 0 WHERE status = 'running'"
        ).rowcount

    def claim_jobs(self, now: float, limit: int) -> list[dict[str, Any]]:
        """Mark up to ``limit`` due pending jobs ``running`` and return them."""
        rows = self.conn.execute(
            "SELECT id, name, input, user_id, attempts FROM jobs WHERE status = 'pending' "
            "AND next_run_at <= ? ORDER BY id LIMIT ?",
            (now, limit),
        ).fetchall()
        for r in rows:
            self.conn.execute(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, updated_at = ? "
                "WHERE id = ?",
                (now, r[0]),
            )
        return [
            {
                "id": r[0],
                "name": r[1],
                "input": orjson.loads(r[2]),
                "user_id": r[3],
                "attempts": r[4] + 1,
            }
            for r in rows
        ]

    def finish_job(
        self,
        job_id: int,
        status: str,
        *,
        now: float,
        output: Any = None,
        error: str | None = None,
        next_run_at: float = 0.0,
    ) -> None:
        """Record a job's outcome: ``done``, ``failed`` (kept for ``actions retry``) or
        ``pending`` again (a retry at ``next_run_at``)."""
        self.conn.execute(
            "UPDATE jobs SET status = ?, output = ?, last_error = ?, next_run_at = ?, "
            "updated_at = ? WHERE id = ?",
            (
                status,
                None if output is None else orjson.dumps(output).decode(),
                error,
                next_run_at,
                now,
                job_id,
            ),
        )

    def next_due(self) -> float | None:
        """When the earliest pending job is due (None: no pending job)."""
        r = self.conn.execute(
            "SELECT MIN(next_run_at) FROM jobs WHERE status = 'pending'"
        ).fetchone()
        return None if r is None or r[0] is None else float(r[0])

    def reader(self) -> SqliteReader:
        """A separate read-only view of committed data (for actions and the CLI)."""
        return SqliteReader(self.path)

    # -- pulls (reader side) ---------------------------------------------------------------

    def pull(self, cookie: int | None, user_id: str, client_id: str, known_lmid: int) -> PullResult:
        """Everything ``user_id``'s client must receive to catch up from ``cookie``.

        Opens its own read connection, so it may run in a worker thread while the writer works.
        """
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("BEGIN")
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            version, horizon = int(meta["version"]), int(meta.get("horizon", 0))
            reset = cookie is None or cookie > version or cookie < horizon
            own = "u:" + user_id
            if reset:
                cur = conn.execute(
                    "SELECT ns, tbl, item, sk, value, deleted FROM rows "
                    "WHERE deleted = 0 AND (ns = '' OR ns = ?)",
                    (own,),
                )
            else:
                cur = conn.execute(
                    "SELECT ns, tbl, item, sk, value, deleted FROM rows "
                    "WHERE version > ? AND (ns = '' OR ns = ?)",
                    (cookie, own),
                )
            ops = [_op_text(*r) for r in cur]
            r = conn.execute(
                "SELECT last_mutation_id FROM clients WHERE client_id = ?", (client_id,)
            ).fetchone()
            lmid = 0 if r is None else int(r[0])
            errs = [
                {"id": m, "name": n, "kind": k, "message": msg}
                for m, n, k, msg in conn.execute(
                    "SELECT mutation_id, name, kind, message FROM mutation_errors "
                    "WHERE client_id = ? AND mutation_id > ? ORDER BY mutation_id",
                    (client_id, known_lmid),
                )
            ]
            conn.execute("COMMIT")
        finally:
            conn.close()
        return PullResult(version=version, reset=reset, ops=ops, last_mutation_id=lmid, errors=errs)

    def close(self) -> None:
        self.rollback()
        self.conn.close()


def _op_text(ns: str, tbl: str, item: str, sk: str, value: str | None, deleted: int) -> str:
    d = orjson.dumps
    head = '{"op":"del"' if deleted else '{"op":"set"'
    s = head + ',"t":' + d(tbl).decode() + ',"k":' + d(item).decode()
    if ns:
        s += ',"ns":' + d(ns).decode()
    if deleted:
        return s + "}"
    if sk:
        s += ',"sk":' + d(sk).decode()
    return s + ',"v":' + (value or "null") + "}"


class SqliteReader(_RowReader):
    """Committed rows of an instance through its own connection (core ``Tx``, read-only)."""

    copy_on_read = False

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA busy_timeout=5000")

    def write(self, key: RowKey, sort_key: str, value: Any, encoded: bytes) -> None:
        raise PermissionDeniedError("action contexts are read-only; write with ctx.mutate()")

    def remove(self, key: RowKey) -> None:
        raise PermissionDeniedError("action contexts are read-only; write with ctx.mutate()")

    def note_point(self, key: RowKey) -> None:
        pass

    def note_range(self, ns: str, table: str, low: EntryKey | None, high: EntryKey | None) -> None:
        pass

    def close(self) -> None:
        self.conn.close()
