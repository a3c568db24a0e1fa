"""SQLite storage: one WAL database file per instance.

Tables: ``meta`` (version, tombstone horizon), ``rows`` (every row with the version that last
changed it; deletes keep a tombstone), ``clients`` (last_mutation_id per client, written in the
same transaction as the mutations), ``mutation_errors`` (permanent failures reported to their
client, a bounded number per client), ``jobs`` (the durable action outbox, sqlite_jobs.py),
``checkpoints`` (``(time, version)`` pairs behind time-based retention, sqlite_compact.py) and
the full-text index of searchable tables (``search_*``, sqlite_search.py).

Durability: WAL with ``synchronous=NORMAL`` survives a killed process (kill -9) with every
committed transaction; ``durability="full"`` (``synchronous=FULL``) also survives power loss.

Failures: every driver error becomes a :class:`~synced_store.errors.StorageError` (errors.py):
lock contention is transient, anything else fails the instance. An error inside the writer's
transaction marks it ``broken`` (sqlite_tx.py), so a mutator that swallows the error cannot
commit a half-written transaction.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from ..errors import InstanceUnavailableError
from .base import RemoteCommits
from .errors import storage_error
from .ids import validate_instance_id
from .records import Changes, ClientState, OpEncoder, RejectedMutation
from .sqlite_catchup import SqliteCatchUp
from .sqlite_rows import SqliteReader, changes_since, open_reader
from .sqlite_search import SEARCH_DDL, upgrade_queue
from .sqlite_tx import ERROR_MESSAGE_CHARS, SqliteWriterTx

__all__ = [
    "ERROR_MESSAGE_CHARS",
    "STORAGE_VERSION",
    "SqliteInstanceStore",
    "instance_path",
    "storage_error",
    "validate_instance_id",
]

T = TypeVar("T")

#: The file layout: 3 since rows are queued for the full-text index (sqlite_search.py).
STORAGE_VERSION = 3
#: The write-ahead log is truncated back to this size after a checkpoint.
WAL_SIZE_LIMIT = 64 * 1024 * 1024

_DDL = (
    """
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
    + SEARCH_DDL
)


