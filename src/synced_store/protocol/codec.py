"""Strict JSON (de)serialisation of wire messages.

``decode_client_message`` is the server's only entry point for untrusted bytes: it returns a
validated ``dict`` or raises :class:`~synced_store.errors.ProtocolError` with a clear message.
"""

from __future__ import annotations

from typing import Any

import pydantic_core

from ..errors import ProtocolError

__all__ = ["MAX_FRAME_BYTES", "decode_client_message", "decode_server_message", "encode"]

MAX_FRAME_BYTES = 8 * 1024 * 1024
MAX_MUTATIONS_PER_PUSH = 1000
_NAME_MAX = 64


def encode(message: dict[str, Any]) -> str:
    """Compact JSON text of a message."""
    return pydantic_core.to_json(message).decode()


def _parse(data: str | bytes) -> dict[str, Any]:
    size = len(data)
    if isinstance(data, str) and size * 4 > MAX_FRAME_BYTES:
        size = len(data.encode(errors="surrogatepass"))
    if size > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {size} bytes exceeds {MAX_FRAME_BYTES}")
    try:
        msg = pydantic_core.from_json(data, allow_inf_nan=False)  # RFC 8259: no NaN
    except ValueError as exc:
        raise ProtocolError(f"frame is not valid JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("frame must be a JSON object")
    if not isinstance(msg.get("type"), str):
        raise ProtocolError("frame has no string 'type'")
    return msg


def _int(msg: dict[str, Any], field: str, *, minimum: int = 0, optional: bool = False) -> None:
    v = msg.get(field)
    if v is None and optional:
        return
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum or v > 2**53:
        raise ProtocolError(f"'{field}' must be an integer >= {minimum}")


def _str(msg: dict[str, Any], field: str, *, max_len: int, optional: bool = False) -> None:
    v = msg.get(field)
    if v is None and optional:
        return
    if not isinstance(v, str) or not v or len(v) > max_len:
        raise ProtocolError(f"'{field}' must be a non-empty string of at most {max_len} chars")


def decode_client_message(data: str | bytes) -> dict[str, Any]:
    """Parse and validate a client → server frame."""
    msg = _parse(data)
    t = msg["type"]
    if t == "connect":
        _int(msg, "protocol_version")
        _int(msg, "schema_version")
        _str(msg, "client_id", max_len=_NAME_MAX)
        _int(msg, "cookie", optional=True)
        _int(msg, "last_mutation_id", optional=True)
        tok = msg.get("token")
        if tok is not None and (not isinstance(tok, str) or len(tok) > 8192):
            raise ProtocolError("'token' must be a string")
    elif t == "push":
        muts = msg.get("mutations")
        if not isinstance(muts, list) or not muts or len(muts) > MAX_MUTATIONS_PER_PUSH:
            raise ProtocolError(
                f"'mutations' must be a list of 1..{MAX_MUTATIONS_PER_PUSH} mutations"
            )
        prev = None
        for m in muts:
            if not isinstance(m, dict):
                raise ProtocolError("each mutation must be an object")
            _int(m, "id", minimum=1)
            _str(m, "name", max_len=_NAME_MAX)
            if "args" not in m:
                raise ProtocolError("each mutation needs 'args'")
            _int(m, "v", optional=True)
            if prev is not None and m["id"] != prev + 1:
                raise ProtocolError("mutation ids in a push must be consecutive")
            prev = m["id"]
    elif t == "action":
        _str(msg, "request_id", max_len=_NAME_MAX)
        _str(msg, "name", max_len=_NAME_MAX)
        if "input" not in msg:
            raise ProtocolError("'action' needs 'input'")
        _int(msg, "after_mutation_id", optional=True)
    elif t == "pull":
        pass
    else:
        raise ProtocolError(f"unknown message type {t!r}")
    return msg


def decode_server_message(data: str | bytes) -> dict[str, Any]:
    """Parse a server → client frame (the client trusts the server's shapes)."""
    return _parse(data)
