"""``synced-store actions list|retry``: the jobs of an instance's action outbox."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import click

from ..errors import StorageError
from ..storage.base import StorageBackend
from ..storage.records import JobStateError
from ..types import JobStatus
from .files import (
    JOB_STATUSES,
    console,
    echo_json,
    json_option,
    require_instance,
    run_storage,
    short_json,
    storage_options,
)
from .loading import CliError

#: How long ``actions retry`` waits for a running server's write lock (seconds).
LOCK_WAIT = 5.0

__all__ = ["actions"]


@click.group()
def actions() -> None:
    """List and retry the jobs of an instance's action outbox.

    Jobs are written by ctx.enqueue_action() in the same transaction as their mutation and run
    at least once by the server. A job that fails max_attempts times is kept as 'failed';
    `actions retry` puts it back to 'pending' and a running server picks it up within about a
    second (its runner polls the outbox of every open instance).

    \b
    Example:
        synced-store actions list --data-dir ./data room1 --status failed
        synced-store actions retry --data-dir ./data room1 --all-failed
        synced-store actions retry --database postgresql://postgres@127.0.0.1/app room1 7
    """


async def _list_jobs(
    storage: StorageBackend, instance_id: str, status: str | None
) -> list[dict[str, Any]]:
    await require_instance(storage, instance_id)
    try:
        reader = await storage.inspect(instance_id)
        try:
            jobs = await reader.jobs(None if status is None else JobStatus(status))
        finally:
            await reader.close()
    except StorageError as exc:
        raise CliError(f"{storage.location(instance_id)}: {exc}") from None
    return [dataclasses.asdict(j) for j in jobs]


async def _retry_jobs(
    storage: StorageBackend, instance_id: str, job_ids: tuple[int, ...] | None
) -> list[int]:
    await require_instance(storage, instance_id)
    now = time.time()
    try:
        store = await storage.open_instance(instance_id, create=False, lock_timeout=LOCK_WAIT)
        try:
            tx = await store.begin()
            try:
                ids = await tx.retry_jobs(job_ids, now=now)
                await tx.commit(tx.version)
            except BaseException:
                await tx.rollback()
                raise
        finally:
            await store.close()
    except JobStateError as exc:
        if exc.status is None:
            raise CliError(f"instance {instance_id!r} has no job {exc.job_id}") from None
        raise CliError(str(exc)) from None
    except StorageError as exc:
        raise CliError(f"{storage.location(instance_id)}: {exc}") from None
    return ids


def _fmt_time(ts: float) -> str:
    if not ts:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


@actions.command("list")
@storage_options
@click.argument("instance_id", metavar="INSTANCE")
@click.option(
    "--status", type=click.Choice(JOB_STATUSES), default=None, help="Only jobs with this status."
)
@json_option
def actions_list(
    storage: StorageBackend, instance_id: str, status: str | None, as_json: bool
) -> None:
    """List the action jobs of INSTANCE, oldest first.

    Read-only: SQLite files are opened with mode=ro, PostgreSQL read in a read-only
    transaction.

    \b
    Example:
        synced-store actions list --data-dir ./data room1
        synced-store actions list --data-dir ./data room1 --status failed --json
        synced-store actions list --database postgresql://postgres@127.0.0.1/app room1
    """
    jobs = run_storage(storage, lambda st: _list_jobs(st, instance_id, status))
    if as_json:
        echo_json(jobs)
        return
    from rich.table import Table

    t = Table(title=f"jobs of {instance_id} ({len(jobs)})", title_justify="left")
    for col in ("id", "action", "status", "attempts", "user", "input", "updated", "last error"):
        t.add_column(col, overflow="fold" if col in ("input", "last error") else "ellipsis")
    for j in jobs:
        t.add_row(
            str(j["id"]),
            j["name"],
            j["status"],
            str(j["attempts"]),
            j["user_id"],
            short_json(j["input"], 60),
            _fmt_time(j["updated_at"]),
            (j["last_error"] or "")[:200],
        )
    console().print(t)


@actions.command("retry")
@storage_options
@click.argument("instance_id", metavar="INSTANCE")
@click.argument("job_ids", metavar="[JOB_ID]...", nargs=-1, type=int)
@click.option("--all-failed", is_flag=True, help="Retry every failed job of INSTANCE.")
def actions_retry(
    storage: StorageBackend, instance_id: str, job_ids: tuple[int, ...], all_failed: bool
) -> None:
    """Put failed jobs of INSTANCE back to 'pending' with a fresh attempt budget.

    Sets status='pending', attempts=0, next_run_at=0. Only 'failed' and 'pending' jobs can be
    retried ('running' and 'done' ones are refused). Safe while the server runs: it picks the
    jobs up within about a second once the instance is open (a client is connected).

    \b
    Example:
        synced-store actions retry --data-dir ./data room1 42
        synced-store actions retry --data-dir ./data room1 --all-failed
        synced-store actions retry --database postgresql://postgres@127.0.0.1/app room1 7
    """
    if bool(job_ids) == all_failed:
        raise click.UsageError("give JOB_ID(s) or --all-failed (not both)")
    ids = run_storage(
        storage, lambda st: _retry_jobs(st, instance_id, None if all_failed else job_ids)
    )
    if not ids:
        click.echo(f"no failed jobs in {instance_id}")
        return
    click.echo(f"re-queued {len(ids)} job(s) of {instance_id}: {', '.join(map(str, ids))}")
