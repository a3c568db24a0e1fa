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

__all__ = [
    "MIN_APPEND_CHARS",
    "apply_merge",
    "del_op",
    "json_equal",
    "make_merge",
    "op_key",
    "op_row",
    "set_op",
]

#: Only strings at least this long are sent as append deltas (0: any string that grew, even
#: from ``""``: a streamed reply's first chunk already travels as an append).
MIN_APPEND_CHARS = 0
#: Rows smaller than this (estimated JSON bytes) always travel whole unless a string grew.
MERGE_MIN_ROW = 256


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


def _size(v: Any) -> int:
    """A cheap estimate of a value's JSON size (exact enough to compare magnitudes)."""
    t = type(v)
    if t is str:
        return len(v) + 2
    if t is dict:
        return sum(len(k) + 4 + _size(x) for k, x in v.items()) + 2
    if t is list:
        return sum(_size(x) + 1 for x in v) + 2
    return 8


def make_merge(key: RowKey, sort_key: str, old: Any, new: Any) -> dict[str, Any] | None:
    """A ``merge`` op turning ``old`` into ``new``, or None when a full ``set`` is as good.

    It is used when some string field only grew (its suffix travels as an append), or when the
    changed fields are less than half the size of the row (a long streamed reply whose status
    flips to ``complete`` costs a few bytes, not the whole text again).
    """
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
        elif o is _MISSING or not json_equal(o, v):
            changed[f] = v
    unset = [f for f in old if f not in new]
    if not append:
        size = _size(new)
        if size < MERGE_MIN_ROW or 2 * _size(changed) > size:
            return None
    op: dict[str, Any] = {"op": "merge", "t": key.table, "k": key.item}
    if append:
        op["append"] = append
    if key.ns:
        op["ns"] = key.ns
    if sort_key:
        op["sk"] = sort_key
    if changed:
        op["set"] = changed
    if unset:
        op["unset"] = unset
    return op


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values that also tells ``1`` from ``True`` and ``1.0``."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return a.keys() == b.keys() and all(json_equal(v, b[k]) for k, v in a.items())
    if type(a) is list:
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


class _Missing:
    pass


_MISSING = _Missing()


def op_key(op: Any) -> RowKey:
    """The row an op applies to; raises :class:`ProtocolError` on a malformed op."""
    if type(op) is not dict:
        raise ProtocolError(f"patch op must be an object: {op!r:.200}")
    ns, table, item = op.get("ns", ""), op.get("t"), op.get("k")
    if not (isinstance(ns, str) and isinstance(table, str) and isinstance(item, str)):
        raise ProtocolError(f"malformed patch op: {op!r:.200}")
    return RowKey(ns, table, item)


def apply_merge(old: Any, op: dict[str, Any]) -> Any:
    """Apply a ``merge`` op to the value the receiver holds."""
    if type(old) is not dict:
        raise ProtocolError("merge op for a row that is not an object on this side")
    append, sets, unset = op.get("append", {}), op.get("set", {}), op.get("unset", [])
    if type(append) is not dict or type(sets) is not dict or type(unset) is not list:
        raise ProtocolError("merge op: 'append' and 'set' must be objects, 'unset' a list")
    new = dict(old)
    for f, suffix in append.items():
        base = new.get(f)
        if type(base) is not str or type(suffix) is not str:
            raise ProtocolError(f"merge op appends to a non-string field {f!r}")
        new[f] = base + suffix
    new.update(sets)
    for f in unset:
        if type(f) is not str:
            raise ProtocolError("merge op: 'unset' must list field names")
        new.pop(f, None)
    return new


def op_row(op: dict[str, Any], current: tuple[str, Any] | None) -> tuple[str, Any] | None:
    """The ``(sort_key, value)`` a row has after ``op`` (None when deleted)."""
    if type(op) is not dict:
        raise ProtocolError(f"patch op must be an object: {op!r:.200}")
    kind = op.get("op")
    if kind in ("set", "merge") and type(op.get("sk", "")) is not str:
        raise ProtocolError("patch op: 'sk' must be a string")
    if kind == "set":
        return op.get("sk", ""), op.get("v")
    if kind == "del":
        return None
    if kind == "merge":
        if current is None:
            raise ProtocolError("merge op for a row this side does not have")
        return op.get("sk", ""), apply_merge(current[1], op)
    raise ProtocolError(f"unknown patch op {kind!r}")
