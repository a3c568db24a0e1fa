"""PostgreSQL storage: every instance in one database, served by any number of processes.

:class:`PostgresBackend` is storage/base.py's ``StorageBackend`` for a database whose schema
``synced-store db upgrade`` created (postgres_schema.py; a server refuses any other layout).
It owns a connection pool (asyncpg) and one more connection that ``LISTEN``\\ s for commits:

* **One writer per instance across processes**: a writer's transaction locks the instance's
  row in ``instances`` (postgres_store.py) and reads the version committed before it, so the
  version sequence and the ``last_mutation_id`` rule are exactly those of SQLite, whichever
  process commits.
* **News of commits**: each commit sends ``NOTIFY synced_store_commits, 'instance:version'``
  in its transaction. The listener calls the watchers of that instance in this process
  (:meth:`InstanceStore.watch`), which read the rows changed since what they have
  (``changes_since``). When the listener's connection breaks, it reconnects with backoff and
  then tells every watcher ``None``: "you may have missed something, read what changed", so
  no commit is lost to a dropped notification.
* **Jobs** are claimed with a lease (postgres_jobs.py).

The DSN is a ``postgresql://user:password@host:port/database`` URI; the password never
appears in :attr:`description` or logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from ..errors import InstanceUnavailableError
from .base import RemoteCommits
from .ids import validate_instance_id
from .postgres_admin import PostgresInspector
from .postgres_errors import DRIVER_ERRORS, Conn, pg_error
from .postgres_schema import SCHEMA, check_schema
from .postgres_store import PostgresInstanceStore
from .postgres_tx import CHANNEL

__all__ = ["PostgresBackend", "redact_dsn"]

log = logging.getLogger("synced_store.server")
S = SCHEMA
#: Seconds to wait for a pooled connection before a transient error.
ACQUIRE_TIMEOUT = 10.0
#: Seconds between the listener's keep-alive queries (a dead connection shows within this).
KEEPALIVE = 5.0
#: The listener reconnects after 0.1 s, doubling up to this many seconds.
LISTEN_BACKOFF_MAX = 5.0
APPLICATION_NAME = "synced-store"


def redact_dsn(dsn: str) -> str:
    """The DSN without its password (for logs and messages)."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "postgresql://?"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    if parts.username:
        host = f"{parts.username}@{host}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _set_event(event: asyncio.Event, *_: object) -> None:
    event.set()


