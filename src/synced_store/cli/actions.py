"""``synced-store actions list|retry``: the jobs of an instance's action outbox."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from ..types import JobStatus
from .files import (
    JOB_STATUSES,
    console,
    data_dir_option,
    echo_json,
    instance_file,
    json_option,
    open_db,
    short_json,
)
from .loading import CliError

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
    """


def _job_row(r: tuple[Any, ...]) -> dict[str, Any]:
    (jid, name, inp, uid, status, attempts, next_run_at, last_error, output, created, updated) = r
    return {
        "id": int(jid),
        "name": name,
        "status": status,
        "attempts": int(attempts),
        "user_id": uid,
        "input": json.loads(inp),
        "output": None if output is None else json.loads(output),
        "last_error": last_error,
        "next_run_at": float(next_run_at),
        "created_at": float(created),
        "updated_at": float(updated),
    }


def _fmt_time(ts: float) -> str:
    if not ts:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


@actions.command("list")
@data_dir_option
@click.argument("instance_id", metavar="INSTANCE")
@click.option(
    "--status", type=click.Choice(JOB_STATUSES), default=None, help="Only jobs with this status."
)
@json_option
def actions_list(data_dir: Path, instance_id: str, status: str | None, as_json: bool) -> None:
    """List the action jobs of INSTANCE, oldest first.

    Read-only: the database is opened with SQLite's mode=ro.

    \b
    Example:
        synced-store actions list --data-dir ./data room1
        synced-store actions list --data-dir ./data room1 --status failed --json
    """
    path = instance_file(data_dir, instance_id)
    sql = (
        "SELECT id, name, input, user_id, status, attempts, next_run_at, last_error, output, "
        "created_at, updated_at FROM jobs"
    )
    args: tuple[str, ...] = ()
    if status is not None:
        sql += " WHERE status = ?"
        args = (status,)
    with open_db(path) as conn:
        jobs = [_job_row(r) for r in conn.execute(sql + " ORDER BY id", args)]
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
@data_dir_option
@click.argument("instance_id", metavar="INSTANCE")
@click.argument("job_ids", metavar="[JOB_ID]...", nargs=-1, type=int)
@click.option("--all-failed", is_flag=True, help="Retry every failed job of INSTANCE.")
def actions_retry(
    data_dir: Path, instance_id: str, job_ids: tuple[int, ...], all_failed: bool
) -> None:
    """Put failed jobs of INSTANCE back to 'pending' with a fresh attempt budget.

    Sets status='pending', attempts=0, next_run_at=0. Only 'failed' and 'pending' jobs can be
    retried ('running' and 'done' ones are refused). Safe while the server runs: it picks the
    jobs up within about a second once the instance is open (a client is connected).

    \b
    Example:
        synced-store actions retry --data-dir ./data room1 42
        synced-store actions retry --data-dir ./data room1 --all-failed
    """
    if bool(job_ids) == all_failed:
        raise click.UsageError("give JOB_ID(s) or --all-failed (not both)")
    path = instance_file(data_dir, instance_id)
    now = time.time()
    with open_db(path, read_only=False) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if all_failed:
                ids = [
                    int(r[0])
                    for r in conn.execute("SELECT id FROM jobs WHERE status = 'failed' ORDER BY id")
                ]
            else:
                ids = []
                for jid in job_ids:
                    r = conn.execute("SELECT status FROM jobs WHERE id = ?", (jid,)).fetchone()
                    if r is None:
                        raise CliError(f"instance {instance_id!r} has no job {jid}")
                    if r[0] not in (JobStatus.FAILED, JobStatus.PENDING):
                        raise CliError(
                            f"job {jid} is {r[0]}; only failed or pending jobs can be retried"
                        )
                    ids.append(jid)
            conn.executemany(
                "UPDATE jobs SET status = 'pending', attempts = 0, next_run_at = 0, "
                "updated_at = ? WHERE id = ?",
                [(now, jid) for jid in ids],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    if not ids:
        click.echo(f"no failed jobs in {instance_id}")
        return
    click.echo(f"re-queued {len(ids)} job(s) of {instance_id}: {', '.join(map(str, ids))}")
