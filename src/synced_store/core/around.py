"""``scan(around_cursor={"before": b, "after": a}, cursor=...)``: a window of rows around an
anchor, on the client only (spec §3: "client-only; on the server it throws").

Up to ``before`` rows before the cursor, the anchor row if it exists, up to ``after`` rows
after it, in ascending order. ``cursor="$last"`` anchors at the end of the table (no anchor
row, nothing after): ``scan(cursor="$last", around_cursor={"before": 5})`` is the latest five,
ascending. With a ``prefix``, only matching rows count. On a windowed table it reads what the
client holds (core/window.py): page older rows in first (``load_older``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ValidationError
from ..types import EntryKey, RowKey

if TYPE_CHECKING:
    from .context import TableHandle

__all__ = ["AroundScan", "scan_around"]


def _count(spec: Mapping[str, Any], name: str) -> int:
    n = spec.get(name, 0)
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValidationError(f"around_cursor[{name!r}] must be a non-negative int")
    return n


async def scan_around(
    handle: TableHandle, prefix: Any, cursor: Any, spec: Any
) -> list[tuple[EntryKey, Any]]:
    """The rows of ``handle`` around ``cursor`` (module doc)."""
    if handle._async:
        raise ValidationError("around_cursor is client-only: compose two cursor + limit scans")
    if not isinstance(spec, Mapping):
        raise ValidationError('around_cursor must be {"before": int, "after": int}')
    before, after = _count(spec, "before"), _count(spec, "after")
    if cursor == "$last":
        older = await handle._scan(prefix, before, None, True)
        return older[::-1]
    if not (isinstance(cursor, tuple) and len(cursor) == 2):
        raise ValidationError("around_cursor needs a cursor: an EntryKey or '$last'")
    anchor = EntryKey(str(cursor[0]), str(cursor[1]))
    older = await handle._scan(prefix, before, anchor, True) if before else []
    out = older[::-1]
    rk = RowKey(handle._ns, handle._table, anchor.item_key)
    handle._tx.note_point(rk)
    row = handle._tx.read(rk)
    if row is not None and row[0] == anchor.sort_key and _matches(anchor, prefix):
        from .context import copy_json  # (context imports this module)

        out.append((anchor, copy_json(row[1]) if handle._copy else row[1]))
    if after:
        out.extend(await handle._scan(prefix, after, anchor, False))
    return out


def _matches(ek: EntryKey, prefix: Any) -> bool:
    if isinstance(prefix, str):
        return ek.item_key.startswith(prefix)
    if isinstance(prefix, Mapping):
        ik = prefix.get("item_key", prefix.get("itemKey", "")) or ""
        sk = prefix.get("sort_key", prefix.get("sortKey", "")) or ""
        return ek.item_key.startswith(ik) and ek.sort_key.startswith(sk)
    return True


class AroundScan:
    """What ``scan(around_cursor=...)`` returns: ``await r.entries()`` / ``.keys()`` /
    ``.values()``, like a ScanResult."""

    __slots__ = ("_args",)

    def __init__(self, handle: TableHandle, prefix: Any, cursor: Any, spec: Any) -> None:
        self._args = (handle, prefix, cursor, spec)

    async def entries(self) -> list[tuple[EntryKey, Any]]:
        """``[(EntryKey, value), ...]`` in ascending order."""
        return await scan_around(*self._args)

    async def keys(self) -> list[EntryKey]:
        """The EntryKeys in ascending order."""
        return [k for k, _ in await scan_around(*self._args)]

    async def values(self) -> list[Any]:
        """The values in ascending order."""
        return [v for _, v in await scan_around(*self._args)]

    async def __aiter__(self) -> AsyncIterator[tuple[EntryKey, Any]]:
        for entry in await scan_around(*self._args):
            yield entry
