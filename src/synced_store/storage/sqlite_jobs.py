"""The action outbox of an SQLite instance: the ``jobs`` table.

Written inside the writer's transaction (a job exists exactly when the mutation that enqueued
it committed) and claimed by the action runner through the writer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection
from typing import Any

import orjson

__all__ = ["JobsMixin"]


class JobsMixin:
    """Job methods of :class:`~synced_store.storage.sqlite.SqliteInstanceStore`."""

    conn: sqlite3.Connection
    #: The store's statement runners (driver errors mapped to StorageError).
    _exec: Callable[..., sqlite3.Cursor]
    _exec_many: Callable[..., sqlite3.Cursor]

    def add_job(self, name: str, input: Any, user_id: str, now: float) -> int:
        """Insert a pending job (inside the writer transaction); returns its id."""
        cur = self._exec(
            "INSERT INTO jobs (name, input, user_id, status, created_at, updated_at) "
            "VALUES (?, ?, ?, 'pending', ?, ?)",
            (name, orjson.dumps(input).decode(), user_id, now, now),
        )
        return int(cur.lastrowid or 0)

    def unfinished_jobs(self, user_id: str) -> tuple[int, int]:
        """``(of this user, of the instance)``: jobs pending or running."""
        mine = self._exec(
            "SELECT COUNT(*) FROM jobs WHERE user_id = ? AND status IN ('pending', 'running')",
            (user_id,),
        ).fetchone()[0]
        total = self._exec(
            "SELECT COUNT(*) FROM jobs WHERE status IN ('pending', 'running')"
        ).fetchone()[0]
        return int(mine), int(total)

    def requeue_running(self) -> int:
        """Put jobs left ``running`` by a previous process back to ``pending`` (at least once)."""
        return self._exec(
            "UPDATE jobs SET status = 'pending', next_run_at = 0 WHERE status = 'running'"
        ).rowcount

    def claim_jobs(
        self, now: float, limit: int, skip_users: Collection[str] = ()
    ) -> list[dict[str, Any]]:
        """Mark up to ``limit`` due pending jobs ``running`` and return them, oldest first,
        leaving out jobs of ``skip_users`` (users at their concurrency limit)."""
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
        for r in rows:
            self._exec(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, updated_at = ? "
                "WHERE id = ?",
                (now, r[0]),
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

    def finish_job(
        self,
        job_id: int,
        status: str,
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
                status,
                None if output is None else orjson.dumps(output).decode(),
                None if error is None else error[:4000],
                next_run_at,
                now,
                job_id,
            ),
        )

    def next_due(self) -> float | None:
        """When the earliest pending job is due (None: no pending job)."""
        r = self._exec("SELECT MIN(next_run_at) FROM jobs WHERE status = 'pending'").fetchone()
        return None if r is None or r[0] is None else float(r[0])
