"""What patch ops do to a row, and the merge delta for a row that changed a little.

The ops are typed wire messages (protocol/messages.py: :class:`SetOp`, :class:`DelOp`,
:class:`MergeOp`); this module holds their meaning. ``merge`` applies to the value the receiver
already holds for that row (the server only sends it when it knows what that is), so a string
that grows by appending costs only its new bytes.
"""

from __future__ import annotations

from typing import Any

from ..errors import ProtocolError
from ..protocol.messages import DelOp, MergeOp, PatchOp, SetOp
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


def set_op(key: RowKey, sort_key: str, value: Any) -> SetOp:
    """A ``set`` op."""
    return SetOp(ns=key.ns, t=key.table, k=key.item, sk=sort_key, v=value)


def del_op(key: RowKey) -> DelOp:
    """A ``del`` op."""
    return DelOp(ns=key.ns, t=key.table, k=key.item)


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


def make_merge(key: RowKey, sort_key: str, old: Any, new: Any) -> MergeOp | None:
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
    return MergeOp(
        ns=key.ns,
        t=key.table,
        k=key.item,
        sk=sort_key,
        append=append or None,
        set=changed or None,
        unset=unset or None,
    )


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


def op_key(op: PatchOp) -> RowKey:
    """The row an op applies to."""
    return RowKey(op.ns, op.t, op.k)


def apply_merge(old: Any, op: MergeOp) -> Any:
    """Apply a ``merge`` op to the value the receiver holds."""
    if type(old) is not dict:
        raise ProtocolError("merge op for a row that is not an object on this side")
    new = dict(old)
    if op.append:
        for f, suffix in op.append.items():
            base = new.get(f)
            if type(base) is not str:
                raise ProtocolError(f"merge op appends to a non-string field {f!r}")
            new[f] = base + suffix
    if op.set:
        new.update(op.set)
    if op.unset:
        for f in op.unset:
            new.pop(f, None)
    return new


def op_row(op: PatchOp, current: tuple[str, Any] | None) -> tuple[str, Any] | None:
    """The ``(sort_key, value)`` a row has after ``op`` (None when deleted)."""
    if type(op) is SetOp:
        return op.sk, op.v
    if type(op) is DelOp:
        return None
    assert type(op) is MergeOp
    if current is None:
        raise ProtocolError("merge op for a row this side does not have")
    return op.sk, apply_merge(current[1], op)
