"""The steps of a rebase that touch only the engine's store: what a patch makes of each row,
applying it, undoing the pending overlay, and reading the snapshot back.

``originals`` is the engine's map of each row's snapshot value before the pending overlay
(client_engine.py, pending.py); the engine drives the steps in order (its
``apply_server_update``), these functions do them.
"""

from __future__ import annotations

from typing import Any

from ..protocol.messages import PatchOp
from ..types import RowKey
from .patch import op_key, op_row
from .pending import Row
from .store import MemoryStore

__all__ = ["apply_rows", "restore_snapshot", "rows_after_patch", "snapshot_rows"]


def rows_after_patch(
    store: MemoryStore, originals: dict[RowKey, Row | None], patch: list[PatchOp], reset: bool
) -> tuple[list[RowKey], list[Row | None], dict[RowKey, Row | None]]:
    """Each op's row and the row after it (against the snapshot, not the pending overlay),
    and every row as the whole patch leaves it. Raises ``ProtocolError`` on an op that cannot
    apply, before anything changed."""
    keys = [op_key(op) for op in patch]
    rows_after: list[Row | None] = []
    last: dict[RowKey, Row | None] = {}
    for key, op in zip(keys, patch, strict=True):
        if key in last:
            cur_row = last[key]
        elif reset:
            cur_row = None
        else:
            cur_row = originals[key] if key in originals else store.get(key)
        last[key] = op_row(op, cur_row)
        rows_after.append(last[key])
    return keys, rows_after, last


def apply_rows(
    store: MemoryStore,
    keys: list[RowKey],
    rows_after: list[Row | None],
    last: dict[RowKey, Row | None],
    reset: bool,
    old_view: dict[RowKey, Any],
) -> tuple[list[tuple[RowKey, Row | None]], dict[RowKey, tuple[str | None, ...]]]:
    """Apply a patch's rows to the (restored) snapshot. Returns the rows applied (for
    persistence) and, per changed row, its sort keys before and after (for the replay)."""
    dirty: dict[RowKey, tuple[str | None, ...]] = {}
    applied: list[tuple[RowKey, Row | None]] = []
    if reset:
        store.clear()
        rows = []
        # The last op on a row decides (a reset's final part may delete a row an earlier part
        # sent: it was deleted during the catch-up).
        for key, row in last.items():
            if row is not None:
                rows.append((key, row[0], row[1]))
                applied.append((key, row))
        store.load(rows)
        return applied, dirty
    for key, row in zip(keys, rows_after, strict=True):
        cur = store.get(key)
        if key not in old_view:
            old_view[key] = cur
        if row is None:
            store.delete(key)
        else:
            store.put(key, row[0], row[1])
        applied.append((key, row))
        dirty[key] = (None if cur is None else cur[0], None if row is None else row[0])
    return applied, dirty


def restore_snapshot(
    store: MemoryStore,
    originals: dict[RowKey, Row | None],
    old_view: dict[RowKey, Any],
    only: set[RowKey] | None,
) -> dict[RowKey, Row | None]:
    """Undo the pending overlay on the rows in ``only`` (every row if None), noting their
    current view values in ``old_view``. Returns the originals still overlaid."""
    if only is None:
        items = list(originals.items())
        originals = {}
    else:
        items = [(key, originals.pop(key)) for key in only if key in originals]
    for key, orig in items:
        old_view[key] = store.get(key)
        if orig is None:
            store.delete(key)
        else:
            store.put(key, orig[0], orig[1])
    return originals


def snapshot_rows(
    store: MemoryStore, originals: dict[RowKey, Row | None]
) -> list[tuple[RowKey, str, Any]]:
    """The server snapshot (the store without the pending overlay) as rows."""
    rows = [(key, sk, value) for key, sk, value in store.rows() if key not in originals]
    rows.extend((key, orig[0], orig[1]) for key, orig in originals.items() if orig is not None)
    return rows
