"""Contract: catch-ups — from scratch (a reset) or from a cookie, only the namespaces asked
for, in bounded parts, stopping at the version they began at, and a reset once compaction
forgot what a cookie would need."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from synced_store.protocol.ops import op_text
from synced_store.storage.base import InstanceStore, StorageBackend
from synced_store.storage.records import HistoryCompactedError

from .helpers import delete, in_tx, key, put

MINE = ("", "u:alice")


async def _read_all(
    store: InstanceStore, base: int | None, part: int = 1 << 20, ns: tuple[str, ...] = MINE
) -> tuple[bool, list[list[dict[str, Any]]], int]:
    """``(reset, parts as decoded ops, upto)`` of a whole catch-up."""
    cu = store.catch_up(base, namespaces=ns, encode=op_text)
    parts = []
    try:
        while True:
            ops = await cu.next_part(part)
            if not ops:
                assert cu.done
                break
            parts.append([orjson.loads(op) for op in ops])
    finally:
        await cu.close()
    return cu.reset, parts, cu.upto


def _keys(parts: list[list[dict[str, Any]]]) -> list[tuple[str, str, str]]:
    return [(op["op"], op.get("ns", ""), op["k"]) for part in parts for op in part]


async def test_from_scratch_every_live_row_of_the_namespaces(store: InstanceStore) -> None:
    await put(store, "b", {"n": 1}, sk="s1")
    await put(store, "a", {"n": 2})
    await put(store, "mine", {"n": 3}, ns="u:alice")
    await put(store, "theirs", {"n": 4}, ns="u:bob")
    await put(store, "hidden", {"n": 5}, ns="s")
    await put(store, "gone")
    await delete(store, "gone")
    reset, parts, upto = await _read_all(store, None)
    assert reset
    assert upto == store.version
    # Namespace by namespace, in the order asked; tombstones are not sent on a reset.
    assert _keys(parts) == [("set", "", "a"), ("set", "", "b"), ("set", "u:alice", "mine")]
    ops = {op["k"]: op for part in parts for op in part}
    assert ops["b"] == {"op": "set", "t": "t", "k": "b", "sk": "s1", "v": {"n": 1}}
    assert ops["mine"] == {"op": "set", "t": "t", "k": "mine", "ns": "u:alice", "v": {"n": 3}}


async def test_from_a_cookie_every_change_since(store: InstanceStore) -> None:
    await put(store, "old")
    await put(store, "changed")
    cookie = await put(store, "deleted")
    await put(store, "changed", {"n": 2})
    await delete(store, "deleted")
    await put(store, "theirs", ns="u:bob")
    await put(store, "new", ns="u:alice")
    reset, parts, _ = await _read_all(store, cookie)
    assert not reset
    assert _keys(parts) == [
        ("set", "", "changed"),
        ("del", "", "deleted"),
        ("set", "u:alice", "new"),
    ]
    # Up to date: nothing to send.
    reset, parts, _ = await _read_all(store, store.version)
    assert (reset, parts) == (False, [])


async def test_a_cookie_from_the_future_gets_a_reset(store: InstanceStore) -> None:
    await put(store, "a")
    reset, parts, _ = await _read_all(store, store.version + 5)
    assert reset
    assert _keys(parts) == [("set", "", "a")]


async def test_parts_are_bounded(store: InstanceStore) -> None:
    async def many(tx: Any) -> None:
        for i in range(40):
            await tx.write(key(f"r{i:02}"), "", orjson.dumps({"x": "y" * 100}), 1)

    await in_tx(store, many, bump=True)
    for base in (None, 0):
        _, parts, _ = await _read_all(store, base, part=500)
        assert len(parts) >= 8
        for part in parts:
            assert len(orjson.dumps(part)) < 500 + 200  # about one part, at most one row over
        assert sorted(op["k"] for part in parts for op in part) == [f"r{i:02}" for i in range(40)]


async def test_one_row_larger_than_a_part_still_travels(store: InstanceStore) -> None:
    await put(store, "big", {"x": "y" * 5000})
    await put(store, "small")
    _, parts, _ = await _read_all(store, None, part=100)
    assert [[op["k"] for op in part] for part in parts] == [["big"], ["small"]]


@pytest.mark.parametrize("base", [None, 0])
async def test_a_catch_up_stops_at_the_version_it_began_at(
    store: InstanceStore, base: int | None
) -> None:
    async def seed(tx: Any) -> None:
        for i in range(40):
            await tx.write(key(f"r{i:02}"), "", orjson.dumps({"n": 1, "x": "y" * 50}), 1)

    await in_tx(store, seed, bump=True)
    cu = store.catch_up(base, namespaces=MINE, encode=op_text)
    ops = []
    try:
        ops += [orjson.loads(op) for op in await cu.next_part(100)]
        # Commits after it began: changed, deleted and new rows.
        for i in range(20):
            await put(store, f"r{i:02}", {"n": 2})
        for i in range(20, 30):
            await delete(store, f"r{i:02}")
        await put(store, "new", {"n": 2})
        while part := await cu.next_part(100):
            ops += [orjson.loads(op) for op in part]
    finally:
        await cu.close()
    assert cu.upto == 1
    # The parts are the instance at ``upto``: nothing written after it (those commits travel
    # after the parts), every row untouched since exactly once.
    assert all(op["op"] == "set" and op["v"]["n"] == 1 for op in ops)
    keys = [op["k"] for op in ops]
    assert len(keys) == len(set(keys))
    assert {f"r{i:02}" for i in range(30, 40)} <= set(keys) <= {f"r{i:02}" for i in range(40)}


async def test_a_catch_up_from_a_cookie_older_than_the_horizon_is_a_reset(
    storage: StorageBackend, store: InstanceStore
) -> None:
    await put(store, "a")
    await put(store, "b")
    await delete(store, "a")
    # Another process (synced-store compact) forgets the tombstone behind this one's back.
    other = await storage.open_instance("room")
    try:
        assert await in_tx(other, lambda tx: tx.compact_tombstones(tx.version)) == 1
    finally:
        await other.close()
    assert store.horizon == 0  # this process's copy is stale
    cu = store.catch_up(1, namespaces=MINE, encode=op_text)
    try:
        ops = await cu.next_part(1 << 20)
    finally:
        await cu.close()
    assert cu.reset, "a cookie older than the horizon must get a reset, not miss a deletion"
    assert [orjson.loads(op)["k"] for op in ops] == ["b"]


async def test_compaction_during_a_catch_up_ends_it(store: InstanceStore) -> None:
    base = await put(store, "keep")
    for i in range(20):
        await put(store, f"r{i:02}", {"x": "y" * 100})
    await delete(store, "keep")
    cu = store.catch_up(base, namespaces=MINE, encode=op_text)
    try:
        assert await cu.next_part(300)  # the first part
        await in_tx(store, lambda tx: tx.compact_tombstones(tx.version))

        async def the_rest() -> None:
            while await cu.next_part(300):
                pass

        with pytest.raises(HistoryCompactedError) as stopped:
            await the_rest()
        assert stopped.value.transient  # the client reconnects and gets a reset
    finally:
        await cu.close()
