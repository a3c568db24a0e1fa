"""SQLite storage: one WAL database file per instance.

Tables: ``meta`` (version, tombstone horizon), ``rows`` (every row with the version that last
changed it; deletes keep a tombstone), ``clients`` (last_mutation_id per client, written in the
same transaction as the mutations), ``mutation_errors`` (permanent failures reported to their
client, a bounded number per client), ``jobs`` (the durable action outbox, sqlite_jobs.py) and
``checkpoints`` (``(time, version)`` pairs behind time-based retention, sqlite_compact.py).

Durability: WAL with ``synchronous=NORMAL`` survives a killed process (kill -9) with every
committed transaction; ``durability="full"`` (``synchronous=FULL``) also survives power loss.

Failures: every driver error becomes a :class:`~synced_store.errors.StorageError` (errors.py):
lock contention is transient, anything else fails the instance. An error inside the writer's
transaction marks the store ``broken`` until the next :meth:`begin`, so a mutator that swallows
the error cannot commit a half-written transaction.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from ..errors import PermissionDeniedError, QuotaExceededError, StorageError, ValidationError
from ..types import EntryKey, RowKey
from .base import Row
from .errors import storage_error
from .sqlite_catchup import CatchUp
from .sqlite_compact import Compaction, CompactMixin
from .sqlite_jobs import JobsMixin

__all__ = [
    "CatchUp",
    "Compaction",
    "SqliteInstanceStore",
    "SqliteReader",
    "instance_path",
    "storage_error",
    "validate_instance_id",
]

STORAGE_VERSION = 2
_INSTANCE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
#: Characters of a rejected mutation's message kept for its client.
ERROR_MESSAGE_CHARS = 500
#: The write-ahead log is truncated back to this size after a checkpoint.
WAL_SIZE_LIMIT = 64 * 1024 * 1024

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rows (
    ns TEXT NOT NULL, tbl TEXT NOT NULL, item TEXT NOT NULL, sk TEXT NOT NULL,
    value TEXT, version INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (ns, tbl, item)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rows_by_version ON rows (version);
CREATE INDEX IF NOT EXISTS rows_in_order ON rows (ns, tbl, sk, item);
CREATE INDEX IF NOT EXISTS rows_tombstones ON rows (version) WHERE deleted = 1;
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY, user_id TEXT NOT NULL,
    last_mutation_id INTEGER NOT NULL, version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS clients_by_version ON clients (version);
CREATE INDEX IF NOT EXISTS clients_by_user ON clients (user_id);
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
CREATE INDEX IF NOT EXISTS jobs_by_user ON jobs (user_id, status);
CREATE TABLE IF NOT EXISTS checkpoints (at REAL PRIMARY KEY, version INTEGER NOT NULL);
"""


def validate_instance_id(instance_id: str) -> str:
    """Return ``instance_id`` if it is 1-128 chars of ``[A-Za-z0-9_.-]`` not starting with a
    dot, dash or underscore; raise :class:`ValidationError` otherwise (no path tricks)."""
    if (
        not isinstance(instance_id, str)
        or not _INSTANCE_RE.fullmatch(instance_id)
        or ".." in instance_id
    ):
        raise ValidationError(f"invalid instance id {instance_id!r:.80}")
    return instance_id


def instance_path(data_dir: Path, instance_id: str) -> Path:
    """The database file of an instance."""
    return Path(data_dir) / f"{validate_instance_id(instance_id)}.sqlite3"


class _RowReader:
    """Reading rows through ``self.conn`` (the writer's connection or a reader's own)."""

    conn: sqlite3.Connection

    def read(self, key: RowKey) -> Row | None:
        try:
            r = self.conn.execute(
                "SELECT sk, value FROM rows WHERE ns = ? AND tbl = ? AND item = ? AND deleted = 0",
                key,
            ).fetchone()
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc
        return None if r is None else (r[0], orjson.loads(r[1]))

    def _failed(self, exc: sqlite3.Error) -> StorageError:
        return storage_error(exc)

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
            try:
                rows = self.conn.execute(
                    "SELECT sk, item, value FROM rows WHERE ns = ? AND tbl = ? AND deleted = 0"
                    f"{where} ORDER BY sk {order}, item {order} LIMIT 128",
                    (ns, table, *args),
                ).fetchall()
            except sqlite3.Error as exc:
                raise self._failed(exc) from exc
            for sk, item, value in rows:
                pos = EntryKey(sk, item)
                yield pos, orjson.loads(value)
            if len(rows) < 128:
                return
            excl = True


