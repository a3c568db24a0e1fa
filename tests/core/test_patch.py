"""Patch ops (set / del / merge) and the append delta for growing strings."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synced_store import ProtocolError
from synced_store.core.patch import (
    MIN_APPEND_CHARS,
    apply_merge,
    del_op,
    make_merge,
    op_key,
    op_row,
    set_op,
)
from synced_store.protocol.codec import decode_server_message, encode, frame_json
from synced_store.protocol.messages import MergeOp
from synced_store.types import RowKey


def wire(op: Any) -> Any:
    """An op as it travels (JSON)."""
    return frame_json(encode(op))


def merge(**fields: Any) -> MergeOp:
    return MergeOp(t="msgs", k="m1", **fields)


def decode_op(op: Any) -> Any:
    """Decode an op the way a client receives it: inside a poke."""
    msg = decode_server_message(json.dumps({"type": "poke", "cookie": 1, "patch": [op]}))
    return msg.patch[0]  # type: ignore[union-attr]


PUB = RowKey("", "msgs", "m1")
PRIV = RowKey("u:bob", "msgs", "m1")
LONG = "x" * max(MIN_APPEND_CHARS, 16)


def test_set_op_omits_empty_ns_and_sk() -> None:
    assert wire(set_op(PUB, "", {"a": 1})) == {"op": "set", "t": "msgs", "k": "m1", "v": {"a": 1}}
    assert wire(set_op(PRIV, "s1", None)) == {
        "op": "set",
        "ns": "u:bob",
        "t": "msgs",
        "k": "m1",
        "sk": "s1",
        "v": None,
    }


def test_del_op() -> None:
    assert wire(del_op(PUB)) == {"op": "del", "t": "msgs", "k": "m1"}
    assert wire(del_op(PRIV)) == {"op": "del", "ns": "u:bob", "t": "msgs", "k": "m1"}


def test_op_key() -> None:
    assert op_key(set_op(PRIV, "s", 1)) == PRIV
    assert op_key(del_op(PUB)) == PUB


def test_op_row() -> None:
    assert op_row(set_op(PUB, "s", {"a": 1}), None) == ("s", {"a": 1})
    assert op_row(set_op(PUB, "", 1), ("old", 0)) == ("", 1)
    assert op_row(del_op(PUB), ("s", 1)) is None
    assert op_row(del_op(PUB), None) is None
    merge = make_merge(PUB, "s2", {"text": LONG}, {"text": LONG + "y"})
    assert merge is not None
    assert op_row(merge, ("s1", {"text": LONG})) == ("s2", {"text": LONG + "y"})


def test_make_merge_shape() -> None:
    old = {"text": LONG, "status": "streaming", "gone": 1, "same": [1]}
    new = {"text": LONG + " more", "status": "done", "added": True, "same": [1]}
    op = make_merge(PRIV, "sk", old, new)
    assert op is not None
    assert wire(op) == {
        "op": "merge",
        "ns": "u:bob",
        "t": "msgs",
        "k": "m1",
        "sk": "sk",
        "append": {"text": " more"},
        "set": {"status": "done", "added": True},
        "unset": ["gone"],
    }
    assert apply_merge(old, op) == new
    minimal = make_merge(PUB, "", {"text": LONG}, {"text": LONG + "!"})
    assert wire(minimal) == {"op": "merge", "t": "msgs", "k": "m1", "append": {"text": "!"}}


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({"text": LONG}, {"text": LONG}),  # nothing grew
        ({"text": LONG}, {"text": "y" + LONG}),  # prepended, not appended
        ({"text": LONG + "ab"}, {"text": LONG}),  # shrank
        ({"text": LONG}, {"text": 5}),
        ({"text": LONG}, {"other": LONG + "x"}),
        ("a string", "a string, longer"),
        ([LONG], [LONG + "x"]),
        ({"text": LONG}, None),
        (None, {"text": LONG}),
    ],
)
def test_make_merge_returns_none_without_an_append(old: Any, new: Any) -> None:
    assert make_merge(PUB, "", old, new) is None


def test_a_string_growing_from_empty_is_an_append() -> None:
    """A streamed reply's placeholder starts as ``""``: its first chunk is already a delta."""
    assert MIN_APPEND_CHARS == 0
    op = make_merge(
        PUB, "", {"text": "", "status": "incomplete"}, {"text": " Once", "status": "incomplete"}
    )
    assert wire(op) == {"op": "merge", "t": "msgs", "k": "m1", "append": {"text": " Once"}}


def test_apply_merge_does_not_mutate_its_input() -> None:
    old = {"text": LONG, "n": 1}
    op = merge(append={"text": "!"}, set={"n": 2}, unset=["missing"])
    assert apply_merge(old, op) == {"text": LONG + "!", "n": 2}
    assert old == {"text": LONG, "n": 1}


