"""Windowed sync on the server: what a windowed reset leaves out, and the ``$scan`` query that
pages older rows in.

A schema's ``pull_windows`` make a client's reset carry only the latest rows of each windowed
table (storage/windows.py reads them). The reset's catch-up records, per window it cut short,
the oldest row it sent (its *floor*); the session then leaves out of the same catch-up every
change below a floor (:func:`below_floors`, :func:`floor_encoder`), so a client always holds a
windowed table as one run of rows from its floor up to the newest. After the reset the client
itself drops changes below its floor (core/window.py); it pages older rows in with ``$scan``.

``$scan`` (a built-in query, server/queries.py): ``{"table", "private"?, "before"?, "limit"?}``
→ ``{"rows": [[sort_key, item_key, value], ...], "more": bool}``: up to ``limit`` (1-500)
committed rows of the table strictly before ``before`` (``[sort_key, item_key]``; None: from
the end), newest first, at most :data:`SCAN_MAX_BYTES` of values (at least one row: it stops
after the row that reaches the cap; storage applies the cap while reading, so rows past it
are never read into memory), in the public namespace or (``private``) the caller's own.
``more`` is False once the scan reached the table's first row (a page that stopped at the cap
says True even if it held the first row: the next page is then empty).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import ValidationError
from ..protocol.ops import op_text
from ..types import EntryKey, RowKey
from . import queries

if TYPE_CHECKING:
    from ..storage.records import OpEncoder
    from .instance import Instance
    from .session import Session

__all__ = ["MAX_SCAN_LIMIT", "SCAN_MAX_BYTES", "below_floors", "floor_encoder"]

#: Rows one ``$scan`` returns at most.
MAX_SCAN_LIMIT = 500
#: Bytes of values one ``$scan`` returns at most (at least one row travels).
SCAN_MAX_BYTES = 1 << 20

Floors = Mapping[tuple[str, str], EntryKey]
#: A version no instance reaches: ``follower.reach`` then reads until nothing newer exists.
_EVERYTHING = 1 << 62


def floor_encoder(floors: Floors) -> OpEncoder:
    """``op_text``, but ``""`` (left out by the caller) for a live row below its window's
    floor: a change the client, which holds the window only, must not receive."""

    def enc(ns: str, t: str, i: str, sk: str, v: str | None, deleted: bool) -> str:
        floor = floors.get((ns, t))
        if floor is not None and not deleted and EntryKey(sk, i) < floor:
            return ""
        return op_text(ns, t, i, sk, v, deleted)

    return enc


def below_floors(pending: dict[RowKey, Any], floors: Floors) -> None:
    """Remove from a session's queue the rows written below their window's floor."""
    drop = [
        key
        for key, change in pending.items()
        if change is not None
        and (floor := floors.get((key.ns, key.table))) is not None
        and EntryKey(change[0], key.item) < floor
    ]
    for key in drop:
        del pending[key]


def _str(v: Any, what: str) -> str:
    if not isinstance(v, str) or len(v) > 512:
        raise ValidationError(f"$scan: {what} must be a string of at most 512 characters")
    return v


@queries.register("$scan")
async def scan(inst: Instance, session: Session, args: Any) -> Any:
    """Rows of one table before a position, newest first (module doc)."""
    if not isinstance(args, dict):
        raise ValidationError("$scan takes an object: {table, private?, before?, limit?}")
    table = _str(args.get("table"), "table")
    if table not in inst.config.schema.tables:
        raise ValidationError(f"$scan: unknown table {table!r}")
    limit = args.get("limit", 50)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_SCAN_LIMIT:
        raise ValidationError(f"$scan: limit must be an int in 1..{MAX_SCAN_LIMIT}")
    before = args.get("before")
    start: EntryKey | None = None
    if before is not None:
        if not isinstance(before, list) or len(before) != 2:
            raise ValidationError("$scan: before must be [sort_key, item_key] or null")
        start = EntryKey(_str(before[0], "sort key"), _str(before[1], "item key"))
    ns = session.own_ns if args.get("private") is True else ""
    reader = inst.store.reader()
    try:
        # The byte cap applies while reading: rows past it are never read into memory.
        rows = await reader.scan(
            ns,
            table,
            start,
            exclusive=True,
            reverse=True,
            limit=limit + 1,
            max_bytes=SCAN_MAX_BYTES,
        )
    finally:
        await reader.close()
    # On a shared backend the read may have seen other processes' commits this process has not
    # fanned out yet: take them in first, so their pokes reach the client before this reply
    # (a change to a paged row then cuts the page, core/window.py) and never a delta after it
    # against a value older than the page's.
    await inst.follower.reach(_EVERYTHING)
    out = [[ek[0], ek[1], value] for ek, value in rows[:limit]]
    # Fewer rows than asked: the table's start, or the byte cap (then ``more`` is True; at
    # worst the next page is empty, with ``more`` False).
    more = len(rows) > limit or sum(len(orjson.dumps(v)) for _, v in rows) >= SCAN_MAX_BYTES
    return {"rows": out, "more": more}
