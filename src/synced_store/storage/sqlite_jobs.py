"""The action outbox of an SQLite instance: the ``jobs`` table.

Written inside the writer's transaction (a job exists exactly when the mutation that enqueued
it committed) and claimed by the action runner through the writer. One process serves a data
dir, so claims need no lease: every job left running is re-queued when its instance opens.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Sequence
from typing import Any

import orjson

from .base import DEFAULT_JOB_LEASE
from .records import ClaimedJob, JobStateError, JobStatus

__all__ = ["JobsMixin"]


class JobsMixin:
    """Job methods of :class:`~synced_store.storage.sqlite_tx.SqliteWriterTx`."""

    #: The transaction's statement runners (driver errors mapped to StorageError).
    _exec: Callable[..., sqlite3.Cursor]
    _exec_many: Callable[..., sqlite3.Cursor]

    async def add_job(self, name: str, input: Any, user_id: str, now: float) -> int:
        """Insert a pending job (inside the writer transaction); returns its id."""
        cur = self._exec(
            "INSERT INTO jobs (name, input, user_id, status, created_at, updated_at) "
            "VALUES (?, ?, ?, 'pending', ?, ?)",
            (name, orjson.dumps(input).decode(), user_id, now, now),
        )
        return int(cur.lastrowid or 0)

    async def unfinished_jobs(self, user_id: str) -> tuple[int, int]:
        """``(of this user, of the instance)``: jobs pending or running."""
        mine = self._exec(
            "SELECT COUNT(*) FROM jobs WHERE user_id = ? AND status IN ('pending', 'running')",
            (user_id,),
        ).fetchone()[0]
        total = self._exec(
            "SELECT COUNT(*) FROM jobs WHERE status IN ('pending', 'running')"
        ).fetchone()[0]
        return int(mine), int(total)

    async def requeue_running(self, now: float) -> int:
        """Put jobs left ``running`` by a previous process back to ``pending`` (at least once):
        every one of them, as one process serves the instance."""
        return self._exec(
            "UPDATE jobs SET status = 'pending', next_run_at = 0 WHERE status = 'running'"
        ).rowcount

    async def claim_jobs(
        self,
        now: float,
        limit: int,
        skip_users: Collection[str] = (),
        *,
        lease: float = DEFAULT_JOB_LEASE,
    ) -> list[ClaimedJob]:
        """Mark up to ``limit`` due pending jobs ``running`` and return them, oldest first,
        leaving out jobs of ``skip_users`` (users at their concurrency limit). ``lease`` is
        not needed with one process per data dir."""
        args: list[Any] = [now]
        skip = ""
        if skip_users:
            skip = f" AND user_id NOT IN ({','.join('?' * len(skip_users))})"
            args.extend(skip_users)
        rows = self._exec(
            "SELECT id, name, input, user_id, attempts FROM jobs WHERE status = 'pending' "
            f"AND next_run_at <= ?{skip} ORDER BY id LIMIT ?",
            (*args, limit),
        ).fetchall()
        self._exec_many(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, updated_at = ? "
            "WHERE id = ?",
            [(now, r[0]) for r in rows],
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

    async def finish_job(
        self,
        job_id: int,
        status: JobStatus | str,
        *,
        now: float,
        output: Any = None,
        error: str | None = None,
        next_run_at: float = 0.0,
    ) -> None:
        """Record a job's outcome: ``done``, ``failed`` (kept for ``actions retry``) or
        ``pending`` again (a retry at ``next_run_at``)."""
        self._exec(
            "UPDATE jobs SET status = ?, output = ?, last_error = ?, next_run_at = ?, "
            "updated_at = ? WHERE id = ?",
            (
                str(JobStatus(status)),
                None if output is None else orjson.dumps(output).decode(),
                None if error is None else error[:4000],
                next_run_at,
                now,
                job_id,
            ),
        )

    async def next_due(self) -> float | None:
        """When the earliest pending job is due (None: no pending job)."""
        r = self._exec("SELECT MIN(next_run_at) FROM jobs WHERE status = 'pending'").fetchone()
        return None if r is None or r[0] is None else float(r[0])

    async def retry_jobs(self, job_ids: Sequence[int] | None, *, now: float) -> list[int]:
        """Failed or pending jobs back to ``pending`` with no attempts, due at once (``None``:
        every failed job); a job that does not exist, is running or done is refused."""
        if job_ids is None:
            ids = [
                int(r[0])
                for r in self._exec("SELECT id FROM jobs WHERE status = 'failed' ORDER BY id")
            ]
        else:
            ids = []
            for jid in job_ids:
                r = self._exec("SELECT status FROM jobs WHERE id = ?", (jid,)).fetchone()
                if r is None or r[0] not in ("failed", "pending"):
                    raise JobStateError(jid, None if r is None else JobStatus(r[0]))
                ids.append(int(jid))
        self._exec_many(
            "UPDATE jobs SET status = 'pending', attempts = 0, next_run_at = 0, "
            "updated_at = ? WHERE id = ?",
            [(now, jid) for jid in ids],
        )
        return ids
