"""Patch operations as they travel in pokes, and the append delta for growing strings.

Ops (``ns`` and ``sk`` are omitted when empty)::

    {"op": "set",   "ns": ns, "t": table, "k": item, "sk": sort_key, "v": value}
    {"op": "del",   "ns": ns, "t": table, "k": item}
    {"op": "merge", "ns": ns, "t": table, "k": item, "sk": sort_key,
     "append": {field: suffix}, "set": {field: value}, "unset": [field]}

``merge`` applies to the value the receiver already holds for that row (the server only sends
it when it knows what that is), so a string that grows by appending costs only its new bytes.
"""

from __future__ import annotations

from typing import Any

from ..errors import ProtocolError
from ..types import RowKey

__all__ = ["MIN_APPEND_CHARS", "apply_merge", "make_merge", "op_key", "op_row", "set_op"]

#: Only strings at least this long are sent as append deltas.
MIN_APPEND_CHARS = 16


def set_op(key: RowKey, sort_key: str, value: Any) -> dict[str, Any]:
    """A ``set`` op."""
    op: dict[str, Any] = {"op": "set", "t": key.table, "k": key.item, "v": value}
    if key.ns:
        op["ns"] = key.ns
    if sort_key:
        op["sk"] = sort_key
    return op


def del_op(key: RowKey) -> dict[str, Any]:
    """A ``del`` op."""
    op: dict[str, Any] = {"op": "del", "t": key.table, "k": key.item}
    if key.ns:
        op["ns"] = key.ns
    return op


def make_merge(key: RowKey, sort_key: str, old: Any, new: Any) -> dict[str, Any] | None:
    """A ``merge`` op turning ``old`` into ``new`` if some string field only grew, else None."""
    if type(old) is not dict or type(new) is not dict:
        return None
    append: dict[str, str] = {}
    changed: dict[str, Any] = {}
    for f, v in new.items():
        o = old.get(f, _MISSING)
        if o is v:
            continue
        if (
            type(v) is str
            and type(o) is str
            and len(o) >= MIN_APPEND_CHARS
            and len(v) > len(o)
            and v.startswith(o)
        ):
            append[f] = v[len(o) :]
        elif o is _MISSING or o != v:
            changed[f] = v
    if not append:
        return None
    op: dict[str, Any] = {"op": "merge", "t": key.table, "k": key.item, "append": append}
    if key.ns:
        op["ns"] = key.ns
    if sort_key:
        op["sk"] = sort_key
    if changed:
        op["set"] = changed
    unset = [f for f in old if f not in new]
    if unset:
        op["unset"] = unset
    return op


class _Missing:
    pass


_MISSING = _Missing()


def op_key(op: dict[str, Any]) -> RowKey:
    """The row an op applies to; raises :class:`ProtocolError` on a malformed op."""
    try:
        ns, table, item = op.get("ns", ""), op["t"], op["k"]
    except (KeyError, TypeError):
        raise ProtocolError(f"malformed patch op: {op!r:.200}") from None
    if not (isinstance(ns, str) and isinstance(table, str) and isinstance(item, str)):
        raise ProtocolError(f"malformed patch op: {op!r:.200}")
    return RowKey(ns, table, item)


def apply_merge(old: Any, op: dict[str, Any]) -> Any:
    """Apply a ``merge`` op to the value the receiver holds."""
    if type(old) is not dict:
        raise ProtocolError("merge op for a row that is not an object on this side")
    new = dict(old)
    for f, suffix in op.get("append", {}).items():
        base = new.get(f)
        if type(base) is not str:
            raise ProtocolError(f"merge op appends to non-string field {f!r}")
        new[f] = base + suffix
    new.update(op.get("set", {}))
    for f in op.get("unset", ()):
        new.pop(f, None)
    return new


def op_row(op: dict[str, Any], current: tuple[str, Any] | None) -> tuple[str, Any] | None:
    """The ``(sort_key, value)`` a row has after ``op`` (None when deleted)."""
    kind = op.get("op")
    if kind == "set":
        return op.get("sk", ""), op.get("v")
    if kind == "del":
        return None
    if kind == "merge":
        if current is None:
            raise ProtocolError("merge op for a row this side does not have")
        return op.get("sk", ""), apply_merge(current[1], op)
    raise ProtocolError(f"unknown patch op {kind!r}")