@pytest.mark.parametrize(
    ("old", "op", "match"),
    [
        ("not a dict", {"append": {"text": "x"}}, "not an object"),
        (None, {"append": {"text": "x"}}, "not an object"),
        ({"text": 5}, {"append": {"text": "x"}}, "non-string field 'text'"),
        ({}, {"append": {"text": "x"}}, "non-string field 'text'"),
    ],
)
def test_apply_merge_rejects_what_it_cannot_apply(old: Any, op: dict[str, Any], match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        apply_merge(old, merge(**op))


def test_merge_for_a_missing_row_is_a_protocol_error() -> None:
    op = make_merge(PUB, "", {"text": LONG}, {"text": LONG + "y"})
    assert op is not None
    with pytest.raises(ProtocolError, match="does not have"):
        op_row(op, None)


@pytest.mark.parametrize(
    "op",
    [
        {"op": "set", "k": "a", "v": 1},  # no table
        {"op": "set", "t": "t", "v": 1},  # no key
        {"op": "set", "t": 1, "k": "a"},
        {"op": "set", "t": "t", "k": None},
        {"op": "set", "ns": 5, "t": "t", "k": "a"},
        {"op": "set", "t": "t", "k": "a", "v": 1, "sk": 5},
        {"op": "zap"},
        {},
        {"op": None},
        {"op": "SET"},
        "set",
        ["set", "t", "k"],
        None,
        5,
        {"op": "merge", "t": "msgs", "k": "m1", "append": "text"},  # not an object
        {"op": "merge", "t": "msgs", "k": "m1", "append": {"text": 5}},  # suffix not a string
        {"op": "merge", "t": "msgs", "k": "m1", "set": ["text"]},
        {"op": "merge", "t": "msgs", "k": "m1", "unset": 5},
    ],
)
def test_malformed_ops_are_refused_when_a_poke_is_decoded(op: Any) -> None:
    with pytest.raises(ProtocolError, match="malformed server frame"):
        decode_op(op)


def test_well_formed_ops_decode_to_their_meaning() -> None:
    op = decode_op({"op": "merge", "t": "msgs", "k": "m1", "append": {"text": "!"}})
    assert op_key(op) == PUB
    assert op_row(op, ("s", {"text": LONG})) == ("", {"text": LONG + "!"})
    assert op_row(decode_op({"op": "del", "ns": "u:bob", "t": "msgs", "k": "m1"}), None) is None
    assert op_row(decode_op({"op": "set", "t": "msgs", "k": "m1", "v": [1]}), None) == ("", [1])


@pytest.mark.parametrize(("before", "after"), [(1, True), (0, False), (1, 1.0), ([1], [True])])
def test_make_merge_keeps_json_type_changes(before: Any, after: Any) -> None:
    old = {"text": LONG, "n": before}
    new = {"text": LONG + "y", "n": after}
    op = make_merge(PUB, "", old, new)
    assert op is not None
    assert json.dumps(apply_merge(old, op)) == json.dumps(new)


# -- property: merge round trip --------------------------------------------------------------

SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=5)
JSON = (
    SCALARS
    | st.lists(SCALARS, max_size=3)
    | st.dictionaries(st.text(max_size=3), SCALARS, max_size=3)
)
FIELDS = st.sampled_from(["text", "reply", "status", "n", "meta", "extra"])


@st.composite
def growing_pairs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any], set[str]]:
    """``(old, new, grown)``: new appends to some long string fields of old, and may also
    change, add and remove other fields."""
    old: dict[str, Any] = draw(st.dictionaries(FIELDS, JSON | st.text(max_size=40), max_size=5))
    new = dict(old)
    grown: set[str] = set()
    for f, v in old.items():
        if isinstance(v, str) and draw(st.booleans()):
            suffix = draw(st.text(min_size=1, max_size=20))
            new[f] = v + suffix
            if len(v) >= MIN_APPEND_CHARS:
                grown.add(f)
    for f in draw(st.lists(FIELDS, max_size=3)):
        if f not in new or new[f] == old.get(f):
            action = draw(st.sampled_from(["set", "del"]))
            if action == "set":
                new[f] = draw(JSON)
            else:
                new.pop(f, None)
            grown.discard(f)
    return old, new, grown


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(growing_pairs(), st.sampled_from(["", "sk"]))
def test_merge_round_trip(pair: tuple[dict[str, Any], dict[str, Any], set[str]], sk: str) -> None:
    old, new, grown = pair
    op = make_merge(PUB, sk, old, new)
    if grown:
        assert op is not None
        assert op.append is not None
        assert set(op.append) >= grown
    if op is None:
        return
    assert op_key(op) == PUB
    assert apply_merge(old, op) == new
    assert op_row(op, (sk, old)) == (sk, new)
    # The delta never costs more than the new value's long fields.
    for f, suffix in (op.append or {}).items():
        assert new[f] == old[f] + suffix
        assert len(old[f]) >= MIN_APPEND_CHARS


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(min_size=MIN_APPEND_CHARS, max_size=50), st.lists(st.text(max_size=10), max_size=10))
def test_streamed_appends_compose(start: str, chunks: list[str]) -> None:
    """A stream of appends sent as merges against the last sent value ends at the final text."""
    sent = {"text": start, "status": "streaming"}
    receiver = dict(sent)
    text = start
    for chunk in chunks:
        text += chunk
        current = {"text": text, "status": "streaming"}
        op = make_merge(PUB, "", sent, current)
        receiver = apply_merge(receiver, op) if op is not None else dict(current)
        sent = current
    final = {"text": text, "status": "done"}
    op = make_merge(PUB, "", sent, final)
    receiver = apply_merge(receiver, op) if op is not None else final
    assert receiver == final


def test_a_small_change_to_a_large_row_travels_as_a_set_only_merge() -> None:
    old = {"text": "word " * 200, "status": "incomplete"}
    new = {"text": old["text"], "status": "complete"}
    op = make_merge(PUB, "", old, new)
    assert op is not None
    assert op.append is None
    assert op.set == {"status": "complete"}
    assert apply_merge(old, op) == new


def test_small_rows_and_large_changes_travel_whole() -> None:
    assert make_merge(PUB, "", {"a": 1, "b": "x"}, {"a": 2, "b": "x"}) is None
    big_old = {"text": "a" * 400}
    assert make_merge(PUB, "", big_old, {"text": "b" * 400}) is None