class SqliteInstanceStore(JobsMixin, CompactMixin, _RowReader):
    """The database of one instance. The writer methods run on the event loop thread.

    Opening raises :class:`~synced_store.errors.InstanceUnavailableError` when the file cannot
    be created, opened or read (read-only directory, full disk, corrupt file).
    """

    def __init__(self, path: Path | str, *, durability: str = "normal") -> None:
        self.path = Path(path)
        self._sync = {"normal": "NORMAL", "full": "FULL", "off": "OFF"}[durability]
        #: The error that broke the current transaction, if any (see the module doc).
        self.broken: StorageError | None = None
        self._in_tx = False
        conn: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self.conn = self._open()
            meta = self._init_schema(conn)
        except (sqlite3.Error, OSError) as exc:
            if conn is not None:
                conn.close()
            raise storage_error(exc) from exc
        #: Schema version of the stored data; None for a new database (the server's applies).
        self.schema_version: int | None = (
            int(meta["schema_version"]) if "schema_version" in meta else None
        )
        self.version: int = int(meta["version"])
        self.horizon: int = int(meta.get("horizon", 0))

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, cached_statements=512
        )
        # Only takes effect on a new, empty database: deleted pages can then be returned to
        # the file system with `PRAGMA incremental_vacuum` (synced-store compact --vacuum).
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._sync}")
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        # The writer runs on the event loop: never block it long on a lock. A busy database is
        # a transient error; the instance retries the batch with asynchronous backoff.
        conn.execute("PRAGMA busy_timeout=20")
        return conn

    @staticmethod
    def _init_schema(conn: sqlite3.Connection) -> dict[str, int]:
        conn.executescript(_DDL)
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if not meta:
            conn.execute(
                "INSERT INTO meta VALUES ('version', 0), ('horizon', 0), ('storage_version', ?)",
                (STORAGE_VERSION,),
            )
            meta = {"version": 0, "horizon": 0, "storage_version": STORAGE_VERSION}
        elif int(meta.get("storage_version", 1)) < STORAGE_VERSION:
            conn.execute(
                "INSERT OR REPLACE INTO meta VALUES ('storage_version', ?)", (STORAGE_VERSION,)
            )
        return meta

    def _failed(self, exc: sqlite3.Error) -> StorageError:
        err = storage_error(exc)
        if self._in_tx:
            self.broken = err
        return err

    def _exec(self, sql: str, args: Any = ()) -> sqlite3.Cursor:
        try:
            return self.conn.execute(sql, args)
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc

    def _exec_many(self, sql: str, rows: Any) -> sqlite3.Cursor:
        try:
            return self.conn.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc

    # -- writer transaction ----------------------------------------------------------------

    def begin(self) -> None:
        """Start the writer's transaction (``BEGIN IMMEDIATE``: the write lock at once)."""
        self.broken = None
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc
        self._in_tx = True

    def commit(self, version: int) -> None:
        """Record ``version`` as committed and commit (a transaction that keeps the version,
        such as job bookkeeping on an idle instance, rewrites no meta row). Raises the error
        that broke the transaction, if one did: nothing is committed then."""
        if self.broken is not None:
            raise self.broken
        if version != self.version:
            self._exec("UPDATE meta SET value = ? WHERE key = 'version'", (version,))
        self._exec("COMMIT")
        self._in_tx = False
        self.version = version

    def rollback(self) -> None:
        """Abandon the writer's transaction. Safe when SQLite already rolled it back itself
        (it does on some errors, such as a full disk) and on a closed connection."""
        self._in_tx = False
        try:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # nothing to undo: the transaction is gone either way

    def savepoint(self) -> None:
        self._exec("SAVEPOINT m")

    def release(self) -> None:
        self._exec("RELEASE m")

    def rollback_savepoint(self) -> None:
        self._exec("ROLLBACK TO m")
        self._exec("RELEASE m")

    # -- rows ------------------------------------------------------------------------------

    def write(self, key: RowKey, sort_key: str, encoded: bytes, version: int) -> None:
        self._exec(
            "INSERT INTO rows (ns, tbl, item, sk, value, version, deleted) "
            "VALUES (?, ?, ?, ?, ?, ?, 0) ON CONFLICT (ns, tbl, item) DO UPDATE SET "
            "sk = excluded.sk, value = excluded.value, version = excluded.version, deleted = 0",
            (key.ns, key.table, key.item, sort_key, encoded.decode(), version),
        )

    def remove(self, key: RowKey, version: int) -> bool:
        cur = self._exec(
            "UPDATE rows SET deleted = 1, value = NULL, version = ? "
            "WHERE ns = ? AND tbl = ? AND item = ? AND deleted = 0",
            (version, key.ns, key.table, key.item),
        )
        return cur.rowcount > 0

    # -- clients ---------------------------------------------------------------------------

    def committed_client(self, client_id: str) -> tuple[str, int] | None:
        """:meth:`client` as committed: while the writer's transaction is open (a mutator
        awaiting a service), read through a connection of its own."""
        if not self.conn.in_transaction:
            return self.client(client_id)
        try:
            conn = sqlite3.connect(self.path, isolation_level=None)
            try:
                r = conn.execute(
                    "SELECT user_id, last_mutation_id FROM clients WHERE client_id = ?",
                    (client_id,),
                ).fetchone()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc
        return None if r is None else (r[0], int(r[1]))

    def clients_of(self, user_id: str) -> int:
        """How many client ids ``user_id`` has in this instance."""
        return int(
            self._exec("SELECT COUNT(*) FROM clients WHERE user_id = ?", (user_id,)).fetchone()[0]
        )

    def client(self, client_id: str) -> tuple[str, int] | None:
        """``(user_id, last_mutation_id)`` of a known client."""
        r = self._exec(
            "SELECT user_id, last_mutation_id FROM clients WHERE client_id = ?", (client_id,)
        ).fetchone()
        return None if r is None else (r[0], int(r[1]))

    def set_client(self, client_id: str, user_id: str, lmid: int, version: int) -> None:
        """Upsert a client's last_mutation_id (inside the writer transaction)."""
        self._exec(
            "INSERT INTO clients VALUES (?, ?, ?, ?) ON CONFLICT (client_id) DO UPDATE SET "
            "last_mutation_id = excluded.last_mutation_id, version = excluded.version",
            (client_id, user_id, lmid, version),
        )

    def register_client(
        self, client_id: str, user_id: str, told_upto: int, *, max_clients: int | None = None
    ) -> tuple[str, int]:
        """Bind a connecting client id to its user (the first user to connect with it owns
        it) and mark it seen now; forget the error reports it has been told of (mutation ids up
        to ``told_upto``, at most its ``last_mutation_id``). Inside the writer transaction.
        Returns ``(owner, last_mutation_id)``; a client of another user is left unchanged.
        A new client id of a user who has ``max_clients`` already raises
        :class:`QuotaExceededError`."""
        owner = self.client(client_id)
        if owner is None:
            if max_clients is not None and self.clients_of(user_id) >= max_clients:
                raise QuotaExceededError(
                    f"user {user_id} has {max_clients} client ids in this instance (the limit)"
                )
            self._exec(
                "INSERT INTO clients VALUES (?, ?, 0, ?)", (client_id, user_id, self.version)
            )
            return user_id, 0
        if owner[0] != user_id:
            return owner
        self._exec(
            "UPDATE clients SET version = MAX(version, ?) WHERE client_id = ?",
            (self.version, client_id),
        )
        told = min(told_upto, owner[1])
        if told > 0:
            self._exec(
                "DELETE FROM mutation_errors WHERE client_id = ? AND mutation_id <= ?",
                (client_id, told),
            )
        return owner

    def add_error(self, client_id: str, err: dict[str, Any]) -> None:
        """Record a permanent mutation failure for its client (inside the writer transaction)."""
        self._exec(
            "INSERT OR REPLACE INTO mutation_errors VALUES (?, ?, ?, ?, ?)",
            (client_id, err["id"], err["name"], err["kind"], err["message"][:ERROR_MESSAGE_CHARS]),
        )

    def prune_errors(self, client_id: str, keep: int) -> None:
        """Keep only the newest ``keep`` error reports of a client."""
        self._exec(
            "DELETE FROM mutation_errors WHERE client_id = ? AND mutation_id <= ("
            "SELECT mutation_id FROM mutation_errors WHERE client_id = ? "
            "ORDER BY mutation_id DESC LIMIT 1 OFFSET ?)",
            (client_id, client_id, keep),
        )

    def errors_between(self, client_id: str, after: int, upto: int) -> list[dict[str, Any]]:
        """Error reports of a client for mutation ids in ``(after, upto]``, oldest first."""
        return [
            {"id": m, "name": n, "kind": k, "message": msg}
            for m, n, k, msg in self._exec(
                "SELECT mutation_id, name, kind, message FROM mutation_errors "
                "WHERE client_id = ? AND mutation_id > ? AND mutation_id <= ? "
                "ORDER BY mutation_id",
                (client_id, after, upto),
            )
        ]

    def set_schema_version(self, version: int) -> None:
        """Record the schema version of the stored data (inside the writer transaction)."""
        self._exec("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (version,))
        self.schema_version = version

    def incremental_vacuum(self) -> None:
        """Return free pages to the file system (databases created with auto_vacuum)."""
        self._exec("PRAGMA incremental_vacuum")

    # -- readers ---------------------------------------------------------------------------

    def reader(self) -> SqliteReader:
        """A separate read-only view of committed data (for actions and the CLI)."""
        return SqliteReader(self.path)

    def catch_up(self, base: int | None, user_id: str) -> CatchUp:
        """A catch-up of ``user_id``'s client from cookie ``base`` to the committed version,
        read in parts (sqlite_catchup.py). Call on the loop thread: the version it stops at is
        the one every session has been told of."""
        return CatchUp(
            self.path, base=base, upto=self.version, horizon=self.horizon, user_id=user_id
        )

    def close(self) -> None:
        self.rollback()
        self.conn.close()


class SqliteReader(_RowReader):
    """Committed rows of an instance through its own connection (core ``Tx``, read-only)."""

    copy_on_read = False

    def __init__(self, path: Path) -> None:
        try:
            self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA query_only=1")
            self.conn.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc

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
