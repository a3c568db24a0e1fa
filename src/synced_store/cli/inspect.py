"""``synced-store inspect``: list the instances of a data dir, or dump one (read-only)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import click

from .files import (
    JOB_STATUSES,
    console,
    data_dir_option,
    echo_json,
    instance_file,
    json_option,
    list_instance_files,
    open_db,
    short_json,
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


def _job_counts(conn: sqlite3.Connection) -> dict[str, int]:
    counts = dict.fromkeys(JOB_STATUSES, 0)
    for status, n in conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status"):
        counts[str(status)] = int(n)
    return counts


def _summary(instance_id: str, path: Path) -> dict[str, Any]:
    with open_db(path) as conn:
        conn.execute("BEGIN")
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        live, tombstones = conn.execute(
            "SELECT COALESCE(SUM(deleted = 0), 0), COALESCE(SUM(deleted = 1), 0) FROM rows"
        ).fetchone()
        tables = {
            str(t): int(n)
            for t, n in conn.execute(
                "SELECT tbl, COUNT(*) FROM rows WHERE deleted = 0 GROUP BY tbl ORDER BY tbl"
            )
        }
        clients = int(conn.execute("SELECT COUNT(*) FROM clients").fetchone()[0])
        jobs = _job_counts(conn)
        conn.execute("COMMIT")
    return {
        "instance_id": instance_id,
        "path": str(path),
        "bytes": path.stat().st_size,
        "version": int(meta.get("version", 0)),
        "schema_version": None
        if meta.get("schema_version") is None
        else int(meta["schema_version"]),
        "horizon": int(meta.get("horizon", 0)),
        "rows": int(live),
        "tombstones": int(tombstones),
        "tables": tables,
        "clients": clients,
        "jobs": jobs,
    }


def _dump(instance_id: str, path: Path, table: str | None) -> dict[str, Any]:
    info = _summary(instance_id, path)
    with open_db(path) as conn:
        conn.execute("BEGIN")
        sql = "SELECT ns, tbl, item, sk, value, version FROM rows WHERE deleted = 0"
        args: tuple[str, ...] = ()
        if table is not None:
            sql += " AND tbl = ?"
            args = (table,)
        rows = [
            {
                "namespace": _namespace_label(ns),
                "table": tbl,
                "item_key": item,
                "sort_key": sk,
                "version": int(version),
                "value": json.loads(value),
            }
            for ns, tbl, item, sk, value, version in conn.execute(
                sql + " ORDER BY ns, tbl, sk, item", args
            )
        ]
        clients = [
            {
                "client_id": cid,
                "user_id": uid,
                "last_mutation_id": int(lmid),
                "version": int(version),
            }
            for cid, uid, lmid, version in conn.execute(
                "SELECT client_id, user_id, last_mutation_id, version FROM clients "
                "ORDER BY client_id"
            )
        ]
        conn.execute("COMMIT")
    info["rows"] = rows
    info["row_count"] = len(rows)
    info["clients"] = clients
    return info


@click.command()
@data_dir_option
@click.argument("instance_id", metavar="[INSTANCE]", required=False)
@click.option(
    "--table",
    "table_name",
    metavar="T",
    default=None,
    help="Only rows of this table (with INSTANCE).",
)
@json_option
def inspect(data_dir: Path, instance_id: str | None, table_name: str | None, as_json: bool) -> None:
    """Show the instances of a data dir, or the contents of one instance.

    Without INSTANCE: every instance with its version, schema version, row, tombstone, client
    and job counts (an unreadable file is listed with its error).
    With INSTANCE: its rows (namespace, table, item key, sort key, value), its clients (with
    last_mutation_id) and a summary of its action jobs. This is a read-only operation: the
    files are opened with SQLite's mode=ro and are safe to inspect while a server runs.

    \b
    Example:
        synced-store inspect --data-dir ./data
        synced-store inspect --data-dir ./data room1 --table todos
        synced-store inspect --data-dir ./data room1 --json
    """
    if instance_id is None:
        if table_name is not None:
            raise CliError("--table needs an INSTANCE")
        summaries = []
        for iid, path in list_instance_files(data_dir):
            try:
                summaries.append(_summary(iid, path))
            except CliError as exc:  # one unreadable file must not hide the others
                summaries.append({"instance_id": iid, "path": str(path), "error": exc.message})
        if as_json:
            echo_json(summaries)
            return
        _print_summaries(data_dir, summaries)
        return
    dump = _dump(instance_id, instance_file(data_dir, instance_id), table_name)
    if as_json:
        echo_json(dump)
        return
    _print_dump(dump, table_name)


def _print_summaries(data_dir: Path, summaries: list[dict[str, Any]]) -> None:
    from rich.table import Table

    out = console()
    if not summaries:
        out.print(f"no instances in {data_dir}")
        return
    t = Table(title=f"instances in {data_dir}", title_justify="left")
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