async def _reset(conn: Conn) -> None:
    """What a returned connection needs: nothing, unless a transaction was left open (no
    session state is ever changed: the writer uses ``SET LOCAL`` only)."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


class PostgresBackend:
    """Every instance in one PostgreSQL database (module doc).

    ``pool_size``: connections of this process at most (writers hold one for a batch;
    catch-ups, action reads and the CLI one per query); the listener adds one.
    ``lock_timeout``: seconds a writer waits for another process's writer of the same instance
    before its batch is retried.
    """

    #: Several processes may serve the same instances.
    shared = True

    def __init__(self, dsn: str, *, pool_size: int = 20, lock_timeout: float = 5.0) -> None:
        if not dsn.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"not a PostgreSQL URI: {redact_dsn(dsn)!r}")
        if pool_size < 2:
            raise ValueError("pool_size must be at least 2")
        self.dsn = dsn
        self.pool_size = pool_size
        self.lock_timeout = lock_timeout
        self.where = redact_dsn(dsn)
        self.description = f"database {self.where}"
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._watchers: dict[str, dict[int, RemoteCommits]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._closing = False
        #: True while the listener is connected (``/healthz`` reports it).
        self.listening = False
        self._listening = asyncio.Event()
        #: Notifications received (tests and benchmarks).
        self.notifications = 0
        #: Payloads of this process's own commits not heard back yet (they are not news).
        self._own: set[str] = set()
        #: Searches in progress at once (postgres_rows.py), a quarter of the pool: a flood of
        #: them waits here and leaves the other connections to writers and catch-ups.
        self.search_slots = asyncio.Semaphore(max(1, pool_size // 4))

    def validate_instance_id(self, instance_id: str) -> str:
        return validate_instance_id(instance_id)

    def location(self, instance_id: str) -> str:
        return f"{self.where} instance {instance_id}"

    # -- connections -----------------------------------------------------------------------

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._pool_lock:
            if self._pool is None:
                if self._closing:
                    raise InstanceUnavailableError("the storage is closed")
                conn = await asyncpg.connect(self.dsn, timeout=ACQUIRE_TIMEOUT)
                try:
                    await check_schema(conn, self.where)
                finally:
                    await conn.close()
                self._pool = await asyncpg.create_pool(
                    self.dsn,
                    min_size=1,
                    max_size=self.pool_size,
                    reset=_reset,
                    timeout=ACQUIRE_TIMEOUT,
                    server_settings={"application_name": APPLICATION_NAME},
                )
            return self._pool

    async def acquire(self) -> Conn:
        """A pooled connection (give it back with :meth:`release`); raises driver errors."""
        pool = await self._get_pool()
        conn: Conn = await pool.acquire(timeout=ACQUIRE_TIMEOUT)
        return conn

    async def release(self, conn: Conn, *, rollback: bool = False) -> None:
        """Give a connection back, rolling back what it had open (never raises: a broken
        connection is closed instead)."""
        try:
            if rollback and not conn.is_closed() and conn.is_in_transaction():
                await conn.execute("ROLLBACK")
        except Exception:
            with contextlib.suppress(Exception):
                conn.terminate()
        pool = self._pool
        try:
            if pool is None or not isinstance(conn, PoolConnectionProxy):
                conn.terminate()
            else:
                await pool.release(conn)
        except Exception:  # lost or already given back: the pool replaces it
            log.debug("releasing a connection failed", exc_info=True)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        """A pooled connection for one short piece of work (raises driver errors)."""
        conn = await self.acquire()
        try:
            yield conn
        finally:
            await self.release(conn, rollback=True)

    async def _run(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        try:
            async with self.connection() as conn:
                rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
                return rows
        except DRIVER_ERRORS as exc:
            raise pg_error(exc) from exc

    # -- lifetime --------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, check the schema (:class:`DatabaseSchemaError` if it is not the one this
        code uses) and start listening for other processes' commits."""
        if self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(
                self._listen(), name="postgres-listener"
            )
        try:
            await self._get_pool()
        except DRIVER_ERRORS as exc:
            raise pg_error(exc) from exc

    async def close(self) -> None:
        """Stop listening and close the pool."""
        self._closing = True
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), 5.0)
            except (TimeoutError, *DRIVER_ERRORS):
                pool.terminate()

    async def check(self) -> str | None:
        """None if new data can be written now: the database answers, is not a read-only
        standby (a failover not finished), and commits of other processes reach this one."""
        try:
            rows = await self._run("SELECT pg_is_in_recovery()")
        except InstanceUnavailableError as exc:
            return str(exc)
        except Exception as exc:
            return str(exc)
        if rows and rows[0][0]:
            return "the database is a read-only standby (in recovery)"
        if not self.listening:
            return "not listening for other processes' commits yet (connecting)"
        return None

    # -- news of commits -------------------------------------------------------------------

    async def wait_listening(self) -> None:
        """Return once the listener is connected (tests; a server does not need to wait)."""
        await self._listening.wait()

    def watch(self, instance_id: str, store: object, callback: RemoteCommits) -> None:
        """Call ``callback`` with each version of ``instance_id`` another process commits
        (and with None after the listener reconnected), until :meth:`unwatch`."""
        self._watchers.setdefault(instance_id, {})[id(store)] = callback

    def unwatch(self, instance_id: str, store: object) -> None:
        """Stop calling ``store``'s callback."""
        watchers = self._watchers.get(instance_id)
        if watchers is not None:
            watchers.pop(id(store), None)
            if not watchers:
                del self._watchers[instance_id]

    def own_commit(self, payload: str, *, landed: bool = True) -> None:
        """Note a commit of this process about to be sent (``landed`` False: it failed), so
        its notification, when it comes back, is not taken for another process's."""
        if not landed:
            self._own.discard(payload)
            return
        if len(self._own) > 10_000:  # notifications lost while the listener was down
            self._own.clear()
        self._own.add(payload)

    def _on_notify(self, conn: Conn, pid: int, channel: str, payload: object) -> None:
        self.notifications += 1
        text = str(payload)
        if text in self._own:
            self._own.discard(text)
            return
        instance_id, _, version = text.rpartition(":")
        watchers = self._watchers.get(instance_id)
        if not watchers or not version.isdigit():
            return
        v = int(version)
        for callback in list(watchers.values()):
            self._call(callback, v)

    @staticmethod
    def _call(callback: RemoteCommits, version: int | None) -> None:
        try:
            callback(version)
        except Exception:  # one watcher's bug must not stop the others
            log.exception("a commit watcher failed")

    async def _listen(self) -> None:
        """Keep one connection listening; after each (re)connect every watcher reads what it
        may have missed."""
        delay = 0.1
        while not self._closing:
            conn: Conn | None = None
            try:
                conn = await asyncpg.connect(
                    self.dsn,
                    timeout=ACQUIRE_TIMEOUT,
                    server_settings={"application_name": APPLICATION_NAME + " listener"},
                )
                lost = asyncio.Event()
                conn.add_termination_listener(functools.partial(_set_event, lost))
                await conn.add_listener(CHANNEL, self._on_notify)
                self.listening = True
                self._listening.set()
                delay = 0.1
                for watchers in list(self._watchers.values()):
                    for callback in list(watchers.values()):
                        self._call(callback, None)
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), KEEPALIVE)
                        break
                    await conn.fetchval("SELECT 1", timeout=KEEPALIVE)
                log.warning("lost the connection listening for commits; reconnecting")
            except (*DRIVER_ERRORS, TimeoutError) as exc:
                if not self._closing:
                    log.warning("listening for commits failed (%s); retrying", exc)
            finally:
                self.listening = False
                self._listening.clear()
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, LISTEN_BACKOFF_MAX)

    # -- instances -------------------------------------------------------------------------

    async def exists(self, instance_id: str) -> bool:
        validate_instance_id(instance_id)
        rows = await self._run(f"SELECT 1 FROM {S}.instances WHERE id = $1", instance_id)
        return bool(rows)

    async def list_instances(self) -> list[str]:
        rows = await self._run(f"SELECT id FROM {S}.instances ORDER BY id")
        return [r[0] for r in rows]

    async def instances_with_unfinished_jobs(self) -> list[str]:
        rows = await self._run(
            f"SELECT DISTINCT i.id FROM {S}.jobs j JOIN {S}.instances i ON i.key = j.inst "
            "WHERE j.status IN ('pending', 'running') ORDER BY i.id"
        )
        return [r[0] for r in rows]

    async def instances_with_due_jobs(self, now: float) -> list[str]:
        """Instances with a due pending job or a running job whose lease ended (its process
        died): what a process should open and claim from."""
        rows = await self._run(
            f"SELECT DISTINCT i.id FROM {S}.jobs j JOIN {S}.instances i ON i.key = j.inst "
            "WHERE (j.status = 'pending' AND j.next_run_at <= $1) "
            "OR (j.status = 'running' AND j.lease_until < $1) ORDER BY i.id",
            now,
        )
        return [r[0] for r in rows]

    async def _key(self, instance_id: str) -> asyncpg.Record | None:
        rows = await self._run(
            f"SELECT key, version, horizon, schema_version FROM {S}.instances WHERE id = $1",
            instance_id,
        )
        return rows[0] if rows else None

    async def open_instance(
        self, instance_id: str, *, create: bool = True, lock_timeout: float | None = None
    ) -> PostgresInstanceStore:
        validate_instance_id(instance_id)
        r = await self._key(instance_id)
        if r is None and create:
            await self._run(
                f"INSERT INTO {S}.instances (id) VALUES ($1) ON CONFLICT (id) DO NOTHING",
                instance_id,
            )
            r = await self._key(instance_id)
        if r is None:
            raise InstanceUnavailableError(f"no instance {instance_id!r} in {self.where}")
        return PostgresInstanceStore(
            self,
            instance_id,
            int(r[0]),
            version=int(r[1]),
            horizon=int(r[2]),
            schema_version=None if r[3] is None else int(r[3]),
            lock_timeout=self.lock_timeout if lock_timeout is None else lock_timeout,
        )

    async def inspect(self, instance_id: str) -> PostgresInspector:
        validate_instance_id(instance_id)
        r = await self._key(instance_id)
        if r is None:
            raise InstanceUnavailableError(f"no instance {instance_id!r} in {self.where}")
        return PostgresInspector(self, instance_id, int(r[0]))
