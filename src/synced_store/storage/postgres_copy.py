"""Moving an SQLite instance into PostgreSQL as it is (``synced-store db copy``).

Everything moves: every row with the version that last changed it, the tombstones, the
instance's version, horizon and schema version, every client with its ``last_mutation_id``,
the rejected-mutation reports, the action jobs (with their status and attempts: a job that was
running is claimed again, at least once) and the compaction checkpoints. Versions are kept, so
a client's cookie means the same thing afterwards: clients reconnect to the new servers and
catch up from their cookie, with no reset and no mutation applied twice.

The source file is read in one read transaction (a consistent snapshot, also while a server
writes it); the instance is written in one PostgreSQL transaction with ``COPY``. Job ids are
new (PostgreSQL numbers jobs across instances).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ValidationError
from .errors import storage_error
from .postgres import PostgresBackend
from .postgres_errors import DRIVER_ERRORS, pg_error
from .postgres_schema import SCHEMA
from .sqlite_admin import open_read_only

__all__ = ["CopyReport", "copy_sqlite_instance"]

S = SCHEMA
_CHUNK = 2000
#: Tables of an instance, with the columns copied (after ``inst``).
_TABLES: dict[str, tuple[str, ...]] = {
    "rows": ("ns", "tbl", "item", "sk", "value", "version", "deleted"),
    "clients": ("client_id", "user_id", "last_mutation_id", "version"),
    "mutation_errors": ("client_id", "mutation_id", "name", "kind", "message"),
    "jobs": (
        "name",
        "input",
        "user_id",
        "status",
        "attempts",
        "next_run_at",
        "last_error",
        "output",
        "created_at",
        "updated_at",
    ),
    "checkpoints": ("at", "version"),
}


@dataclass(frozen=True)
class CopyReport:
    """What one instance's copy moved."""

    instance_id: str
    version: int
    rows: int
    tombstones: int
    clients: int
    jobs: int
    replaced: bool


def _records(
    conn: sqlite3.Connection, inst: int, table: str, counts: dict[str, int]
) -> Iterator[tuple[Any, ...]]:
    cols = _TABLES[table]
    cur = conn.execute(f"SELECT {', '.join(cols)} FROM {table}")
    while batch := cur.fetchmany(_CHUNK):
        for r in batch:
            counts[table] = counts.get(table, 0) + 1
            if table == "rows":
                counts["tombstones"] = counts.get("tombstones", 0) + int(bool(r[6]))
                yield (inst, r[0], r[1], r[2], r[3], r[4], int(r[5]), bool(r[6]))
            else:
                yield (inst, *r)


async def copy_sqlite_instance(
    path: Path, instance_id: str, backend: PostgresBackend, *, replace: bool = False
) -> CopyReport:
    """Copy the SQLite instance file ``path`` into ``backend`` as ``instance_id``.

    Raises :class:`ValidationError` if the instance exists in the database already (unless
    ``replace``: its data there is deleted first, in the same transaction) and
    :class:`~synced_store.errors.StorageError` if either database fails. Copy before any
    PostgreSQL server serves the instance, and after the SQLite server stopped taking writes
    (writes after the copy would not be in it: copy again with ``replace``).
    """
    backend.validate_instance_id(instance_id)
    try:
        src = open_read_only(path)
    except sqlite3.Error as exc:
        raise storage_error(exc) from exc
    try:
        src.execute("BEGIN")  # one snapshot of the file, whatever its server does meanwhile
        meta = dict(src.execute("SELECT key, value FROM meta").fetchall())
        counts: dict[str, int] = {}
        try:
            async with backend.connection() as conn, conn.transaction():
                old = await conn.fetchval(
                    f"SELECT key FROM {S}.instances WHERE id = $1", instance_id
                )
                if old is not None and not replace:
                    raise ValidationError(
                        f"instance {instance_id!r} exists in {backend.where} already "
                        "(--replace overwrites it)"
                    )
                if old is not None:
                    for table in _TABLES:
                        await conn.execute(f"DELETE FROM {S}.{table} WHERE inst = $1", old)
                    await conn.execute(f"DELETE FROM {S}.search_tables WHERE inst = $1", old)
                    await conn.execute(f"DELETE FROM {S}.instances WHERE key = $1", old)
                sv = meta.get("schema_version")
                inst = await conn.fetchval(
                    f"INSERT INTO {S}.instances (id, version, horizon, schema_version) "
                    "VALUES ($1, $2, $3, $4) RETURNING key",
                    instance_id,
                    int(meta.get("version", 0)),
                    int(meta.get("horizon", 0)),
                    None if sv is None else int(sv),
                )
                for table, cols in _TABLES.items():
                    await conn.copy_records_to_table(
                        table,
                        schema_name=S,
                        columns=["inst", *cols],
                        records=_records(src, int(inst), table, counts),
                    )
        except DRIVER_ERRORS as exc:
            raise pg_error(exc) from exc
    except sqlite3.Error as exc:
        raise storage_error(exc) from exc
    finally:
        src.close()
    return CopyReport(
        instance_id=instance_id,
        version=int(meta.get("version", 0)),
        rows=counts.get("rows", 0) - counts.get("tombstones", 0),
        tombstones=counts.get("tombstones", 0),
        clients=counts.get("clients", 0),
        jobs=counts.get("jobs", 0),
        replaced=old is not None,
    )
