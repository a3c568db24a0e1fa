"""``scan(around_cursor=...)`` (core/around.py): rows around an anchor, ascending, on the
client; refused on the server."""

from __future__ import annotations

from typing import Any

import pytest

from synced_store import EntryKey, ValidationError
from synced_store.core.context import MutationContext

from .app import AsyncMemoryTx, MemoryTx, schema
from .test_context import fill_items


@pytest.fixture
def ctx() -> MutationContext:
    return MutationContext(schema, MemoryTx(), "alice", is_server=False)


def items(rows: list[tuple[EntryKey, Any]]) -> list[str]:
    return [ek.item_key for ek, _ in rows]


@pytest.mark.parametrize(
    ("cursor", "spec", "prefix", "expected"),
    [
        # Scan order: a1 b1 a2(s1) b2(s1) a3(s2) c1(t1)
        (EntryKey("s1", "b2"), {"before": 2, "after": 1}, None, ["b1", "a2", "b2", "a3"]),
        (EntryKey("s1", "b2"), {"before": 0, "after": 0}, None, ["b2"]),
        (EntryKey("s1", "zz"), {"before": 1, "after": 1}, None, ["b2", "a3"]),  # no anchor
        (EntryKey("", "a1"), {"before": 3, "after": 9}, None, ["a1", "b1", "a2", "b2", "a3", "c1"]),
        ("$last", {"before": 3}, None, ["b2", "a3", "c1"]),
        ("$last", {"before": 2, "after": 5}, None, ["a3", "c1"]),
        (EntryKey("s1", "a2"), {"before": 5, "after": 5}, "a", ["a1", "a2", "a3"]),
        (EntryKey("s1", "b2"), {"before": 5}, "a", ["a1", "a2"]),  # the anchor does not match
    ],
)
async def test_around_cursor(
    ctx: MutationContext, cursor: Any, spec: dict[str, int], prefix: Any, expected: list[str]
) -> None:
    await fill_items(ctx)
    rows = await ctx.table("items").scan(cursor=cursor, around_cursor=spec, prefix=prefix).entries()
    assert items(rows) == expected
    keys = await ctx.table("items").scan(cursor=cursor, around_cursor=spec, prefix=prefix).keys()
    assert [k.item_key for k in keys] == expected
    values = [
        v
        async for _, v in ctx.table("items").scan(cursor=cursor, around_cursor=spec, prefix=prefix)
    ]
    assert [v["text"] for v in values] == expected


async def test_around_cursor_is_client_only_and_checked(ctx: MutationContext) -> None:
    server = MutationContext(schema, AsyncMemoryTx(), "alice", is_server=True)
    with pytest.raises(ValidationError, match="client-only"):
        await server.table("items").scan(cursor="$last", around_cursor={"before": 1}).entries()
    with pytest.raises(ValidationError, match="non-negative"):
        await ctx.table("items").scan(cursor="$last", around_cursor={"before": -1}).entries()
    with pytest.raises(ValidationError, match="needs a cursor"):
        await ctx.table("items").scan(around_cursor={"before": 1}).entries()