def _stored_meta(conn: sqlite3.Connection) -> dict[str, int]:
    """The ``meta`` rows a file holds (none: a new file)."""
    try:
        return dict(conn.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.OperationalError:  # no meta table: a new file
        return {}


def instance_path(data_dir: Path, instance_id: str) -> Path:
    """The database file of an instance."""
    return Path(data_dir) / f"{validate_instance_id(instance_id)}.sqlite3"


class SqliteInstanceStore:
    """The database of one instance (storage/base.py's ``InstanceStore``). The writer's
    transaction runs on the event loop thread, on the store's one connection.

    Opening raises :class:`~synced_store.errors.InstanceUnavailableError` when the file cannot
    be created, opened or read (read-only directory, full disk, corrupt file).
    ``busy_timeout_ms``: how long a statement waits for another connection's lock before the
    batch is retried (the server keeps it short: it never blocks its event loop for long).
    """

    #: One process serves a data dir: nobody else commits behind this store's back.
    shared = False
    #: Rows are queued for the full-text index and indexed at ``index_search`` (sqlite_search.py).
    deferred_search = True

    def __init__(
        self, path: Path | str, *, durability: str = "normal", busy_timeout_ms: int = 20
    ) -> None:
        self.path = Path(path)
        self._sync = {"normal": "NORMAL", "full": "FULL", "off": "OFF"}[durability]
        self._busy_ms = int(busy_timeout_ms)
        self._closed = False
        conn: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self.conn = self._open()
            meta = self._init_schema(conn)
        except (sqlite3.Error, OSError, InstanceUnavailableError) as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, InstanceUnavailableError):
                raise
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
        conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
        return conn

    @staticmethod
    def _init_schema(conn: sqlite3.Connection) -> dict[str, int]:
        meta = _stored_meta(conn)
        stored = int(meta.get("storage_version", 1 if meta else 0))
        if stored > STORAGE_VERSION:  # refused before the script changes its triggers
            raise InstanceUnavailableError(
                f"{conn.execute('PRAGMA database_list').fetchone()[2]} has storage layout "
                f"{stored}, newer than this synced-store knows ({STORAGE_VERSION}): upgrade "
                "synced-store (every server and CLI using this data dir runs the same release)"
            )
        upgrade_queue(conn)
        conn.executescript(_DDL)  # creates what is missing; never touches meta's rows
        if not meta:
            conn.execute(
                "INSERT INTO meta VALUES ('version', 0), ('horizon', 0), ('storage_version', ?)",
                (STORAGE_VERSION,),
            )
            meta = {"version": 0, "horizon": 0, "storage_version": STORAGE_VERSION}
        elif stored < STORAGE_VERSION:
            conn.execute(
                "INSERT OR REPLACE INTO meta VALUES ('storage_version', ?)", (STORAGE_VERSION,)
            )
        return meta

    # -- the writer ------------------------------------------------------------------------

    async def begin(self) -> SqliteWriterTx:
        """Open the writer's transaction (``BEGIN IMMEDIATE``: the write lock at once)."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc
        return SqliteWriterTx(
            self.conn,
            self.version,
            self.schema_version,
            on_commit=self._committed,
            on_horizon=self._horizon_is,
            on_schema_version=self._schema_version_is,
        )

    def _committed(self, version: int) -> None:
        self.version = version

    def _horizon_is(self, horizon: int) -> None:
        self.horizon = horizon

    def _schema_version_is(self, version: int) -> None:
        self.schema_version = version

    # -- committed reads -------------------------------------------------------------------

    @contextlib.contextmanager
    def _committed_conn(self) -> Iterator[sqlite3.Connection]:
        """The writer's connection when no transaction is open on it; else (a mutator awaits
        a service in the middle of a batch) a short-lived connection of its own, so a read
        never sees uncommitted work."""
        try:
            idle = self._idle_writer()
            if idle is not None:
                yield idle
                return
            conn = open_reader(self.path)
            try:
                yield conn
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._committed_conn() as conn:
            return fn(conn)

    async def client(self, client_id: str) -> ClientState | None:
        """A client's committed ``(user_id, last_mutation_id)``."""
        r = self._read(
            lambda c: c.execute(
                "SELECT user_id, last_mutation_id FROM clients WHERE client_id = ?",
                (client_id,),
            ).fetchone()
        )
        return None if r is None else ClientState(r[0], int(r[1]))

    async def errors_between(self, client_id: str, after: int, upto: int) -> list[RejectedMutation]:
        """Error reports of a client for mutation ids in ``(after, upto]``, oldest first."""
        rows = self._read(
            lambda c: c.execute(
                "SELECT mutation_id, name, kind, message FROM mutation_errors "
                "WHERE client_id = ? AND mutation_id > ? AND mutation_id <= ? "
                "ORDER BY mutation_id",
                (client_id, after, upto),
            ).fetchall()
        )
        return [{"id": m, "name": n, "kind": k, "message": msg} for m, n, k, msg in rows]

    async def next_due(self) -> float | None:
        """When the earliest committed pending job is due (None: no pending job)."""
        r = self._read(
            lambda c: c.execute(
                "SELECT MIN(next_run_at) FROM jobs WHERE status = 'pending'"
            ).fetchone()
        )
        return None if r is None or r[0] is None else float(r[0])

    def watch(self, callback: RemoteCommits) -> None:
        """Nothing to watch: only this process writes the file."""

    async def changes_since(self, after: int, *, limit: int) -> Changes:
        """Committed rows changed after ``after`` (one read transaction)."""
        return self._read(lambda c: changes_since(c, after, None, limit))

    async def renew_jobs(self, job_ids: Collection[int], *, now: float, lease: float) -> None:
        """No leases: one process runs an instance's jobs (requeued when it reopens)."""

    def catch_up(
        self,
        base: int | None,
        *,
        namespaces: Sequence[str],
        encode: OpEncoder,
        windows: Mapping[str, int] | None = None,
        window_bytes: int = 1 << 20,
    ) -> SqliteCatchUp:
        """A catch-up from cookie ``base`` to the committed version, read in parts in a worker
        thread (sqlite_catchup.py). Call on the loop thread: the version it stops at is the
        one every session has been told of."""
        return SqliteCatchUp(
            self.path,
            base=base,
            upto=self.version,
            horizon=self.horizon,
            namespaces=namespaces,
            encode=encode,
            windows=windows,
            window_bytes=window_bytes,
        )

    def reader(self) -> SqliteReader:
        """A separate read-only view of committed rows (an action's context)."""
        return SqliteReader(self.path, self._idle_writer)

    def _idle_writer(self) -> sqlite3.Connection | None:
        """The writer's connection while no transaction is open on it (a reader's point read
        takes its warm page cache: sqlite_rows.py)."""
        conn = self.conn
        return None if self._closed or conn.in_transaction else conn

    async def vacuum(self) -> None:
        """Return free pages to the file system (databases created with auto_vacuum)."""
        try:
            self.conn.execute("PRAGMA incremental_vacuum").fetchall()
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc

    async def close(self) -> None:
        """Roll back an open transaction and close the connection."""
        try:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # closing anyway
        self._closed = True
        self.conn.close()
