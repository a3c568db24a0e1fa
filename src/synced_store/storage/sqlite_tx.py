"""The writer's transaction on an SQLite instance: rows, clients and rejected mutations (jobs
and retention in sqlite_jobs.py and sqlite_compact.py).

Every method runs its statements at once on the event loop thread (they are coroutines only
to fit the storage interface; none of them suspends). A driver error marks the transaction
``broken`` (see storage/base.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

from ..errors import QuotaExceededError, StorageError
from ..types import EntryKey, RowKey
from .errors import storage_error
from .records import Changes, ClientState, RejectedMutation, Row, ScanRow
from .sqlite_compact import CompactMixin
from .sqlite_jobs import JobsMixin
from .sqlite_rows import changes_since, read_row, scan_rows
from .sqlite_search import configure, index_queued

__all__ = ["ERROR_MESSAGE_CHARS", "SqliteWriterTx"]

T = TypeVar("T")

#: Characters of a rejected mutation's message kept for its client.
ERROR_MESSAGE_CHARS = 500

_UPSERT = (
    "INSERT INTO rows (ns, tbl, item, sk, value, version, deleted) "
    "VALUES (?, ?, ?, ?, ?, ?, 0) ON CONFLICT (ns, tbl, item) DO UPDATE SET "
    "sk = excluded.sk, value = excluded.value, version = excluded.version, deleted = 0"
)
#: A live row keeping its sort key takes a new value and version only: the statement leaves the
#: indexes on the sort key and on tombstones alone (fewer pages per commit than the upsert).
_REWRITE = (
    "UPDATE rows SET value = ?, version = ? "
    "WHERE ns = ? AND tbl = ? AND item = ? AND sk = ? AND deleted = 0"
)
_TOMBSTONE = (
    "UPDATE rows SET deleted = 1, value = NULL, version = ? "
    "WHERE ns = ? AND tbl = ? AND item = ? AND deleted = 0"
)


class SqliteWriterTx(JobsMixin, CompactMixin):
    """An open ``BEGIN IMMEDIATE`` transaction on the writer's connection."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        version: int,
        schema_version: int | None = None,
        *,
        on_commit: Callable[[int], None],
        on_horizon: Callable[[int], None],
        on_schema_version: Callable[[int], None],
    ) -> None:
        self.conn = conn
        self.version = version
        self.schema_version = schema_version
        self.broken: StorageError | None = None
        self._open = True
        self._on_commit = on_commit
        self._horizon_is = on_horizon
        self._on_schema_version = on_schema_version

    def _failed(self, exc: sqlite3.Error) -> StorageError:
        err = storage_error(exc)
        if self._open:
            self.broken = err
        return err

    def _exec(self, sql: str, args: Any = ()) -> sqlite3.Cursor:
        if not self._open:
            raise StorageError("the writer's transaction is over", transient=False)
        try:
            return self.conn.execute(sql, args)
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc

    def _exec_many(self, sql: str, rows: Any) -> sqlite3.Cursor:
        if not self._open:
            raise StorageError("the writer's transaction is over", transient=False)
        try:
            return self.conn.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc

    # -- the transaction -------------------------------------------------------------------

    async def commit(self, version: int) -> None:
        """Record ``version`` and commit (a transaction that keeps the version, such as job
        bookkeeping on an idle instance, rewrites no meta row). Raises the error that broke
        the transaction, if one did: nothing is committed then."""
        if self.broken is not None:
            raise self.broken
        if version != self.version:
            self._exec("UPDATE meta SET value = ? WHERE key = 'version'", (version,))
        self._exec("COMMIT")
        self._open = False
        self._on_commit(version)

    async def rollback(self) -> None:
        """Abandon the transaction. Safe when SQLite already rolled it back itself (it does on
        some errors, such as a full disk) and on a closed connection."""
        self._open = False
        try:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # nothing to undo: the transaction is gone either way

    async def changes_since(self, after: int, *, limit: int) -> Changes:
        """Rows changed after ``after`` up to this transaction's version (none, with one
        process per file, unless the caller is behind it)."""
        try:
            return changes_since(self.conn, after, self.version, limit)
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc

    async def savepoint(self) -> None:
        self._exec("SAVEPOINT m")

    async def release(self) -> None:
        self._exec("RELEASE m")

    async def rollback_savepoint(self) -> None:
        self._exec("ROLLBACK TO m")
        self._exec("RELEASE m")

    # -- rows ------------------------------------------------------------------------------

    async def read(self, key: RowKey) -> Row | None:
        try:
            return read_row(self.conn, key)
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc

    async def scan(
        self,
        ns: str,
        table: str,
        start: EntryKey | None,
        *,
        exclusive: bool,
        reverse: bool,
        limit: int,
    ) -> list[ScanRow]:
        try:
            return scan_rows(
                self.conn, ns, table, start, exclusive=exclusive, reverse=reverse, limit=limit
            )
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc

    async def write(self, key: RowKey, sort_key: str, encoded: bytes, version: int) -> None:
        value = encoded.decode()
        if self._exec(_REWRITE, (value, version, *key, sort_key)).rowcount == 0:
            self._exec(_UPSERT, (key.ns, key.table, key.item, sort_key, value, version))

    async def remove(self, key: RowKey, version: int) -> bool:
        return self._exec(_TOMBSTONE, (version, key.ns, key.table, key.item)).rowcount > 0

    # -- clients ---------------------------------------------------------------------------

    def _client(self, client_id: str) -> ClientState | None:
        r = self._exec(
            "SELECT user_id, last_mutation_id FROM clients WHERE client_id = ?", (client_id,)
        ).fetchone()
        return None if r is None else ClientState(r[0], int(r[1]))

    async def client(self, client_id: str) -> ClientState | None:
        """``(user_id, last_mutation_id)`` of a known client."""
        return self._client(client_id)

    async def clients(self, client_ids: Collection[str]) -> dict[str, ClientState]:
        """The known ones of ``client_ids``."""
        out = {}
        for cid in client_ids:
            got = self._client(cid)
            if got is not None:
                out[cid] = got
        return out

    async def set_client(
        self, client_id: str, user_id: str, last_mutation_id: int, version: int
    ) -> None:
        """Upsert a client's last_mutation_id."""
        self._exec(
            "INSERT INTO clients VALUES (?, ?, ?, ?) ON CONFLICT (client_id) DO UPDATE SET "
            "last_mutation_id = excluded.last_mutation_id, version = excluded.version",
            (client_id, user_id, last_mutation_id, version),
        )

    async def register_client(
        self, client_id: str, user_id: str, told_upto: int, *, max_clients: int | None = None
    ) -> ClientState:
        """See :meth:`synced_store.storage.base.WriterTx.register_client`."""
        owner = self._client(client_id)
        if owner is None:
            if max_clients is not None:
                (n,) = self._exec(
                    "SELECT COUNT(*) FROM clients WHERE user_id = ?", (user_id,)
                ).fetchone()
                if n >= max_clients:
                    raise QuotaExceededError(
                        f"user {user_id} has {max_clients} client ids in this instance (the limit)"
                    )
            self._exec(
                "INSERT INTO clients VALUES (?, ?, 0, ?)", (client_id, user_id, self.version)
            )
            return ClientState(user_id, 0)
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

    async def add_error(self, client_id: str, report: RejectedMutation) -> None:
        """Record a permanent mutation failure for its client."""
        self._exec(
            "INSERT OR REPLACE INTO mutation_errors VALUES (?, ?, ?, ?, ?)",
            (
                client_id,
                report["id"],
                report["name"],
                report["kind"],
                report["message"][:ERROR_MESSAGE_CHARS],
            ),
        )

    async def prune_errors(self, client_id: str, keep: int) -> None:
        """Keep only the newest ``keep`` error reports of a client."""
        self._exec(
            "DELETE FROM mutation_errors WHERE client_id = ? AND mutation_id <= ("
            "SELECT mutation_id FROM mutation_errors WHERE client_id = ? "
            "ORDER BY mutation_id DESC LIMIT 1 OFFSET ?)",
            (client_id, client_id, keep),
        )

    async def set_schema_version(self, version: int) -> None:
        """Record the schema version of the stored data."""
        self._exec("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (version,))
        self.schema_version = version
        self._on_schema_version(version)

    def _in_tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(conn)`` inside the open transaction (a driver error breaks it)."""
        if not self._open:
            raise StorageError("the writer's transaction is over", transient=False)
        try:
            return fn(self.conn)
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc

    async def configure_search(self, tables: Mapping[str, tuple[str, str | None]]) -> list[str]:
        """See :meth:`synced_store.storage.base.WriterTx.configure_search`."""
        return self._in_tx(lambda conn: configure(conn, tables))

    async def index_search(self, upto: int | None = None) -> bool:
        """See :meth:`synced_store.storage.base.WriterTx.index_search`."""
        return self._in_tx(lambda conn: index_queued(conn, upto))
