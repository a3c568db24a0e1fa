"""Append frames: the server's handle table and the client's expansion."""

from __future__ import annotations

from typing import Any

import pytest

from synced_store.core.patch import op_row
from synced_store.errors import ProtocolError
from synced_store.protocol.append import AppendDecoder, AppendHandles
from synced_store.protocol.codec import decode_server_message, encode, frame_json
from synced_store.protocol.messages import Binding, Poke
from synced_store.types import RowKey


def bound(*bindings: Any) -> Poke:
    """A poke carrying handle bindings, as the client decodes it."""
    binds = [wire(b) if isinstance(b, Binding) else b for b in bindings]
    msg = decode_server_message(encode({"type": "poke", "cookie": 3, "patch": [], "bind": binds}))
    assert type(msg) is Poke
    return msg


def wire(msg: Any) -> Any:
    return frame_json(encode(msg))


A = RowKey("", "messages", "a")
B = RowKey("u:alice", "notes", "b")


def test_bind_then_expand_rebuilds_the_merge_op() -> None:
    handles = AppendHandles()
    bind = handles.bind(B, "text", "0005")
    dec = AppendDecoder()
    dec.observe(bound(bind))
    poke = dec.expand([3, 2, bind.handle, " world"], 13)
    assert wire(poke) == {
        "type": "poke",
        "base_cookie": 13,
        "cookie": 15,
        "patch": [
            {
                "op": "merge",
                "ns": "u:alice",
                "t": "notes",
                "k": "b",
                "sk": "0005",
                "append": {"text": " world"},
            }
        ],
    }
    # The expanded op applies like any merge: sort key kept, suffix appended.
    assert op_row(poke.patch[0], ("0005", {"text": "hello", "n": 1})) == (
        "0005",
        {"text": "hello world", "n": 1},
    )


def test_several_rows_in_one_frame() -> None:
    handles = AppendHandles()
    ba, bb = handles.bind(A, "text", ""), handles.bind(B, "body", "")
    assert ba.handle != bb.handle
    dec = AppendDecoder()
    dec.observe(bound(ba, bb))
    patch = wire(dec.expand([0, 1, ba.handle, "x", bb.handle, "y"], 10).patch)
    assert [(op["k"], op["append"]) for op in patch] == [("a", {"text": "x"}), ("b", {"body": "y"})]
    assert "sk" not in patch[0]
    assert "ns" not in patch[0]


def test_handles_are_reused_least_recently_used_first() -> None:
    handles = AppendHandles(capacity=2)
    h0 = handles.bind(RowKey("", "t", "0"), "f", "").handle
    h1 = handles.bind(RowKey("", "t", "1"), "f", "").handle
    handles.touch(RowKey("", "t", "0"))
    h2 = handles.bind(RowKey("", "t", "2"), "f", "").handle
    assert h2 == h1  # row 1 was the least recently used
    assert handles.get(RowKey("", "t", "1")) is None
    assert handles.get(RowKey("", "t", "0")) == Binding(h0, "", "t", "0", "f", "")
    handles.drop(RowKey("", "t", "0"))
    assert handles.bind(RowKey("", "t", "3"), "f", "").handle == h0  # a freed number first
    handles.clear()
    assert handles.get(RowKey("", "t", "3")) is None
    assert handles.bind(RowKey("", "t", "4"), "f", "").handle == 0


def test_rebinding_a_row_keeps_its_number_and_takes_the_new_sort_key() -> None:
    handles = AppendHandles()
    h = handles.bind(A, "text", "1").handle
    assert wire(handles.bind(A, "text", "2")) == [h, "", "messages", "a", "text", "2"]
    assert handles.get(A) == Binding(h, "", "messages", "a", "text", "2")


@pytest.mark.parametrize(
    "frame",
    [
        [],
        [1, 1],
        [1, 1, 0],  # odd length: a handle without its suffix
        ["1", 1, 0, "x"],
        [1, -1, 0, "x"],
        [1, 0, 0, "x"],  # the cookie must advance
        [1, 10, 0, "x"],  # never a multiple of 10 (a duplicate could pass the check)
        [1, 1, 99, "x"],  # unknown handle
        [1, 1, 0, 5],  # suffix not a string
        [1, 1, "0", "x"],
        [2, 1, 0, "x"],  # check digit of another cookie
    ],
)
def test_malformed_append_frames_are_protocol_errors(frame: list[object]) -> None:
    dec = AppendDecoder()
    dec.observe(bound([0, "", "t", "k", "f", ""]))
    assert dec.expand([1, 1, 0, "ok"], 21).cookie == 22
    with pytest.raises(ProtocolError):
        dec.expand(frame, 21)


def test_a_frame_delivered_twice_is_refused() -> None:
    dec = AppendDecoder()
    dec.observe(bound([0, "", "t", "k", "f", ""]))
    for delta in (1, 3, 9, 11, 27):
        frame = [37 % 10, delta, 0, "x"]
        after = dec.expand(frame, 37).cookie
        with pytest.raises(ProtocolError, match="out-of-sequence"):
            dec.expand(frame, after)


def test_no_cookie_yet_is_refused() -> None:
    dec = AppendDecoder()
    dec.observe(bound([0, "", "t", "k", "f", ""]))
    with pytest.raises(ProtocolError):
        dec.expand([0, 1, 0, "x"], None)


@pytest.mark.parametrize(
    "bind",
    ["x", [["0", "", "t", "k", "f", ""]], [[0, "", "t", "k", "f"]], [[0, "", "t", 1, "f", ""]]],
)
def test_malformed_bindings_are_protocol_errors(bind: object) -> None:
    frame = encode({"type": "poke", "cookie": 1, "patch": [], "bind": bind})
    with pytest.raises(ProtocolError):
        decode_server_message(frame)
