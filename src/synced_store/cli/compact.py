"""``synced-store compact``: run retention on instance databases by hand."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..errors import StorageError
from ..server.limits import DAY, Retention
from ..storage.sqlite import Compaction, SqliteInstanceStore
from .files import data_dir_option, echo_json, instance_file, json_option, list_instance_files
from .loading import CliError

__all__ = ["compact", "parse_duration"]

F = TypeVar("F", bound=Callable[..., Any])
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY}
_DEFAULT = Retention()


def parse_duration(text: str) -> float:
    """``"90s"``, ``"15m"``, ``"12h"``, ``"7d"`` or a number of seconds (``"0"``: now)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if m is None:
        raise click.BadParameter(f"{text!r} is not a duration like 30s, 15m, 12h or 7d")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def _duration(default: float, what: str) -> Callable[[F], F]:
    return click.option(
        f"--{what.replace('_', '-')}",
        default=None,
        metavar="AGE",
        help=f"Forget {what.replace('_', ' ')} older than AGE (default {default / DAY:g}d).",
    )


@click.command()
@data_dir_option
@click.argument("instance_ids", metavar="[INSTANCE]...", nargs=-1)
@_duration(_DEFAULT.tombstones, "tombstones")
@_duration(_DEFAULT.done_jobs, "done_jobs")
@_duration(_DEFAULT.failed_jobs, "failed_jobs")
@_duration(_DEFAULT.clients, "clients")
@click.option("--vacuum", is_flag=True, help="Also return free pages to the file system.")
@json_option
def compact(
    data_dir: Path,
    instance_ids: tuple[str, ...],
    tombstones: str | None,
    done_jobs: str | None,
    failed_jobs: str | None,
    clients: str | None,
    vacuum: bool,
    as_json: bool,
) -> None:
    """Forget what instances no longer need: old tombstones, finished jobs, old clients.

    A running server does the same every hour (Retention in docs/operations.md); this runs
    it now, on every instance of --data-dir or the ones named, and is safe while the server
    runs. Ages count from the compaction passes that recorded the instance's version at a
    time (the first pass of an instance records one, so with the defaults an instance that
    was never compacted forgets nothing yet); `--tombstones 0` forgets every tombstone now.
    Clients whose cookie is older than the new horizon get a full reset on their next
    connection; forgotten clients start over under a new client id.

    \b
    Example:
        synced-store compact --data-dir ./data
        synced-store compact --data-dir ./data room1 --tombstones 0 --done-jobs 1h --vacuum
    """
    ages = {
        "tombstones": _DEFAULT.tombstones if tombstones is None else parse_duration(tombstones),
        "done_jobs": _DEFAULT.done_jobs if done_jobs is None else parse_duration(done_jobs),
        "failed_jobs": _DEFAULT.failed_jobs if failed_jobs is None else parse_duration(failed_jobs),
        "clients": _DEFAULT.clients if clients is None else parse_duration(clients),
    }
    if instance_ids:
        targets = [(i, instance_file(data_dir, i)) for i in instance_ids]
    else:
        targets = list_instance_files(data_dir)
    report = []
    for iid, path in targets:
        try:
            done = compact_file(path, ages, vacuum=vacuum)
        except (StorageError, sqlite3.Error) as exc:
            raise CliError(f"{iid}: {exc}") from None
        report.append({"instance_id": iid, **done.__dict__})
        if not as_json:
            click.echo(
                f"{iid}: {done.tombstones} tombstones, {done.done_jobs} done and "
                f"{done.failed_jobs} failed jobs, {done.clients} clients, {done.errors} error "
                "reports removed"
            )
    if as_json:
        echo_json(report)


def compact_file(path: Path, ages: dict[str, float], *, vacuum: bool = False) -> Compaction:
    """Run retention to completion on one instance file (in bounded transactions)."""
    store = SqliteInstanceStore(path)
    try:
        store.conn.execute("PRAGMA busy_timeout=5000")  # a running server may hold the lock
        total = Compaction()
        now = time.time()
        first = True
        while True:
            store.begin()
            try:
                step = store.compact(
                    now,
                    tombstones=ages["tombstones"],
                    done_jobs=ages["done_jobs"],
                    failed_jobs=ages["failed_jobs"],
                    clients=ages["clients"],
                    checkpoint=first,
                )
                store.commit(store.version)
            except BaseException:
                store.rollback()
                raise
            first = False
            total += step
            if not step.more:
                break
        if vacuum:
            store.incremental_vacuum()
        return total
    finally:
        store.close()
