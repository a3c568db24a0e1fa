"""Contract: a windowed reset — every row of the tables that are not windowed, the latest N
rows of each windowed table (per namespace) within a byte budget, and the floor of each window
that left older rows out (storage/windows.py)."""

from __future__ import annotations

import tracemalloc
from typing import Any

import orjson

from synced_store.protocol.ops import op_text
from synced_store.storage.base import InstanceStore, WriterTx
from synced_store.types import EntryKey, RowKey

from .helpers import delete, in_tx, put

MINE = ("", "u:alice")


async def _reset(
    store: InstanceStore, windows: dict[str, int], window_bytes: int = 1 << 20, part: int = 300
) -> tuple[list[tuple[str, str, str]], dict[tuple[str, str], EntryKey]]:
    cu = store.catch_up(
        None, namespaces=MINE, encode=op_text, windows=windows, window_bytes=window_bytes
    )
    got: list[dict[str, Any]] = []
    try:
        while True:
            ops = await cu.next_part(part)  # small parts: the skip crosses part boundaries
            if not ops:
                break
            got.extend(orjson.loads(op) for op in ops)
    finally:
        await cu.close()
    assert cu.reset
    return sorted((op.get("ns", ""), op["t"], op["k"]) for op in got), cu.windows.floors


async def test_a_reset_sends_the_latest_rows_of_windowed_tables(store: InstanceStore) -> None:
    for i in range(30):
        await put(store, f"m{i:02d}", {"i": i}, sk=f"{i:04d}", table="msgs")
    for i in range(3):
        await put(store, f"p{i}", {"i": i}, sk=f"{i:04d}", table="msgs", ns="u:alice")
        await put(store, f"x{i}", table="msgs", ns="u:bob")
    await put(store, "a", table="aaa")  # tables before and after the windowed one
    await put(store, "z", table="zzz")
    await delete(store, "m29", table="msgs")  # the newest live rows count, not tombstones
    rows, floors = await _reset(store, {"msgs": 4})
    assert rows == sorted(
        [("", "aaa", "a"), ("", "zzz", "z")]
        + [("", "msgs", f"m{i}") for i in (25, 26, 27, 28)]
        + [("u:alice", "msgs", f"p{i}") for i in range(3)]
    )
    # The public window left rows out; the private one holds the whole table.
    assert floors == {("", "msgs"): EntryKey("0025", "m25")}


async def test_the_byte_budget_cuts_windows_but_sends_one_row_each(store: InstanceStore) -> None:
    for i in range(10):
        await put(store, f"m{i}", {"text": "x" * 200}, sk=f"{i:04d}", table="msgs")
        await put(store, f"n{i}", {"text": "y" * 200}, sk=f"{i:04d}", table="news")
    rows, floors = await _reset(store, {"msgs": 5, "news": 5}, window_bytes=500)
    assert rows == [("", "msgs", "m8"), ("", "msgs", "m9"), ("", "news", "n9")]
    assert floors == {("", "msgs"): EntryKey("0008", "m8"), ("", "news"): EntryKey("0009", "n9")}


async def test_without_windows_a_reset_is_unchanged(store: InstanceStore) -> None:
    for i in range(6):
        await put(store, f"m{i}", sk=f"{i:04d}", table="msgs")
    rows, floors = await _reset(store, {})
    assert len(rows) == 6
    assert floors == {}


async def test_a_window_of_large_rows_reads_only_up_to_the_budget(store: InstanceStore) -> None:
    """Rows past the byte budget are never read: a window of 80 rows of 400 kB with a budget of
    1 MiB holds about 3 of them in memory (a few copies each), not 80 (32 MB)."""
    big = {"text": "x" * 400_000}

    async def write(tx: WriterTx) -> None:
        data = orjson.dumps(big)
        for i in range(80):
            await tx.write(RowKey("", "msgs", f"m{i:02d}"), f"{i:04d}", data, tx.version + 1)

    await in_tx(store, write, bump=True)
    tracemalloc.start()
    try:
        rows, floors = await _reset(store, {"msgs": 80}, window_bytes=1 << 20, part=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == [("", "msgs", f"m{i:02d}") for i in (77, 78, 79)]
    assert floors == {("", "msgs"): EntryKey("0077", "m77")}
    assert peak < 12 << 20
