"""Instances from the command line: options, storage, lookup, output helpers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
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
    "DATABASE_ENV",
    "JOB_STATUSES",
    "console",
    "database_option",
    "echo_json",
    "json_option",
    "list_instances",
    "open_storage",
    "require_instance",
    "run_storage",
    "short_json",
    "storage_options",
]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

#: Every job status, in lifecycle order (choices of ``--status``, columns of ``inspect``).
JOB_STATUSES = tuple(s.value for s in JobStatus)


#: The environment variable naming the PostgreSQL database (like ``--database``).
DATABASE_ENV = "SYNCED_STORE_DATABASE"


def database_option(fn: F) -> F:
    """``--database DSN`` (or ``$SYNCED_STORE_DATABASE``): keyword argument ``database``."""
    return click.option(
        "--database",
        metavar="DSN",
        envvar=DATABASE_ENV,
        default=None,
        help=f"A PostgreSQL database holding every instance (postgresql://user@host/db; "
        f"also ${DATABASE_ENV}). Instead of --data-dir.",
    )(fn)


def storage_options(fn: Callable[..., T]) -> Callable[..., T]:
    """``--data-dir DIR`` (SQLite files) or ``--database DSN`` (PostgreSQL), exactly one; the
    command receives the backend as its ``storage`` keyword argument."""

    @functools.wraps(fn)
    def wrapper(*args: Any, data_dir: Path | None, database: str | None, **kwargs: Any) -> T:
        if data_dir is not None and _from_environment("database"):
            database = None  # an explicit --data-dir wins over $SYNCED_STORE_DATABASE
        return fn(*args, storage=open_storage(data_dir, database), **kwargs)

    cmd = database_option(wrapper)
    return click.option(
        "--data-dir",
        default=None,
        type=click.Path(file_okay=False, path_type=Path),
        help="The server's data directory (one <instance_id>.sqlite3 per instance).",
    )(cmd)


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")(fn)


def _from_environment(param: str) -> bool:
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return False
    return ctx.get_parameter_source(param) is click.core.ParameterSource.ENVIRONMENT


def open_storage(data_dir: Path | None, database: str | None = None) -> StorageBackend:
    """The storage backend a command's options name: ``--data-dir`` (SQLite files) or
    ``--database`` (PostgreSQL), exactly one of them."""
    if data_dir is not None and database is not None:
        raise click.UsageError(f"give --data-dir or --database (${DATABASE_ENV}), not both")
    if database is not None:
        try:
            from ..storage.postgres import PostgresBackend

            return PostgresBackend(database)
        except ImportError as exc:
            raise CliError(
                f"--database needs asyncpg ({exc}): pip install 'synced-store[postgres]'"
            ) from None
        except ValueError as exc:
            raise CliError(str(exc)) from None
    if data_dir is None:
        raise click.UsageError(f"give --data-dir or --database (or set ${DATABASE_ENV})")
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


async def require_instance(storage: StorageBackend, instance_id: str) -> None:
    """Raise :class:`CliError` unless ``instance_id`` is valid and exists."""
    try:
        storage.validate_instance_id(instance_id)
    except SyncedStoreError as exc:
        raise CliError(str(exc)) from None
    try:
        found = await storage.exists(instance_id)
    except StorageError as exc:
        raise CliError(str(exc)) from None
    if not found:
        known = ", ".join(await list_instances(storage)) or "none"
        where = storage.description.removeprefix("data dir ")
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
