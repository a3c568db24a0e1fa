"""Retention for a PostgreSQL instance: the same rules as SQLite's (storage/sqlite_compact.py):
checkpoints turn ages into versions, every kind is forgotten in bounded steps inside the
writer's transaction, and the horizon only rises."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any

from .postgres_schema import SCHEMA
from .records import Compaction

__all__ = ["CompactMixin"]

S = SCHEMA


def _affected(status: str) -> int:
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class CompactMixin:
    """Compaction methods of :class:`~synced_store.storage.postgres_tx.PostgresWriterTx`."""

    inst: int
    version: int
    horizon: int
    _q: Callable[..., Awaitable[Any]]
    _modify: Callable[[], Awaitable[None]]
    _store: Any

    async def _version_at(self, t: float) -> int | None:
        """The instance version at time ``t``, as of the newest checkpoint at or before it."""
        r = await self._q(
            "fetchval",
            f"SELECT version FROM {S}.checkpoints WHERE inst = $1 AND at <= $2 "
            "ORDER BY at DESC LIMIT 1",
            self.inst,
            t,
        )
        return None if r is None else int(r)

    async def compact_tombstones(self, before_version: int, limit: int | None = None) -> int:
        """Raise the horizon to ``before_version`` (never lowers it), then forget up to
        ``limit`` tombstones at or before it, in this transaction."""
        await self._modify()
        horizon = await self._q(
            "fetchval",
            f"UPDATE {S}.instances SET horizon = GREATEST(horizon, $2) WHERE key = $1 "
            "RETURNING horizon",
            self.inst,
            before_version,
        )
        self.horizon = int(horizon)
        self._store._horizon_is(self.horizon)
        status = await self._q(
            "execute",
            f"DELETE FROM {S}.rows WHERE inst = $1 AND (ns, tbl, item) IN ("
            f"SELECT ns, tbl, item FROM {S}.rows WHERE inst = $1 AND deleted AND version <= $2 "
            "LIMIT $3)",
            self.inst,
            before_version,
            limit,  # NULL: no limit
        )
        return _affected(status)

    async def compact(
        self,
        now: float,
        *,
        tombstones: float,
        done_jobs: float,
        failed_jobs: float,
        clients: float,
        keep_clients: Collection[str] = (),
        limit: int = 1000,
        checkpoint: bool = True,
    ) -> Compaction:
        """One bounded step of retention (see storage/base.py)."""
        inst = self.inst
        await self._modify()
        if checkpoint:
            await self._q(
                "execute",
                f"INSERT INTO {S}.checkpoints VALUES ($1, $2, $3) "
                "ON CONFLICT (inst, at) DO UPDATE SET version = excluded.version",
                inst,
                now,
                self.version,
            )
        out = Compaction()
        h = await self._version_at(now - tombstones)
        if h is not None:
            out.tombstones = await self.compact_tombstones(h, limit)
        for status, age in (("done", done_jobs), ("failed", failed_jobs)):
            n = _affected(
                await self._q(
                    "execute",
                    f"DELETE FROM {S}.jobs WHERE id IN (SELECT id FROM {S}.jobs WHERE inst = $1 "
                    "AND status = $2 AND updated_at < $3 LIMIT $4)",
                    inst,
                    status,
                    now - age,
                    limit,
                )
            )
            if status == "done":
                out.done_jobs = n
            else:
                out.failed_jobs = n
        hc = await self._version_at(now - clients)
        if hc is not None:
            out.clients = _affected(
                await self._q(
                    "execute",
                    f"DELETE FROM {S}.clients WHERE inst = $1 AND client_id IN (SELECT client_id "
                    f"FROM {S}.clients WHERE inst = $1 AND version <= $2 "
                    "AND client_id <> ALL($3::text[]) LIMIT $4)",
                    inst,
                    hc,
                    list(keep_clients),
                    limit,
                )
            )
        out.errors = _affected(
            await self._q(
                "execute",
                f"DELETE FROM {S}.mutation_errors e WHERE e.inst = $1 AND (e.client_id, "
                f"e.mutation_id) IN (SELECT m.client_id, m.mutation_id FROM {S}.mutation_errors m "
                f"WHERE m.inst = $1 AND NOT EXISTS (SELECT 1 FROM {S}.clients c "
                "WHERE c.inst = $1 AND c.client_id = m.client_id) LIMIT $2)",
                inst,
                limit,
            )
        )
        oldest_needed = now - max(tombstones, clients)
        await self._q(
            "execute",
            f"DELETE FROM {S}.checkpoints WHERE inst = $1 AND at < (SELECT at FROM "
            f"{S}.checkpoints WHERE inst = $1 AND at <= $2 ORDER BY at DESC LIMIT 1)",
            inst,
            oldest_needed,
        )
        out.more = limit in (
            out.tombstones,
            out.done_jobs,
            out.failed_jobs,
            out.clients,
            out.errors,
        )
        return out
