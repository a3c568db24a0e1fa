"""Patch ops as JSON text, built around a row value's stored bytes.

A row's value is validated and encoded once, when a mutator writes it, and stored as those
bytes. The ``set`` op that carries it to clients splices the same bytes in (never decoded and
encoded again), both after a commit (:func:`set_op_json`) and when a catch-up reads stored rows
back (:func:`op_text`). The ops are the ones of docs/protocol.md (``{"op":"set","t","k","ns"?,
"sk"?,"v"}`` and ``{"op":"del","t","k","ns"?}``); strings are quoted exactly as the rest of the
wire's JSON encoder quotes them.
"""

from __future__ import annotations

import pydantic_core

from ..types import RowKey

__all__ = ["op_text", "quote", "set_op_json"]

_to_json = pydantic_core.to_json


def quote(s: str) -> str:
    """``s`` as a JSON string literal (the wire encoder's quoting, byte for byte)."""
    # Keys and names are nearly always printable ASCII without quotes or backslashes: those
    # need no escaping at all (a third of the encoder's cost on this path).
    if s.isascii() and s.isprintable() and '"' not in s and "\\" not in s:
        return '"' + s + '"'
    return _to_json(s).decode()


def _quote_bytes(s: str) -> bytes:
    if s.isascii() and s.isprintable() and '"' not in s and "\\" not in s:
        return b'"' + s.encode() + b'"'
    return _to_json(s)


def set_op_json(key: RowKey, sort_key: str, encoded: bytes) -> bytes:
    """The ``set`` op of a row as JSON, with its value's bytes as validated and stored (never
    encoded a second time: the value's encoding is the one the catch-ups read back)."""
    q = _quote_bytes
    head = b'{"op":"set","t":' + q(key.table) + b',"k":' + q(key.item)
    if key.ns:
        head += b',"ns":' + q(key.ns)
    if sort_key:
        head += b',"sk":' + q(sort_key)
    return head + b',"v":' + encoded + b"}"


def op_text(ns: str, table: str, item: str, sort_key: str, value: str | None, deleted: bool) -> str:
    """The patch op of a stored row as JSON text: ``del`` for a tombstone, else ``set`` with
    ``value`` (the row's stored JSON text) spliced in as it is.

    Its signature is the storage's ``OpEncoder``: a catch-up hands each row it reads to it.
    """
    q = quote
    s = ('{"op":"del","t":' if deleted else '{"op":"set","t":') + q(table) + ',"k":' + q(item)
    if ns:
        s += ',"ns":' + q(ns)
    if deleted:
        return s + "}"
    if sort_key:
        s += ',"sk":' + q(sort_key)
    return s + ',"v":' + (value or "null") + "}"
