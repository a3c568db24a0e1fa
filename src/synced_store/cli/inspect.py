"""``synced-store inspect``: list the instances of a data dir, or dump one (read-only)."""

from __future__ import annotations

from typing import Any

import click

from ..errors import StorageError
from ..storage.base import StorageBackend
from .files import (
    console,
    echo_json,
    json_option,
    list_instances,
    require_instance,
    run_storage,
    short_json,
    storage_options,
)
from .loading import CliError

__all__ = ["inspect"]


def _namespace_label(ns: str) -> str:
    if ns == "":
        return "public"
    if ns.startswith("u:"):
        return "user:" + ns[2:]
    if ns == "s":
        return "server-only"
    return ns


async def _summary(storage: StorageBackend, instance_id: str) -> dict[str, Any]:
    try:
        reader = await storage.inspect(instance_id)
        try:
            s = await reader.summary()
        finally:
            await reader.close()
    except StorageError as exc:
        raise CliError(f"{storage.location(instance_id)}: {exc}") from None
    return {
        "instance_id": instance_id,
        "path": s.location,
        "bytes": s.bytes,
        "version": s.version,
        "schema_version": s.schema_version,
        "horizon": s.horizon,
        "rows": s.rows,
        "tombstones": s.tombstones,
        "tables": s.tables,
        "clients": s.clients,
        "jobs": s.jobs,
    }


async def _dump(storage: StorageBackend, instance_id: str, table: str | None) -> dict[str, Any]:
    info = await _summary(storage, instance_id)
    try:
        reader = await storage.inspect(instance_id)
        try:
            rows = await reader.rows(table)
            clients = await reader.clients()
        finally:
            await reader.close()
    except StorageError as exc:
        raise CliError(f"{storage.location(instance_id)}: {exc}") from None
    info["rows"] = [
        {
            "namespace": _namespace_label(r.ns),
            "table": r.table,
            "item_key": r.item_key,
            "sort_key": r.sort_key,
            "version": r.version,
            "value": r.value,
        }
        for r in rows
    ]
    info["row_count"] = len(rows)
    info["clients"] = [
        {
            "client_id": c.client_id,
            "user_id": c.user_id,
            "last_mutation_id": c.last_mutation_id,
            "version": c.version,
        }
        for c in clients
    ]
    return info


async def _summaries(storage: StorageBackend) -> list[dict[str, Any]]:
    summaries = []
    for iid in await list_instances(storage):
        try:
            summaries.append(await _summary(storage, iid))
        except CliError as exc:  # one unreadable instance must not hide the others
            summaries.append(
                {"instance_id": iid, "path": storage.location(iid), "error": exc.message}
            )
    return summaries


async def _dump_one(storage: StorageBackend, instance_id: str, table: str | None) -> dict[str, Any]:
    await require_instance(storage, instance_id)
    return await _dump(storage, instance_id, table)


@click.command()
@storage_options
@click.argument("instance_id", metavar="[INSTANCE]", required=False)
@click.option(
    "--table",
    "table_name",
    metavar="T",
    default=None,
    help="Only rows of this table (with INSTANCE).",
)
@json_option
def inspect(
    storage: StorageBackend, instance_id: str | None, table_name: str | None, as_json: bool
) -> None:
    """Show the instances of a data dir or database, or the contents of one instance.

    Without INSTANCE: every instance with its version, schema version, row, tombstone, client
    and job counts (an unreadable file is listed with its error).
    With INSTANCE: its rows (namespace, table, item key, sort key, value), its clients (with
    last_mutation_id) and a summary of its action jobs. This is a read-only operation, safe
    while servers run: SQLite files are opened with mode=ro, PostgreSQL is read in read-only
    transactions.

    \b
    Example:
        synced-store inspect --data-dir ./data
        synced-store inspect --data-dir ./data room1 --table todos
        synced-store inspect --data-dir ./data room1 --json
        synced-store inspect --database postgresql://postgres@127.0.0.1/app room1
    """
    if instance_id is None:
        if table_name is not None:
            raise CliError("--table needs an INSTANCE")
        summaries = run_storage(storage, _summaries)
        if as_json:
            echo_json(summaries)
            return
        _print_summaries(storage.description, summaries)
        return
    dump = run_storage(storage, lambda st: _dump_one(st, instance_id, table_name))
    if as_json:
        echo_json(dump)
        return
    _print_dump(dump, table_name)


def _print_summaries(where: str, summaries: list[dict[str, Any]]) -> None:
    from rich.table import Table

    out = console()
    where = where.removeprefix("data dir ")
    if not summaries:
        out.print(f"no instances in {where}")
        return
    t = Table(title=f"instances in {where}", title_justify="left")
    for col in ("instance", "version", "schema", "rows", "tombstones", "tables", "clients", "jobs"):
        t.add_column(col, justify="left" if col in ("instance", "tables", "jobs") else "right")
    for s in summaries:
        if "error" in s:
            t.add_row(s["instance_id"], "-", "-", "-", "-", f"[red]{s['error']}[/]", "-", "-")
            continue
        jobs = ", ".join(f"{k} {v}" for k, v in s["jobs"].items() if v) or "-"
        tables = ", ".join(f"{k} {v}" for k, v in s["tables"].items()) or "-"
        t.add_row(
            s["instance_id"],
            str(s["version"]),
            "-" if s["schema_version"] is None else str(s["schema_version"]),
            str(s["rows"]),
            str(s["tombstones"]),
            tables,
            str(s["clients"]),
            jobs,
        )
    out.print(t)


def _print_dump(dump: dict[str, Any], table_name: str | None) -> None:
    from rich.table import Table

    out = console()
    out.print(
        f"[bold]{dump['instance_id']}[/]  version {dump['version']}  "
        f"schema version {dump['schema_version'] if dump['schema_version'] is not None else '-'}  "
        f"({dump['path']}, {dump['bytes']} bytes, {dump['tombstones']} tombstones)"
    )
    what = f"rows of {table_name}" if table_name else "rows"
    rows = Table(title=f"{what} ({dump['row_count']})", title_justify="left")
    for col in ("namespace", "table", "item key", "sort key"):
        rows.add_column(col, no_wrap=True)
    rows.add_column("value", overflow="fold")
    for r in dump["rows"]:
        rows.add_row(
            r["namespace"], r["table"], r["item_key"], r["sort_key"], short_json(r["value"])
        )
    out.print(rows)
    clients = Table(title=f"clients ({len(dump['clients'])})", title_justify="left")
    for col in ("client id", "user", "last_mutation_id", "version"):
        clients.add_column(col)
    for c in dump["clients"]:
        clients.add_row(c["client_id"], c["user_id"], str(c["last_mutation_id"]), str(c["version"]))
    out.print(clients)
    jobs = ", ".join(f"{k} {v}" for k, v in dump["jobs"].items())
    out.print(f"jobs: {jobs}  (details: synced-store actions list)")
