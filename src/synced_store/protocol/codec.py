"""Encoding and strict decoding of wire messages (protocol/messages.py).

``decode_client_message`` is the server's only entry point for untrusted bytes: it returns a
validated message or raises :class:`~synced_store.errors.ProtocolError` with a clear message.
It parses with pydantic-core's JSON parser, whose limits are the documented ones (no ``NaN``,
at most ~200 levels of nesting), and checks every field before building the message.
``decode_server_message`` decodes what a client receives straight into typed messages
(msgspec); ``encode`` writes any message as compact JSON bytes (msgspec). docs/topics/design.md
("Wire messages") has the measurements behind this split.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pydantic_core

from ..errors import ProtocolError
from .messages import (
    Action,
    ClientMessage,
    Connect,
    Mutation,
    Pull,
    Push,
    ServerMessage,
)

__all__ = [
    "MAX_FRAME_BYTES",
    "MAX_MUTATIONS_PER_PUSH",
    "decode_client_message",
    "decode_server_message",
    "encode",
    "encode_value",
    "frame_json",
    "push_frames",
]

MAX_FRAME_BYTES = 8 * 1024 * 1024
MAX_MUTATIONS_PER_PUSH = 1000
_NAME_MAX = 64
_TOKEN_MAX = 8192

_encoder = msgspec.json.Encoder()
_server_decoder = msgspec.json.Decoder(ServerMessage | list[Any])


def encode(message: Any) -> bytes:
    """Compact JSON of a message (or of any part of one: ops, lists of them)."""
    return _encoder.encode(message)


def encode_value(value: Any) -> bytes:
    """Compact JSON of a plain JSON value (a row value, an error report list)."""
    return _encoder.encode(value)


def push_frames(
    mutations: list[Mutation], *, max_mutations: int = 500, max_bytes: int = 1 << 20
) -> list[bytes]:
    """Push frames for ``mutations`` (consecutive ids, oldest first): each mutation encoded
    once, at most ``max_mutations`` and about ``max_bytes`` per frame (a single larger
    mutation travels alone)."""
    frames: list[bytes] = []
    batch: list[bytes] = []
    size = 0
    for m in mutations:
        data = _encoder.encode(m)
        if batch and (len(batch) >= max_mutations or size + len(data) > max_bytes):
            frames.append(b'{"type":"push","mutations":[' + b",".join(batch) + b"]}")
            batch, size = [], 0
        batch.append(data)
        size += len(data) + 1
    if batch:
        frames.append(b'{"type":"push","mutations":[' + b",".join(batch) + b"]}")
    return frames


def frame_json(data: str | bytes) -> Any:
    """A frame as plain JSON values (dicts, lists), for inspection by tools and tests; the
    protocol's own paths use the typed decoders."""
    return msgspec.json.decode(data)


def _check_size(data: str | bytes) -> None:
    size = len(data)
    if isinstance(data, str) and size * 4 > MAX_FRAME_BYTES:
        size = len(data.encode(errors="surrogatepass"))
    if size > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {size} bytes exceeds {MAX_FRAME_BYTES}")


def _parse(data: str | bytes) -> dict[str, Any]:
    _check_size(data)
    try:
        msg = pydantic_core.from_json(data, allow_inf_nan=False)  # RFC 8259: no NaN
    except ValueError as exc:
        raise ProtocolError(f"frame is not valid JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("frame must be a JSON object")
    if not isinstance(msg.get("type"), str):
        raise ProtocolError("frame has no string 'type'")
    return msg


def _int(msg: dict[str, Any], field: str, *, minimum: int = 0, optional: bool = False) -> Any:
    v = msg.get(field)
    if v is None and optional:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum or v > 2**53:
        raise ProtocolError(f"'{field}' must be an integer >= {minimum}")
    return v


def _str(msg: dict[str, Any], field: str, *, max_len: int = _NAME_MAX) -> str:
    v = msg.get(field)
    if not isinstance(v, str) or not v or len(v) > max_len:
        raise ProtocolError(f"'{field}' must be a non-empty string of at most {max_len} chars")
    return v


def _connect(msg: dict[str, Any]) -> Connect:
    protocol_version = _int(msg, "protocol_version")
    schema_version = _int(msg, "schema_version")
    client_id = _str(msg, "client_id")
    cookie = _int(msg, "cookie", optional=True)
    lmid = _int(msg, "last_mutation_id", optional=True)
    tok = msg.get("token")
    if tok is not None and (not isinstance(tok, str) or len(tok) > _TOKEN_MAX):
        raise ProtocolError("'token' must be a string")
    return Connect(
        protocol_version=protocol_version,
        schema_version=schema_version,
        client_id=client_id,
        token=tok,
        cookie=cookie,
        last_mutation_id=lmid,
    )


def _push(msg: dict[str, Any]) -> Push:
    muts = msg.get("mutations")
    if not isinstance(muts, list) or not muts or len(muts) > MAX_MUTATIONS_PER_PUSH:
        raise ProtocolError(f"'mutations' must be a list of 1..{MAX_MUTATIONS_PER_PUSH} mutations")
    out: list[Mutation] = []
    prev: int | None = None
    for m in muts:
        if not isinstance(m, dict):
            raise ProtocolError("each mutation must be an object")
        mid = _int(m, "id", minimum=1)
        name = _str(m, "name")
        if "args" not in m:
            raise ProtocolError("each mutation needs 'args'")
        v = _int(m, "v", optional=True)
        if prev is not None and mid != prev + 1:
            raise ProtocolError("mutation ids in a push must be consecutive")
        prev = mid
        out.append(Mutation(id=mid, name=name, args=m["args"], v=v))
    return Push(mutations=out)


def _action(msg: dict[str, Any]) -> Action:
    request_id = _str(msg, "request_id")
    name = _str(msg, "name")
    if "input" not in msg:
        raise ProtocolError("'action' needs 'input'")
    after = _int(msg, "after_mutation_id", optional=True)
    return Action(request_id=request_id, name=name, input=msg["input"], after_mutation_id=after)


def decode_client_message(data: str | bytes) -> ClientMessage:
    """Parse and validate a client → server frame (raises :class:`ProtocolError`)."""
    msg = _parse(data)
    t = msg["type"]
    if t == "push":
        return _push(msg)
    if t == "connect":
        return _connect(msg)
    if t == "action":
        return _action(msg)
    if t == "pull":
        return Pull()
    raise ProtocolError(f"unknown message type {t!r}")


def decode_server_message(data: str | bytes) -> ServerMessage | list[Any]:
    """Decode a server → client frame: a typed message, or the JSON array of an append frame
    (expand it with :class:`~synced_store.protocol.append.AppendDecoder`).

    Raises :class:`ProtocolError` on anything that is not a well-formed message.
    """
    _check_size(data)
    try:
        msg: ServerMessage | list[Any] = _server_decoder.decode(data)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise ProtocolError(f"malformed server frame: {exc}") from None
    return msg
