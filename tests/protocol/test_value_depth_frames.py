"""Frames carrying values at the nesting limit (``MAX_VALUE_DEPTH``) stay far inside what the
JSON parsers and serializers on the way accept, envelope included.

The server parses client frames with pydantic-core (``from_json``: at most ~200 levels) and
encodes pokes with msgspec, which clients decode with msgspec (bounded by Python's recursion
limit); values are validated with pydantic-core (``to_json``: 255 natively, 49 when compiled to
wasm for Pyodide). A frame wraps a value in a few levels (push -> mutations ->
mutation -> args; poke -> patch -> op -> v), so a value at the limit must leave room for them.
"""

from __future__ import annotations

from typing import Any

import orjson
import pydantic_core
import pytest

from synced_store.core.keys import MAX_VALUE_DEPTH, check_depth
from synced_store.errors import ProtocolError
from synced_store.protocol.codec import decode_client_message, decode_server_message, encode
from synced_store.protocol.messages import Poke, Push, SetOp

#: pydantic-core's recursion guard in the browser build (wasm32), the tightest on the way.
WASM_GUARD = 49


def nest(depth: int) -> Any:
    v: Any = "leaf"
    for _ in range(depth):
        v = {"a": v}
    return v


def push(args: Any) -> dict[str, Any]:
    return {"type": "push", "mutations": [{"id": 1, "name": "put", "args": args}]}


def poke(value: Any) -> dict[str, Any]:
    op = {"op": "set", "t": "docs", "k": "d", "v": value}
    return {"type": "poke", "base_cookie": 1, "cookie": 2, "patch": [op]}


def test_the_limit_leaves_room_under_every_parser() -> None:
    envelope = 4  # the most levels a frame adds around a value
    # (tests/web/test_value_depth_browser.py measures the guard in Pyodide itself)
    assert MAX_VALUE_DEPTH + envelope < WASM_GUARD < 200


def test_a_push_with_args_at_the_limit_decodes_on_the_server() -> None:
    args = nest(MAX_VALUE_DEPTH)
    check_depth(args)
    msg = decode_client_message(encode(push(args)))
    assert type(msg) is Push
    assert msg.mutations[0].args == args


def test_a_poke_with_a_value_at_the_limit_encodes_and_decodes() -> None:
    value = nest(MAX_VALUE_DEPTH)
    text = encode(poke(value))  # the server's fan-out serializer
    msg = decode_server_message(text)  # the client's decoder
    assert type(msg) is Poke
    assert msg.patch[0] == SetOp(t="docs", k="d", v=value)
    assert pydantic_core.from_json(pydantic_core.to_json(poke(value))) == poke(value)
    assert orjson.loads(text) == poke(value)


def test_the_server_parser_refuses_the_deep_frame_of_the_bug_report() -> None:
    # What a client used to push: a row value nested 199 deep inside its args. The parser
    # refuses the whole frame (close 4003), which is why the client now refuses it locally.
    with pytest.raises(ProtocolError, match="recursion limit"):
        decode_client_message(orjson.dumps(push({"key": "k", "value": nest(199)})))
