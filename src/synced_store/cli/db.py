"""``synced-store db upgrade|copy``: PostgreSQL storage — its schema, and moving SQLite
instances into it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from ..errors import StorageError, SyncedStoreError
from .files import DATABASE_ENV, echo_json, json_option, run_storage
from .loading import CliError

__all__ = ["db"]


@click.group()
def db() -> None:
    """PostgreSQL storage: create or upgrade its schema, copy SQLite instances into it.

    Any number of `synced-store serve --database DSN` processes can share one database; a
    server refuses a database whose schema is missing or of another version, so run
    `db upgrade` first (and after upgrading synced-store).

    \b
    Example:
        synced-store db upgrade postgresql://postgres@127.0.0.1/app
        synced-store db copy --from-data-dir ./data --to postgresql://postgres@127.0.0.1/app
    """


def _postgres(dsn: str) -> Any:
    try:
        from ..storage.postgres import PostgresBackend
    except ImportError as exc:
        raise CliError(f"needs asyncpg ({exc}): pip install 'synced-store[postgres]'") from None
    try:
        return PostgresBackend(dsn)
    except ValueError as exc:
        raise CliError(str(exc)) from None


@db.command("upgrade")
@click.argument("dsn", envvar=DATABASE_ENV, metavar="DSN")
def upgrade(dsn: str) -> None:
    """Create synced-store's schema in database DSN, or upgrade it to this version.

    Safe to run again (nothing changes when the schema is current) and from several places at
    once (runs wait for each other). DSN defaults to $SYNCED_STORE_DATABASE.

    \b
    Example:
        synced-store db upgrade postgresql://postgres@127.0.0.1:5432/app
    """
    backend = _postgres(dsn)

    async def work(_: Any) -> tuple[int, int]:
        import asyncpg

        from ..storage.postgres_errors import DRIVER_ERRORS, pg_error
        from ..storage.postgres_schema import upgrade as run_upgrade

        try:
            conn = await asyncpg.connect(dsn, timeout=10)
            try:
                return await run_upgrade(conn)
            finally:
                await conn.close()
        except DRIVER_ERRORS as exc:
            raise pg_error(exc) from exc

    try:
        before, after = run_storage(backend, work)
    except StorageError as exc:
        raise CliError(f"{backend.where}: {exc}") from None
    if before == after:
        click.echo(f"{backend.where}: schema version {after}, up to date")
    else:
        click.echo(f"{backend.where}: schema version {before} -> {after}")


@db.command("copy")
@click.option(
    "--from-data-dir",
    "data_dir",
    required=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="The SQLite data directory to copy (read only; a server may run on it).",
)
@click.option(
    "--to",
    "dsn",
    required=True,
    envvar=DATABASE_ENV,
    metavar="DSN",
    help="The PostgreSQL database (its schema made by `db upgrade`).",
)
@click.argument("instance_ids", metavar="[INSTANCE]...", nargs=-1)
@click.option("--replace", is_flag=True, help="Overwrite instances the database has already.")
@json_option
def copy(
    data_dir: Path, dsn: str, instance_ids: tuple[str, ...], replace: bool, as_json: bool
) -> None:
    """Copy every instance of an SQLite data dir (or the ones named) into PostgreSQL.

    Rows, versions, tombstones, clients with their last_mutation_id, rejected-mutation
    reports, action jobs and checkpoints move as they are, so clients keep their cookies:
    pointed at the new servers they catch up without a reset. Each instance is read in one
    snapshot, so copying a live data dir is safe, but writes after its snapshot are not
    copied: stop the SQLite server (or copy again with --replace after stopping it) before
    starting the PostgreSQL servers. An instance the database already has is refused unless
    --replace.

    \b
    Example:
        synced-store db copy --from-data-dir ./data --to postgresql://postgres@127.0.0.1/app
        synced-store db copy --from-data-dir ./data --to $SYNCED_STORE_DATABASE room1 --replace
    """
    from ..storage.sqlite_backend import SqliteBackend

    source = SqliteBackend(data_dir)
    backend = _postgres(dsn)

    async def work(_: Any) -> list[dict[str, Any]]:
        from ..storage.postgres_copy import copy_sqlite_instance

        await backend.start()
        ids = list(instance_ids) or await source.list_instances()
        out = []
        for iid in ids:
            path = source.path(iid)
            if not path.is_file():
                raise CliError(f"no instance {iid!r} in {data_dir}")
            report = await copy_sqlite_instance(path, iid, backend, replace=replace)
            out.append(dataclasses.asdict(report))
            if not as_json:
                click.echo(
                    f"{iid}: version {report.version}, {report.rows} rows, {report.tombstones} "
                    f"tombstones, {report.clients} clients, {report.jobs} jobs"
                    + (" (replaced)" if report.replaced else "")
                )
        return out

    try:
        report = run_storage(backend, work)
    except SyncedStoreError as exc:
        raise CliError(str(exc)) from None
    if as_json:
        echo_json(report)
    elif not report:
        click.echo(f"no instances in {data_dir}")
