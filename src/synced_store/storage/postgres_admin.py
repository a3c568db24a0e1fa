"""Admin reads of one PostgreSQL instance (``synced-store inspect``, ``actions list``): each in a
read-only repeatable-read transaction (one consistent snapshot), safe while servers write."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from ..errors import InstanceUnavailableError
from .postgres_errors import DRIVER_ERRORS, Conn, pg_error
from .postgres_schema import SCHEMA
from .records import ClientInfo, InstanceSummary, JobInfo, JobStatus, StoredRow

if TYPE_CHECKING:
    from .postgres import PostgresBackend

__all__ = ["PostgresInspector"]

S = SCHEMA
T = TypeVar("T")


class PostgresInspector:
    """Read-only admin reads of one instance (storage/base.py's ``InstanceInspector``)."""

    def __init__(self, backend: PostgresBackend, instance_id: str, key: int) -> None:
        self._backend = backend
        self.instance_id = instance_id
        self._key = key

    async def _snapshot(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        try:
            async with (
                self._backend.connection() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                return await fn(conn)
        except DRIVER_ERRORS as exc:
            raise pg_error(exc) from exc

    async def summary(self) -> InstanceSummary:
        key = self._key

        async def read(conn: Conn) -> InstanceSummary:
            meta = await conn.fetchrow(
                f"SELECT version, horizon, schema_version FROM {S}.instances WHERE key = $1", key
            )
            counts = await conn.fetchrow(
                f"SELECT COUNT(*) FILTER (WHERE NOT deleted), COUNT(*) FILTER (WHERE deleted) "
                f"FROM {S}.rows WHERE inst = $1",
                key,
            )
            if meta is None or counts is None:
                raise InstanceUnavailableError(f"instance {self.instance_id} no longer exists")
            live, tombstones = counts
            tables = {
                str(t): int(n)
                for t, n in await conn.fetch(
                    f"SELECT tbl, COUNT(*) FROM {S}.rows WHERE inst = $1 AND NOT deleted "
                    "GROUP BY tbl ORDER BY tbl",
                    key,
                )
            }
            clients = await conn.fetchval(f"SELECT COUNT(*) FROM {S}.clients WHERE inst = $1", key)
            jobs = {str(s): 0 for s in JobStatus}
            for status, n in await conn.fetch(
                f"SELECT status, COUNT(*) FROM {S}.jobs WHERE inst = $1 GROUP BY status", key
            ):
                jobs[str(status)] = int(n)
            return InstanceSummary(
                instance_id=self.instance_id,
                location=self._backend.location(self.instance_id),
                bytes=None,
                version=int(meta[0]),
                schema_version=None if meta[2] is None else int(meta[2]),
                horizon=int(meta[1]),
                rows=int(live),
                tombstones=int(tombstones),
                tables=tables,
                clients=int(clients),
                jobs=jobs,
            )

        return await self._snapshot(read)

    async def rows(self, table: str | None = None) -> list[StoredRow]:
        sql = (
            f"SELECT ns, tbl, item, sk, value, version FROM {S}.rows "
            "WHERE inst = $1 AND NOT deleted"
        )
        args: tuple[Any, ...] = (self._key,)
        if table is not None:
            sql += " AND tbl = $2"
            args += (table,)
        rows = await self._snapshot(lambda c: c.fetch(sql + " ORDER BY ns, tbl, sk, item", *args))
        return [
            StoredRow(ns, tbl, item, sk, int(version), orjson.loads(value))
            for ns, tbl, item, sk, value, version in rows
        ]

    async def clients(self) -> list[ClientInfo]:
        rows = await self._snapshot(
            lambda c: c.fetch(
                f"SELECT client_id, user_id, last_mutation_id, version FROM {S}.clients "
                "WHERE inst = $1 ORDER BY client_id",
                self._key,
            )
        )
        return [ClientInfo(cid, uid, int(lmid), int(v)) for cid, uid, lmid, v in rows]

    async def jobs(self, status: JobStatus | None = None) -> list[JobInfo]:
        sql = (
            "SELECT id, name, input, user_id, status, attempts, next_run_at, last_error, "
            f"output, created_at, updated_at FROM {S}.jobs WHERE inst = $1"
        )
        args: tuple[Any, ...] = (self._key,)
        if status is not None:
            sql += " AND status = $2"
            args += (str(status),)
        rows = await self._snapshot(lambda c: c.fetch(sql + " ORDER BY id", *args))
        return [_job(tuple(r)) for r in rows]

    async def close(self) -> None:
        """Nothing held between reads."""


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
