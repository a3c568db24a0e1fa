"""Small steps of the writer, as the server takes them (one transaction each)."""

from __future__ import annotations

import inspect
from typing import Any

import orjson

from synced_store.storage.base import InstanceStore, WriterTx
from synced_store.types import RowKey

DAY = 86_400.0


def key(item: str, table: str = "t", ns: str = "") -> RowKey:
    return RowKey(ns, table, item)


async def in_tx(store: InstanceStore, fn: Any, *, bump: bool = False) -> Any:
    """``fn(tx)`` in one writer transaction, committed (at a new version with ``bump``)."""
    tx = await store.begin()
    try:
        out = fn(tx)
        if inspect.isawaitable(out):
            out = await out
        await tx.commit(tx.version + 1 if bump else tx.version)
    except BaseException:
        await tx.rollback()
        raise
    return out


async def put(
    store: InstanceStore,
    item: str,
    value: Any = None,
    *,
    sk: str = "",
    table: str = "t",
    ns: str = "",
) -> int:
    """Write one row in a commit of its own; returns the new version."""
    data = orjson.dumps({"v": 1} if value is None else value)

    async def write(tx: WriterTx) -> None:
        await tx.write(key(item, table, ns), sk, data, tx.version + 1)

    await in_tx(store, write, bump=True)
    return store.version


async def delete(store: InstanceStore, item: str, *, table: str = "t", ns: str = "") -> int:
    """Tombstone one row in a commit of its own; returns the new version."""
    await in_tx(store, lambda tx: tx.remove(key(item, table, ns), tx.version + 1), bump=True)
    return store.version
