"""Catch-ups from PostgreSQL, read in bounded parts (the contract of storage/base.py's
``CatchUp``; the SQLite one, storage/sqlite_catchup.py, explains the design).

Each part is one short query on a pooled connection: no transaction is held between parts, and
rows changed after ``upto`` are left out of every part (the server sends those commits after
the last part). An incremental catch-up reads the tombstone horizon in the same statement as
its rows, so a compaction that forgot tombstones it needs ends it with HistoryCompactedError.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import StorageError
from .parts import fill_part
from .postgres_errors import DRIVER_ERRORS, pg_error
from .postgres_schema import SCHEMA
from .records import HistoryCompactedError, OpEncoder
from .windows import WindowPlan, after_table

if TYPE_CHECKING:
    from .postgres import PostgresBackend

__all__ = ["PostgresCatchUp"]

S = SCHEMA
#: Rows read per query at most; fewer when rows are large (about one part's worth).
_BATCH = 512
#: A window's latest rows, read in full only up to the one that reaches the byte budget ($6):
#: first the keys and value sizes (``octet_length`` reads no TOASTed value).
_WINDOW = (
    f"WITH page AS (SELECT item, sk, octet_length(value) AS n FROM {S}.rows "
    "WHERE inst = $1 AND ns = $2 AND tbl = $3 AND NOT deleted AND version <= $4 "
    "ORDER BY sk DESC, item DESC LIMIT $5), "
    "run AS (SELECT item, sk, sum(n) OVER (ORDER BY sk DESC, item DESC "
    "ROWS UNBOUNDED PRECEDING) - n AS before FROM page) "
    f"SELECT r.item, r.sk, r.value FROM run JOIN {S}.rows r ON r.inst = $1 AND r.ns = $2 "
    "AND r.tbl = $3 AND r.item = run.item WHERE run.before < $6 "
    "ORDER BY run.sk DESC, run.item DESC"
)
_RESET = (
    f"SELECT tbl, item, sk, value FROM {S}.rows WHERE inst = $1 AND ns = $2 AND NOT deleted "
    "AND version <= $3 AND (tbl, item) > ($4, $5) ORDER BY tbl, item LIMIT $6"
)


def _since(after: str, limit: str) -> str:
    return (
        f"SELECT i.horizon, r.version, r.ns, r.tbl, r.item, r.sk, r.value, r.deleted "
        f"FROM {S}.instances i LEFT JOIN LATERAL (SELECT version, ns, tbl, item, sk, value, "
        f"deleted FROM {S}.rows WHERE inst = i.key AND version <= $2 AND {after} "
        f"ORDER BY version, ns, tbl, item LIMIT {limit}) r ON true WHERE i.key = $1"
    )


#: The first read of an incremental catch-up, then the reads after a position.
_SINCE_BASE = _since("version > $3", "$4")
_SINCE_POS = _since("(version, ns, tbl, item) > ($3, $4, $5, $6)", "$7")


class PostgresCatchUp:
    """Parts of a catch-up to version ``upto`` of the rows in ``namespaces``."""

    def __init__(
        self,
        backend: PostgresBackend,
        inst: int,
        *,
        base: int | None,
        upto: int,
        horizon: int,
        namespaces: Sequence[str],
        encode: OpEncoder,
        windows: Mapping[str, int] | None = None,
        window_bytes: int = 1 << 20,
    ) -> None:
        self.upto = upto
        #: A reset's windowed tables (storage/windows.py): what it sent of them.
        self.windows = WindowPlan(namespaces, windows, window_bytes)
        self._backend = backend
        self._inst = inst
        self._base = base
        self._decide(horizon)
        self._checked = False
        self._encode = encode
        self._visible = frozenset(namespaces)
        self._ns = list(namespaces)
        self._pos: tuple[Any, ...] | None = None
        self._pending: list[str] = []
        self._batch = 16
        self.done = False
        self._closed = False

    def _decide(self, horizon: int) -> None:
        base = self._base
        self.reset = base is None or base > self.upto or base < horizon
        self.base = None if self.reset else base

    async def next_part(self, max_bytes: int) -> list[str]:
        """The next encoded rows, about ``max_bytes`` of text (at least one row). Empty once
        :attr:`done`."""
        if self._closed:
            raise StorageError("catch-up closed", transient=False)
        out: list[str] = []
        size = 0
        batch, self._pending = self._pending, []
        try:
            while True:
                size, self._pending = fill_part(batch, out, size, max_bytes)
                if self._pending:
                    return out
                if self.done or size >= max_bytes:
                    return out
                batch = await self._read_batch()
                if not batch:
                    self.done = True
                    return out
                mean = max(1, sum(len(op) for op in batch) // len(batch))
                self._batch = max(1, min(_BATCH, max_bytes // mean))
        except DRIVER_ERRORS as exc:
            raise pg_error(exc) from exc

    async def _read_batch(self) -> list[str]:
        async with self._backend.connection() as conn:
            if not self._checked:
                self._checked = True
                h = await conn.fetchval(
                    f"SELECT horizon FROM {S}.instances WHERE key = $1", self._inst
                )
                self._decide(int(h or 0))
            enc = self._encode
            if self.reset:
                while self._ns:
                    ns = self._ns[0]
                    tbl, item = self._pos if self._pos is not None else ("", "")
                    rows = await conn.fetch(
                        _RESET, self._inst, ns, self.upto, tbl, item, self._batch
                    )
                    if rows:
                        self._pos = (rows[-1][0], rows[-1][1])
                        j = self.windows.first_windowed(rows)
                        if j is not None:  # a windowed table: skip it (read below)
                            self._pos = after_table(rows[j][0])
                            rows = rows[:j]
                            if not rows:
                                continue
                        return [enc(ns, t, i, sk, v, False) for t, i, sk, v in rows]
                    self._ns.pop(0)
                    self._pos = None
                plan = self.windows
                while plan.todo:
                    ns, t, n = plan.todo.pop(0)
                    latest = await conn.fetch(
                        _WINDOW, self._inst, ns, t, self.upto, n, plan.remaining()
                    )
                    ops = plan.take(ns, t, n, [tuple(r) for r in latest], enc)
                    if ops:
                        return ops
                return []
            visible = self._visible
            while True:
                if self._pos is None:
                    rows = await conn.fetch(
                        _SINCE_BASE, self._inst, self.upto, self.base, self._batch
                    )
                else:
                    rows = await conn.fetch(
                        _SINCE_POS, self._inst, self.upto, *self._pos, self._batch
                    )
                if not rows:
                    raise HistoryCompactedError("the instance is gone")
                if self.base is not None and int(rows[0][0]) > self.base:
                    raise HistoryCompactedError(
                        "history compacted during a catch-up (tombstones forgotten); reconnect"
                    )
                found = [r for r in rows if r[1] is not None]
                if not found:
                    return []
                last = found[-1]
                self._pos = (last[1], last[2], last[3], last[4])
                ops = [
                    enc(ns, t, i, sk, v, bool(d))
                    for _, _, ns, t, i, sk, v, d in found
                    if ns in visible
                ]
                if ops:
                    return ops

    async def close(self) -> None:
        """Nothing is held between parts; later parts are refused."""
        self._closed = True
        self._pending = []
