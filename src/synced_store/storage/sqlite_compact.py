"""Retention for an SQLite instance: what is forgotten, when, and in bounded steps.

An instance keeps a few ``checkpoints`` — ``(time, version)`` pairs written by each
compaction pass — so that retention can be stated in time ("tombstones older than 7 days")
while rows only carry versions. Each pass deletes at most ``limit`` rows per kind, inside the
writer's transaction, and says whether more remain, so a large backlog never holds the writer
for long.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection

from .records import Compaction

__all__ = ["CompactMixin"]


class CompactMixin:
    """Compaction methods of :class:`~synced_store.storage.sqlite_tx.SqliteWriterTx`."""

    #: The transaction's statement runners (driver errors mapped to StorageError).
    _exec: Callable[..., sqlite3.Cursor]
    _exec_many: Callable[..., sqlite3.Cursor]
    #: The committed version when the transaction began.
    version: int
    #: Called with the horizon read back after raising it (the store keeps it).
    _horizon_is: Callable[[int], None]

    def _version_at(self, t: float) -> int | None:
        """The instance version at time ``t``, as of the newest checkpoint at or before it."""
        r = self._exec(
            "SELECT version FROM checkpoints WHERE at <= ? ORDER BY at DESC LIMIT 1", (t,)
        ).fetchone()
        return None if r is None else int(r[0])

    def _set_horizon(self, horizon: int) -> None:
        """Raise the tombstone horizon: clients whose cookie is older get a full reset. Never
        lowers it (another process, ``synced-store compact``, may have raised it further)."""
        self._exec("UPDATE meta SET value = MAX(value, ?) WHERE key = 'horizon'", (horizon,))
        r = self._exec("SELECT value FROM meta WHERE key = 'horizon'").fetchone()
        self._horizon_is(int(r[0]))

    async def compact_tombstones(self, before_version: int, limit: int | None = None) -> int:
        """Forget deletions at or before ``before_version`` (inside the writer transaction),
        at most ``limit`` of them. The horizon moves first, in the same transaction, so no
        client can catch up across a gap. Returns how many tombstones were removed."""
        self._set_horizon(before_version)
        if limit is None:
            n = self._exec(
                "DELETE FROM rows INDEXED BY rows_tombstones WHERE deleted = 1 AND version <= ?",
                (before_version,),
            ).rowcount
        else:
            n = self._exec(
                "DELETE FROM rows WHERE (ns, tbl, item) IN (SELECT ns, tbl, item FROM rows "
                "INDEXED BY rows_tombstones WHERE version <= ? AND deleted = 1 LIMIT ?)",
                (before_version, limit),
            ).rowcount
        return int(n)

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
        """One bounded step of retention (inside the writer transaction). Ages in seconds.

        Records a checkpoint ``(now, version)`` first (unless ``checkpoint`` is False: the
        later steps of one pass), then forgets tombstones, done and failed jobs, clients not
        seen for ``clients`` seconds (except ``keep_clients``, those connected now) and the
        error reports of forgotten clients.
        """
        if checkpoint:
            self._exec(
                "INSERT OR REPLACE INTO checkpoints (at, version) VALUES (?, ?)",
                (now, self.version),
            )
        out = Compaction()
        h = self._version_at(now - tombstones)
        if h is not None:
            out.tombstones = await self.compact_tombstones(h, limit)
        for status, age, field in (("done", done_jobs, "done_jobs"), ("failed", failed_jobs, "")):
            n = self._exec(
                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE status = ? "
                "AND updated_at < ? LIMIT ?)",
                (status, now - age, limit),
            ).rowcount
            setattr(out, field or "failed_jobs", int(n))
        hc = self._version_at(now - clients)
        if hc is not None:
            keep = set(keep_clients)
            stale = [
                (cid,)
                for (cid,) in self._exec(
                    "SELECT client_id FROM clients WHERE version <= ? LIMIT ?",
                    (hc, limit + len(keep)),
                )
                if cid not in keep
            ][:limit]
            self._exec_many("DELETE FROM clients WHERE client_id = ?", stale)
            out.clients = len(stale)
        out.errors = int(
            self._exec(
                "DELETE FROM mutation_errors WHERE (client_id, mutation_id) IN ("
                "SELECT client_id, mutation_id FROM mutation_errors WHERE client_id NOT IN "
                "(SELECT client_id FROM clients) LIMIT ?)",
                (limit,),
            ).rowcount
        )
        oldest_needed = now - max(tombstones, clients)
        self._exec(
            "DELETE FROM checkpoints WHERE at < (SELECT at FROM checkpoints WHERE at <= ? "
            "ORDER BY at DESC LIMIT 1)",
            (oldest_needed,),
        )
        out.more = limit in (
            out.tombstones,
            out.done_jobs,
            out.failed_jobs,
            out.clients,
            out.errors,
        )
        return out
