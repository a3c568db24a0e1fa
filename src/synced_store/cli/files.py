"""Instances from the command line: options, storage, lookup, output helpers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from ..errors import StorageError, SyncedStoreError
from ..storage.base import StorageBackend
from ..storage.sqlite_backend import SqliteBackend
from ..types import JobStatus
from .loading import CliError

__all__ = [
    "JOB_STATUSES",
    "console",
    "data_dir_option",
    "echo_json",
    "json_option",
    "list_instances",
    "open_storage",
    "require_instance",
    "run_storage",
    "short_json",
]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

#: Every job status, in lifecycle order (choices of ``--status``, columns of ``inspect``).
JOB_STATUSES = tuple(s.value for s in JobStatus)


def data_dir_option(fn: F) -> F:
    return click.option(
        "--data-dir",
        required=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="The server's data directory (one <instance_id>.sqlite3 per instance).",
    )(fn)


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")(fn)


def open_storage(data_dir: Path) -> StorageBackend:
    """The storage backend a command's options name (``--data-dir``: SQLite files)."""
    return SqliteBackend(data_dir)


def run_storage(
    storage: StorageBackend, work: Callable[[StorageBackend], Coroutine[Any, Any, T]]
) -> T:
    """Run ``work(storage)`` to completion, then close the backend (on an event loop of its
    own: in a thread of its own when the caller already runs one, as a test may)."""

    async def main() -> T:
        try:
            return await work(storage)
        finally:
            await storage.close()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


async def list_instances(storage: StorageBackend) -> list[str]:
    """Every instance id (a missing data dir is a :class:`CliError`)."""
    try:
        return await storage.list_instances()
    except StorageError as exc:
        raise CliError(str(exc)) from None


async def require_instance(storage: StorageBackend, where: Path, instance_id: str) -> None:
    """Raise :class:`CliError` unless ``instance_id`` is valid and exists (in ``where``)."""
    try:
        storage.validate_instance_id(instance_id)
    except SyncedStoreError as exc:
        raise CliError(str(exc)) from None
    if not await storage.exists(instance_id):
        known = ", ".join(await list_instances(storage)) or "none"
        raise CliError(f"no instance {instance_id!r} in {where} (instances: {known})")


def short_json(value: Any, width: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 1] + "…"


def console() -> Any:
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:  # piped or captured: do not squeeze tables into 80 columns
        console = Console(highlight=False, width=200)
    return console


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))
