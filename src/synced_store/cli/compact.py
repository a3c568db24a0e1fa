"""``synced-store compact``: run retention on instance databases by hand."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..errors import StorageError
from ..server.limits import DAY, Retention
from ..storage.base import StorageBackend
from ..storage.records import Compaction
from .files import (
    echo_json,
    json_option,
    list_instances,
    require_instance,
    run_storage,
    storage_options,
)
from .loading import CliError

__all__ = ["compact", "compact_instance", "parse_duration"]

F = TypeVar("F", bound=Callable[..., Any])
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY}
_DEFAULT = Retention()
#: How long a step waits for a running server's write lock (seconds).
LOCK_WAIT = 5.0


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
@storage_options
@click.argument("instance_ids", metavar="[INSTANCE]...", nargs=-1)
@_duration(_DEFAULT.tombstones, "tombstones")
@_duration(_DEFAULT.done_jobs, "done_jobs")
@_duration(_DEFAULT.failed_jobs, "failed_jobs")
@_duration(_DEFAULT.clients, "clients")
@click.option("--vacuum", is_flag=True, help="Also return free pages to the file system.")
@json_option
def compact(
    storage: StorageBackend,
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
    it now, on every instance of --data-dir or --database or the ones named, and is safe
    while servers run. Ages count from the compaction passes that recorded the instance's
    version at a time (the first pass of an instance records one, so with the defaults an
    instance that was never compacted forgets nothing yet); `--tombstones 0` forgets every
    tombstone now. Clients whose cookie is older than the new horizon get a full reset on
    their next connection; forgotten clients start over under a new client id.

    \b
    Example:
        synced-store compact --data-dir ./data
        synced-store compact --data-dir ./data room1 --tombstones 0 --done-jobs 1h --vacuum
        synced-store compact --database postgresql://postgres@127.0.0.1/app
    """
    ages = {
        "tombstones": _DEFAULT.tombstones if tombstones is None else parse_duration(tombstones),
        "done_jobs": _DEFAULT.done_jobs if done_jobs is None else parse_duration(done_jobs),
        "failed_jobs": _DEFAULT.failed_jobs if failed_jobs is None else parse_duration(failed_jobs),
        "clients": _DEFAULT.clients if clients is None else parse_duration(clients),
    }
    report = run_storage(
        storage, lambda st: _compact_all(st, instance_ids, ages, vacuum=vacuum, quiet=as_json)
    )
    if as_json:
        echo_json(report)


async def _compact_all(
    storage: StorageBackend,
    instance_ids: tuple[str, ...],
    ages: dict[str, float],
    *,
    vacuum: bool,
    quiet: bool,
) -> list[dict[str, Any]]:
    if instance_ids:
        for iid in instance_ids:
            await require_instance(storage, iid)
        targets = list(instance_ids)
    else:
        targets = await list_instances(storage)
    report = []
    for iid in targets:
        try:
            done = await compact_instance(storage, iid, ages, vacuum=vacuum)
        except StorageError as exc:
            raise CliError(f"{iid}: {exc}") from None
        report.append({"instance_id": iid, **done.__dict__})
        if not quiet:
            click.echo(
                f"{iid}: {done.tombstones} tombstones, {done.done_jobs} done and "
                f"{done.failed_jobs} failed jobs, {done.clients} clients, {done.errors} error "
                "reports removed"
            )
    return report


async def compact_instance(
    storage: StorageBackend, instance_id: str, ages: dict[str, float], *, vacuum: bool = False
) -> Compaction:
    """Run retention to completion on one instance (in bounded transactions)."""
    store = await storage.open_instance(instance_id, create=False, lock_timeout=LOCK_WAIT)
    try:
        total = Compaction()
        now = time.time()
        first = True
        while True:
            tx = await store.begin()
            try:
                step = await tx.compact(
                    now,
                    tombstones=ages["tombstones"],
                    done_jobs=ages["done_jobs"],
                    failed_jobs=ages["failed_jobs"],
                    clients=ages["clients"],
                    checkpoint=first,
                )
                await tx.commit(tx.version)
            except BaseException:
                await tx.rollback()
                raise
            first = False
            total += step
            if not step.more:
                break
        if vacuum:
            await store.vacuum()
        return total
    finally:
        await store.close()
