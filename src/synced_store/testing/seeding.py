"""``seed_instance``: an instance's database with given rows, written straight to storage.

Like the spec's ``seed.syncedStoreInstance``, it bypasses mutators, authorization, hooks and
fan-out: the rows are simply there when the server opens the instance. With an older
``schema_version`` the rows are stored as that version's data (not validated against today's
models), so the server runs the migrations when it opens the instance: a migration test.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core.context import SEQ_TABLE
from ..core.keys import PUBLIC, SERVER_ONLY, check_depth, check_key, encode_value, private_ns
from ..errors import SchemaError
from ..schema import BackendConfig
from ..storage.sqlite import SqliteInstanceStore, instance_path, validate_instance_id
from ..types import EntryKey, RowKey

__all__ = ["Rows", "seed_instance"]

#: ``{table: {item_key or EntryKey(sort_key, item_key): value}}``.
Rows = Mapping[str, Mapping[str | EntryKey, Any]]


def _encoded(backend: BackendConfig, key: RowKey, value: Any, validate: bool) -> tuple[bytes, Any]:
    if validate and key.table != SEQ_TABLE:
        tdef = backend.schema.table_def(key.table)  # UnknownNameError for an unknown table
        value, data = tdef.validate_encoded(key.table, key.item, value)
        return data, value
    # Data of an older schema: stored as given (it may not match today's models or tables).
    check_depth(value, what=f"value for {key.table}/{key.item}")
    return encode_value(key, value), value


async def seed_instance(
    backend: BackendConfig,
    data_dir: str | Path,
    instance_id: str = "test",
    *,
    rows: Rows | None = None,
    private: Mapping[str, Rows] | None = None,
    server_only: Rows | None = None,
    schema_version: int | None = None,
) -> int:
    """Write rows into instance ``instance_id`` under ``data_dir`` (created if missing).

    Args:
        backend: the app; rows are validated against its table models unless
            ``schema_version`` is an older version.
        rows: public rows, ``{table: {key: value}}``; a key is an item key or an
            ``EntryKey(sort_key, item_key)``. The ``$seq`` table seeds
            ``get_next_sort_key`` counters (``{"$seq": {"todos": 5}}``).
        private: ``{user_id: rows}``: each user's private rows.
        server_only: rows of the server-only tier.
        schema_version: the schema version the rows belong to (default: the backend's). Older
            than the backend's: the server migrates them when it opens the instance.

    Returns the instance version the rows were written at. The server must not have the
    instance open (seed before the first client connects).
    """
    validate_instance_id(instance_id)
    current = backend.schema.schema_version
    version_of_data = current if schema_version is None else schema_version
    if version_of_data > current:
        raise SchemaError(
            f"schema_version {version_of_data} is newer than the backend's ({current})"
        )
    validate = version_of_data == current
    tiers: list[tuple[str, Rows]] = [(PUBLIC, rows or {}), (SERVER_ONLY, server_only or {})]
    tiers += [(private_ns(user), r) for user, r in (private or {}).items()]
    store = SqliteInstanceStore(instance_path(Path(data_dir), instance_id))
    try:
        tx = await store.begin()
        version = tx.version + 1
        try:
            for ns, table_rows in tiers:
                for table, items in table_rows.items():
                    for key, value in items.items():
                        sort_key, item_key = (
                            (key.sort_key, key.item_key) if isinstance(key, EntryKey) else ("", key)
                        )
                        check_key(table, item_key, sort_key)
                        rk = RowKey(ns, table, item_key)
                        data, _ = _encoded(backend, rk, value, validate)
                        await tx.write(rk, sort_key, data, version)
            if store.schema_version is None or schema_version is not None:
                await tx.set_schema_version(version_of_data)
            await tx.commit(version)
        except BaseException:
            await tx.rollback()
            raise
        return version
    finally:
        await store.close()
