"""The writer's transaction on a PostgreSQL instance: rows, clients and rejected mutations (jobs
and retention in postgres_jobs.py and postgres_compact.py).

The transaction holds the instance's row in ``instances`` locked (``FOR UPDATE``, taken by
:meth:`PostgresInstanceStore.begin`), so one writer at a time commits an instance, whichever
process it runs in; its :attr:`version` is the one committed when the lock was granted.

Round trips are what a batch costs, so the common statements wait in memory:

* **Row writes and client updates are buffered** and sent together (``executemany``) before
  the commit, or earlier when a statement needs them in the database (a deletion of a
  buffered row). Reads look in the buffer first; scans merge it into the rows they read.
* **Savepoints are lazy.** :meth:`savepoint` only marks the buffer: a mutation that fails
  before anything of it reached the database is undone by dropping its part of the buffer.
  A real ``SAVEPOINT`` is sent just before the first statement that changes the database
  inside it (a deletion, a job, an error report).
* **Finished writes are sent ahead.** Once enough writes of completed mutations are buffered,
  they go to the database in the background while the next mutators run
  (postgres_pipeline.py); every other statement waits for them first.
* **The commit is one round trip**: the version update, the ``NOTIFY`` that tells other
  processes (payload ``instance:version``, no row data) and ``COMMIT``, as one simple query.

A driver error marks the transaction ``broken`` (storage/base.py); a value PostgreSQL cannot
store (U+0000 in a key or id) is refused with a ValidationError before anything is sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import QuotaExceededError, StorageError
from ..types import EntryKey, RowKey
from .postgres_compact import CompactMixin
from .postgres_errors import DRIVER_ERRORS, Conn, check_text, clean_text, pg_error
from .postgres_jobs import JobsMixin
from .postgres_pipeline import SEND_AHEAD_ROWS, SendAhead
from .postgres_rows import changed_rows, nul_free_start, read_row, scan_sql
from .postgres_schema import SCHEMA
from .postgres_search import configure
from .records import Changes, ClientState, RejectedMutation, Row, ScanRow

if TYPE_CHECKING:
    from .postgres_store import PostgresInstanceStore

__all__ = ["CHANNEL", "ERROR_MESSAGE_CHARS", "PostgresWriterTx"]

S = SCHEMA
#: The NOTIFY channel of commits (payload ``instance_id:version``).
CHANNEL = "synced_store_commits"
#: Characters of a rejected mutation's message kept for its client.
ERROR_MESSAGE_CHARS = 500

_UPSERT = (
    f"INSERT INTO {S}.rows (inst, ns, tbl, item, sk, value, version, deleted) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, false) ON CONFLICT (inst, ns, tbl, item) DO UPDATE SET "
    "sk = excluded.sk, value = excluded.value, version = excluded.version, deleted = false"
)
_TOMBSTONE = (
    f"UPDATE {S}.rows SET deleted = true, value = NULL, version = $1 "
    "WHERE inst = $2 AND ns = $3 AND tbl = $4 AND item = $5 AND NOT deleted"
)
_SET_CLIENT = (
    f"INSERT INTO {S}.clients VALUES ($1, $2, $3, $4, $5) ON CONFLICT (inst, client_id) "
    "DO UPDATE SET last_mutation_id = excluded.last_mutation_id, version = excluded.version"
)
_CLIENT = f"SELECT user_id, last_mutation_id FROM {S}.clients WHERE inst = $1 AND client_id = $2"

#: A buffered row write: ``(key, sort key, value text, version)``.
_RowWrite = tuple[RowKey, str, str, int]
#: A buffered client update: ``(client id, user id, last_mutation_id, version)``.
_ClientWrite = tuple[str, str, int, int]


def _affected(status: str) -> int:
    """The row count of a command status such as ``UPDATE 3``."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class PostgresWriterTx(JobsMixin, CompactMixin):
    """An open transaction holding the instance's lock, on a pooled connection."""

    def __init__(
        self,
        store: PostgresInstanceStore,
        conn: Conn,
        *,
        version: int,
        horizon: int,
        schema_version: int | None,
    ) -> None:
        self._store = store
        self.conn = conn
        self.inst = store.key
        self.version = version
        self.schema_version = schema_version
        self.horizon = horizon
        self.broken: StorageError | None = None
        self._open = True
        self._rows: list[_RowWrite] = []
        self._row_at: dict[RowKey, int] = {}
        self._tables: dict[tuple[str, str], set[RowKey]] = {}
        self._clients: list[_ClientWrite] = []
        self._client_at: dict[str, int] = {}
        #: ``(rows, clients)`` buffered when the open savepoint began (None: none open).
        self._sp: tuple[int, int] | None = None
        #: True once the open savepoint exists in the database.
        self._sp_real = False
        #: Buffered writes of finished mutations being stored in the background.
        self._ahead = SendAhead()

    # -- statements ------------------------------------------------------------------------

    async def _q(self, method: str, sql: str, *args: Any) -> Any:
        """Run ``conn.<method>(sql, *args)`` after what was sent ahead; a driver error breaks
        the transaction."""
        await self._ahead.settle()
        return await self._run(method, sql, *args)

    async def _run(self, method: str, sql: str, *args: Any) -> Any:
        if not self._open:
            raise StorageError("the writer's transaction is over", transient=False)
        if self.broken is not None:
            raise self.broken
        fn: Callable[..., Awaitable[Any]] = getattr(self.conn, method)
        try:
            return await fn(sql, *args)
        except DRIVER_ERRORS as exc:
            err = pg_error(exc)
            if self._open:
                self.broken = err
            raise err from exc

    async def _modify(self) -> None:
        """Before a statement that changes the database: make the open savepoint real."""
        if self._sp is not None and not self._sp_real:
            rows_mark, clients_mark = self._sp
            before_rows, self._rows = self._rows[:rows_mark], self._rows[rows_mark:]
            before_clients, self._clients = (
                self._clients[:clients_mark],
                self._clients[clients_mark:],
            )
            self._reindex()
            await self._send(before_rows, before_clients)
            await self._q("execute", "SAVEPOINT m")
            self._sp = (0, 0)
            self._sp_real = True

    async def _flush(self) -> None:
        """Send every buffered write (inside the open savepoint if they belong to it)."""
        if not self._rows and not self._clients:
            return
        if self._sp is not None and not self._sp_real:
            await self._modify()
        rows, clients = self._rows, self._clients
        self._rows, self._clients = [], []
        self._reindex()
        if self._sp is not None:
            self._sp = (0, 0)
        await self._send(rows, clients)

    async def _send_ahead(self) -> None:
        """Hand the buffered writes (of finished mutations only) to the background."""
        rows, clients = self._rows, self._clients
        self._rows, self._clients = [], []
        self._row_at, self._tables, self._client_at = {}, {}, {}
        await self._ahead.start(self._send(rows, clients, ahead=True))

    async def _send(
        self, rows: list[_RowWrite], clients: list[_ClientWrite], *, ahead: bool = False
    ) -> None:
        inst = self.inst
        q = self._run if ahead else self._q  # a send ahead is the statement in flight
        if rows:
            last = {key: (sk, text, v) for key, sk, text, v in rows}  # the latest write wins
            await q(
                "executemany",
                _UPSERT,
                [(inst, k.ns, k.table, k.item, sk, t, v) for k, (sk, t, v) in last.items()],
            )
        if clients:
            latest = {c[0]: c for c in clients}
            await q("executemany", _SET_CLIENT, [(inst, *c) for c in latest.values()])

    def _reindex(self) -> None:
        self._row_at = {w[0]: i for i, w in enumerate(self._rows)}
        tables: dict[tuple[str, str], set[RowKey]] = {}
        for key in self._row_at:
            tables.setdefault((key.ns, key.table), set()).add(key)
        self._tables = tables
        self._client_at = {c[0]: i for i, c in enumerate(self._clients)}

    # -- the transaction -------------------------------------------------------------------

    async def commit(self, version: int) -> None:
        """Send what is buffered, record ``version`` (telling other processes) and commit, in
        one round trip after the buffer. Raises :attr:`broken` if set."""
        if self.broken is not None:
            raise self.broken
        await self._flush()
        payload = None
        if version != self.version:
            # The instance id is validated ([A-Za-z0-9_.-]): safe inside quotes.
            payload = f"{self._store.instance_id}:{int(version)}"
            sql = (
                f"UPDATE {S}.instances SET version = {int(version)} WHERE key = {int(self.inst)}; "
                f"SELECT pg_notify('{CHANNEL}', '{payload}'); COMMIT"
            )
            self._store.own_commit(payload)
        else:
            sql = "COMMIT"
        try:
            await self._q("execute", sql)
        except StorageError:
            if payload is not None:
                self._store.own_commit(payload, landed=False)
            raise
        self._open = False
        await self._store._release(self.conn, self)
        self._store._committed(version)  # the last step: no suspension after it

    async def rollback(self) -> None:
        """Abandon the transaction (never raises; safe twice and after a failed commit)."""
        self._open = False
        self._rows, self._clients = [], []
        await self._ahead.abandon()
        await self._store._release(self.conn, self, rollback=True)

    async def changes_since(self, after: int, *, limit: int) -> Changes:
        await self._ahead.settle()
        self._check_usable()
        try:
            return await changed_rows(
                self.conn, self.inst, after, upto=self.version, horizon=self.horizon, limit=limit
            )
        except DRIVER_ERRORS as exc:
            err = pg_error(exc)
            self.broken = err
            raise err from exc

    def _check_usable(self) -> None:
        if not self._open:
            raise StorageError("the writer's transaction is over", transient=False)
        if self.broken is not None:
            raise self.broken

    async def savepoint(self) -> None:
        if self._sp is None and len(self._rows) >= SEND_AHEAD_ROWS and self.broken is None:
            await self._send_ahead()  # all of it written by finished mutations
        self._sp = (len(self._rows), len(self._clients))
        self._sp_real = False

    async def release(self) -> None:
        if self._sp_real:
            await self._q("execute", "RELEASE SAVEPOINT m")
        self._sp = None
        self._sp_real = False

    async def rollback_savepoint(self) -> None:
        if self._sp is None:
            return
        if self._sp_real:
            await self._q("execute", "ROLLBACK TO SAVEPOINT m; RELEASE SAVEPOINT m")
            self._rows, self._clients = [], []  # all of it was written inside the savepoint
        else:
            rows_mark, clients_mark = self._sp
            del self._rows[rows_mark:]
            del self._clients[clients_mark:]
        self._reindex()
        self._sp = None
        self._sp_real = False

    # -- rows ------------------------------------------------------------------------------

    async def read(self, key: RowKey) -> Row | None:
        at = self._row_at.get(key)
        if at is not None:
            _, sk, text, _ = self._rows[at]
            return sk, orjson.loads(text)
        await self._ahead.settle()
        self._check_usable()
        try:
            return await read_row(self.conn, self.inst, key)
        except DRIVER_ERRORS as exc:
            err = pg_error(exc)
            self.broken = err
            raise err from exc

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
        """A page of rows: the database's, with this transaction's buffered writes merged in
        (enough extra rows are read that the buffered ones cannot push a row out)."""
        buffered = self._tables.get((ns, table), set())
        if "\x00" in ns or "\x00" in table:
            return []  # nothing is stored there (PostgreSQL's text cannot hold U+0000)
        args: tuple[str, ...] = ()
        db_exclusive = exclusive
        if start is not None:
            db_start, db_exclusive = nul_free_start(start, exclusive, reverse)
            args = (db_start[0], db_start[1])
        sql = scan_sql(start is not None, db_exclusive, reverse)
        rows = await self._q("fetch", sql, self.inst, ns, table, *args, limit + len(buffered))
        loads = orjson.loads
        out = [
            (EntryKey(sk, item), loads(value))
            for sk, item, value in rows
            if RowKey(ns, table, item) not in buffered
        ]
        if not buffered:
            return out
        for key in buffered:
            _, sk, text, _ = self._rows[self._row_at[key]]
            entry = EntryKey(sk, key.item)
            if start is not None:
                if reverse and (entry > start or (exclusive and entry == start)):
                    continue
                if not reverse and (entry < start or (exclusive and entry == start)):
                    continue
            out.append((entry, loads(text)))
        out.sort(key=lambda r: r[0], reverse=reverse)
        return out[:limit]

    async def write(self, key: RowKey, sort_key: str, encoded: bytes, version: int) -> None:
        ns, table, item = key
        if "\x00" in ns or "\x00" in table or "\x00" in item or "\x00" in sort_key:
            check_text(ns, "namespace")
            check_text(table, "table name")
            check_text(item, "item key")
            check_text(sort_key, "sort key")
        if not self._open:
            raise StorageError("the writer's transaction is over", transient=False)
        rows = self._rows
        self._row_at[key] = len(rows)
        rows.append((key, sort_key, encoded.decode(), version))
        self._tables.setdefault((ns, table), set()).add(key)

    async def remove(self, key: RowKey, version: int) -> bool:
        if any("\x00" in part for part in key):
            return False  # no such row can be stored
        if key in self._row_at:
            await self._flush()
        await self._modify()
        status = await self._q("execute", _TOMBSTONE, version, self.inst, *key)
        return _affected(status) > 0

    # -- clients ---------------------------------------------------------------------------

    async def client(self, client_id: str) -> ClientState | None:
        """``(user_id, last_mutation_id)`` of a known client (this transaction's view)."""
        at = self._client_at.get(client_id)
        if at is not None:
            c = self._clients[at]
            return ClientState(c[1], c[2])
        if "\x00" in client_id:
            return None  # cannot be stored, so it is not known
        r = await self._q("fetchrow", _CLIENT, self.inst, client_id)
        return None if r is None else ClientState(r[0], int(r[1]))

    async def clients(self, client_ids: Collection[str]) -> dict[str, ClientState]:
        """The known ones of ``client_ids``: buffered, else read in one statement."""
        out: dict[str, ClientState] = {}
        ask = []
        for cid in client_ids:
            at = self._client_at.get(cid)
            if at is not None:
                c = self._clients[at]
                out[cid] = ClientState(c[1], c[2])
            elif "\x00" not in cid:
                ask.append(cid)
        if ask:
            rows = await self._q(
                "fetch",
                f"SELECT client_id, user_id, last_mutation_id FROM {S}.clients "
                "WHERE inst = $1 AND client_id = ANY($2::text[])",
                self.inst,
                ask,
            )
            for cid, uid, lmid in rows:
                out[cid] = ClientState(uid, int(lmid))
        return out

    async def set_client(
        self, client_id: str, user_id: str, last_mutation_id: int, version: int
    ) -> None:
        check_text(client_id, "client id")
        check_text(user_id, "user id")
        self._client_at[client_id] = len(self._clients)
        self._clients.append((client_id, user_id, last_mutation_id, version))

    async def register_client(
        self, client_id: str, user_id: str, told_upto: int, *, max_clients: int | None = None
    ) -> ClientState:
        """See :meth:`synced_store.storage.base.WriterTx.register_client`."""
        check_text(client_id, "client id")
        check_text(user_id, "user id")
        if client_id in self._client_at:
            await self._flush()
        owner = await self.client(client_id)
        inst = self.inst
        if owner is None:
            if max_clients is not None:
                n = await self._q(
                    "fetchval",
                    f"SELECT COUNT(*) FROM {S}.clients WHERE inst = $1 AND user_id = $2",
                    inst,
                    user_id,
                )
                if n >= max_clients:
                    raise QuotaExceededError(
                        f"user {user_id} has {max_clients} client ids in this instance (the limit)"
                    )
            await self._modify()
            await self._q(
                "execute",
                f"INSERT INTO {S}.clients VALUES ($1, $2, $3, 0, $4)",
                inst,
                client_id,
                user_id,
                self.version,
            )
            return ClientState(user_id, 0)
        if owner[0] != user_id:
            return owner
        await self._modify()
        await self._q(
            "execute",
            f"UPDATE {S}.clients SET version = GREATEST(version, $3) "
            "WHERE inst = $1 AND client_id = $2",
            inst,
            client_id,
            self.version,
        )
        told = min(told_upto, owner[1])
        if told > 0:
            await self._q(
                "execute",
                f"DELETE FROM {S}.mutation_errors WHERE inst = $1 AND client_id = $2 "
                "AND mutation_id <= $3",
                inst,
                client_id,
                told,
            )
        return owner

    async def add_error(self, client_id: str, report: RejectedMutation) -> None:
        """Record a permanent mutation failure for its client."""
        check_text(client_id, "client id")
        await self._modify()
        await self._q(
            "execute",
            f"INSERT INTO {S}.mutation_errors VALUES ($1, $2, $3, $4, $5, $6) "
            "ON CONFLICT (inst, client_id, mutation_id) DO UPDATE SET name = excluded.name, "
            "kind = excluded.kind, message = excluded.message",
            self.inst,
            client_id,
            report["id"],
            clean_text(report["name"]),
            clean_text(report["kind"]),
            clean_text(report["message"][:ERROR_MESSAGE_CHARS]),
        )

    async def prune_errors(self, client_id: str, keep: int) -> None:
        """Keep only the newest ``keep`` error reports of a client."""
        await self._modify()
        await self._q(
            "execute",
            f"DELETE FROM {S}.mutation_errors WHERE inst = $1 AND client_id = $2 AND "
            f"mutation_id <= (SELECT mutation_id FROM {S}.mutation_errors WHERE inst = $1 "
            "AND client_id = $2 ORDER BY mutation_id DESC LIMIT 1 OFFSET $3)",
            self.inst,
            client_id,
            keep,
        )

    async def set_schema_version(self, version: int) -> None:
        """Record the schema version of the stored data."""
        await self._modify()
        await self._q(
            "execute",
            f"UPDATE {S}.instances SET schema_version = $2 WHERE key = $1",
            self.inst,
            version,
        )
        self.schema_version = version
        self._store._schema_version_is(version)

    async def configure_search(self, tables: Mapping[str, tuple[str, str | None]]) -> list[str]:
        """See :meth:`synced_store.storage.base.WriterTx.configure_search`."""
        await self._flush()
        await self._modify()
        if self.broken is not None:
            raise self.broken
        try:
            return await configure(self.conn, S, self.inst, tables)
        except DRIVER_ERRORS as exc:
            err = pg_error(exc)
            self.broken = err
            raise err from exc

    async def index_search(self, upto: int | None = None) -> bool:
        """Nothing to do: every write updates the index in its own statement (False)."""
        return False
