"""One instance in PostgreSQL (storage/base.py's ``InstanceStore``): the writer's transactions
on pooled connections, committed reads, catch-ups, and news of other processes' commits."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING

import asyncpg

from ..errors import InstanceUnavailableError
from .base import RemoteCommits
from .postgres_catchup import PostgresCatchUp
from .postgres_errors import DRIVER_ERRORS, Conn, pg_error
from .postgres_jobs import next_due_sql
from .postgres_rows import PostgresReader, changed_rows
from .postgres_schema import SCHEMA
from .postgres_tx import PostgresWriterTx
from .records import Changes, ClientState, OpEncoder, RejectedMutation

if TYPE_CHECKING:
    from .postgres import PostgresBackend

__all__ = ["PostgresInstanceStore"]

S = SCHEMA
_LOCK = f"SELECT version, horizon, schema_version FROM {S}.instances WHERE key = $1 FOR UPDATE"


class PostgresInstanceStore:
    """An instance of a :class:`~synced_store.storage.postgres.PostgresBackend`.

    Holds no connection between transactions. :meth:`begin` takes a pooled connection and the
    instance's row lock, waiting at most ``lock_timeout`` seconds for another process's
    writer (then a transient StorageError: the batch is retried).
    """

    #: Other server processes may write this instance too.
    shared = True
    #: Every write updates the full-text index in its own statement (postgres_search.py).
    deferred_search = False

    def __init__(
        self,
        backend: PostgresBackend,
        instance_id: str,
        key: int,
        *,
        version: int,
        horizon: int,
        schema_version: int | None,
        lock_timeout: float,
    ) -> None:
        self._backend = backend
        self.instance_id = instance_id
        #: The instance's key in every table.
        self.key = key
        self.version = version
        self.horizon = horizon
        self.schema_version = schema_version
        self._lock_ms = max(1, int(lock_timeout * 1000))
        self._tx: PostgresWriterTx | None = None
        self._closed = False

    # -- the writer ------------------------------------------------------------------------

    async def begin(self) -> PostgresWriterTx:
        """Take a connection and the instance's lock; the transaction's version is the one
        committed when the lock was granted (another process may have raised it)."""
        if self._closed:
            raise InstanceUnavailableError(f"instance {self.instance_id} is closed")
        try:
            conn = await self._backend.acquire()
        except DRIVER_ERRORS as exc:
            raise pg_error(exc) from exc
        try:
            await conn.execute(f"BEGIN; SET LOCAL lock_timeout = {self._lock_ms}")
            r = await conn.fetchrow(_LOCK, self.key)
        except DRIVER_ERRORS as exc:
            await self._backend.release(conn, rollback=True)
            raise pg_error(exc) from exc
        if r is None:
            await self._backend.release(conn, rollback=True)
            raise InstanceUnavailableError(f"instance {self.instance_id} no longer exists")
        horizon = int(r[1])
        self.horizon = max(self.horizon, horizon)
        if r[2] is not None:
            self.schema_version = int(r[2])
        tx = self._tx = PostgresWriterTx(
            self, conn, version=int(r[0]), horizon=horizon, schema_version=r[2]
        )
        return tx

    async def _release(self, conn: Conn, tx: PostgresWriterTx, *, rollback: bool = False) -> None:
        """Give the writer's connection back (once per transaction)."""
        if self._tx is not tx:
            return
        self._tx = None
        await self._backend.release(conn, rollback=rollback)

    def own_commit(self, payload: str, *, landed: bool = True) -> None:
        """Tell the backend's listener that this notification is this process's own."""
        self._backend.own_commit(payload, landed=landed)

    def _committed(self, version: int) -> None:
        self.version = max(self.version, version)

    def _horizon_is(self, horizon: int) -> None:
        self.horizon = horizon

    def _schema_version_is(self, version: int) -> None:
        self.schema_version = version

    # -- committed reads -------------------------------------------------------------------

    async def _fetchrow(self, sql: str, *args: object) -> asyncpg.Record | None:
        try:
            async with self._backend.connection() as conn:
                return await conn.fetchrow(sql, *args)
        except DRIVER_ERRORS as exc:
            raise pg_error(exc) from exc

    async def client(self, client_id: str) -> ClientState | None:
        """A client's committed ``(user_id, last_mutation_id)``."""
        if "\x00" in client_id:
            return None
        r = await self._fetchrow(
            f"SELECT user_id, last_mutation_id FROM {S}.clients WHERE inst = $1 AND client_id = $2",
            self.key,
            client_id,
        )
        return None if r is None else ClientState(r[0], int(r[1]))

    async def errors_between(self, client_id: str, after: int, upto: int) -> list[RejectedMutation]:
        """Error reports of a client for mutation ids in ``(after, upto]``, oldest first."""
        if "\x00" in client_id:
            return []
        try:
            async with self._backend.connection() as conn:
                rows = await conn.fetch(
                    f"SELECT mutation_id, name, kind, message FROM {S}.mutation_errors "
                    "WHERE inst = $1 AND client_id = $2 AND mutation_id > $3 "
                    "AND mutation_id <= $4 ORDER BY mutation_id",
                    self.key,
                    client_id,
                    after,
                    upto,
                )
        except DRIVER_ERRORS as exc:
            raise pg_error(exc) from exc
        return [{"id": int(m), "name": n, "kind": k, "message": msg} for m, n, k, msg in rows]

    async def next_due(self) -> float | None:
        """When the earliest committed pending job is due (None: no pending job)."""
        r = await self._fetchrow(next_due_sql(), self.key)
        return None if r is None or r[0] is None else float(r[0])

    def watch(self, callback: RemoteCommits) -> None:
        """Have ``callback`` told of other processes' commits (the backend's listener)."""
        self._backend.watch(self.instance_id, self, callback)

    async def changes_since(self, after: int, *, limit: int) -> Changes:
        """Committed rows changed after ``after``, with the version they add up to."""
        try:
            async with self._backend.connection() as conn:
                return await changed_rows(conn, self.key, after, upto=None, horizon=0, limit=limit)
        except DRIVER_ERRORS as exc:
            raise pg_error(exc) from exc

    async def renew_jobs(self, job_ids: Collection[int], *, now: float, lease: float) -> None:
        """Extend the lease of running jobs to ``now + lease``."""
        if not job_ids:
            return
        try:
            async with self._backend.connection() as conn:
                await conn.execute(
                    f"UPDATE {S}.jobs SET lease_until = $3 WHERE inst = $1 "
                    "AND id = ANY($2::bigint[]) AND status = 'running'",
                    self.key,
                    list(job_ids),
                    now + lease,
                )
        except DRIVER_ERRORS as exc:
            raise pg_error(exc) from exc

    def catch_up(
        self,
        base: int | None,
        *,
        namespaces: Sequence[str],
        encode: OpEncoder,
        windows: Mapping[str, int] | None = None,
        window_bytes: int = 1 << 20,
    ) -> PostgresCatchUp:
        """A catch-up from cookie ``base`` to :attr:`version` (what this process has taken
        in), read in parts."""
        return PostgresCatchUp(
            self._backend,
            self.key,
            base=base,
            upto=self.version,
            horizon=self.horizon,
            namespaces=namespaces,
            encode=encode,
            windows=windows,
            window_bytes=window_bytes,
        )

    def reader(self) -> PostgresReader:
        """Committed rows (an action's context), read on pooled connections."""
        return PostgresReader(self._backend, self.key)

    async def vacuum(self) -> None:
        """Nothing to do: PostgreSQL's autovacuum reclaims the space of deleted rows."""

    async def close(self) -> None:
        """Roll back an open transaction and stop watching."""
        self._closed = True
        self._backend.unwatch(self.instance_id, self)
        tx = self._tx
        if tx is not None:
            await tx.rollback()
