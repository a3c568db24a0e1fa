"""The action outbox of a PostgreSQL instance: the ``jobs`` table, shared by every process.

Jobs are written inside the writer's transaction (a job exists exactly when the mutation that
enqueued it committed). A claim marks jobs ``running`` with a **lease** (``lease_until``,
seconds since the epoch); the process running a job renews it while it runs
(:meth:`PostgresInstanceStore.renew_jobs`), and a job whose lease ended — its process died or
stalled — is claimed again by any process: at least once, as with SQLite. Claims lock the rows
they take with ``FOR UPDATE SKIP LOCKED``, so claimers never wait for each other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

import orjson

from .base import DEFAULT_JOB_LEASE
from .postgres_errors import check_text, clean_text
from .postgres_schema import SCHEMA
from .records import ClaimedJob, JobStateError, JobStatus

__all__ = ["JobsMixin", "next_due_sql"]

S = SCHEMA
_CLAIMABLE = (
    "((status = 'pending' AND next_run_at <= $2) OR (status = 'running' AND lease_until < $2))"
)


def next_due_sql() -> str:
    """When the earliest pending job of instance ``$1`` is due (running jobs whose lease ends
    are found by ``PostgresBackend.instances_with_due_jobs`` and re-queued)."""
    return f"SELECT MIN(next_run_at) FROM {S}.jobs WHERE inst = $1 AND status = 'pending'"


def _affected(status: str) -> int:
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class JobsMixin:
    """Job methods of :class:`~synced_store.storage.postgres_tx.PostgresWriterTx`."""

    inst: int
    _q: Callable[..., Awaitable[Any]]
    _modify: Callable[[], Awaitable[None]]

    async def add_job(self, name: str, input: Any, user_id: str, now: float) -> int:
        """Insert a pending job (inside the writer transaction); returns its id."""
        check_text(name, "action name")
        check_text(user_id, "user id")
        await self._modify()
        jid = await self._q(
            "fetchval",
            f"INSERT INTO {S}.jobs (inst, name, input, user_id, status, created_at, updated_at) "
            "VALUES ($1, $2, $3, $4, 'pending', $5, $5) RETURNING id",
            self.inst,
            name,
            orjson.dumps(input).decode(),
            user_id,
            now,
        )
        return int(jid)

    async def unfinished_jobs(self, user_id: str) -> tuple[int, int]:
        """``(of this user, of the instance)``: jobs pending or running."""
        r = await self._q(
            "fetchrow",
            f"SELECT COUNT(*) FILTER (WHERE user_id = $2), COUNT(*) FROM {S}.jobs "
            "WHERE inst = $1 AND status IN ('pending', 'running')",
            self.inst,
            user_id,
        )
        return int(r[0]), int(r[1])

    async def requeue_running(self, now: float) -> int:
        """Running jobs whose lease ended before ``now`` back to ``pending`` (their process
        died): the jobs other processes run keep their lease."""
        await self._modify()
        status = await self._q(
            "execute",
            f"UPDATE {S}.jobs SET status = 'pending', next_run_at = 0 "
            "WHERE inst = $1 AND status = 'running' AND lease_until < $2",
            self.inst,
            now,
        )
        return _affected(status)

    async def claim_jobs(
        self,
        now: float,
        limit: int,
        skip_users: Collection[str] = (),
        *,
        lease: float = DEFAULT_JOB_LEASE,
    ) -> list[ClaimedJob]:
        """Claim up to ``limit`` jobs, oldest first: due pending ones, and running ones whose
        lease ended (their process died); each leased until ``now + lease``."""
        await self._modify()
        rows = await self._q(
            "fetch",
            f"WITH c AS (SELECT id FROM {S}.jobs WHERE inst = $1 AND {_CLAIMABLE} "
            "AND user_id <> ALL($3::text[]) ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED) "
            f"UPDATE {S}.jobs j SET status = 'running', attempts = j.attempts + 1, "
            "updated_at = $2, lease_until = $2 + $5 FROM c WHERE j.id = c.id "
            "RETURNING j.id, j.name, j.input, j.user_id, j.attempts",
            self.inst,
            now,
            list(skip_users),
            limit,
            lease,
        )
        return [
            {
                "id": int(r[0]),
                "name": r[1],
                "input": orjson.loads(r[2]),
                "user_id": r[3],
                "attempts": int(r[4]),
            }
            for r in sorted(rows, key=lambda r: r[0])
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
        await self._modify()
        await self._q(
            "execute",
            f"UPDATE {S}.jobs SET status = $3, output = $4, last_error = $5, next_run_at = $6, "
            "updated_at = $7, lease_until = 0 WHERE inst = $1 AND id = $2",
            self.inst,
            job_id,
            str(JobStatus(status)),
            None if output is None else orjson.dumps(output).decode(),
            None if error is None else clean_text(error[:4000]),
            next_run_at,
            now,
        )

    async def next_due(self) -> float | None:
        """When the earliest pending job is due (None: no pending job)."""
        r = await self._q("fetchval", next_due_sql(), self.inst)
        return None if r is None else float(r)

    async def retry_jobs(self, job_ids: Sequence[int] | None, *, now: float) -> list[int]:
        """Failed or pending jobs back to ``pending`` with no attempts, due at once (``None``:
        every failed job); a job that does not exist, is running or done is refused."""
        inst = self.inst
        if job_ids is None:
            rows = await self._q(
                "fetch",
                f"SELECT id FROM {S}.jobs WHERE inst = $1 AND status = 'failed' ORDER BY id",
                inst,
            )
            ids = [int(r[0]) for r in rows]
        else:
            ids = []
            for jid in job_ids:
                st = await self._q(
                    "fetchval",
                    f"SELECT status FROM {S}.jobs WHERE inst = $1 AND id = $2",
                    inst,
                    jid,
                )
                if st not in ("failed", "pending"):
                    raise JobStateError(jid, None if st is None else JobStatus(st))
                ids.append(int(jid))
        if ids:
            await self._modify()
            await self._q(
                "execute",
                f"UPDATE {S}.jobs SET status = 'pending', attempts = 0, next_run_at = 0, "
                "updated_at = $3 WHERE inst = $1 AND id = ANY($2::bigint[])",
                inst,
                ids,
                now,
            )
        return ids
