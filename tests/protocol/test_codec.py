"""Strict decoding of client frames: valid shapes pass, everything else is a ProtocolError."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synced_store import ProtocolError
from synced_store.protocol import (
    MAX_PROTOCOL_VERSION,
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    CloseCode,
    ErrorKind,
    decode_client_message,
    decode_server_message,
    encode,
)
from synced_store.protocol.codec import MAX_FRAME_BYTES, MAX_MUTATIONS_PER_PUSH, frame_json
from synced_store.protocol.codes import END_REASONS, TERMINAL_CODES
from synced_store.protocol.messages import Poke, Pull


def tag(msg: Any) -> Any:
    """The ``type`` a decoded message has on the wire."""
    return type(msg).__struct_config__.tag


def connect(**over: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "type": "connect",
        "protocol_version": PROTOCOL_VERSION,
        "schema_version": 1,
        "client_id": "c1",
        "token": "tok",
        "cookie": None,
        "last_mutation_id": 0,
    }
    msg.update(over)
    return msg


def push(*ids: int, **over: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "type": "push",
        "mutations": [{"id": i, "name": "inc", "args": {"k": i}} for i in ids],
    }
    msg.update(over)
    return msg


def action(**over: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "action", "request_id": "r1", "name": "callBot", "input": {}}
    msg.update(over)
    return msg


def without(msg: dict[str, Any], field: str) -> dict[str, Any]:
    return {k: v for k, v in msg.items() if k != field}


VALID = [
    connect(),
    connect(cookie=17, last_mutation_id=3),
    connect(token=None),
    without(without(without(connect(), "token"), "cookie"), "last_mutation_id"),
    connect(client_id="x" * 64, schema_version=0, protocol_version=0),
    connect(cookie=2**53),
    push(1),
    push(5, 6, 7),
    push(*range(1, MAX_MUTATIONS_PER_PUSH + 1)),
    {"type": "push", "mutations": [{"id": 1, "name": "m", "args": None}]},
    {"type": "push", "mutations": [{"id": 1, "name": "m", "args": [1, "x"]}], "extra": 1},
    {"type": "push", "mutations": [{"id": 1, "name": "m", "args": 1, "v": 2}]},
    {"type": "push", "mutations": [{"id": 1, "name": "m", "args": 1, "v": None}]},
    action(),
    action(after_mutation_id=4),
    action(after_mutation_id=None, input=None),
    {"type": "pull"},
]


@pytest.mark.parametrize("msg", VALID)
@pytest.mark.parametrize("as_bytes", [False, True])
def test_valid_client_messages_decode(msg: dict[str, Any], as_bytes: bool) -> None:
    text = json.dumps(msg)
    decoded = decode_client_message(text.encode() if as_bytes else text)
    assert tag(decoded) == msg["type"]
    for field, value in msg.items():
        if field in ("type", "extra"):  # the tag; fields no message has are ignored
            continue
        got = getattr(decoded, field)
        if field == "mutations":
            got = [msgspec.structs.asdict(m) for m in got]
            value = [{"v": None, **m} for m in value]
        assert got == value, field


@pytest.mark.parametrize(
    ("msg", "match"),
    [
        # Framing.
        ([1, 2], "must be a JSON object"),
        ("just a string", "must be a JSON object"),
        (None, "must be a JSON object"),
        ({}, "no string 'type'"),
        ({"type": 1}, "no string 'type'"),
        ({"type": "nope"}, "unknown message type 'nope'"),
        ({"type": "poke"}, "unknown message type 'poke'"),
        # connect.
        (without(connect(), "protocol_version"), "'protocol_version' must be an integer"),
        (connect(protocol_version="1"), "'protocol_version' must be an integer"),
        (connect(protocol_version=1.0), "'protocol_version' must be an integer"),
        (connect(protocol_version=True), "'protocol_version' must be an integer"),
        (connect(protocol_version=-1), "'protocol_version' must be an integer >= 0"),
        (without(connect(), "schema_version"), "'schema_version' must be an integer"),
        (connect(schema_version=2**53 + 1), "'schema_version' must be an integer"),
        (without(connect(), "client_id"), "'client_id' must be a non-empty string"),
        (connect(client_id=""), "'client_id' must be a non-empty string of at most 64"),
        (connect(client_id="x" * 65), "'client_id' must be a non-empty string of at most 64"),
        (connect(client_id=7), "'client_id' must be a non-empty string"),
        (connect(cookie="5"), "'cookie' must be an integer"),
        (connect(cookie=-1), "'cookie' must be an integer"),
        (connect(last_mutation_id=-1), "'last_mutation_id' must be an integer"),
        (connect(last_mutation_id=False), "'last_mutation_id' must be an integer"),
        (connect(token=5), "'token' must be a string"),
        (connect(token="t" * 8193), "'token' must be a string"),
        # push.
        ({"type": "push"}, "'mutations' must be a list of 1..1000"),
        (push(), "'mutations' must be a list"),
        (push(mutations={"id": 1}), "'mutations' must be a list"),
        (push(*range(1, MAX_MUTATIONS_PER_PUSH + 2)), "'mutations' must be a list of 1..1000"),
        (push(mutations=[5]), "each mutation must be an object"),
        (push(mutations=[{"name": "m", "args": 1}]), "'id' must be an integer >= 1"),
        (push(0), "'id' must be an integer >= 1"),
        (push(mutations=[{"id": "1", "name": "m", "args": 1}]), "'id' must be an integer"),
        (push(mutations=[{"id": 1, "args": 1}]), "'name' must be a non-empty string"),
        (push(mutations=[{"id": 1, "name": "", "args": 1}]), "'name' must be a non-empty"),
        (push(mutations=[{"id": 1, "name": "m" * 65, "args": 1}]), "at most 64"),
        (push(mutations=[{"id": 1, "name": "m"}]), "each mutation needs 'args'"),
        (push(mutations=[{"id": 1, "name": "m", "args": 1, "v": "2"}]), "'v' must be an integer"),
        (push(mutations=[{"id": 1, "name": "m", "args": 1, "v": -1}]), "'v' must be an integer"),
        (push(1, 3), "mutation ids in a push must be consecutive"),
        (push(2, 1), "must be consecutive"),
        (push(1, 1), "must be consecutive"),
        (push(1, 2, 4), "must be consecutive"),
        # action.
        (without(action(), "request_id"), "'request_id' must be a non-empty string"),
        (action(request_id="r" * 65), "'request_id' must be a non-empty string"),
        (without(action(), "name"), "'name' must be a non-empty string"),
        (action(name=3), "'name' must be a non-empty string"),
        (without(action(), "input"), "'action' needs 'input'"),
        (action(after_mutation_id=-2), "'after_mutation_id' must be an integer"),
        (action(after_mutation_id="4"), "'after_mutation_id' must be an integer"),
    ],
)
def test_invalid_client_messages(msg: Any, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        decode_client_message(json.dumps(msg))


@pytest.mark.parametrize(
    "data",
    ["", "{", "{'type': 'pull'}", '{"type": "pull"', "nul", b"\xff\xfe", b'{"type": "\xff"}'],
)
def test_invalid_json_is_a_protocol_error(data: str | bytes) -> None:
    with pytest.raises(ProtocolError, match="not valid JSON"):
        decode_client_message(data)


def test_deeply_nested_json_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode_client_message('{"type": "pull", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")


def test_oversize_frames_are_refused() -> None:
    pad = "x" * (MAX_FRAME_BYTES - len('{"type":"pull","p":""}'))
    exactly = '{"type":"pull","p":"' + pad + '"}'
    assert len(exactly) == MAX_FRAME_BYTES
    assert type(decode_client_message(exactly)) is Pull
    assert type(decode_client_message(exactly.encode())) is Pull
    over = '{"type":"pull","p":"' + pad + 'x"}'
    with pytest.raises(ProtocolError, match=f"exceeds {MAX_FRAME_BYTES}"):
        decode_client_message(over)
    with pytest.raises(ProtocolError, match=f"exceeds {MAX_FRAME_BYTES}"):
        decode_client_message(over.encode())
    with pytest.raises(ProtocolError, match="exceeds"):
        decode_server_message(over)


def test_oversize_text_frames_are_measured_in_utf8_bytes() -> None:
    pad = "é" * (MAX_FRAME_BYTES // 2 + 8)  # half as many characters as bytes
    frame = '{"type":"pull","p":"' + pad + '"}'
    assert len(frame) < MAX_FRAME_BYTES < len(frame.encode())
    with pytest.raises(ProtocolError, match="exceeds"):
        decode_client_message(frame)


def test_encode_is_compact_json_that_decodes_back() -> None:
    msg = decode_client_message(json.dumps(push(1, 2)))
    data = encode(msg)
    assert isinstance(data, bytes)
    assert b" " not in data
    assert frame_json(data) == {
        "type": "push",
        "mutations": [{"id": i, "name": "inc", "args": {"k": i}} for i in (1, 2)],
    }
    assert decode_client_message(data) == msg
    assert encode({"type": "x", "s": "é"}) == '{"type":"x","s":"é"}'.encode()


def test_decode_server_message_types_every_frame() -> None:
    poke = {"type": "poke", "cookie": 3, "patch": []}
    assert decode_server_message(json.dumps(poke)) == Poke(cookie=3, patch=[])
    # A JSON array is an append frame, expanded (and checked) by the AppendDecoder.
    assert decode_server_message("[]") == []
    for bad in ('{"no": "type"}', '{"type": "poke"}', '{"type": "nope"}', "5", "{"):
        with pytest.raises(ProtocolError):
            decode_server_message(bad)


def test_versions_and_codes() -> None:
    assert MIN_PROTOCOL_VERSION <= PROTOCOL_VERSION <= MAX_PROTOCOL_VERSION
    assert set(TERMINAL_CODES) == {c for c in CloseCode if 4000 <= c <= 4005}
    assert set(END_REASONS) == set(TERMINAL_CODES)
    assert CloseCode.BAD_MESSAGE == 4003
    assert ProtocolError.kind == ErrorKind.BAD_MESSAGE


# -- fuzzing ------------------------------------------------------------------------------------


def decode_or_error(data: str | bytes) -> None:
    """The contract: a typed message (server → client: or an append frame's array), or
    ProtocolError, and nothing else."""
    for decode in (decode_client_message, decode_server_message):
        error = ""
        try:
            msg: Any = decode(data)
        except ProtocolError as exc:
            error = str(exc) or "(empty message)"
            msg = None
        if msg is None:
            assert error
        elif decode is decode_server_message and isinstance(msg, list):
            continue
        else:
            assert isinstance(msg, msgspec.Struct)
            assert isinstance(tag(msg), str)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_fuzz_arbitrary_input(data: str | bytes) -> None:
    decode_or_error(data)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=8,
)
FIELD_VALUES = (
    JSON_VALUES
    | st.integers(-3, 3)
    | st.sampled_from([2**53, 2**53 + 1, 2**64, "", "x" * 65, "c1"])
)
MUTATION = st.fixed_dictionaries(
    {},
    optional={
        "id": FIELD_VALUES | st.integers(0, 5),
        "name": FIELD_VALUES,
        "args": JSON_VALUES,
        "v": FIELD_VALUES,
    },
)


@st.composite
def message_like(draw: st.DrawFn) -> dict[str, Any]:
    """Objects that look like client messages, with any field possibly wrong or missing."""
    kind = draw(st.sampled_from(["connect", "push", "action", "pull", "poke", "", "PUSH"]))
    fields = {
        "protocol_version": FIELD_VALUES,
        "schema_version": FIELD_VALUES,
        "client_id": FIELD_VALUES,
        "cookie": FIELD_VALUES,
        "last_mutation_id": FIELD_VALUES,
        "token": FIELD_VALUES,
        "mutations": st.lists(MUTATION, max_size=4) | FIELD_VALUES,
        "request_id": FIELD_VALUES,
        "name": FIELD_VALUES,
        "input": JSON_VALUES,
        "after_mutation_id": FIELD_VALUES,
    }
    msg = draw(st.fixed_dictionaries({"type": st.just(kind)}, optional=fields))
    return msg


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message_like())
def test_fuzz_message_shapes(msg: dict[str, Any]) -> None:
    decode_or_error(json.dumps(msg))
    decode_or_error(json.dumps(msg).encode())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message_like(), st.integers(0, 400), st.binary(min_size=1, max_size=4))
def test_fuzz_corrupted_frames(msg: dict[str, Any], at: int, junk: bytes) -> None:
    data = json.dumps(msg).encode()
    at = at % (len(data) + 1)
    decode_or_error(data[:at] + junk + data[at:])
    decode_or_error(data[:at])
