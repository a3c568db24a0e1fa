"""Contract: rows — point reads, sort keys, scans in both directions from inclusive and
exclusive starts in bounded pages, namespaces and tables kept apart, tombstones, and values
kept byte for byte."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from synced_store.protocol.ops import op_text
from synced_store.storage.base import InstanceStore, RowReader, WriterTx
from synced_store.types import EntryKey

from .helpers import delete, in_tx, key, put

#: (item, sort key): scan order is by sort key, then item.
ROWS = [("e", "1"), ("a", "2"), ("c", "2"), ("b", "3"), ("d", "")]
ORDER = [("", "d"), ("1", "e"), ("2", "a"), ("2", "c"), ("3", "b")]


async def _fill(store: InstanceStore) -> None:
    await in_tx(store, _write_rows, bump=True)


def _keys(rows: list[tuple[EntryKey, Any]]) -> list[tuple[str, str]]:
    return [(ek.sort_key, ek.item_key) for ek, _ in rows]


async def _scan(r: RowReader, start: tuple[str, str] | None, **kw: Any) -> list[tuple[str, str]]:
    ek = None if start is None else EntryKey(*start)
    return _keys(await r.scan("", "t", ek, **kw))


async def _write_rows(tx: WriterTx) -> None:
    for item, sk in ROWS:
        await tx.write(key(item), sk, b'{"i":"' + item.encode() + b'"}', 1)
    await tx.write(key("x", table="other"), "", b"0", 1)
    await tx.write(key("y", ns="u:alice"), "", b"0", 1)


@pytest.fixture(params=["writer", "reader", "uncommitted", "mixed"])
async def rows(request: pytest.FixtureRequest, store: InstanceStore) -> Any:
    """The rows above, read through the writer's transaction or a committed reader; or
    written by the writer's own open transaction (all of them, or over older committed rows
    with other sort keys): a transaction reads its own writes in the same order."""
    if request.param in ("uncommitted", "mixed"):
        if request.param == "mixed":

            async def older(tx: WriterTx) -> None:
                for item, _ in ROWS[::2]:
                    await tx.write(key(item), "9", b"0", 1)
                await tx.write(key("gone"), "2", b"0", 1)

            await in_tx(store, older, bump=True)
        tx = await store.begin()
        if request.param == "mixed":
            await tx.remove(key("gone"), 2)
        await _write_rows(tx)
        yield tx
        await tx.rollback()
        return
    await _fill(store)
    if request.param == "writer":
        tx = await store.begin()
        yield tx
        await tx.rollback()
    else:
        reader = store.reader()
        yield reader
        await reader.close()


async def test_point_reads(rows: RowReader) -> None:
    assert await rows.read(key("a")) == ("2", {"i": "a"})
    assert await rows.read(key("d")) == ("", {"i": "d"})
    assert await rows.read(key("zz")) is None
    assert await rows.read(key("a", table="other")) is None
    assert await rows.read(key("a", ns="u:alice")) is None
    assert await rows.read(key("y", ns="u:alice")) == ("", 0)


@pytest.mark.parametrize(
    ("start", "exclusive", "reverse", "want"),
    [
        (None, True, False, ORDER),
        (None, True, True, ORDER[::-1]),
        (("2", "a"), False, False, ORDER[2:]),
        (("2", "a"), True, False, ORDER[3:]),
        (("2", "c"), False, True, ORDER[:4][::-1]),
        (("2", "c"), True, True, ORDER[:3][::-1]),
        (("2", "b"), True, False, ORDER[3:]),  # a start between rows
        (("2", "b"), False, True, ORDER[:3][::-1]),
        (("9", ""), False, False, []),
        (("", ""), True, True, []),
    ],
)
async def test_scans(
    rows: RowReader,
    start: tuple[str, str] | None,
    exclusive: bool,
    reverse: bool,
    want: list[tuple[str, str]],
) -> None:
    got = await _scan(rows, start, exclusive=exclusive, reverse=reverse, limit=100)
    assert got == want


async def test_scans_stop_at_their_limit_and_page_on(rows: RowReader) -> None:
    for reverse in (False, True):
        order = ORDER[::-1] if reverse else ORDER
        seen: list[tuple[str, str]] = []
        start = None
        while True:
            page = await _scan(rows, start, exclusive=True, reverse=reverse, limit=2)
            seen += page
            if len(page) < 2:
                break
            start = page[-1]
        assert seen == order


async def test_scan_values_are_the_rows(rows: RowReader) -> None:
    got = await rows.scan("", "t", None, exclusive=True, reverse=False, limit=2)
    assert got == [(EntryKey("", "d"), {"i": "d"}), (EntryKey("1", "e"), {"i": "e"})]


async def test_a_write_moves_a_row_to_its_new_sort_key(store: InstanceStore) -> None:
    await _fill(store)
    await put(store, "a", {"i": "a2"}, sk="0")
    tx = await store.begin()
    assert await tx.read(key("a")) == ("0", {"i": "a2"})
    got = await tx.scan("", "t", None, exclusive=True, reverse=False, limit=10)
    assert _keys(got) == [("", "d"), ("0", "a"), ("1", "e"), ("2", "c"), ("3", "b")]
    await tx.rollback()


async def test_tombstones(store: InstanceStore) -> None:
    await put(store, "a")
    v = await delete(store, "a")
    assert v == 2
    tx = await store.begin()
    assert await tx.read(key("a")) is None
    assert await tx.scan("", "t", None, exclusive=True, reverse=False, limit=10) == []
    assert await tx.remove(key("a"), 3) is False  # already a tombstone
    assert await tx.remove(key("never"), 3) is False
    await tx.write(key("a"), "", b'{"back":1}', 3)  # a write revives it
    assert await tx.remove(key("a"), 3) is True
    await tx.write(key("a"), "", b'{"back":2}', 3)
    await tx.commit(3)
    reader = store.reader()
    try:
        assert await reader.read(key("a")) == ("", {"back": 2})
    finally:
        await reader.close()


async def test_values_are_kept_byte_for_byte(store: InstanceStore) -> None:
    # Key order, spacing of the writer's own encoding, escapes and big numbers: a catch-up
    # splices the stored text into the wire, so it must come back exactly as written.
    raw = '{"z":1,"a":[1.5,-0.0,1e+300],"s":"\\u00e9\\n","n":null,"big":9007199254740993}'
    await in_tx(store, lambda tx: tx.write(key("v"), "", raw.encode(), 1), bump=True)
    cu = store.catch_up(None, namespaces=("",), encode=op_text)
    try:
        ops = await cu.next_part(1 << 20)
    finally:
        await cu.close()
    assert ops == ['{"op":"set","t":"t","k":"v","v":' + raw + "}"]


async def test_keys_sort_by_code_point(store: InstanceStore) -> None:
    """Every client orders keys by code point; so must every backend (not by a locale)."""
    items = ["b", "B", "a", "Z", "é", "e", "😀", "ﬀ", "a b", "ab", ""]

    async def write(tx: WriterTx) -> None:
        for i, item in enumerate(items):
            await tx.write(key(item or "empty"), item, str(i).encode(), 1)

    await in_tx(store, write, bump=True)
    reader = store.reader()
    try:
        got = await reader.scan("", "t", None, exclusive=False, reverse=False, limit=100)
    finally:
        await reader.close()
    assert [ek.sort_key for ek, _ in got] == sorted(items)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("exclusive", [False, True])
@pytest.mark.parametrize("start", [("a\x00", ""), ("a\x00z", "q"), ("a", "m\x00"), ("", "\x00")])
async def test_reads_and_scans_of_keys_holding_nul_find_what_is_stored(
    store: InstanceStore, start: tuple[str, str], exclusive: bool, reverse: bool
) -> None:
    """No key stored holds U+0000 (no backend takes one), but reads and scan bounds may: a
    read finds nothing, a scan starts where the bound falls among the stored keys."""
    stored = [("a", "m"), ("a", "m\x01"), ("a", "n"), ("a\x01", "x"), ("ab", "a"), ("b", "")]

    async def write(tx: WriterTx) -> None:
        for sk, item in stored:
            await tx.write(key(item), sk, b"1", 1)

    await in_tx(store, write, bump=True)
    entries = sorted(stored)
    if reverse:
        want = [e for e in reversed(entries) if e < start or (not exclusive and e == start)]
    else:
        want = [e for e in entries if e > start or (not exclusive and e == start)]
    for reader in (store.reader(), await store.begin()):
        try:
            assert await reader.read(key("m\x00")) is None
            assert await reader.read(key("m", ns="u:a\x00")) is None
            got = await reader.scan(
                "", "t", EntryKey(*start), exclusive=exclusive, reverse=reverse, limit=100
            )
            assert _keys(got) == want
            assert (
                await reader.scan("u:\x00", "t", None, exclusive=False, reverse=False, limit=9)
                == []
            )
        finally:
            if hasattr(reader, "rollback"):
                await reader.rollback()
            else:
                await reader.close()


async def _big_rows(store: InstanceStore, n: int, size: int, text: str = "x") -> None:
    """``n`` rows whose values are ``size`` bytes of JSON each (``text`` one character)."""
    chars = (size - 4) // len(text.encode())

    async def write(tx: WriterTx) -> None:
        for i in range(n):
            data = b'"' + (text * chars).encode() + b'"'
            assert len(data) == size - 2
            await tx.write(key(f"r{i:02d}"), f"{i:02d}", data, 1)

    await in_tx(store, write, bump=True)


@pytest.mark.parametrize("reverse", [False, True])
async def test_a_committed_scan_stops_at_its_byte_budget(
    store: InstanceStore, reverse: bool
) -> None:
    await _big_rows(store, 10, 102)  # values of 100 bytes
    order = [f"r{i:02d}" for i in range(10)]
    if reverse:
        order.reverse()
    reader = store.reader()
    try:

        async def items(start: str | None = None, **kw: Any) -> list[str]:
            ek = None if start is None else EntryKey(start[1:], start)
            rows = await reader.scan(
                "", "t", ek, exclusive=True, reverse=reverse, limit=kw.pop("limit", 100), **kw
            )
            return [e.item_key for e, _ in rows]

        # The row that reaches the budget is the last one read.
        assert await items(max_bytes=250) == order[:3]
        assert await items(max_bytes=300) == order[:3]
        assert await items(max_bytes=301) == order[:4]
        assert await items(max_bytes=1) == order[:1]  # at least one row
        assert await items(max_bytes=10**9) == order
        assert await items(max_bytes=250, limit=2) == order[:2]  # the limit still applies
        assert await items(order[2], max_bytes=150) == order[3:5]  # from a start
        assert await items(order[-1], max_bytes=150) == []
        assert await items() == order  # without a budget: every row up to the limit
    finally:
        await reader.close()


async def test_a_scan_budget_counts_utf8_bytes(store: InstanceStore) -> None:
    await _big_rows(store, 4, 202, "é")  # 200 bytes, 99 characters each
    reader = store.reader()
    try:
        rows = await reader.scan(
            "", "t", None, exclusive=True, reverse=False, limit=9, max_bytes=300
        )
        assert [e.item_key for e, _ in rows] == ["r00", "r01"]
        assert rows[0][1] == "é" * 99
    finally:
        await reader.close()


async def test_a_reader_sees_only_committed_rows_before_during_and_after_a_transaction(
    store: InstanceStore,
) -> None:
    """A reader's point read sees committed data whatever the writer is doing (SQLite reads
    through the idle writer's connection when no transaction is open on it, else through a
    connection of its own: sqlite_rows.py's SqliteReader)."""
    await put(store, "a", {"v": 1})
    reader = store.reader()
    try:
        assert await reader.read(key("a")) == ("", {"v": 1})
        tx = await store.begin()
        await tx.write(key("a"), "", orjson.dumps({"v": 2}), tx.version + 1)
        await tx.write(key("b"), "", orjson.dumps({"v": 3}), tx.version + 1)
        assert await reader.read(key("a")) == ("", {"v": 1})  # not the open transaction's
        assert await reader.read(key("b")) is None
        await tx.commit(tx.version + 1)
        assert await reader.read(key("a")) == ("", {"v": 2})
        assert await reader.read(key("b")) == ("", {"v": 3})
    finally:
        await reader.close()
    await store.close()
    reader = store.reader()  # a closed store's file is still readable
    try:
        assert await reader.read(key("b")) == ("", {"v": 3})
    finally:
        await reader.close()
