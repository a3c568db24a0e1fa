"""MemoryStore: ordered rows per (namespace, table), safe iteration, bulk load."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from synced_store.core.store import MemoryStore
from synced_store.types import EntryKey, RowKey


def rk(item: str, table: str = "t", ns: str = "") -> RowKey:
    return RowKey(ns, table, item)


def scan(
    store: MemoryStore,
    start: EntryKey | None = None,
    *,
    exclusive: bool = False,
    reverse: bool = False,
    table: str = "t",
    ns: str = "",
) -> list[tuple[str, str]]:
    return [
        (ek.sort_key, ek.item_key)
        for ek, _ in store.iterate(ns, table, start, exclusive=exclusive, reverse=reverse)
    ]


@pytest.fixture
def store() -> MemoryStore:
    s = MemoryStore()
    # Deliberately inserted out of order.
    s.put(rk("b"), "2", "vb")
    s.put(rk("a"), "2", "va")
    s.put(rk("z"), "1", "vz")
    s.put(rk("c"), "", "vc")
    return s


def test_get_put_and_replace(store: MemoryStore) -> None:
    assert store.get(rk("a")) == ("2", "va")
    assert store.get(rk("missing")) is None
    assert store.get(rk("a", table="other")) is None
    store.put(rk("a"), "2", "va2")
    assert store.get(rk("a")) == ("2", "va2")
    assert store.count("", "t") == 4


def test_iteration_order_is_sort_key_then_item_key(store: MemoryStore) -> None:
    assert scan(store) == [("", "c"), ("1", "z"), ("2", "a"), ("2", "b")]
    values = [v for _, v in store.iterate("", "t", None, exclusive=False, reverse=False)]
    assert values == ["vc", "vz", "va", "vb"]


def test_reverse_iteration(store: MemoryStore) -> None:
    assert scan(store, reverse=True) == [("2", "b"), ("2", "a"), ("1", "z"), ("", "c")]


def test_changing_the_sort_key_moves_the_row(store: MemoryStore) -> None:
    store.put(rk("c"), "3", "vc2")
    assert scan(store) == [("1", "z"), ("2", "a"), ("2", "b"), ("3", "c")]
    assert store.get(rk("c")) == ("3", "vc2")
    store.put(rk("c"), "0", "vc3")
    assert scan(store) == [("0", "c"), ("1", "z"), ("2", "a"), ("2", "b")]
    assert store.count("", "t") == 4


def test_delete(store: MemoryStore) -> None:
    store.delete(rk("a"))
    assert store.get(rk("a")) is None
    assert scan(store) == [("", "c"), ("1", "z"), ("2", "b")]
    store.delete(rk("a"))  # absent: no-op
    store.delete(rk("x", table="no-such-table"))  # unknown table: no-op
    assert store.count() == 3


@pytest.mark.parametrize(
    ("start", "exclusive", "reverse", "expected"),
    [
        (EntryKey("2", "a"), False, False, [("2", "a"), ("2", "b")]),
        (EntryKey("2", "a"), True, False, [("2", "b")]),
        (EntryKey("1", "zz"), False, False, [("2", "a"), ("2", "b")]),  # between rows
        (EntryKey("1", "zz"), True, False, [("2", "a"), ("2", "b")]),
        (EntryKey("2", "a"), False, True, [("2", "a"), ("1", "z"), ("", "c")]),
        (EntryKey("2", "a"), True, True, [("1", "z"), ("", "c")]),
        (EntryKey("1", "zz"), False, True, [("1", "z"), ("", "c")]),
        (EntryKey("1", "zz"), True, True, [("1", "z"), ("", "c")]),
        (EntryKey("9", ""), False, False, []),
        (EntryKey("", ""), True, True, []),
    ],
)
def test_start_inclusive_and_exclusive(
    store: MemoryStore,
    start: EntryKey,
    exclusive: bool,
    reverse: bool,
    expected: list[tuple[str, str]],
) -> None:
    assert scan(store, start, exclusive=exclusive, reverse=reverse) == expected


def test_tables_and_namespaces_are_separate(store: MemoryStore) -> None:
    store.put(rk("a", ns="u:bob"), "", 1)
    store.put(rk("a", table="u"), "", 2)
    assert scan(store, ns="u:bob") == [("", "a")]
    assert scan(store, table="u") == [("", "a")]
    assert scan(store, table="nope") == []
    assert store.count("u:bob", "t") == 1
    assert store.count("", "t") == 4
    assert store.count("", "nope") == 0
    assert store.count() == 6
    assert sorted(store.rows()) == sorted(
        [
            (rk("a"), "2", "va"),
            (rk("b"), "2", "vb"),
            (rk("z"), "1", "vz"),
            (rk("c"), "", "vc"),
            (rk("a", ns="u:bob"), "", 1),
            (rk("a", table="u"), "", 2),
        ]
    )


def test_count_by_namespace_only(store: MemoryStore) -> None:
    store.put(rk("a", ns="u:bob"), "", 1)
    store.put(rk("b", table="u", ns="u:bob"), "", 1)
    assert store.count("u:bob") == 2
    assert store.count("") == 4


def test_clear(store: MemoryStore) -> None:
    store.clear()
    assert store.count() == 0
    assert scan(store) == []
    assert store.get(rk("a")) is None


# -- modifications while iterating ----------------------------------------------------------


def letters(n: int) -> MemoryStore:
    s = MemoryStore()
    for c in "abcdefghij"[:n]:
        s.put(rk(c), "", c)
    return s


def test_forward_iteration_survives_deleting_the_current_row() -> None:
    s = letters(5)
    seen = []
    for ek, _ in s.iterate("", "t", None, exclusive=False, reverse=False):
        seen.append(ek.item_key)
        s.delete(rk(ek.item_key))
    assert seen == ["a", "b", "c", "d", "e"]
    assert s.count() == 0


def test_reverse_iteration_survives_deleting_the_current_row() -> None:
    s = letters(5)
    seen = []
    for ek, _ in s.iterate("", "t", None, exclusive=False, reverse=True):
        seen.append(ek.item_key)
        s.delete(rk(ek.item_key))
    assert seen == ["e", "d", "c", "b", "a"]


def test_forward_iteration_sees_inserts_ahead_and_skips_inserts_behind() -> None:
    s = letters(4)  # a b c d
    seen = []
    for ek, _ in s.iterate("", "t", None, exclusive=False, reverse=False):
        seen.append(ek.item_key)
        if ek.item_key == "b":
            s.put(rk("a0"), "", "behind")
            s.put(rk("bb"), "", "ahead")
            s.delete(rk("c"))
    assert seen == ["a", "b", "bb", "d"]


def test_reverse_iteration_sees_inserts_ahead_and_skips_inserts_behind() -> None:
    s = letters(4)  # d c b a
    seen = []
    for ek, _ in s.iterate("", "t", None, exclusive=False, reverse=True):
        seen.append(ek.item_key)
        if ek.item_key == "c":
            s.put(rk("cc"), "", "behind")
            s.put(rk("bb"), "", "ahead")
            s.delete(rk("b"))
    assert seen == ["d", "c", "bb", "a"]


def test_iteration_sees_a_value_replaced_ahead() -> None:
    s = letters(3)
    seen = []
    for ek, v in s.iterate("", "t", None, exclusive=False, reverse=False):
        seen.append((ek.item_key, v))
        if ek.item_key == "a":
            s.put(rk("c"), "", "new")
    assert seen == [("a", "a"), ("b", "b"), ("c", "new")]


def test_iteration_with_many_deletes_ahead_does_not_skip_survivors() -> None:
    s = letters(10)
    seen = []
    for ek, _ in s.iterate("", "t", None, exclusive=False, reverse=False):
        seen.append(ek.item_key)
        if ek.item_key == "b":
            for c in "cdefg":
                s.delete(rk(c))
    assert seen == ["a", "b", "h", "i", "j"]


def test_moving_the_current_row_behind_does_not_repeat_or_skip() -> None:
    s = letters(4)
    seen = []
    for ek, _ in s.iterate("", "t", None, exclusive=False, reverse=False):
        seen.append(ek.item_key)
        if ek.item_key == "c":
            s.put(rk("c"), "", "same position")  # value only: no reordering
            s.put(rk("b"), "0", "moved behind")  # the sort key "" < "0": moves to the end
    assert seen == ["a", "b", "c", "d", "b"]


# -- load ----------------------------------------------------------------------------------


def test_load_bulk_inserts_in_order() -> None:
    s = MemoryStore()
    s.load([(rk("b"), "1", 1), (rk("a"), "1", 2), (rk("c"), "0", 3), (rk("x", "u"), "", 4)])
    assert scan(s) == [("0", "c"), ("1", "a"), ("1", "b")]
    assert scan(s, table="u") == [("", "x")]
    assert s.count() == 4
    assert s.get(rk("a")) == ("1", 2)


def test_load_into_a_filled_store_replaces_and_moves_rows() -> None:
    s = MemoryStore()
    s.put(rk("a"), "5", "old")
    s.put(rk("b"), "5", "keep")
    s.load([(rk("a"), "0", "new"), (rk("b"), "5", "kept"), (rk("c"), "9", "c")])
    assert scan(s) == [("0", "a"), ("5", "b"), ("9", "c")]
    assert s.get(rk("a")) == ("0", "new")
    assert s.get(rk("b")) == ("5", "kept")
    assert s.count("", "t") == 3
    # A later put / delete still finds the rows the load placed.
    s.put(rk("a"), "7", "moved")
    s.delete(rk("c"))
    assert scan(s) == [("5", "b"), ("7", "a")]


def test_load_with_a_key_twice_keeps_the_last() -> None:
    s = MemoryStore()
    s.load([(rk("a"), "1", 1), (rk("a"), "2", 2), (rk("a"), "2", 3)])
    assert scan(s) == [("2", "a")]
    assert s.get(rk("a")) == ("2", 3)


def test_iteration_survives_a_load_mid_iteration() -> None:
    s = letters(3)
    seen = []
    for ek, _ in s.iterate("", "t", None, exclusive=False, reverse=False):
        seen.append(ek.item_key)
        if ek.item_key == "a":
            s.load([(rk("aa"), "", 0), (rk("0"), "", 0)])
    assert seen == ["a", "aa", "b", "c"]


# -- model-based property test --------------------------------------------------------------

ITEMS = st.sampled_from(["a", "b", "c", "d", "e", "f"])
SORT_KEYS = st.sampled_from(["", "0", "1", "1a", "2"])
TABLES = st.sampled_from([("", "t"), ("", "u"), ("u:x", "t")])
STARTS = st.none() | st.builds(EntryKey, SORT_KEYS, ITEMS | st.just(""))


class StoreMachine(RuleBasedStateMachine):
    """MemoryStore against a dict + sorted() model."""

    def __init__(self) -> None:
        super().__init__()
        self.store = MemoryStore()
        self.model: dict[RowKey, tuple[str, Any]] = {}

    def expected(
        self, tk: tuple[str, str], start: EntryKey | None, exclusive: bool, reverse: bool
    ) -> list[tuple[EntryKey, Any]]:
        rows = sorted(
            (EntryKey(sk, k.item), v) for k, (sk, v) in self.model.items() if (k.ns, k.table) == tk
        )
        if reverse:
            rows.reverse()
        if start is None:
            return rows
        if reverse:
            return [r for r in rows if (r[0] < start if exclusive else r[0] <= start)]
        return [r for r in rows if (r[0] > start if exclusive else r[0] >= start)]

    @rule(tk=TABLES, item=ITEMS, sk=SORT_KEYS, value=st.integers(0, 9))
    def put(self, tk: tuple[str, str], item: str, sk: str, value: int) -> None:
        key = RowKey(tk[0], tk[1], item)
        self.store.put(key, sk, value)
        self.model[key] = (sk, value)

    @rule(tk=TABLES, item=ITEMS)
    def delete(self, tk: tuple[str, str], item: str) -> None:
        key = RowKey(tk[0], tk[1], item)
        self.store.delete(key)
        self.model.pop(key, None)

    @rule(
        rows=st.lists(st.tuples(TABLES, ITEMS, SORT_KEYS, st.integers(0, 9)), max_size=8),
    )
    def load(self, rows: list[tuple[tuple[str, str], str, str, int]]) -> None:
        loaded = [(RowKey(tk[0], tk[1], item), sk, v) for tk, item, sk, v in rows]
        self.store.load(loaded)
        for key, sk, v in loaded:
            self.model[key] = (sk, v)

    @precondition(lambda self: len(self.model) > 3)
    @rule()
    def clear(self) -> None:
        self.store.clear()
        self.model.clear()

    @rule(tk=TABLES, start=STARTS, exclusive=st.booleans(), reverse=st.booleans())
    def iterate(
        self, tk: tuple[str, str], start: EntryKey | None, exclusive: bool, reverse: bool
    ) -> None:
        got = list(self.store.iterate(tk[0], tk[1], start, exclusive=exclusive, reverse=reverse))
        assert got == self.expected(tk, start, exclusive, reverse)

    @rule(
        tk=TABLES,
        reverse=st.booleans(),
        at=st.integers(0, 5),
        item=ITEMS,
        sk=SORT_KEYS,
        delete=st.booleans(),
    )
    def iterate_while_writing(
        self, tk: tuple[str, str], reverse: bool, at: int, item: str, sk: str, delete: bool
    ) -> None:
        """One write mid-iteration: rows untouched by it are each seen exactly once, in order."""
        key = RowKey(tk[0], tk[1], item)
        before = self.expected(tk, None, False, reverse)
        seen: list[EntryKey] = []
        for i, (ek, _) in enumerate(
            self.store.iterate(tk[0], tk[1], None, exclusive=False, reverse=reverse)
        ):
            seen.append(ek)
            if i == at:
                if delete:
                    self.store.delete(key)
                    self.model.pop(key, None)
                else:
                    self.store.put(key, sk, -1)
                    self.model[key] = (sk, -1)
        untouched = [ek for ek, _ in before if ek.item_key != item]
        assert [ek for ek in seen if ek.item_key != item] == untouched

    @invariant()
    def same_rows_and_counts(self) -> None:
        assert sorted(self.store.rows()) == sorted((k, sk, v) for k, (sk, v) in self.model.items())
        assert self.store.count() == len(self.model)
        for ns, t in [("", "t"), ("", "u"), ("u:x", "t")]:
            n = sum(1 for k in self.model if (k.ns, k.table) == (ns, t))
            assert self.store.count(ns, t) == n
        for key, row in self.model.items():
            assert self.store.get(key) == row


TestStoreAgainstModel = StoreMachine.TestCase
TestStoreAgainstModel.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
