"""ReadSet: point reads, scanned ranges and which changes invalidate them."""

from __future__ import annotations

import pytest

from synced_store.core.readset import ReadSet
from synced_store.types import EntryKey, RowKey


def rk(item: str, table: str = "t", ns: str = "") -> RowKey:
    return RowKey(ns, table, item)


def test_empty_readset_is_falsy_and_intersects_nothing() -> None:
    rs = ReadSet()
    assert not rs
    assert not rs.intersects({rk("a"): ("", "")})
    assert not rs.intersects({})


def test_points() -> None:
    rs = ReadSet()
    rs.points.add(rk("a"))
    assert rs
    assert rs.intersects({rk("a"): (None, "")})
    assert rs.intersects({rk("b"): ("", ""), rk("a"): ("", None)})
    assert not rs.intersects({rk("b"): ("", "")})
    # Same item key in another table or namespace is another row.
    assert not rs.intersects({rk("a", table="u"): ("", "")})
    assert not rs.intersects({rk("a", ns="u:bob"): ("", "")})


def test_a_point_read_of_an_absent_row_sees_it_appear_and_vanish() -> None:
    rs = ReadSet()
    rs.points.add(rk("new"))
    assert rs.intersects({rk("new"): (None, "5")})
    assert rs.intersects({rk("new"): ("5", None)})


def test_add_range_is_truthy_and_keyed_by_table() -> None:
    rs = ReadSet()
    rs.add_range("", "t", None, None)
    rs.add_range("", "t", EntryKey("a", ""), EntryKey("b", ""))
    assert rs
    assert rs.ranges == {("", "t"): [(None, None), (EntryKey("a", ""), EntryKey("b", ""))]}


@pytest.mark.parametrize(
    ("low", "high", "sort_keys", "hit"),
    [
        # Unbounded on both sides: any row of the table.
        (None, None, ("x",), True),
        # Bounds are inclusive.
        (EntryKey("b", "k"), EntryKey("d", "k"), ("b",), True),
        (EntryKey("b", "k"), EntryKey("d", "k"), ("d",), True),
        (EntryKey("b", "l"), EntryKey("d", "k"), ("b",), False),  # (b, k) < low (b, l)
        (EntryKey("b", "k"), EntryKey("d", "j"), ("d",), False),  # (d, k) > high (d, j)
        (EntryKey("b", "k"), EntryKey("d", "k"), ("a",), False),
        (EntryKey("b", "k"), EntryKey("d", "k"), ("e",), False),
        (EntryKey("b", "k"), EntryKey("d", "k"), ("c",), True),
        # Open bounds.
        (None, EntryKey("c", ""), ("a",), True),
        (None, EntryKey("c", ""), ("c",), False),  # (c, k) > (c, "")
        (EntryKey("c", ""), None, ("z",), True),
        (EntryKey("c", ""), None, ("b",), False),
        # A row moving into the range (was outside, now inside).
        (EntryKey("b", ""), EntryKey("d", ""), ("a", "c"), True),
        # A row moving out of the range (was inside, now outside).
        (EntryKey("b", ""), EntryKey("d", ""), ("c", "z"), True),
        # A row moving from one side of the range to the other: never inside.
        (EntryKey("b", ""), EntryKey("d", ""), ("a", "z"), False),
        # Created / deleted rows: None is "absent" and never inside.
        (EntryKey("b", ""), EntryKey("d", ""), (None, "c"), True),
        (EntryKey("b", ""), EntryKey("d", ""), ("c", None), True),
        (EntryKey("b", ""), EntryKey("d", ""), (None, "z"), False),
        (None, None, (None,), False),
        (None, None, (None, None), False),
        # Several sort keys per change (e.g. confirm + rebase): any inside counts.
        (EntryKey("b", ""), EntryKey("d", ""), ("a", "z", None, "c"), True),
        (EntryKey("b", ""), EntryKey("d", ""), ("a", "z", None, "e"), False),
    ],
)
def test_ranges(
    low: EntryKey | None,
    high: EntryKey | None,
    sort_keys: tuple[str | None, ...],
    hit: bool,
) -> None:
    rs = ReadSet()
    rs.add_range("", "t", low, high)
    assert rs.intersects({rk("k"): sort_keys}) is hit


def test_ranges_only_match_their_own_table_and_namespace() -> None:
    rs = ReadSet()
    rs.add_range("", "t", None, None)
    assert not rs.intersects({rk("k", table="u"): ("",)})
    assert not rs.intersects({rk("k", ns="u:bob"): ("",)})
    assert rs.intersects({rk("k", table="u"): ("",), rk("k"): ("",)})


def test_any_of_several_ranges() -> None:
    rs = ReadSet()
    rs.add_range("", "t", EntryKey("a", ""), EntryKey("b", ""))
    rs.add_range("", "t", EntryKey("x", ""), EntryKey("y", ""))
    assert rs.intersects({rk("k"): ("x",)})
    assert rs.intersects({rk("k"): ("a",)})
    assert not rs.intersects({rk("k"): ("m",)})


def test_points_and_ranges_together() -> None:
    rs = ReadSet()
    rs.points.add(rk("p", table="u"))
    rs.add_range("", "t", EntryKey("a", ""), EntryKey("b", ""))
    assert rs.intersects({rk("p", table="u"): ("zzz",)})
    assert rs.intersects({rk("k"): ("a",)})
    assert not rs.intersects({rk("q", table="u"): ("a",), rk("k"): ("c",)})
